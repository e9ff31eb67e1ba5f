"Tests of artstudy.activations and artstudy.metrics against independent references (NumPy, SciPy, slow loops)."
import itertools, math
import numpy as np, pytest, torch
import timm
from scipy.optimize import linprog
from artstudy.activations import Hooks, stream_activations
from artstudy.metrics import (CKAAccumulator, TopK, class_entropy, dead_kernels, domain_distance,
                              filter_correlation, frobenius_change, linear_cka, relative_change, topk_overlap,
                              weight_changes, gram, cka_null, overlap_null, overlap_chance, entropy_change,
                              entropy_change_null, null_summary, block_weight_change, bn_changes)

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

def _hsic_u_numpy(K, L):
    "Song et al. (2012) eq. 5, written out on uncentred Gram matrices with explicit zeroed diagonals."
    n = len(K); K, L = K.copy(), L.copy(); np.fill_diagonal(K, 0); np.fill_diagonal(L, 0)
    one = np.ones(n)
    return (np.trace(K @ L) + (one @ K @ one) * (one @ L @ one) / ((n - 1) * (n - 2))
            - 2 / (n - 2) * one @ K @ L @ one) / (n * (n - 3))

def _dcka_numpy(X, Y):
    X, Y = np.asarray(X, np.float64), np.asarray(Y, np.float64)
    K, L = X @ X.T, Y @ Y.T
    return _hsic_u_numpy(K, L) / np.sqrt(_hsic_u_numpy(K, K) * _hsic_u_numpy(L, L))

@pytest.mark.parametrize("n,c1,c2", [(30, 5, 7), (10, 40, 3), (200, 16, 16)])
def test_cka_matches_numpy(n, c1, c2):
    rng = np.random.default_rng(n)
    X = rng.normal(size=(n, c1)) + 3; Y = X[:, :1] @ rng.normal(size=(1, c2)) + rng.normal(size=(n, c2))
    assert linear_cka(X, Y, debiased=False) == pytest.approx(_cka_numpy(X, Y), rel=1e-10)
    assert linear_cka(X, Y) == pytest.approx(_dcka_numpy(X, Y), rel=1e-9, abs=1e-12)
    assert linear_cka(torch.tensor(X, dtype=torch.float32), torch.tensor(Y, dtype=torch.float32), debiased=False) == \
        pytest.approx(_cka_numpy(X, Y), rel=1e-5)

def test_debiased_cka_independent_data_and_identity():
    rng = np.random.default_rng(11)
    n, c = 150, 200                                      # dimension comparable to n, as bn2 (1,280) on 350 images
    vals = [(linear_cka(rng.normal(size=(n, c)), rng.normal(size=(n, c))),
             linear_cka(rng.normal(size=(n, c)), rng.normal(size=(n, c)), debiased=False)) for _ in range(5)]
    d, b = np.array(vals).T
    assert np.abs(d).max() < 0.03 and b.min() > 0.4
    X = rng.normal(size=(n, c))
    assert linear_cka(X, X) == pytest.approx(1.0, abs=1e-12)
    Q, _ = np.linalg.qr(rng.normal(size=(c, c)))
    Y = rng.normal(size=(n, 30)) + X[:, :30]
    assert linear_cka(4.2 * X @ Q - 1, Y) == pytest.approx(linear_cka(X, Y), rel=1e-9)
    with pytest.raises(ValueError, match="at least 4"): linear_cka(X[:3], X[:3])

def test_cka_permutation_null_matches_shuffled_pairings():
    rng = np.random.default_rng(12)
    X = rng.normal(size=(40, 30)); Y = X[:, :10] + rng.normal(size=(40, 10))
    null = cka_null(gram(X), gram(Y), n_perm=5, seed=3)
    g = torch.Generator().manual_seed(3)
    ref = [_dcka_numpy(X, Y[torch.randperm(40, generator=g).numpy()]) for _ in range(5)]  # pair X_i with Y_p(i)
    np.testing.assert_allclose(null, ref, atol=1e-5)       # the permuted product runs in float32
    big = cka_null(gram(X), gram(Y), n_perm=300)
    assert abs(big.mean()) < 0.02 and linear_cka(X, Y) > np.quantile(big, 0.95)

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

# ---------------------------------------------------------------- nulls
def test_overlap_null_against_hypergeometric():
    from scipy.stats import hypergeom
    rng = np.random.default_rng(13); N, k, C = 300, 30, 40
    a = np.stack([rng.permutation(N)[:k] for _ in range(C)]); b = np.stack([rng.permutation(N)[:k] for _ in range(C)])
    null = overlap_null(a, b, N, n_perm=400)
    assert overlap_chance(a, b, N) == pytest.approx(k / N)
    h = hypergeom(N, k, k)                         # |A ∩ π(B)| for one channel, independent channels
    assert null.mean() == pytest.approx(h.mean() / k, abs=0.005)
    assert null.std() == pytest.approx(h.std() / k / math.sqrt(C), rel=0.25)
    b[3, 20:] = -1; a[5] = -1                       # a short set and an empty one
    g = torch.Generator().manual_seed(7); few = overlap_null(a, b, N, n_perm=3, seed=7)
    for v in few:                                    # brute force with Python sets, the same permutations
        p = torch.randperm(N, generator=g).numpy()
        ref = [len(set(x[x >= 0]) & set(p[y[y >= 0]])) / max((x >= 0).sum(), (y >= 0).sum()) for x, y in zip(a, b)]
        assert v == pytest.approx(np.mean(ref))
    s = null_summary(1.0, null)                      # identical sets: far above chance
    assert s["p"] == pytest.approx(1 / 401) and s["q05"] < k / N < s["q95"]

def test_entropy_change_and_label_null():
    rng = np.random.default_rng(14); N, k, C = 120, 12, 30
    labels = rng.integers(0, 3, N)
    a = np.stack([rng.permutation(N)[:k] for _ in range(C)]); b = np.stack([rng.permutation(N)[:k] for _ in range(C)])
    def slow_h(rows):                                 # slow reference entropy per row
        out = []
        for r in rows:
            p = np.bincount(labels[r], minlength=3) / len(r)
            out.append(-sum(q * math.log2(q) for q in p if q > 0) / math.log2(3))
        return np.mean(out)
    assert entropy_change(a, b, labels, 3) == pytest.approx(slow_h(b) - slow_h(a))
    null = entropy_change_null(a, b, labels, 3, n_perm=300, seed=1)
    assert abs(np.median(null)) < 0.02
    pure = np.stack([np.flatnonzero(labels == c % 3)[:k] for c in range(C)])
    assert null_summary(entropy_change(a, pure, labels, 3), null, "two-sided")["p"] < 0.01
    # brute-force permutation p-value on a tiny null
    assert null_summary(0.5, [0.1, 0.6, 0.7, 0.2], "greater")["p"] == pytest.approx(3 / 5)
    assert null_summary(0.15, [0.1, 0.6, 0.7, 0.2], "less")["p"] == pytest.approx(2 / 5)

# ---------------------------------------------------------------- block weight change
def test_block_weight_change_reports_absolute_relative_median_and_bn():
    m0 = _lite0(0); m1 = _lite0(0)
    sd = m1.state_dict()
    with torch.no_grad():
        sd["blocks.2.0.conv_pw.weight"][:3] *= 1.5      # 3 filters of one kernel move by half their size
        sd["blocks.2.0.bn1.weight"] += 0.2; sd["blocks.4.0.bn2.bias"] += 0.1
    bw = block_weight_change(m0.state_dict(), sd, [f"blocks.{i}" for i in range(7)]).set_index("block")
    w = m0.state_dict()["blocks.2.0.conv_pw.weight"]
    assert bw.frobenius["blocks.2"] == pytest.approx(0.5 * w[:3].norm().item(), rel=1e-5)
    assert bw.frobenius.drop("blocks.2").max() == 0
    n_filters = sum(m0.state_dict()[f"{n}.weight"].shape[0] for n in
                    [k[:-7] for k, v in m0.state_dict().items() if k.startswith("blocks.2.") and k.endswith(".weight") and v.ndim == 4])
    assert bw.median_relative_change["blocks.2"] == 0 and n_filters > 6
    g = m0.state_dict()["blocks.2.0.bn1.weight"]
    all_g = torch.cat([v for k, v in m0.state_dict().items() if k.startswith("blocks.2.") and k.endswith("weight") and v.ndim == 1])
    assert bw.bn_gamma_change["blocks.2"] == pytest.approx(0.2 * math.sqrt(len(g)) / all_g.double().norm().item(), rel=1e-5)
    assert bw.bn_beta_abs["blocks.4"] == pytest.approx(0.1 * math.sqrt(len(m0.state_dict()["blocks.4.0.bn2.bias"])), rel=1e-5)
    assert math.isnan(bw.bn_beta_change["blocks.4"])   # β0 = 0 at a random init: no relative change
    assert bw.bn_gamma_change.drop("blocks.2").max() == 0 and bw.bn_beta_abs.drop("blocks.4").max() == 0
    assert len(bn_changes(m0, sd)) == sum(isinstance(m, torch.nn.BatchNorm2d) for m in m0.modules())
