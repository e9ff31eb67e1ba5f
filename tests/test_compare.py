"Tests of artstudy.compare: the BN control against hand statistics, `compare` on real checkpoints, and its safe cache."
import numpy as np, pytest, torch
from artstudy.compare import compare, recalibrate_bn

# ---------------------------------------------------------------- BN control
def test_recalibrate_bn_matches_hand_statistics():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Dropout(0.9), torch.nn.BatchNorm2d(4),
                              torch.nn.ReLU(), torch.nn.Conv2d(4, 2, 1), torch.nn.BatchNorm2d(2)).train()
    w0 = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.randn(20, 3, 8, 8) * 3 + 1
    batches = list(x.split(4))                         # equal batches: the cumulative average = the pooled mean
    recalibrate_bn(net, [(b, 0) for b in batches])
    with torch.no_grad():
        z = net[0](x)                                  # dropout off: eval mode for everything but BN
        m1 = torch.stack([net[0](b).mean((0, 2, 3)) for b in batches]).mean(0)
        v1 = torch.stack([net[0](b).transpose(0, 1).flatten(1).var(1, unbiased=True) for b in batches]).mean(0)
        h = [((net[0](b) - net[0](b).mean((0, 2, 3), keepdim=True)) /
              (net[0](b).var((0, 2, 3), unbiased=False, keepdim=True) + 1e-5).sqrt() * net[2].weight[:, None, None]
              + net[2].bias[:, None, None]).relu() for b in batches]
        m2 = torch.stack([net[4](t).mean((0, 2, 3)) for t in h]).mean(0)
    torch.testing.assert_close(net[2].running_mean, z.mean((0, 2, 3)), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(net[2].running_mean, m1); torch.testing.assert_close(net[2].running_var, v1)
    torch.testing.assert_close(net[5].running_mean, m2, rtol=1e-5, atol=1e-5)
    for k, v in net.state_dict().items():
        if not k.split(".")[-1].startswith(("running", "num_batches")): assert torch.equal(v, w0[k]), k
    assert net.training and net[2].momentum == 0.1

def test_compare_bad_inputs(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"): compare(tmp_path / "nope", tmp_path / "nope2", "wikiart7")

# ---------------------------------------------------------------- real data
def test_compare_real_data_self(tmp_path):
    from artstudy.models import create_backbone, save_checkpoint
    m = create_backbone("efficientnet_lite0", pretrained=True, num_classes=None)
    run = tmp_path / "run"; run.mkdir()
    save_checkpoint(m, run / "model.pth"); save_checkpoint(m, run / "init.pth")
    kw = dict(k=8, n_images=32, size=64, bs=16, progress=False, control=True, n_calib=24, n_perm=20, spatial=2)
    res = compare("init", run, "wikiart7", **kw)
    lay = res["layers"]
    np.testing.assert_allclose(lay.cka, 1.0, atol=1e-6)
    np.testing.assert_allclose(lay.cka_spatial, 1.0, atol=1e-6)
    assert (lay.n_images == 32).all() and (lay.k == 8).all()
    np.testing.assert_allclose(lay.cka_ctrl_b, lay.cka_a_ctrl, atol=1e-9)       # A and B are the same model
    assert (lay.cka_a_ctrl < 0.999).any()                                     # BN recalibration alone moves features
    assert (lay.entropy_change == 0).all() and (lay.entropy_p == 1).all()
    live = lay.dead_a < lay.n_channels
    np.testing.assert_allclose(lay.mean_overlap[live], 1.0)
    assert (lay.frobenius == 0).all()
    assert len(res["files"]) == 32 and res["topk"][lay.layer[0]]["a"].shape[1] == 8
    cached = list((run / "analysis").glob("*.npz"))
    assert len(cached) == 1 and cached[0].with_suffix(".json").is_file()
    again = compare(run / "init", run, "wikiart7", **kw)
    assert again["key"] == res["key"] and again["meta"]["seconds"] == res["meta"]["seconds"]   # read from cache

# ---------------------------------------------------------------- safe cache
class _Boom:
    "A pickle payload that leaves a marker file when unpickled."
    def __init__(self, path): self.path = path
    def __reduce__(self): return (open, (self.path, "w"))

def test_planted_pickle_is_never_unpickled_and_bad_cache_recomputes(tmp_path):
    import pickle, warnings
    from artstudy.models import create_backbone, save_checkpoint
    m = create_backbone("efficientnet_lite0", pretrained=False, num_classes=7)
    run = tmp_path / "run"; run.mkdir(); save_checkpoint(m, run / "model.pth"); save_checkpoint(m, run / "init.pth")
    kw = dict(k=4, n_images=12, size=32, bs=6, progress=False, n_perm=10)
    first = compare("init", run, "wikiart7", **kw)
    marker = tmp_path / "pwned"
    npz = run / "analysis" / f"{first['key']}.npz"
    npz.unlink()
    (run / "analysis" / f"{first['key']}.pkl").write_bytes(pickle.dumps(_Boom(str(marker))))
    second = compare("init", run, "wikiart7", **kw)
    assert not marker.exists() and npz.is_file() and second["meta"]["seconds"] != first["meta"]["seconds"]
    npz.write_bytes(b"PK\x03\x04 not a zip")       # tampered: ignored with a warning, recomputed
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always"); third = compare("init", run, "wikiart7", **kw)
    assert any("unreadable analysis cache" in str(x.message) for x in w)
    pd_equal = lambda a, b: np.testing.assert_allclose(a.cka.to_numpy(), b.cka.to_numpy())
    pd_equal(third["layers"], first["layers"])
    assert compare("init", run, "wikiart7", **kw)["meta"]["seconds"] == third["meta"]["seconds"]   # now a cache hit

# ---------------------------------------------------------------- domain features at the entry's defaults
def test_imagenet_features_from_an_empty_store_with_default_arguments(tmp_path, monkeypatch):
    "An entry point fills size and batch size from settings: a fresh feature store computes, a second call reads it back."
    from artstudy.compare import imagenet_features
    from artstudy.data import load_dataset, synthetic_dataset
    from artstudy.models import create_backbone
    monkeypatch.setenv("ARTSTUDY_CACHE_DIR", str(tmp_path / "cache")); monkeypatch.setenv("ARTSTUDY_IMAGE_SIZE", "32")
    ds = load_dataset(synthetic_dataset(tmp_path / "sq", n_per_class=4, size=32))
    net = create_backbone("efficientnet_lite0", pretrained=False).eval()
    x, y = imagenet_features(ds, "train", model=net)
    assert x.shape == (len(y), 1280) and len(y) == (ds.df.split == "train").sum()
    assert torch.equal(imagenet_features(ds, "train", model=net)[0], x)

# ---------------------------------------------------------------- the columns, named once
import ast, json
from pathlib import Path
from artstudy.compare import CHANNEL_METRICS, LAYER_COLUMNS, LAYER_KEYS, Columns, analysis_pass, random_control_model, _tables

ROOT = Path(__file__).resolve().parents[1]

def test_every_column_compare_makes_is_registered_and_every_registered_one_is_made():
    "With every control, spatial CKA and the jackknife on: the tables' columns are exactly the registered ones."
    import copy, timm
    torch.manual_seed(0)
    a, b = (timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=4).eval() for _ in range(2))
    g = torch.Generator().manual_seed(0)
    xs, ys = 2 * torch.rand(24, 3, 32, 32, generator=g) + 1, torch.arange(24) % 4
    dl = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(xs, ys), batch_size=8)
    ctl = {"ctrl": recalibrate_bn(copy.deepcopy(a), dl), "rand": random_control_model(a, b, dl, seed=1)}
    lyrs = ["blocks.1", "conv_head"]
    t = _tables(a, b, analysis_pass(a, b, dl, lyrs, k=3, progress=False, controls=ctl, spatial=2, extra=8), lyrs, 3, 4,
                n_perm=5, groups=3)
    made = set(t["layers"].columns) | set(t["jackknife"].columns)
    assert made == set(LAYER_COLUMNS) | set(LAYER_KEYS), (made ^ (set(LAYER_COLUMNS) | set(LAYER_KEYS)))
    assert set(t["channels"].metric) == set(CHANNEL_METRICS)
    assert all(c.meaning and c.unit for c in LAYER_COLUMNS.values()) and all(c.unit for c in CHANNEL_METRICS.values())

def test_an_unregistered_column_is_refused():
    from artstudy.compare import _registered
    cols = Columns(); cols.register("x", "a thing", "units")
    assert cols.x == "x" and cols["x"].unit == "units"
    with pytest.raises(AttributeError, match="no registered column 'y'"): cols.y
    with pytest.raises(ValueError, match="already registered"): cols.register("x", "again")
    import pandas as pd
    with pytest.raises(ValueError, match=r"unregistered columns \['y'\]"): _registered(pd.DataFrame(dict(x=[1], y=[2])), "layers", cols)

def _strings(tree):
    "String constants of a module or cell, but a finding's `unit=` label (its own word, not a column)."
    skip = {id(k.value) for k in ast.walk(tree) if isinstance(k, ast.keyword) and k.arg == "unit"}
    return [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str) and id(n) not in skip]

@pytest.mark.parametrize("where", ["artstudy/findings.py", "artstudy/report.py", "artstudy/explorer.py", "artstudy/featvis.py",
                                   "nbs/experiments/report.ipynb"])
def test_no_module_spells_compares_column_names(where):
    "Findings, report, explorer and featvis import the names from `compare` instead of writing them as strings."
    p = ROOT / where
    srcs = ([p.read_text()] if p.suffix == ".py" else
            ["".join(c["source"]) for c in json.loads(p.read_text())["cells"] if c["cell_type"] == "code"])
    names = set(LAYER_COLUMNS) | set(CHANNEL_METRICS)
    spelt = sorted({s for src in srcs for s in _strings(ast.parse(src)) if s in names})
    assert not spelt, f"{where} spells {spelt}: use compare.LAYER_COLUMNS / CHANNEL_METRICS"
