"Tests of artstudy.activations and artstudy.metrics against independent references (NumPy, SciPy, slow loops)."
import importlib, itertools, math
import numpy as np, pytest, torch
import timm
from scipy.optimize import linprog
from artstudy.activations import Hooks, stream_activations
from artstudy.metrics import (CKAAccumulator, TopK, class_entropy, compare, dead_kernels, domain_distance,
                              filter_correlation, frobenius_change, linear_cka, relative_change, topk_overlap,
                              weight_changes)

LAYERS = [f"blocks.{i}" for i in range(7)] + ["conv_head"]

def _lite0(seed=0):
    torch.manual_seed(seed)
    return timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=7).eval()

def _loader(n=12, size=32, bs=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    ds = torch.utils.data.TensorDataset(torch.randn(n, 3, size, size, generator=g), torch.arange(n) % 7)
    return torch.utils.data.DataLoader(ds, batch_size=bs)

# ---------------------------------------------------------------- CKA
def _cka_numpy(X, Y):
    "Kernel (HSIC) form of linear CKA, Kornblith et al. 2019, eq. in terms of n x n Gram matrices."
    X, Y = np.asarray(X, np.float64), np.asarray(Y, np.float64)
    n = len(X); H = np.eye(n) - np.ones((n, n)) / n
    K, L = H @ X @ X.T @ H, H @ Y @ Y.T @ H
    return np.sum(K * L) / np.sqrt(np.sum(K * K) * np.sum(L * L))

@pytest.mark.parametrize("n,c1,c2", [(30, 5, 7), (10, 40, 3), (200, 16, 16)])
def test_cka_matches_numpy(n, c1, c2):
    rng = np.random.default_rng(n)
    X = rng.normal(size=(n, c1)); Y = X[:, :1] @ rng.normal(size=(1, c2)) + rng.normal(size=(n, c2))
    assert linear_cka(X, Y) == pytest.approx(_cka_numpy(X, Y), rel=1e-10)
    assert linear_cka(torch.tensor(X, dtype=torch.float32), torch.tensor(Y, dtype=torch.float32)) == \
        pytest.approx(_cka_numpy(X, Y), rel=1e-5)

def test_cka_invariances():
    rng = np.random.default_rng(1)
    X, Y = rng.normal(size=(50, 10)), rng.normal(size=(50, 6))
    Q, _ = np.linalg.qr(rng.normal(size=(10, 10)))
    assert linear_cka(X, X) == pytest.approx(1.0, abs=1e-12)
    assert linear_cka(X @ Q, Y) == pytest.approx(linear_cka(X, Y), rel=1e-10)
    assert linear_cka(7.5 * X, Y) == pytest.approx(linear_cka(X, Y), rel=1e-10)
    assert linear_cka(X, Y) < 0.5

def test_cka_accumulator_equals_one_shot():
    rng = np.random.default_rng(2)
    X = rng.normal(size=(97, 12)) * 3 + 50; Y = np.tanh(X[:, :8]) + rng.normal(size=(97, 8)) * 0.1
    acc, i = CKAAccumulator(), 0
    for b in [1, 10, 3, 33, 50]:
        acc.update(torch.tensor(X[i:i+b]), torch.tensor(Y[i:i+b])); i += b
    assert acc.n == 97
    assert acc.value() == pytest.approx(_cka_numpy(X, Y), rel=1e-9)

def test_cka_bad_inputs():
    with pytest.raises(ValueError, match="same n"): linear_cka(np.zeros((4, 2)), np.zeros((5, 2)))
    with pytest.raises(ValueError): CKAAccumulator().update(torch.zeros(4, 2), torch.zeros(3, 2))
    assert math.isnan(CKAAccumulator().value())

# ---------------------------------------------------------------- top-k, overlap, entropy
def test_streaming_topk_equals_full_sort():
    g = torch.Generator().manual_seed(3)
    S = torch.randn(57, 9, generator=g); S[:, 4] = -S[:, 4].abs()   # channel 4 never positive
    S[:50, 5] = -1.                                                   # channel 5: only 7 positives
    tk = TopK(k=10)
    for i in range(0, 57, 8): tk.update(S[i:i+8])
    idx, val = tk.result()
    assert idx.shape == (9, 10)
    for c in range(9):
        order = [i for i in sorted(range(57), key=lambda i: -S[i, c].item()) if S[i, c] > 0][:10]
        assert idx[c][idx[c] >= 0].tolist() == order
    assert dead_kernels(tk).tolist() == [c == 4 for c in range(9)]
    assert (idx[5] >= 0).sum() == (S[:, 5] > 0).sum() < 10
    assert tk.n_positive.tolist() == (S > 0).sum(0).tolist()

def test_overlap_against_sets():
    rng = np.random.default_rng(4)
    a = np.stack([rng.permutation(30)[:10] for _ in range(6)]); b = np.stack([rng.permutation(30)[:10] for _ in range(6)])
    ref = [len(set(x) & set(y)) / 10 for x, y in zip(a, b)]
    np.testing.assert_allclose(topk_overlap(a, b, 10).numpy(), ref)
    np.testing.assert_allclose(topk_overlap(a, b).numpy(), ref)
    np.testing.assert_allclose(topk_overlap(a, a).numpy(), 1.0)
    with pytest.raises(ValueError, match="mismatch"): topk_overlap(a, b[:3])

def test_class_entropy():
    labels = np.repeat(np.arange(5), 4)           # 5 classes x 4 images
    pure = [[0, 1, 2, 3]]; uniform = [[0, 4, 8, 12, 16]]
    assert class_entropy(pure, labels, 5).item() == pytest.approx(0.0)
    assert class_entropy(uniform, labels, 5).item() == pytest.approx(1.0)
    rng = np.random.default_rng(5)
    idx = np.stack([rng.permutation(20)[:8] for _ in range(4)]); idx[1, 5:] = -1
    for c, row in enumerate(idx):   # slow reference
        labs = [labels[i] for i in row if i >= 0]
        p = np.bincount(labs, minlength=5) / len(labs)
        ref = -sum(q * math.log2(q) for q in p if q > 0) / math.log2(5)
        assert class_entropy(idx, labels, 5)[c].item() == pytest.approx(ref)
    assert math.isnan(class_entropy([[-1, -1]], labels, 5).item())

# ---------------------------------------------------------------- weights
def test_relative_change_and_frobenius():
    w0 = torch.randn(6, 4, 3, 3)
    assert relative_change(w0, w0.clone()).abs().max() == 0
    w1 = w0.clone(); w1[2] *= 2
    ref = [(w1[k] - w0[k]).abs().mean() / w0[k].abs().mean() for k in range(6)]
    torch.testing.assert_close(relative_change(w0, w1), torch.stack(ref))
    assert relative_change(w0, w1)[2].item() == pytest.approx(1.0)
    d, r = frobenius_change(w0, w1)
    assert d == pytest.approx(float(np.linalg.norm(w0[2].numpy())), rel=1e-5)
    assert r == pytest.approx(d / float(np.linalg.norm(w0.numpy())), rel=1e-5)
    c = filter_correlation(w0, w1 + torch.randn_like(w1) * 0.01)
    ref = [np.corrcoef(w0[k].flatten(), (w1 + 0)[k].flatten())[0, 1] for k in range(6)]
    np.testing.assert_allclose(c.numpy(), ref, atol=1e-3)
    with pytest.raises(ValueError, match="shape"): relative_change(w0, w0[:3])

def test_weight_changes_tables():
    m0, m1 = _lite0(0), _lite0(1)
    tidy, summ = weight_changes(m0.state_dict(), m1.state_dict())
    n_convs = sum(isinstance(m, torch.nn.Conv2d) for m in m0.modules())
    assert len(summ) == n_convs and summ.depth.is_monotonic_increasing
    assert set(tidy.columns) >= {"layer", "channel", "metric", "value"}
    assert (summ.relative_frobenius > 0.5).all()
    _, same = weight_changes(m0, m0)
    assert (same.frobenius == 0).all() and (same.mean_relative_change == 0).all()

# ---------------------------------------------------------------- domain distance
def _emd_linprog(a, wa, b, wb):
    M = np.linalg.norm(a[:, None] - b[None], axis=-1); m, n = M.shape
    A_eq = np.vstack([np.kron(np.eye(m), np.ones(n)), np.kron(np.ones(m), np.eye(n))])
    r = linprog(M.ravel(), A_eq=A_eq, b_eq=np.concatenate([wa, wb]), bounds=(0, None), method="highs")
    return r.fun

def test_domain_distance():
    rng = np.random.default_rng(6)
    fs, ls = rng.normal(size=(80, 4)), rng.choice(5, 80, p=[.4, .3, .1, .1, .1])
    ft, lt = rng.normal(size=(50, 4)) + 0.5, rng.integers(0, 3, 50)
    assert domain_distance(fs, ls, fs, ls)[0] == pytest.approx(0.0, abs=1e-9)
    d_st, sim = domain_distance(fs, ls, ft, lt)
    assert domain_distance(ft, lt, fs, ls)[0] == pytest.approx(d_st, rel=1e-9)
    assert sim == pytest.approx(math.exp(-0.01 * d_st))
    ms = np.stack([fs[ls == c].mean(0) for c in range(5)]); ws = np.bincount(ls) / 80
    mt = np.stack([ft[lt == c].mean(0) for c in range(3)]); wt = np.bincount(lt) / 50
    assert d_st == pytest.approx(_emd_linprog(ms, ws, mt, wt), rel=1e-6)
    # equal uniform weights: EMD = min over permutations of the mean matched distance
    a, b = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
    brute = min(np.mean([np.linalg.norm(a[i] - b[p[i]]) for i in range(4)]) for p in itertools.permutations(range(4)))
    assert domain_distance(a, np.arange(4), b, np.arange(4))[0] == pytest.approx(brute, rel=1e-9)

# ---------------------------------------------------------------- hooks and streaming
def test_stream_two_models_equals_two_passes():
    a, b = _lite0(0), _lite0(1).train()
    keys = list(b.state_dict())
    both = list(stream_activations({"a": a, "b": b}, _loader(), LAYERS, progress=False))
    sa = list(stream_activations(a, _loader(), LAYERS, progress=False))
    sb = list(stream_activations(b, _loader(), LAYERS, progress=False))
    assert len(both) == len(sa) == 3
    for (ab, y), (x1, y1), (x2, _) in zip(both, sa, sb):
        assert torch.equal(y, y1)
        for l in LAYERS:
            for j in range(2):
                torch.testing.assert_close(ab["a"][l][j], x1["a"][l][j])
                torch.testing.assert_close(ab["b"][l][j], x2["a"][l][j])
    assert b.training and not a.training
    assert list(b.state_dict()) == keys
    assert all(len(m._forward_hooks) == 0 for m in [*a.modules(), *b.modules()])

def test_hook_values_match_manual_forward():
    m = _lite0(2); x = torch.randn(3, 3, 48, 48)
    with Hooks(m, ["blocks.3"]) as h, torch.inference_mode():
        m(x); gap, rm = h.read()["blocks.3"]
    with torch.inference_mode():
        f = m.blocks[:4](m.bn1(m.conv_stem(x)))
    torch.testing.assert_close(gap, f.mean((2, 3))); torch.testing.assert_close(rm, f.relu().mean((2, 3)))
    assert all(len(mod._forward_hooks) == 0 for mod in m.modules())

def test_hooks_removed_on_error_and_bad_names():
    m = _lite0()
    with pytest.raises(RuntimeError):
        with Hooks(m, LAYERS): raise RuntimeError("boom")
    assert all(len(mod._forward_hooks) == 0 for mod in m.modules())
    with pytest.raises(KeyError, match="unknown layer"): Hooks(m, ["blocks_3"])

def test_compare_bad_inputs(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"): compare(tmp_path / "nope", tmp_path / "nope2", "wikiart7")

# ---------------------------------------------------------------- real data (needs artstudy.data / artstudy.models)
def _have(mod):
    try: importlib.import_module(mod); return True
    except Exception: return False

@pytest.mark.skipif(not (_have("artstudy.data") and _have("artstudy.models")), reason="artstudy.data/models not built yet")
def test_compare_real_data_self(tmp_path):
    from artstudy.models import create_backbone, save_checkpoint
    m = create_backbone("efficientnet_lite0", pretrained=True, num_classes=None)
    run = tmp_path / "run"; run.mkdir()
    save_checkpoint(m, run / "model.pth"); save_checkpoint(m, run / "init.pth")
    res = compare("init", run, "wikiart7", k=8, n_images=32, size=64, bs=16, progress=False)
    lay = res["layers"]
    np.testing.assert_allclose(lay.cka, 1.0, atol=1e-6)
    live = lay.dead_a < lay.n_channels
    np.testing.assert_allclose(lay.mean_overlap[live], 1.0)
    assert (lay.frobenius == 0).all()
    assert len(res["files"]) == 32 and res["topk"][lay.layer[0]]["a"].shape[1] == 8
    cached = list((run / "analysis").glob("*.pkl"))
    assert len(cached) == 1 and cached[0].with_suffix(".json").is_file()
    again = compare(run / "init", run, "wikiart7", k=8, n_images=32, size=64, bs=16, progress=False)
    assert again["key"] == res["key"] and again["meta"]["seconds"] == res["meta"]["seconds"]   # read from cache
