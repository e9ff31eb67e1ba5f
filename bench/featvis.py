"""Feature-visualisation speed on CPU: seconds per channel for 1 channel vs a batch of 8, at render's defaults
(128 steps, 128 px, FFT param, robustness transforms) on EfficientNet-Lite0's upper block. Prints one JSON object.
Wall time and process CPU time are both reported: on a shared machine the CPU-time ratio is the steadier one.

    python bench/featvis.py [--steps 128] [--size 128] [--batch 8] [--layer blocks.5] [--threads N]
"""
import argparse, json, os, platform, time
import torch

def lite0():
    "Lite0 from the registry, random weights (speed does not depend on the weights)."
    from artstudy.models import create_backbone
    return create_backbone("efficientnet_lite0", pretrained=False), "artstudy.models"

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=128); ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--batch", type=int, default=8); ap.add_argument("--layer", default="blocks.5")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--quick", action="store_true", help="64 steps, batch 4 (what `make bench BENCH_FLAGS=--quick` runs)")
    a = ap.parse_args()
    if a.quick: a.steps, a.batch = 64, 4
    if a.threads: torch.set_num_threads(a.threads)
    from artstudy.featvis import render
    model, source = lite0()
    model.eval()
    kw = dict(steps=a.steps, size=a.size, cache=False, mean=(0.5,) * 3, std=(0.5,) * 3, device="cpu")
    render(model, a.layer, [0], **{**kw, "steps": 2})  # warm-up
    res = {}
    for n in (1, a.batch):
        t, c = time.perf_counter(), time.process_time()
        render(model, a.layer, list(range(n)), **kw)
        dt, dc = time.perf_counter() - t, time.process_time() - c
        res[n] = dict(total_s=round(dt, 2), per_channel_s=round(dt / n, 3), cpu_per_channel_s=round(dc / n, 3))
    text = json.dumps(dict(
        bench="featvis.render", device="cpu", model=f"tf_efficientnet_lite0 ({source})", layer=a.layer,
        steps=a.steps, size=a.size, torch_threads=torch.get_num_threads(), cpu_count=os.cpu_count(),
        load_avg_1m=round(os.getloadavg()[0], 2), torch=torch.__version__, python=platform.python_version(),
        one_channel=res[1], batch=dict(n=a.batch, **res[a.batch]),
        speedup_per_channel=round(res[1]["per_channel_s"] / res[a.batch]["per_channel_s"], 2),
        speedup_per_channel_cpu_time=round(res[1]["cpu_per_channel_s"] / res[a.batch]["cpu_per_channel_s"], 2)),
        indent=2)
    print(text)
    from pathlib import Path
    out = Path(__file__).resolve().parents[1]/"bench"/"out"; out.mkdir(parents=True, exist_ok=True)
    (out/"featvis.json").write_text(text + "\n")

if __name__ == "__main__": main()
