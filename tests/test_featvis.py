"Feature visualisation: parameterisation, transforms, that a render really drives its channel, cache, hygiene."
import pytest, torch, timm, numpy as np, pandas as pd
import plotly.graph_objects as go
import artstudy.featvis as fv
from artstudy.featvis import (fft_image, pixel_image, standard_transforms, render, start_images,
                              activation_gain, channel_activation, select_channels, side_by_side, COLOR_CORRELATION)
from artstudy.models import create_backbone, save_checkpoint

S = dict(mean=(0.5,) * 3, std=(0.5,) * 3)

def _imagenet_lite0():
    "ImageNet Lite0 from the registry (offline weights)."
    return create_backbone("efficientnet_lite0", pretrained=True).eval(), "artstudy.models"

@pytest.fixture(scope="module")
def net(): return _imagenet_lite0()

@pytest.fixture
def tiny():
    torch.manual_seed(0)
    return timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()

def _n_hooks(m): return sum(len(x._forward_hooks) for x in m.modules())

# --- param
@pytest.mark.parametrize("shape", [(1, 3, 64, 64), (2, 3, 31, 45)])
def test_fft_image_size_and_range(shape):
    params, image_fn = fft_image(shape, sd=5.)  # a large sd still stays in [0, 1]
    img = image_fn()
    assert img.shape == shape and img.dtype == torch.float32
    assert 0 <= img.min() and img.max() <= 1 and img.std() > 0.05
    assert params[0].requires_grad

def test_fft_dc_coefficient_gives_expected_uniform_colour():
    # a DC-only spectrum a is scaled by max(h,w)=32, inverse-FFT'd with norm="ortho" (÷sqrt(32·32)), then ÷4:
    # every pixel is a/4 in decorrelated colour 0, i.e. sigmoid(C[:,0]·a/4) in RGB.
    params, image_fn = fft_image((1, 3, 32, 32))
    with torch.no_grad():
        params[0].zero_(); params[0][0, 0, 0, 0, 0] = 2.
    img = image_fn().detach()
    expected = torch.sigmoid(COLOR_CORRELATION[:, 0] * 0.5)
    assert torch.allclose(img[0, :, 5, 7], expected, atol=1e-5) and torch.allclose(img.std((2, 3)), torch.zeros(1, 3), atol=1e-6)

def test_pixel_image_range():
    params, image_fn = pixel_image((2, 3, 16, 16), sd=3.)
    img = image_fn()
    assert img.shape == (2, 3, 16, 16) and 0 <= img.min() and img.max() <= 1

# --- transforms
def test_transforms_shape_and_reproducible():
    x = torch.rand(3, 3, 40, 40)
    tfm = standard_transforms(**S)
    torch.manual_seed(1); a = tfm(x)
    torch.manual_seed(1); b = tfm(x)
    torch.manual_seed(2); c = tfm(x)
    assert a.shape == (3, 3, 64, 64) and torch.equal(a, b) and not torch.equal(a, c)
    assert standard_transforms(**S, robustness=False)(x).shape == x.shape

def test_transforms_gradient_reaches_params():
    params, image_fn = fft_image((2, 3, 32, 32))
    standard_transforms(**S)(image_fn()).sum().backward()
    assert params[0].grad is not None and params[0].grad.abs().sum() > 0

# --- objective really optimised
def test_render_raises_channel_activation(net):
    model, source = net
    layer, size = "blocks.3", 64
    # channels whose activation on their (near-grey) start image is positive, so that a ratio means something
    start = start_images(range(16), size=size)
    a0 = channel_activation(model, layer, start, list(range(16)), **S)
    chans = [int(k) for k in torch.nonzero(a0 > 0.5).flatten()[:2]]
    assert len(chans) == 2, a0
    imgs = render(model, layer, chans, steps=16, size=size, cache=False, **S)
    gain = activation_gain(model, layer, chans, imgs, start_images(chans, size=size), **S)
    print(f"\nactivation ratio ({source}, {layer}, 16 steps, {size} px):\n{gain.to_string()}")
    assert (gain.ratio > 2).all(), gain

# --- cache
def test_cache_hit_is_identical_and_skips_optimising(tiny, tmp_path, monkeypatch):
    kw = dict(steps=2, size=32, cache=tmp_path, **S)
    a = render(tiny, "blocks.2", [0, 3], **kw)
    files = list((tmp_path / "featvis").glob("*.pt"))
    assert len(files) == 2 and not list((tmp_path / "featvis").glob(".*tmp"))
    calls = []
    real = fv._optimise
    def spy(model, layer, channels, *args): calls.append(list(channels)); return real(model, layer, channels, *args)
    monkeypatch.setattr(fv, "_optimise", spy)
    b = render(tiny, "blocks.2", [3, 0], **kw)
    assert calls == [] and torch.equal(b, a.flip(0))
    render(tiny, "blocks.2", [0, 3, 5], **kw)  # only the missing channel is rendered
    assert calls == [[5]]
    render(tiny, "blocks.2", [0], **{**kw, "lr": 0.1})  # another setting is another entry
    with torch.no_grad(): tiny.conv_stem.weight.mul_(1.01)  # other weights: another entry
    render(tiny, "blocks.2", [0], **kw)
    assert calls == [[5], [0], [0]]

def test_cache_key_is_the_checkpoint_content(tmp_path, monkeypatch):
    "render_checkpoint keys its cache on the file's content: a copy elsewhere hits, a changed state dict misses."
    m = create_backbone("efficientnet_lite0", pretrained=False)
    save_checkpoint(m, tmp_path/"a"/"model.pth")
    kw = dict(steps=1, size=24, cache=tmp_path, **S)
    first = fv.render_checkpoint(tmp_path/"a"/"model.pth", "blocks.2", [1], **kw)
    calls = []
    real = fv._optimise
    monkeypatch.setattr(fv, "_optimise", lambda *a: calls.append(a[2]) or real(*a))
    (tmp_path/"b").mkdir(); (tmp_path/"b"/"model.pth").write_bytes((tmp_path/"a"/"model.pth").read_bytes())
    assert torch.equal(fv.render_checkpoint(tmp_path/"b"/"model.pth", "blocks.2", [1], **kw), first) and calls == []
    with torch.no_grad(): m.blocks[2][0].conv_pw.weight.mul_(1.01)   # a changed state dict: another key
    save_checkpoint(m, tmp_path/"c"/"model.pth")
    fv.render_checkpoint(tmp_path/"c"/"model.pth", "blocks.2", [1], **kw)
    assert calls == [[1]]

# --- hygiene
def test_render_restores_model_and_removes_hooks(tiny):
    tiny.train(); tiny.classifier.requires_grad_(False)
    flags = [p.requires_grad for p in tiny.parameters()]
    state = torch.random.get_rng_state()
    render(tiny, "blocks.4", [2, 7], steps=2, size=32, cache=False, **S)
    assert [p.requires_grad for p in tiny.parameters()] == flags and tiny.training and _n_hooks(tiny) == 0
    assert torch.equal(torch.random.get_rng_state(), state)
    with pytest.raises(IndexError, match="channels"):  # fails inside the loop: state still restored
        render(tiny, "blocks.4", [2, 10_000], steps=2, size=32, cache=False, **S)
    assert [p.requires_grad for p in tiny.parameters()] == flags and tiny.training and _n_hooks(tiny) == 0

def test_bad_layer_name_is_clear(tiny):
    with pytest.raises(ValueError, match=r"layer 'blocks_3' not found.*analysis layers: \['blocks\.0'"):
        render(tiny, "blocks_3", [0], steps=1, size=32, cache=False, **S)
    with pytest.raises(ValueError, match="no channels"):
        render(tiny, "blocks.3", [], steps=1, size=32, cache=False, **S)

def test_stats_needed(tiny):
    bare = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3))
    with pytest.raises(ValueError, match="mean= and std="):
        render(bare, "0", [0], steps=1, size=16, cache=False)
    assert render(bare, "0", [0, 1], steps=1, size=16, cache=False, **S).shape == (2, 3, 16, 16)

# --- choosing and showing filters
def test_select_channels_hand_made():
    rows = [("b5", c, "relative_change", v) for c, v in enumerate([.1, .9, np.nan, .3, .5])]
    rows += [("b5", c, "overlap", v) for c, v in enumerate([.8, .2, .5, np.nan, .6])]
    rows += [("b6", c, "overlap", v) for c, v in enumerate([.4, .1])]
    sel = select_channels(pd.DataFrame(rows, columns=["layer", "channel", "metric", "value"]), by="D_k", n=2)
    assert sel.values[:, :3].tolist() == [["b5", 1, "top D_k"], ["b5", 4, "top D_k"], ["b5", 1, "lowest overlap"],
                                          ["b5", 2, "median overlap"], ["b5", 0, "highest overlap"],
                                          ["b6", 1, "lowest overlap"], ["b6", 1, "median overlap"],
                                          ["b6", 0, "highest overlap"]]
    with pytest.raises(ValueError, match="columns"): select_channels(pd.DataFrame(dict(layer=[], value=[])))

def test_side_by_side_figure(tiny):
    other = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    fig = side_by_side(tiny, other, "blocks.1", [0, 1, 2, 3], steps=1, size=24, cache=False, **S)
    assert isinstance(fig, go.Figure) and len(fig.data) == 8
    assert {(t.xaxis, t.yaxis) for t in fig.data} == {(f"x{i if i > 1 else ''}", f"y{i if i > 1 else ''}") for i in range(1, 9)}

def test_render_checkpoint_equals_a_render_of_the_saved_model(tmp_path):
    "A checkpoint renders as the in-memory model it was saved from, under the same seed; another seed draws another image."
    torch.manual_seed(3)
    m = create_backbone("efficientnet_lite0", pretrained=False).eval()
    with torch.no_grad(): m.blocks[2][0].bn1.running_mean.normal_()   # buffers too must survive the round trip
    p = tmp_path/"m.pth"; save_checkpoint(m, p)
    a = fv.render_checkpoint(p, "blocks.2", [0, 5], steps=2, size=24, seed=1, cache=tmp_path, **S)
    b = render(m, "blocks.2", [0, 5], steps=2, size=24, seed=1, cache=False, **S)
    c = render(m, "blocks.2", [0, 5], steps=2, size=24, seed=2, cache=False, **S)
    assert a.shape == b.shape == (2, 3, 24, 24) and torch.equal(a, b) and not torch.allclose(a, c, atol=1e-3)

# --- any objective (Lucent's render_vis(model, objective))
from artstudy.featvis import Objective, channel, direction, neuron, objective_value

def _hooked(model, layer, images):
    "The output of `layer` on `images` (0.5/0.5-normalised by hand) captured by a plain forward hook, as float64."
    got = {}
    h = model.get_submodule(layer).register_forward_hook(lambda m, i, o: got.update(out=o.detach()))
    try:
        with torch.no_grad(): model.eval()((images - 0.5) / 0.5)
    finally: h.remove()
    return got["out"].double().numpy()

def test_direction_value_is_the_dot_product_by_hand(tiny):
    torch.manual_seed(0)
    imgs, v = torch.rand(3, 3, 40, 40), torch.randn(80)
    a = _hooked(tiny, "blocks.3", imgs)                            # (3, 80, H, W)
    B, C, H, W = a.shape
    hand = np.array([sum(a[b, c, i, j] * float(v[c]) for c in range(C) for i in range(H) for j in range(W)) / (H * W)
                     for b in range(B)])
    got = objective_value(tiny, direction("blocks.3", v), imgs, **S)
    assert got.shape == (3,) and np.allclose(got.numpy(), hand, rtol=1e-4, atol=1e-5)
    per_item = torch.randn(3, 80)                                  # one direction per image
    hand2 = np.einsum("bchw,bc->b", a, per_item.double().numpy()) / (H * W)
    assert np.allclose(objective_value(tiny, direction("blocks.3", per_item), imgs, **S).numpy(), hand2, rtol=1e-4, atol=1e-5)

def test_sums_and_multiples_are_the_sums_of_values(tiny):
    torch.manual_seed(1)
    imgs = torch.rand(2, 3, 40, 40)
    a, b, c = channel("blocks.2", 3), direction("blocks.4", torch.randn(112)), neuron("blocks.3", 7)
    va, vb, vc = (objective_value(tiny, o, imgs, **S).double() for o in (a, b, c))
    t = _hooked(tiny, "blocks.3", imgs)
    assert np.allclose(vc.numpy(), t[:, 7, t.shape[2] // 2, t.shape[3] // 2], rtol=1e-5)     # the centre unit by hand
    for obj, want in ((a + b, va + vb), (2 * a - b / 4 + 1, 2 * va - vb / 4 + 1), (-c, -vc),
                      (Objective.sum([a, b, c]), va + vb + vc), (3 - a, 3 - va)):
        assert set(obj.layers) <= {"blocks.2", "blocks.3", "blocks.4"}
        assert torch.allclose(objective_value(tiny, obj, imgs, **S).double(), want, rtol=1e-5, atol=1e-6), obj

def test_render_raises_any_objective(net):
    "A channel, a direction and a negated channel, each rendered from its start: the objective rises against the start."
    model, source = net
    layer, size = "blocks.3", 64
    start0 = start_images([0], size=size)                        # the start of image 0 of an objective render
    a0 = torch.stack([objective_value(model, channel(layer, k), start0, **S)[0] for k in range(16)])
    chans = [int(k) for k in torch.nonzero(a0 > 0.5).flatten()[:2]]
    assert len(chans) == 2, a0
    v = torch.zeros(80); v[chans] = 1.
    rows = []
    for obj in (channel(layer, chans[0]), direction(layer, v), -channel(layer, chans[1])):
        img = render(model, obj, steps=16, size=size, cache=False, **S)
        start, final = (float(objective_value(model, obj, x, **S)[0]) for x in (start_images([0], size=size), img))
        rows.append((obj.name, start, final))
    print(f"\nobjective before and after 16 steps ({source}, {size} px):\n" + "\n".join(map(str, rows)))
    (_, s1, f1), (_, s2, f2), (_, s3, f3) = rows
    assert f1 > 2 * s1 > 0 and f2 > 2 * s2 > 0      # channel and direction: more than double
    assert f3 > s3 and -f3 < 0.5 * -s3              # the negated channel: its activation at least halves

def test_objective_renders_are_cached_by_key(tiny, tmp_path, monkeypatch):
    kw = dict(steps=2, size=32, cache=tmp_path, **S)
    obj = channel("blocks.2", 1) + 0.5 * direction("blocks.3", torch.ones(80))
    a = render(tiny, obj, n=2, **kw)
    calls = []
    real = fv._optimise
    monkeypatch.setattr(fv, "_optimise", lambda *x: calls.append(x[2]) or real(*x))
    assert torch.equal(render(tiny, channel("blocks.2", 1) + 0.5 * direction("blocks.3", torch.ones(80)), n=2, **kw), a)
    assert calls == []                                              # an equal objective: the same key, read back
    render(tiny, channel("blocks.2", 1) + 0.5 * direction("blocks.3", 2 * torch.ones(80)), n=2, **kw)
    render(tiny, obj, n=1, **kw)
    n_files = len(list((tmp_path / "featvis").glob("*.pt")))
    bare = Objective(lambda acts: acts["blocks.2"].mean((1, 2, 3)), ["blocks.2"], "bare")
    render(tiny, bare, **kw); render(tiny, bare, **kw)             # no key: rendered twice, never cached
    assert calls == [[0, 1], [0], [0], [0]] and len(list((tmp_path / "featvis").glob("*.pt"))) == n_files == 3

def test_old_call_forms_still_work(tiny):
    "render(model, layer, channels, steps, size) positionally, and 'layer:k', give the images of channel objectives."
    kw = dict(cache=False, **S)
    old = render(tiny, "blocks.2", [0], 2, 24, **kw)
    assert torch.equal(old, render(tiny, channel("blocks.2", 0), steps=2, size=24, **kw))
    assert torch.equal(old, render(tiny, "blocks.2:0", steps=2, size=24, **kw))
    with pytest.raises(ValueError, match="own channels"): render(tiny, channel("blocks.2", 0), [1], steps=1, size=24, **kw)
    with pytest.raises(TypeError, match="not an objective"): render(tiny, 3, steps=1, size=24, **kw)
