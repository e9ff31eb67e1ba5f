"""cached_probe: 20 epochs of off-the-shelf training on cached features (the one feature pass included) ÷ 20 naive
frozen-body epochs. Target ≤ 0.1, same accuracy within noise. CPU, Lite0, wikiart7 subset, 128 px.

Everything goes through `artstudy.pipeline.train_run` (mode `off_the_shelf`, `cached=True` vs `cached=False`), timed by its
own `train_seconds` (the resized image cache is built before the clock starts, in both cases). The naive cost of 20
epochs is EXTRAPOLATED from `--naive-epochs` measured epochs (×20/n), since 20 frozen-body epochs would take minutes.
Runs use a fresh feature store (a temporary cache dir), so the first cached run pays the feature pass; a second cached
run (another learning rate, say) reuses the stored features and is reported too. Accuracy: validation top-1 of cached
vs naive after the same number of epochs, and of the 20-epoch cached run. Usage: python bench/cached_probe.py
"""
import argparse, os, shutil, tempfile
import _common as C

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=40, help="training images per class"); ap.add_argument("--nv", type=int, default=20)
    ap.add_argument("--size", type=int, default=128); ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--naive-epochs", type=int, default=2); ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    if a.quick: a.n, a.nv = 30, 15
    C.ensure_fast_env()
    load0 = C.loadavg()
    tmp = tempfile.mkdtemp(prefix="artstudy-bench-")
    os.environ["ARTSTUDY_CACHE_DIR"] = os.path.join(tmp, "cache")
    try:
        from artstudy.pipeline import train_run
        base = dict(dataset="wikiart7", mode="off_the_shelf", n_per_class=a.n, n_valid_per_class=a.nv, image_size=a.size,
                    batch_size=32, seed=0, eval_splits=["valid"], progress=False)
        run = lambda name, **kw: train_run(base, run_dir=os.path.join(tmp, name), **kw)
        naive = run("naive", cached=False, epochs=a.naive_epochs)
        first = run("cached_first", cached=True, epochs=a.epochs)
        again = run("cached_again", cached=True, epochs=a.epochs, lr_head=2e-2)
        same = run("cached_same_epochs", cached=True, epochs=a.naive_epochs)
    finally: shutil.rmtree(tmp, ignore_errors=True)
    naive_20 = naive["train_seconds"] * a.epochs / a.naive_epochs
    C.emit("cached_probe", dict(
        bench="cached_probe", ratio=round(first["train_seconds"] / naive_20, 3), target="<= 0.1",
        ratio_features_reused=round(again["train_seconds"] / naive_20, 3),
        seconds=dict(naive_measured=naive["train_seconds"], naive_epochs_measured=a.naive_epochs,
                     naive_extrapolated=round(naive_20, 1), cached_incl_feature_pass=first["train_seconds"],
                     cached_features_reused=again["train_seconds"]),
        extrapolated=f"naive {a.epochs}-epoch time = measured {a.naive_epochs} epochs x {a.epochs / a.naive_epochs:g}",
        valid_top1={f"naive_{a.naive_epochs}ep": naive["valid_top1"], f"cached_{a.naive_epochs}ep": same["valid_top1"],
                    f"cached_{a.epochs}ep": first["valid_top1"], f"cached_{a.epochs}ep_lr2e-2": again["valid_top1"]},
        n_train=naive["n_train"], n_valid=7 * a.nv, valid_top1_se=round((0.25 / (7 * a.nv)) ** 0.5, 3),
        size=a.size, epochs=a.epochs, device="cpu", loadavg_before=load0, loadavg_after=C.loadavg(), machine=C.machine()))

if __name__ == "__main__": main()
