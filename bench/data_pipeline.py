"""data_pipeline: training DataLoader img/s ÷ model training img/s (128 px, 2 workers, CPU, Lite0). Target ≥ 2 with
the resized cache; also reported without it (JPEG decode + resize in the workers).

The loader is `artstudy.data.make_dls(...).train` as `train_run` builds it (augmentation and normalisation included,
`BatchTfm` on the device), iterated without a model: its first epoch (workers starting) is a warm-up, then the median
of `--repeats` epochs. The model side is the study's training step (channels-last, fp32, torch SGD, allocator settings)
on real batches, median of `--repeats` chunks of `--steps` steps. Usage: python bench/data_pipeline.py [--n 336]
"""
import argparse, time
import _common as C

def loader_img_s(dl, repeats):
    n, ts = 0, []
    for i in range(repeats + 1):
        t, k = time.perf_counter(), 0
        for xb, yb in dl: k += len(xb)
        if i: ts.append(time.perf_counter() - t)
        n = k
    return n / C.median(ts), n

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=336, help="training images iterated per loader epoch")
    ap.add_argument("--size", type=int, default=128); ap.add_argument("--bs", type=int, default=32)
    ap.add_argument("--workers", type=int, default=2); ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3); ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    if a.quick: a.repeats = 2
    C.ensure_fast_env()
    import torch
    from artstudy.data import load_dataset, make_dls, subset
    from artstudy.models import create_backbone
    load0 = C.loadavg()
    ds = load_dataset("wikiart7")
    ds = subset(ds, n_per_class={"train": -(-a.n // len(ds.classes)), "valid": 2, "test": 0}, seed=0)
    kw = dict(size=a.size, bs=a.bs, stats=((.5,) * 3, (.5,) * 3), num_workers=a.workers, seed=0, device="cpu", augment=True)
    res = {}
    for cache in (True, False):
        dls = make_dls(ds, cache=cache, **kw)
        res[cache] = loader_img_s(dls.train, a.repeats)
        del dls
    # model training throughput on the same kind of batches
    model = create_backbone("efficientnet_lite0", num_classes=len(ds.classes)).train().to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    batches = [(xb.as_subclass(torch.Tensor), yb.as_subclass(torch.Tensor))
               for (xb, yb), _ in zip(make_dls(ds, cache=True, **{**kw, "num_workers": 0}).train, range(a.steps))]
    def step(xb, yb):
        loss = torch.nn.functional.cross_entropy(model(xb.contiguous(memory_format=torch.channels_last)), yb)
        loss.backward(); opt.step(); opt.zero_grad()
    step(*batches[0])
    ts = []
    for _ in range(a.repeats):
        t = time.perf_counter()
        for xb, yb in batches: step(xb, yb)
        ts.append(time.perf_counter() - t)
    model_img_s = sum(len(b[0]) for b in batches) / C.median(ts)
    C.emit("data_pipeline", dict(
        bench="data_pipeline", ratio=round(res[True][0] / model_img_s, 2), target=">= 2 (resized cache)",
        ratio_without_cache=round(res[False][0] / model_img_s, 2),
        loader_img_s=dict(cached=round(res[True][0], 1), jpeg_decode=round(res[False][0], 1)),
        model_train_img_s=round(model_img_s, 1), images_per_epoch=res[True][1], size=a.size, bs=a.bs,
        workers=a.workers, augment=True, repeats=a.repeats, device="cpu",
        note="loader and model measured one after the other on the same cores (not concurrently)",
        loadavg_before=load0, loadavg_after=C.loadavg(), machine=C.machine()))

if __name__ == "__main__": main()
