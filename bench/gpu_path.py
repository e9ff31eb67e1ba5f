"""gpu_path: GPU training img/s with autocast (bf16 where supported, else fp16) + channels-last (+ `--compile`) ÷ fp32
(target ≥ 2), and training-loader img/s ÷ model img/s at 224 px (Lite0; target ≥ 3 for the default batch path). Where no
CUDA GPU is present it prints a JSON object with `skipped` and its reason, and exits 0.

Model side: real wikiart7 batches kept on the GPU, SGD momentum 0.9, warm-up steps, then the median of `--repeats`
chunks of `--steps` steps, variants interleaved; CUDA is synchronised around each chunk. Loader side:
`artstudy.data.make_dls(...).train` over `--n` images (resized uint8 cache, augmentation and normalisation on the GPU),
iterated without a model, each loader one warm-up epoch then `--repeats` epochs taking turns (medians):
- `batch`: the default batch path (`keep_resident` decides: the split on the GPU when it takes at most
  `RESIDENT_FRACTION` of free memory);
- `batch_resident` / `batch_host`: the batch path forced resident / forced to read the host memmap into pinned memory
  (their ratio is the measurement behind the residency rule);
- `items`: the per-item path (`batch=False`, `--workers` workers, pinned memory), the loader before the batch path.
Usage: python bench/gpu_path.py [--size 224] [--bs 128] [--n 2048] [--compile]
"""
import argparse, os, time
import _common as C

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=224); ap.add_argument("--bs", type=int, default=128)
    ap.add_argument("--steps", type=int, default=10); ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1)); ap.add_argument("--n", type=int, default=2048)
    ap.add_argument("--compile", action="store_true"); ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    import torch
    if not torch.cuda.is_available():
        return C.emit("gpu_path", dict(bench="gpu_path", skipped="no CUDA GPU on this machine (torch.cuda.is_available() is False)",
                                       target=">= 2", loader_target=">= 3", machine=C.machine()))
    if a.quick: a.steps, a.n = 5, 1024
    C.ensure_fast_env()
    from artstudy.data import load_dataset, make_dls, subset
    from artstudy.models import create_backbone
    dev = torch.device("cuda")
    amp = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    torch.backends.cudnn.benchmark = True
    x, y = C.real_batches(a.bs, a.size)
    x, y = x.to(dev), y.to(dev)

    def make(variant):
        torch.manual_seed(0)
        m = create_backbone("efficientnet_lite0", num_classes=7).to(dev).train()
        fast = variant != "fp32"
        if fast: m = m.to(memory_format=torch.channels_last)
        opt = torch.optim.SGD(m.parameters(), lr=1e-3, momentum=0.9)
        scaler = torch.amp.GradScaler("cuda", enabled=fast and amp == torch.float16)
        fwd = torch.compile(m) if variant == "amp_cl_compile" else m
        xb = x.contiguous(memory_format=torch.channels_last) if fast else x
        def step():
            with torch.autocast("cuda", dtype=amp, enabled=fast):
                loss = torch.nn.functional.cross_entropy(fwd(xb).float(), y)
            scaler.scale(loss).backward(); scaler.step(opt); scaler.update(); opt.zero_grad(set_to_none=True)
        for _ in range(3 if variant != "amp_cl_compile" else 5): step()
        torch.cuda.synchronize()
        return step

    variants = ["fp32", "amp_cl"] + (["amp_cl_compile"] if a.compile else [])
    steps = {v: make(v) for v in variants}
    times = {v: [] for v in variants}
    for r in range(a.repeats):
        for v in (variants if r % 2 == 0 else variants[::-1]):
            torch.cuda.synchronize(); t = time.perf_counter()
            for _ in range(a.steps): steps[v]()
            torch.cuda.synchronize(); times[v].append(time.perf_counter() - t)
    img_s = {v: a.bs * a.steps / C.median(t) for v, t in times.items()}
    best = max(img_s, key=img_s.get)

    ds = load_dataset("wikiart7")
    ds = subset(ds, n_per_class={"train": -(-a.n // len(ds.classes)), "valid": 2, "test": 0}, seed=0)
    kw = dict(size=a.size, bs=a.bs, stats=((.5,) * 3, (.5,) * 3), seed=0, device=dev)
    loaders = dict(batch=make_dls(ds, **kw), batch_resident=make_dls(ds, resident=True, **kw),
                   batch_host=make_dls(ds, resident=False, **kw), items=make_dls(ds, batch=False, num_workers=a.workers, **kw))
    chosen = loaders["batch"].data_path
    loaders = {k: d.train for k, d in loaders.items()}
    def epoch(dl):
        torch.cuda.synchronize(); t, k = time.perf_counter(), 0
        for xb, yb in dl: k += len(xb)
        torch.cuda.synchronize()
        return k / (time.perf_counter() - t)
    for dl in loaders.values(): epoch(dl)                           # warm-up: workers, the resident copy
    rates = {k: [] for k in loaders}
    for r in range(a.repeats):
        for k in (list(loaders) if r % 2 == 0 else list(loaders)[::-1]): rates[k].append(epoch(loaders[k]))
    loader_img_s = {k: C.median(v) for k, v in rates.items()}
    free, total = torch.cuda.mem_get_info(dev)
    C.emit("gpu_path", dict(
        bench="gpu_path", ratio=round(img_s[best] / img_s["fp32"], 2), target=">= 2", best=best,
        amp_dtype=str(amp).replace("torch.", ""), img_s={v: round(s, 1) for v, s in img_s.items()},
        loader_ratio=round(loader_img_s["batch"] / img_s[best], 2), loader_target=">= 3 (default batch path)",
        loader_ratios={k: round(v / img_s[best], 2) for k, v in loader_img_s.items()},
        loader_img_s={k: round(v, 1) for k, v in loader_img_s.items()}, default_data_path=chosen,
        resident_over_host=round(loader_img_s["batch_resident"] / loader_img_s["batch_host"], 2),
        split_mb=round(len(ds.split("train")) * a.size * a.size * 3 / 2**20, 1), gpu_free_gb=round(free / 2**30, 1),
        gpu_total_gb=round(total / 2**30, 1), items_workers=a.workers, size=a.size, bs=a.bs, steps=a.steps,
        repeats=a.repeats, n_images=len(ds.split("train")), machine=C.machine()))

if __name__ == "__main__": main()
