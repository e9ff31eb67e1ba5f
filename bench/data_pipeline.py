"""data_pipeline: the batch data path's training-loader img/s ÷ the per-item loader's (target ≥ 10), same images and
augmentation, on the CPU; each loader's img/s ÷ the model's training img/s; and where a batch's time goes.

Loaders (`artstudy.data.make_dls(...).train` as `train_run` builds it: wikiart7, 128 px, bs 32, flips and shifts,
normalisation; `--n` training images):
- `items`: the per-item path (`batch=False`: `ImageItems` → `collate_uint8` → `BatchTfm`) with the runs' default of
  2 workers: the loader before the batch path;
- `batch`: the default path (`CachedImages`: one memmap read per batch; `FastBatchTfm`), in-process;
- `batch_ram_resident`: the batch path with the split copied into RAM (`resident=True`), measured to decide the CPU rule
  of `keep_resident` (never resident on the CPU);
- `items_jpeg`: the per-item path decoding JPEGs (`cache=False`, 2 workers), for reference.
Each loader runs one warm-up epoch (workers starting), then the loaders take turns for `--repeats` rounds, each
measurement whole epochs for at least `--min-s` seconds. `ratio` is the median over rounds of batch ÷ items measured in
the same round (the machine is shared: a ratio within a round moves less than either rate). The model side is the
study's training step (Lite0, channels-last, fp32, torch SGD) on real batches. `profile_ms_per_batch` times each stage of
one batch separately (medians). `same_batches` checks that both paths give the same batches at the same seed.
Usage: python bench/data_pipeline.py [--n 336] [--quick]
"""
import argparse, time
import _common as C

def rate(dl, min_s):
    "img/s over whole epochs of `dl`, at least `min_s` seconds."
    t, k = time.perf_counter(), 0
    while True:
        for xb, _ in dl: k += len(xb)
        if (el := time.perf_counter() - t) >= min_s: return k / el

def ms(f, reps=9):
    "Median milliseconds of `f()` after one warm-up call."
    f(); ts = []
    for _ in range(reps):
        t = time.perf_counter(); f(); ts.append(time.perf_counter() - t)
    return round(1000 * C.median(ts), 3)

def profile(ds, size, bs, stats, workers):
    "Per-batch milliseconds of each stage of the per-item path and of the batch path (one batch of shuffled images)."
    import numpy as np, torch
    from artstudy import data as D
    trn = D._items(ds, "train", size, "bilinear", True)
    pos = np.random.default_rng(0).permutation(len(trn))[:bs]
    items = [trn[i] for i in pos]
    x, _ = D.collate_uint8(items)
    old = D.BatchTfm(stats, augment=True, seed=0)
    def raw(nw):   # the per-item DataLoader without its batch transform: fastai, __getitem__, collation (+ workers)
        dl = D.make_dls(ds, size=size, bs=bs, stats=stats, num_workers=nw, seed=0, device="cpu", batch=False).train
        dl.after_batch = lambda b: b
        rate(dl, 0)
        return round(1000 * bs / rate(dl, 0.5), 3)
    cuda = torch.cuda.is_available()
    per_item = dict(getitem=ms(lambda: [trn[int(i)] for i in pos]), collate=ms(lambda: D.collate_uint8(items)),
                    loader_without_transform_0_workers=raw(0), **{f"loader_without_transform_{workers}_workers": raw(workers)},
                    flip_shift=ms(lambda: old.flip_shift(x)), normalize=ms(lambda: old.normalize(x)),
                    pin=ms(lambda: x.pin_memory()) if cuda else "n/a: pinning needs CUDA (pin_memory=False on the CPU)")
    imgs, new = D.CachedImages.from_items(trn), D.FastBatchTfm(stats, augment=True, seed=0)
    xb, yb, src = imgs.batch(pos)
    ram = D.CachedImages.from_items(trn, resident=True)
    batch = dict(read=ms(lambda: imgs.batch(pos)), read_ram_resident=ms(lambda: ram.batch(pos)),
                 crop_flip=ms(lambda: new.crop_flip(xb, len(yb), src)), normalize=ms(lambda: new.normalize(xb)))
    return dict(items=per_item, batch=batch)

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=336, help="training images per loader epoch")
    ap.add_argument("--size", type=int, default=128); ap.add_argument("--bs", type=int, default=32)
    ap.add_argument("--workers", type=int, default=2, help="workers of the per-item loader (the runs' default)")
    ap.add_argument("--steps", type=int, default=3); ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--min-s", type=float, default=0.5, help="seconds of whole epochs per loader measurement")
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    if a.quick: a.repeats, a.min_s = 3, 0.3
    C.ensure_fast_env()
    import torch
    from artstudy.data import load_dataset, make_dls, subset
    from artstudy.models import create_backbone
    load0 = C.loadavg()
    ds = load_dataset("wikiart7")
    ds = subset(ds, n_per_class={"train": -(-a.n // len(ds.classes)), "valid": 2, "test": 0}, seed=0)
    stats = ((.5,) * 3, (.5,) * 3)
    kw = dict(size=a.size, bs=a.bs, stats=stats, seed=0, device="cpu", augment=True)
    loaders = dict(items=make_dls(ds, batch=False, num_workers=a.workers, **kw).train,
                   batch=make_dls(ds, **kw).train,
                   batch_ram_resident=make_dls(ds, resident=True, **kw).train,
                   items_jpeg=make_dls(ds, batch=False, cache=False, num_workers=a.workers, **kw).train)
    same = all(torch.equal(p[0], q[0]) and torch.equal(p[1], q[1]) for p, q in
               zip(make_dls(ds, batch=False, **kw).train, make_dls(ds, **kw).train))
    for dl in loaders.values(): rate(dl, 0)                      # warm-up epoch
    rates = {k: [] for k in loaders}
    for r in range(a.repeats):
        for k in (list(loaders) if r % 2 == 0 else list(loaders)[::-1]): rates[k].append(rate(loaders[k], a.min_s))
    del loaders
    img_s = {k: C.median(v) for k, v in rates.items()}
    ratio = C.median([b / i for b, i in zip(rates["batch"], rates["items"])])
    prof = profile(ds, a.size, a.bs, stats, a.workers)
    # model training throughput on the same kind of batches
    model = create_backbone("efficientnet_lite0", num_classes=len(ds.classes)).train().to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    batches = [(xb.as_subclass(torch.Tensor), yb.as_subclass(torch.Tensor))
               for (xb, yb), _ in zip(make_dls(ds, **kw).train, range(a.steps))]
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
        bench="data_pipeline", ratio=round(ratio, 1), target=">= 10 (batch path ÷ per-item path, same images and augmentation)",
        ratio_of_medians=round(img_s["batch"] / img_s["items"], 1), same_batches=same,
        loader_img_s={k: round(v, 1) for k, v in img_s.items()},
        ram_resident_over_memmap=round(img_s["batch_ram_resident"] / img_s["batch"], 2),
        loader_over_model={k: round(v / model_img_s, 2) for k, v in img_s.items()},
        model_train_img_s=round(model_img_s, 1), profile_ms_per_batch=prof, images_per_epoch=len(ds.split("train")),
        size=a.size, bs=a.bs, per_item_workers=a.workers, augment=True, repeats=a.repeats, device="cpu",
        note="loaders take turns, then the model: measured one after the other on the same cores, not concurrently",
        loadavg_before=load0, loadavg_after=C.loadavg(), machine=C.machine()))

if __name__ == "__main__": main()
