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
