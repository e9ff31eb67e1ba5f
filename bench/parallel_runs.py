"""parallel_runs: study throughput with 2 runs at a time on 1 thread each ÷ 1 run at a time on 2 threads (what `make
study` does with `--workers 2` on a 2-core machine, against the runner's default `--workers 1`). Target ≥ 1.3.

Each run is a fresh Python process doing what a papermill run does: import artstudy, then one seeded Mode A
`train_run` on pacs_art (`--n` images per class, 128 px, 1 epoch, valid split evaluated). One round times 2 runs in
sequence with OMP_NUM_THREADS=2, then 2 runs side by side with OMP_NUM_THREADS=1 (the order alternates between
rounds); the ratio is median sequential wall time ÷ median parallel wall time. The fast-path environment is set
for every run. The valid top-1 of each run is reported too: the thread count may change the last float bits, and so
occasionally a prediction.
Usage: python bench/parallel_runs.py [--rounds 2] [--n 30] [--quick]
"""
import argparse, json, subprocess, sys, tempfile, time
import _common as C

CODE = """
import json, sys
from artstudy.pipeline import train_run
m = train_run(dict(dataset="pacs_art", mode="mode_a", n_per_class={n}, n_valid_per_class=25, image_size=128,
                   batch_size=32, epochs=1, seed=1, eval_splits=["valid"], progress=False, num_workers=0), run_dir=sys.argv[1])
print(json.dumps(dict(valid_top1=m["valid_top1"], train_seconds=m["train_seconds"])))
"""

def start(threads, n, d):
    env = C.fast_env(); env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return subprocess.Popen([sys.executable, "-c", CODE.format(n=n), d], env=env, stdout=subprocess.PIPE, text=True)

def finish(p):
    out, _ = p.communicate()
    if p.returncode: raise SystemExit(f"benchmark run failed with exit code {p.returncode}")
    return json.loads(out.strip().splitlines()[-1])

def timed(kind, n):
    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        if kind == "sequential": res = [finish(start(2, n, f"{d}/{i}")) for i in range(2)]
        else: res = [finish(p) for p in [start(1, n, f"{d}/{i}") for i in range(2)]]
        return time.perf_counter() - t, res

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2); ap.add_argument("--n", type=int, default=30)
    ap.add_argument("--quick", action="store_true", help="1 round of 10 images per class")
    a = ap.parse_args()
    if a.quick: a.rounds, a.n = 1, 10
    before, times, top1 = C.loadavg(), {"sequential": [], "parallel": []}, {"sequential": [], "parallel": []}
    for r in range(a.rounds):
        for kind in (("sequential", "parallel") if r % 2 == 0 else ("parallel", "sequential")):
            t, res = timed(kind, a.n); times[kind].append(t); top1[kind] += [x["valid_top1"] for x in res]
    seq, par = C.median(times["sequential"]), C.median(times["parallel"])
    C.emit("parallel_runs", dict(ratio=seq / par, target=1.3, sequential_s=times["sequential"], parallel_s=times["parallel"],
                                 valid_top1=top1, n_per_class=a.n, loadavg_before=before, loadavg_after=C.loadavg(),
                                 machine=C.machine()))

if __name__ == "__main__":
    C.ensure_fast_env()
    main()
