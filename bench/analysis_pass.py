"""Benchmark of the analysis pass (artstudy.compare): time and memory of the all-layer metrics pass for a model pair.

Prints JSON with
- `ratio_vs_plain_pair`: metrics pass (two models fed the same batches, hooks on every analysis layer, pooled features
  kept, top-k merges for both models, then the tables without permutation nulls) / a plain eval pass of the same two
  models over the same images.
  Target <= 1.5.
- `ratio_vs_plain_single`: the same pass / a plain eval pass of ONE model (what the pair costs against one inference).
- `maxrss_mb`: peak resident memory (resource.getrusage maxrss, each run in its own subprocess) of the plain and the
  metrics pass at N and 4N images, read from JPEGs on the fly. Target: flat in the number of images.
Timings use images decoded once into memory, so the ratio measures compute, not JPEG decoding; each timing is the
best of `--repeats`. Lite0, CPU, 128 px, batch 32. Usage: python bench/analysis_pass.py [--n 64] [--size 128]

`--full` instead times one complete `compare` as the analysis notebook runs it: the whole wikiart7 validation split
(1,260 images, JPEGs decoded on the fly), ImageNet Lite0 vs a perturbed copy, with the BN-recalibrated control
(`--n-calib` training images), `--n-perm` permutations, no cache; it prints the wall time per phase and the peak RSS.
"""
import argparse, json, os, resource, time
import torch
import _common as C   # also puts the project root on sys.path

def _models():
    "Two Lite0s from the registry: ImageNet weights vs a random init."
    from artstudy.models import create_backbone, analysis_layers
    a = create_backbone("efficientnet_lite0", pretrained=False, num_classes=7)
    b = create_backbone("efficientnet_lite0", pretrained=True, num_classes=7)
    return a.eval(), b.eval(), analysis_layers(b), "artstudy.models"

def _loader(n, size, bs):
    "The first-hit data root's wikiart7 valid split, n images spread over classes, decoded on the fly."
    from artstudy.data import load_dataset, eval_loader
    from artstudy.compare import _subset
    ds = _subset(load_dataset("wikiart7"), "valid", n)
    return eval_loader(ds, split=None, size=size, bs=bs, stats=((0.5,) * 3, (0.5,) * 3))

def _plain(models, loader):
    with torch.inference_mode():
        for x, y in loader:
            for m in models: m(x)

def _metrics(a, b, loader, layers, k):
    from artstudy.compare import analysis_pass, _tables
    res = analysis_pass(a, b, loader, layers, k=k, progress=False)
    return _tables(a, b, res, layers, k, 7, n_perm=0)   # the pass and its tables; `--full` times the permutation nulls

def full(size, bs, k, n_calib, n_perm):
    "One full `compare` (whole valid split, control, nulls), timed by phase."
    import artstudy.compare as M
    from artstudy.models import create_backbone
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", 1)))
    a = create_backbone("efficientnet_lite0", pretrained=True, num_classes=7).eval()
    b = create_backbone("efficientnet_lite0", pretrained=True, num_classes=7).eval()
    with torch.no_grad():
        g = torch.Generator().manual_seed(0)
        for p in b.parameters(): p.add_(0.01 * p.abs().mean() * torch.randn(p.shape, generator=g))
    t, orig = {}, {f: getattr(M, f) for f in ("recalibrate_bn", "analysis_pass", "_tables")}
    def timed(f):
        def w(*args, **kw):
            s = time.perf_counter(); r = orig[f](*args, **kw)
            t[f.strip("_")] = round(t.get(f.strip("_"), 0) + time.perf_counter() - s, 1); return r
        return w
    for f in orig: setattr(M, f, timed(f))
    s = time.perf_counter()
    res = M.compare(a, b, "wikiart7", k=k, size=size, bs=bs, progress=False, cache=False, control=True, random_control=True,
                    n_calib=n_calib, n_perm=n_perm, groups=10)
    out = dict(what="one full compare: wikiart7 valid, Lite0 x4 (A, B, BN control, matched random change), 10 jackknife groups",
               n_images=len(res["files"]), size=size,
               k=k, n_calib=n_calib, n_perm=n_perm, threads=torch.get_num_threads(), seconds_total=round(time.perf_counter() - s, 1),
               seconds_by_phase=dict(bn_recalibration_of_both_controls=t.get("recalibrate_bn"), pass_4_models=t.get("analysis_pass"),
                                     nulls_tables_and_jackknife=t.get("tables")),
               maxrss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1), load_avg=C.loadavg())
    C.emit("analysis_full", out)

def worker(mode, n, size, bs, k, repeats):
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", 2)))
    a, b, layers, source = _models()
    loader = _loader(n, size, bs)
    if mode == "time":   # decode once, then time compute only
        batches = [(x, y) for x, y in loader]
        t = {"plain_single": [], "plain_pair": [], "metrics": []}
        _plain([a], batches[:1])  # warm-up
        for _ in range(repeats):
            s = time.perf_counter(); _plain([a], batches); t["plain_single"].append(time.perf_counter() - s)
            s = time.perf_counter(); _plain([a, b], batches); t["plain_pair"].append(time.perf_counter() - s)
            s = time.perf_counter(); _metrics(a, b, batches, layers, k); t["metrics"].append(time.perf_counter() - s)
        out = {key: min(v) for key, v in t.items()}
        out.update(layers=layers, models=source)
    else:
        s = time.perf_counter()
        if mode == "plain": _plain([a, b], loader)
        else: _metrics(a, b, loader, layers, k)
        out = {"seconds": time.perf_counter() - s}
    out["maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(out))

def _run(*args):
    "One measurement in a fresh process, with the fast path's allocator settings."
    malloc = {k: v for k, v in C.FAST_CPU_ENV.items() if k.startswith("MALLOC_")}
    return C.run_worker(__file__, *args, env={**os.environ, **malloc})

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=64); p.add_argument("--size", type=int, default=128)
    p.add_argument("--bs", type=int, default=32); p.add_argument("--k", type=int, default=100)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="n=32, one repeat (what `make bench BENCH_FLAGS=--quick` runs)")
    p.add_argument("--worker", nargs=6, metavar=("MODE", "N", "SIZE", "BS", "K", "REPEATS"))
    p.add_argument("--full", action="store_true", help="time one complete compare on the whole valid split (see above)")
    p.add_argument("--n-calib", type=int, default=700); p.add_argument("--n-perm", type=int, default=200)
    o = p.parse_args()
    if o.full: return full(o.size, o.bs, o.k, o.n_calib, o.n_perm)
    if o.worker:
        m, *rest = o.worker; return worker(m, *map(int, rest))
    if o.quick: o.n, o.repeats = 32, 1
    t0 = time.time()
    tm = _run("time", o.n, o.size, o.bs, o.k, o.repeats)
    mem = {f"{mode}_{n}": _run(mode, n, o.size, o.bs, o.k, 1) for n in (o.n, 4 * o.n) for mode in ("plain", "metrics")}
    C.emit("analysis_pass", dict(
        backbone="efficientnet_lite0 (timm tf_efficientnet_lite0)", models=tm["models"], device="cpu", threads=int(os.environ.get("BENCH_THREADS", 2)),
        size=o.size, bs=o.bs, k=o.k, n_images=o.n, layers=tm["layers"],
        seconds=dict(plain_single=round(tm["plain_single"], 3), plain_pair=round(tm["plain_pair"], 3),
                     metrics_pass=round(tm["metrics"], 3)),
        ratio_vs_plain_pair=round(tm["metrics"] / tm["plain_pair"], 3),
        ratio_vs_plain_single=round(tm["metrics"] / tm["plain_single"], 3),
        maxrss_mb={k: round(v["maxrss_mb"], 1) for k, v in mem.items()},
        metrics_rss_growth_4n_mb=round(mem[f"metrics_{4*o.n}"]["maxrss_mb"] - mem[f"metrics_{o.n}"]["maxrss_mb"], 1),
        plain_rss_growth_4n_mb=round(mem[f"plain_{4*o.n}"]["maxrss_mb"] - mem[f"plain_{o.n}"]["maxrss_mb"], 1),
        target=dict(ratio_vs_plain_pair="<= 1.5", memory="flat in n"),
        wall_s=round(time.time() - t0, 1), load_avg=C.loadavg()))

if __name__ == "__main__": main()
