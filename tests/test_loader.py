"""The batch data path (`CachedImages`, `FastBatchTfm`: one read per batch) against the per-item path (`ImageItems`,
`BatchTfm`), on CPU: the same batches bit for bit at the same seed, the same augmentation statistics at other seeds, the
same training; and the warning for images far smaller than the cache size."""
import warnings
import numpy as np, pytest, torch
from PIL import Image
from scipy import stats as sps

import artstudy.data as D
from artstudy.config import dataset_path, seed_everything
from artstudy.data import eval_loader, item_dls, load_dataset, make_dls, subset, synthetic_dataset

@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("ARTSTUDY_CACHE_DIR", str(tmp_path_factory.getbasetemp()/"cache"))

def _has(name):
    try: dataset_path(name); return True
    except FileNotFoundError: return False

needs_data = pytest.mark.skipif(not (_has("wikiart7") and _has("pacs_art")), reason="shared data not available")
STATS = ((.5,) * 3, (.5,) * 3)

@pytest.fixture(scope="module")
def wk():
    "wikiart7: 6 train, 3 valid images per class (42 + 21), known good (not decoded here)."
    return subset(load_dataset("wikiart7", validate=False), n_per_class={"train": 6, "valid": 3, "test": 0}, seed=0)

def _pairs(a, b):
    "Batches of two loaders side by side; they must have the same number."
    a, b = list(a), list(b)
    assert len(a) == len(b) > 0
    return zip(a, b)

# ---------------------------------------------------------------- same seed: the same batches, bit for bit
@needs_data
def test_same_seed_gives_bit_identical_batches(wk):
    "Training (shuffled, augmented, two epochs: the shuffle and the draws move on) and validation batches, both paths."
    kw = dict(size=40, bs=8, stats=STATS, seed=5, device="cpu")
    items, whole = make_dls(wk, batch=False, num_workers=0, **kw), make_dls(wk, num_workers=2, **kw)   # workers: ignored
    assert (items.data_path, whole.data_path) == ("items", "batch")
    assert type(whole.train.dataset).__name__ == "CachedImages" and whole.train.fake_l.num_workers == 0
    for epoch in range(2):
        for (xi, yi), (xw, yw) in _pairs(items.train, whole.train):
            assert torch.equal(xi, xw) and torch.equal(yi, yw) and type(xi) is type(xw) and type(yi) is type(yw)
            assert xw.is_contiguous(memory_format=torch.channels_last)        # the memory the CPU fast path wants
    for (xi, yi), (xw, yw) in _pairs(items.valid, whole.valid): assert torch.equal(xi, xw) and torch.equal(yi, yw)
    # today's run default reads items in 2 worker processes: the same batches again
    for (xi, _), (xw, _) in _pairs(make_dls(wk, batch=False, num_workers=2, **kw).train, make_dls(wk, **kw).train):
        assert torch.equal(xi, xw)

@needs_data
def test_resident_split_equals_the_memmap_reads(wk):
    "A split kept on the device (forced here on the CPU, where `keep_resident` never keeps it) gives the same batches."
    kw = dict(size=40, bs=8, stats=STATS, seed=2, device="cpu")
    res = make_dls(wk, resident=True, **kw)
    assert res.data_path == "batch-resident" and make_dls(wk, **kw).data_path == "batch" and not D.keep_resident(1, "cpu")
    for (xr, yr), (xm, ym) in _pairs(res.train, make_dls(wk, **kw).train): assert torch.equal(xr, xm) and torch.equal(yr, ym)
    for (xr, _), (xm, _) in _pairs(res.valid, make_dls(wk, **kw).valid): assert torch.equal(xr, xm)

@needs_data
def test_eval_loader_reads_batches_in_file_order(wk):
    for split, bs in (("valid", 8), (None, 13)):
        a, b = eval_loader(wk, split, size=40, bs=bs, stats=STATS), eval_loader(wk, split, size=40, bs=bs, stats=STATS, batch=False)
        assert type(a.dataset).__name__ == "CachedImages" and len(a) == len(b) and len(a.dataset) == len(b.dataset)
        for (xa, ya), (xb, yb) in _pairs(a, b): assert torch.equal(xa, xb) and torch.equal(ya, yb) and xa.is_contiguous()

def test_batch_reads_sort_rows_and_carry_the_permutation(tmp_path):
    "One read in cache order; `src` puts the requested order back; a list index reads a batch, an int an item."
    arr = np.arange(10, dtype=np.uint8)[:, None, None, None] * np.ones((1, 4, 4, 3), np.uint8)
    np.save(tmp_path/"c.npy", arr)
    imgs = D.CachedImages(np.arange(5) * 10, tmp_path/"c.npy", idxs=[1, 3, 5, 7, 9], size=4)
    x, y, src = imgs.batch([4, 0, 2])
    assert x[:, 0, 0, 0].tolist() == [1, 5, 9] and y.tolist() == [40, 0, 20]          # rows read in cache order
    assert x[src][:, 0, 0, 0].tolist() == [9, 1, 5]                                    # back in the asked order
    assert imgs.batch([0, 2, 3])[2] is None and int(imgs[3][0][0, 0, 0]) == 7 and len(imgs[[1, 2]][0]) == 2

# ---------------------------------------------------------------- other seeds: the same augmentation statistics
S, P = 32, 2   # images of 32 px: shifts of round(32/16) = 2 px at most

def _coordinates(tmp_path, n=64):
    "A cache of n images whose red channel is 8·row and green 8·column: every output pixel says where it came from."
    r, c = np.meshgrid(np.arange(S) * 8, np.arange(S) * 8, indexing="ij")
    img = np.stack([r, c, np.full_like(r, 128)], -1).astype(np.uint8)
    np.save(tmp_path/"coords.npy", np.repeat(img[None], n, 0))
    return D.ImageItems(np.arange(n) % 3, npy=str(tmp_path/"coords.npy"), idxs=np.arange(n), size=S, vocab=["a", "b", "c"])

def _draws(dl, epochs):
    "(dy, dx, flip) of every image served in `epochs`, read back from the pixels (stats (0,1): x = value/255)."
    out = []
    for _ in range(epochs):
        for x, _ in dl:
            v = (x * 255).round().long()
            rows, cols = v[:, 0, :, S // 2] // 8, v[:, 1, S // 2, :] // 8    # (B,S): the source row / column of each
            flip = cols[:, S // 2 + 1] < cols[:, S // 2]
            dy, dx = rows[:, S // 2] - S // 2, cols[:, S // 2] - torch.where(flip, S // 2 - 1, S // 2)
            i = torch.arange(S)                                               # every pixel: that shift and flip, exactly
            want = D._reflect(i + dx[:, None], S)
            assert torch.equal(rows, D._reflect(i + dy[:, None], S)) and torch.equal(cols, torch.where(flip[:, None], want.flip(1), want))
            assert (v[:, 0] == 8 * rows[:, :, None]).all() and (v[:, 1] == 8 * cols[:, None, :]).all() and (v[:, 2] == 128).all()
            out.append(torch.stack([dy, dx, flip.long()], 1))
    return torch.cat(out).numpy()

def test_augmentation_statistics_match_the_per_item_path(tmp_path):
    """Shifts uniform on [-2, 2] on both axes, flips at p = 0.5, the two paths' distributions alike (chi-square at other
    seeds, fixed, so the test is deterministic), every image an exact shift/flip of its source, and equal draws at one seed."""
    items = _coordinates(tmp_path)
    kw = dict(bs=16, stats=((0.,) * 3, (1.,) * 3), device="cpu")
    per_item = _draws(item_dls(items, items, seed=11, batch=False, **kw).train, 30)
    batched = _draws(item_dls(items, items, seed=12, **kw).train, 30)
    assert len(per_item) == len(batched) == 64 * 30
    for d in (per_item, batched):
        assert set(np.unique(d[:, :2])) == set(range(-P, P + 1))
        for axis in (0, 1): assert sps.chisquare(np.bincount(d[:, axis] + P, minlength=2 * P + 1)).pvalue > 1e-3
        assert abs(d[:, 2].mean() - 0.5) < 4 * np.sqrt(0.25 / len(d))
    for col in (0, 1, 2):
        table = np.stack([np.bincount(d[:, col] - d[:, col].min() if col == 2 else d[:, col] + P) for d in (per_item, batched)])
        assert sps.chi2_contingency(table).pvalue > 1e-3
    same = _draws(item_dls(items, items, seed=12, batch=False, **kw).train, 30)
    assert np.array_equal(same, batched)                                   # same seed: the same draws, image by image

@needs_data
def test_normalised_pixel_statistics_match(wk):
    "Per-channel mean and std over an epoch of augmented training batches: per-item (seed 1) vs batch path (seed 2)."
    def moments(dls):
        x = torch.cat([xb for xb, _ in dls.train]).as_subclass(torch.Tensor)
        return x.mean((0, 2, 3)), x.std((0, 2, 3))
    kw = dict(size=40, bs=6, stats=D.IMAGENET_STATS, device="cpu")
    (m1, s1), (m2, s2) = moments(make_dls(wk, batch=False, seed=1, **kw)), moments(make_dls(wk, seed=2, **kw))
    assert torch.allclose(m1, m2, atol=0.02) and torch.allclose(s1, s2, atol=0.02), (m1, m2, s1, s2)

# ---------------------------------------------------------------- training
@needs_data
def test_training_on_the_batch_path_lowers_the_loss_as_the_per_item_path_does():
    """pacs_art, 4 training images per class at 64 px, 3 epochs of Mode A: the loss on those images (a plain eval loop,
    no training code) falls well below its start, and the per-item path at the same seed trains to the same weights
    (CPU: the same batches, the same arithmetic)."""
    from artstudy.train import build_learner, fit_mode
    ds = subset(load_dataset("pacs_art", validate=False), n_per_class={"train": 4, "valid": 2, "test": 0}, seed=0)
    dl = eval_loader(ds, "train", size=64, bs=28, stats=STATS, batch=False)
    def loss(model):
        with torch.no_grad(): return np.mean([torch.nn.functional.cross_entropy(model.eval()(x), y).item() for x, y in dl])
    def train(batch):
        seed_everything(0)
        learn = build_learner(make_dls(ds, size=64, bs=7, stats=STATS, seed=0, device="cpu", batch=batch),
                              "efficientnet_lite0", "mode_a")
        before = loss(learn.model)
        with learn.no_bar(), learn.no_logging(): fit_mode(learn, 3)
        return before, loss(learn.model), learn
    b0, b1, whole = train(True)
    assert whole.dls.data_path == "batch" and b1 < 0.6 * b0, (b0, b1)
    i0, i1, items = train(False)
    assert items.dls.data_path == "items" and (i0, i1) == (b0, b1)
    assert [float(l) for l in whole.recorder.losses] == [float(l) for l in items.recorder.losses]
    assert all(torch.equal(p, q) for p, q in zip(whole.model.state_dict().values(), items.model.state_dict().values()))

# ---------------------------------------------------------------- tiny images (issue 23)
def _with_a_dot(tmp_path):
    "A toy dataset whose first image is a 1×1 PNG."
    root = synthetic_dataset(tmp_path/"toy", n_per_class=4, size=32)
    Image.new("RGB", (1, 1), (220, 40, 40)).save(root/"images/red/red_000.png")
    return load_dataset(root)

def test_a_tiny_image_is_named_once_when_the_cache_is_built(tmp_path):
    ds = _with_a_dot(tmp_path)
    with pytest.warns(UserWarning) as rec: D.image_cache(ds, 16)
    tiny = [str(w.message) for w in rec if "upscaled" in str(w.message)]
    assert len(tiny) == 1 and "1 image(s) of 'toy'" in tiny[0] and "red_000.png (1×1 px)" in tiny[0]
    assert "red_001.png" not in tiny[0] and "below 25% of 16 px" in tiny[0]
    with warnings.catch_warnings(record=True) as again:                    # a cache hit decodes nothing: quiet
        warnings.simplefilter("always"); D.image_cache(ds, 16); make_dls(ds, size=16, bs=4, device="cpu")
    assert not [w for w in again if "upscaled" in str(w.message)]
    with warnings.catch_warnings(record=True) as other:                    # 32 px images at 64 px: 2×, not tiny
        warnings.simplefilter("always"); D.image_cache(D.subset(ds, classes=["green", "blue"]), 64)
    assert not [w for w in other if "upscaled" in str(w.message)]

def test_a_tiny_image_decoded_on_the_fly_is_named_once(tmp_path):
    ds = _with_a_dot(tmp_path)
    items = D._items(ds, None, 16, "bilinear", cache=False)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        for _ in range(2): [items[i] for i in range(len(items))]
    tiny = [str(w.message) for w in rec if "upscaled" in str(w.message)]
    assert len(tiny) == 1 and "red_000.png (1×1 px)" in tiny[0]
