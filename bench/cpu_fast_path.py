"""cpu_fast_path: CPU training img/s of the fast path ÷ the plain fp32 default (Lite0, 128 px, batch 32). Target ≥ 1.5,
validation accuracy unchanged within noise.

Variants, each in its own subprocess (the allocator settings only act if set before the process starts):
- `plain`: default glibc malloc, contiguous (NCHW) model and inputs, fp32;
- `fast`: MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=68719476736, channels-last model and inputs, fp32 (the default
  of `make study` and the runner: Makefile/runner export the variables, settings.ini has channels_last = true);
- `fast_passive`: `fast` + OMP_WAIT_POLICY=PASSIVE (OpenMP threads sleep instead of spinning; also exported by the
  Makefile). On an idle machine it changes little; on a shared, loaded one it avoids a collapse of 2-thread training;
- `fast_bf16`: `fast_passive` + bf16 autocast (opt-in on CPU: `mixed_precision="bf16"`), kept only if it helps.
Timing: real wikiart7 batches, SGD momentum 0.9, one warm-up step, then the median of `--chunks` chunks of `--steps`
steps; the variants run interleaved for `--rounds` rounds and the medians over rounds are reported.
Accuracy: the same short Mode A `train_run` (seeded, same data) with each variant; validation top-1 compared, plus
the largest logit difference of one batch between the variants (same weights). The accuracy runs happen in the
first round's processes, after their timing.
Usage: python bench/cpu_fast_path.py [--rounds 2] [--steps 3] [--acc-n 20]
"""
import argparse, json, os, tempfile, time
import _common as C

MALLOC = ("MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_")
VARIANTS = {"plain": dict(env=(), cl=False, amp=None), "fast": dict(env=MALLOC, cl=True, amp=None),
            "fast_passive": dict(env=None, cl=True, amp=None), "fast_bf16": dict(env=None, cl=True, amp="bf16")}

def worker(variant, steps, chunks, size, bs, acc_n, acc_epochs):
    import torch
    from artstudy.models import create_backbone
    v = VARIANTS[variant]
    mf = torch.channels_last if v["cl"] else torch.contiguous_format
    out = dict(variant=variant, env={k: os.environ.get(k) for k in C.FAST_CPU_ENV})
    if steps:
        x, y = C.real_batches(bs * steps, size)
        torch.manual_seed(0)
        model = create_backbone("efficientnet_lite0", num_classes=7).train().to(memory_format=mf)
        opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
        ac = torch.autocast("cpu", dtype=torch.bfloat16, enabled=v["amp"] == "bf16")
        def step(xb, yb):
            with ac: out_ = model(xb.contiguous(memory_format=mf))
            loss = torch.nn.functional.cross_entropy(out_.float(), yb)
            loss.backward(); opt.step(); opt.zero_grad()
        step(x[:bs], y[:bs])
        ts, cs = [], []
        for _ in range(chunks):
            t, c = time.perf_counter(), time.process_time()
            for i in range(steps): step(x[i * bs:(i + 1) * bs], y[i * bs:(i + 1) * bs])
            ts.append(time.perf_counter() - t); cs.append(time.process_time() - c)
        out["img_s"], out["img_per_cpu_s"] = bs * steps / C.median(ts), bs * steps / C.median(cs)
        torch.manual_seed(1)   # logits of one batch with fixed weights, for the numerical comparison
        m = create_backbone("efficientnet_lite0", num_classes=7).eval().to(memory_format=mf)
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=v["amp"] == "bf16"):
            out["logits"] = m(x[:8].contiguous(memory_format=mf)).float().tolist()
    if acc_n:
        from artstudy.pipeline import train_run
        with tempfile.TemporaryDirectory() as d:
            m = train_run(dict(dataset="wikiart7", mode="mode_a", n_per_class=acc_n, n_valid_per_class=acc_n, image_size=size,
                               batch_size=bs, epochs=acc_epochs, seed=0, eval_splits=["valid"], progress=False, num_workers=0,
                               channels_last=v["cl"], mixed_precision=v["amp"] or False), run_dir=d)
        out.update(valid_top1=m["valid_top1"], best_valid_loss=m["best_valid_loss"], run_img_s=m["train_img_per_s"])
    print(json.dumps(out))

def run(variant, *args):
    env = C.fast_env(keys=VARIANTS[variant]["env"]); env["BENCH_NO_REEXEC"] = "1"
    return C.run_worker(__file__, variant, *args, env=env)

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2); ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--chunks", type=int, default=2); ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--bs", type=int, default=32); ap.add_argument("--acc-n", type=int, default=15)
    ap.add_argument("--acc-epochs", type=int, default=2); ap.add_argument("--quick", action="store_true")
    ap.add_argument("--worker", nargs=7)
    a = ap.parse_args()
    if a.worker:
        v, *rest = a.worker; return worker(v, *map(int, rest))
    if a.quick: a.rounds, a.steps, a.chunks, a.acc_n, a.acc_epochs = 1, 2, 2, 7, 1
    load0, t0 = C.loadavg(), time.time()
    timing, cpu = {v: [] for v in VARIANTS}, {v: [] for v in VARIANTS}
    logits = {}
    acc = {}
    for r in range(a.rounds):   # the accuracy runs ride along in the first round's processes (after the timing)
        for v in (VARIANTS if r % 2 == 0 else list(VARIANTS)[::-1]):
            res = run(v, a.steps, a.chunks, a.size, a.bs, a.acc_n if r == 0 else 0, a.acc_epochs)
            timing[v].append(res["img_s"]); cpu[v].append(res["img_per_cpu_s"]); logits[v] = res["logits"]
            if "valid_top1" in res: acc[v] = res
    import numpy as np
    diff = lambda u, v: float(np.abs(np.array(logits[u]) - np.array(logits[v])).max())
    img_s = {v: round(C.median(t), 1) for v, t in timing.items()}
    fp32_best = max(("fast", "fast_passive"), key=img_s.get)
    bf16_helps = img_s["fast_bf16"] > 1.05 * img_s["fast_passive"]
    best = "fast_bf16" if bf16_helps else fp32_best
    C.emit("cpu_fast_path", dict(
        bench="cpu_fast_path", ratio=round(img_s[best] / img_s["plain"], 2), target=">= 1.5", fast_path=best,
        ratio_spec_fast=round(img_s["fast"] / img_s["plain"], 2), ratio_fast_passive=round(img_s["fast_passive"] / img_s["plain"], 2),
        ratio_bf16=round(img_s["fast_bf16"] / img_s["plain"], 2),
        ratio_cpu_time=round(C.median(cpu[best]) / C.median(cpu["plain"]), 2),
        img_per_cpu_second={v: round(C.median(t), 1) for v, t in cpu.items()}, bf16_helps=bf16_helps, img_s=img_s, img_s_per_round={v: [round(t, 1) for t in ts] for v, ts in timing.items()},
        max_abs_logit_diff=dict(fast_vs_plain=diff("fast", "plain"), bf16_vs_plain=diff("fast_bf16", "plain")),
        env={v: (list(VARIANTS[v]["env"]) if VARIANTS[v]["env"] is not None else list(C.FAST_CPU_ENV)) for v in VARIANTS},
        valid_top1={v: r["valid_top1"] for v, r in acc.items()},
        best_valid_loss={v: round(r["best_valid_loss"], 4) for v, r in acc.items()},
        accuracy_run=dict(mode="mode_a", n_per_class=a.acc_n, n_valid_per_class=a.acc_n, epochs=a.acc_epochs,
                          valid_top1_se=round((0.25 / (7 * a.acc_n)) ** 0.5, 3)) if acc else None,
        size=a.size, bs=a.bs, steps=a.steps, chunks=a.chunks, rounds=a.rounds, device="cpu",
        loadavg_before=load0, loadavg_after=C.loadavg(), wall_s=round(time.time() - t0, 1), machine=C.machine()))

if __name__ == "__main__": main()
