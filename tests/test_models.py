"""artstudy.models: offline ImageNet weights, registry, layer names, parameter groups, re-initialisation, checkpoints.

Nothing here touches the network: every test runs with TORCH_HOME and the Hugging Face cache in a temporary folder,
HF_HUB_OFFLINE=1, and sockets that refuse to connect.
"""
import os
os.environ.setdefault("HF_HUB_OFFLINE", "1")
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import artstudy.models as M
from artstudy.models import (analysis_layers, backbone_cfg, block_names, checkpoint_meta, conv_layers, create_backbone,
                             head_module, lite_key_map, lite_weights_file, list_backbones,
                             load_checkpoint, register_backbone, reinit_upper, save_checkpoint, split_groups)


@pytest.fixture(autouse=True)
def offline(tmp_path, monkeypatch):
    "No network and empty weight caches for every test."
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path/"torch_home"))
    import huggingface_hub.constants as hc
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path/"hf_cache"))
    def refuse(*a, **k): raise RuntimeError("network access attempted in tests/test_models.py")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


_CACHE = {}
def random_model(name, **kw):
    "One random-weight model per name for the whole module (VGG-19 is slow to build)."
    if name not in _CACHE: _CACHE[name] = create_backbone(name, pretrained=False, **kw)
    return _CACHE[name]


# ---------------------------------------------------------------- EfficientNet-Lite weights
BLOCKS = {0: [1, 2, 2, 3, 3, 4, 1], 1: [1, 3, 3, 4, 4, 5, 1], 2: [1, 3, 3, 4, 4, 5, 1]}

@pytest.mark.parametrize("variant", [0, 1, 2])
def test_lite_mapping_by_order_strict(variant):
    import timm
    src = torch.load(lite_weights_file(variant), map_location="cpu", weights_only=True)
    m = timm.create_model(f"tf_efficientnet_lite{variant}", pretrained=False)
    assert [len(s) for s in m.blocks] == BLOCKS[variant]
    dst = m.state_dict()
    assert len(src) == len(dst)
    by_order = dict(zip(src, dst))
    assert all(src[k].shape == dst[v].shape for k, v in by_order.items())
    assert lite_key_map(m) == by_order                      # the named map is the order map
    assert by_order["_blocks.0._depthwise_conv.weight"] == "blocks.0.0.conv_dw.weight"
    assert by_order["_blocks.1._expand_conv.weight"] == "blocks.1.0.conv_pw.weight"
    assert by_order["_fc.weight"] == "classifier.weight" and by_order["_bn1.weight"] == "bn2.weight"
    m.load_state_dict({by_order[k]: v for k, v in src.items()}, strict=True)


def chelsea(size=224):
    "scikit-image's cat: shorter side to `size` (PIL bicubic), centre crop, mean = std = 0.5."
    import skimage.data
    img = Image.fromarray(skimage.data.chelsea())
    s = size / min(img.size)
    img = img.resize((round(img.width * s), round(img.height * s)), Image.BICUBIC)
    l, t = (img.width - size) // 2, (img.height - size) // 2
    x = torch.from_numpy(np.asarray(img.crop((l, t, l + size, t + size))).copy()).permute(2, 0, 1).float() / 255
    return ((x - 0.5) / 0.5)[None]


@pytest.mark.parametrize("variant", [0, 1, 2])
def test_lite_imagenet_cat(variant):
    m = create_backbone(f"efficientnet_lite{variant}").eval()
    cfg = backbone_cfg(m)
    assert cfg["mean"] == cfg["std"] == (0.5, 0.5, 0.5)
    assert cfg["source"] == f"timm:tf_efficientnet_lite{variant}"
    with torch.no_grad(): p = m(chelsea()).softmax(-1)[0]
    p_cat = p[281:286].sum().item()
    assert p_cat > 0.5, p_cat
    assert 281 <= p.argmax().item() <= 285
    if variant == 0: assert abs(p_cat - 0.88) < 0.05, p_cat  # independent reference script: 0.88


def test_lite_head_swap_keeps_body():
    a, b = create_backbone("efficientnet_lite0"), create_backbone("efficientnet_lite0", num_classes=7)
    assert head_module(b).out_features == 7 and head_module(a).out_features == 1000
    sa, sb = a.state_dict(), b.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa if not k.startswith("classifier"))


# ---------------------------------------------------------------- registry
def test_registry_names_and_errors():
    assert list_backbones("*lite*") == ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]
    assert {"resnet50", "vgg19", "googlenet"} <= set(list_backbones())
    cfg = {k: v for k, v in backbone_cfg("googlenet").items() if k != "name"}
    with pytest.raises(ValueError, match="already registered"):
        register_backbone(lambda: nn.Linear(1, 1), name="googlenet", **cfg)
    with pytest.raises(ValueError, match="lacks metadata"):
        register_backbone(lambda: nn.Linear(1, 1), name="half_described", mean=(0.5,) * 3)
    with pytest.raises(ValueError, match="resnet50"): create_backbone("resnet5")
    with pytest.raises(ValueError, match="efficientnet_lite0"): create_backbone("efficientnet-lite0")
    with pytest.raises(ValueError, match="resnet18"): create_backbone("timm/resnt18")
    with pytest.raises(ValueError, match="positive"): create_backbone("efficientnet_lite0", num_classes=0)


def test_register_custom_backbone():
    name = "test_tiny_cnn"
    if name not in M._REGISTRY:
        @register_backbone(name=name, mean=(0.5,) * 3, std=(0.5,) * 3, input_size=(3, 32, 32), head="fc",
                           analysis_layers=[dict(module="c1", num_chs=4, reduction=2, stage=0),
                                            dict(module="c2", num_chs=8, reduction=4, stage=1)],
                           blocks=["c1", "c2"], split=["c2"], source="test")
        def _tiny():
            m = nn.Sequential()
            m.add_module("c1", nn.Conv2d(3, 4, 3, 2, 1)); m.add_module("c2", nn.Conv2d(4, 8, 3, 2, 1))
            m.add_module("pool", nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())); m.add_module("fc", nn.Linear(8, 10))
            return m
    m = create_backbone(name, pretrained=False, num_classes=3)
    assert analysis_layers(m) == ["c1", "c2"] and head_module(m).out_features == 3
    assert [len(g) for g in split_groups(m)] == [2, 2, 2]
    with pytest.raises(M.MissingWeightsError): create_backbone(name)
    with pytest.raises(ValueError, match="reductions decrease"):
        register_backbone(lambda: None, name="test_bad_red", mean=(0.5,) * 3, std=(0.5,) * 3, head="fc", blocks=[],
                          split=[], analysis_layers=[dict(module="a", num_chs=1, reduction=4, stage=0),
                                                     dict(module="b", num_chs=1, reduction=2, stage=1)])


# ---------------------------------------------------------------- offline weights
@pytest.mark.parametrize("name", ["resnet50", "googlenet", "timm/resnet18"])
def test_pretrained_offline_error(name):
    with pytest.raises(FileNotFoundError) as e: create_backbone(name)
    msg = str(e.value)
    assert "weights_path=" in msg and "never downloads" in msg and "pretrained=False" in msg


def test_weights_path_and_hub_cache(tmp_path):
    g = random_model("googlenet")
    f = tmp_path/"googlenet_random.pth"
    torch.save(g.state_dict(), f)
    g2 = create_backbone("googlenet", weights_path=f)
    assert all(torch.equal(a, b) for a, b in zip(g.state_dict().values(), g2.state_dict().values()))
    g5 = create_backbone("googlenet", weights_path=f, num_classes=5)
    assert head_module(g5).out_features == 5 and torch.equal(g5.inception5b.branch1.conv.weight,
                                                              g.inception5b.branch1.conv.weight)
    # a file in the local torch hub cache counts as "local": pretrained=True finds it without any download
    hub = Path(os.environ["TORCH_HOME"])/"hub"/"checkpoints"
    hub.mkdir(parents=True)
    torch.save({**g.state_dict(), "aux1.fc1.weight": torch.zeros(1)}, hub/"googlenet-1378be20.pth")  # aux keys dropped
    g3 = create_backbone("googlenet")
    assert torch.equal(g3.fc.weight, g.fc.weight)
    # a state dict of another architecture is refused, naming the file
    torch.save(create_backbone("efficientnet_lite0", pretrained=False).state_dict(), tmp_path/"lite.pth")
    with pytest.raises(ValueError, match="lite.pth.*do not fit 'googlenet'"):
        create_backbone("googlenet", weights_path=tmp_path/"lite.pth")
    with pytest.raises(FileNotFoundError, match="nope.pth"): create_backbone("googlenet", weights_path=tmp_path/"nope.pth")


def test_timm_passthrough():
    m = create_backbone("timm/resnet18", pretrained=False, num_classes=4)
    assert m.backbone_name == "timm/resnet18" and head_module(m).out_features == 4
    assert analysis_layers(m) == ["act1", "layer1", "layer2", "layer3", "layer4"]
    assert len(split_groups(m)) == 3


# ---------------------------------------------------------------- layers
EXPECTED_LAYERS = {
    "efficientnet_lite0": ["bn1"] + [f"blocks.{i}" for i in range(7)] + ["bn2"],
    "resnet50": ["relu", "layer1", "layer2", "layer3", "layer4"],
    "vgg19": ["features.3", "features.8", "features.17", "features.26", "features.35"],
    "googlenet": ["conv1", "conv3", "inception3a", "inception3b", "inception4a", "inception4b", "inception4c",
                  "inception4d", "inception4e", "inception5a", "inception5b"],
}

@pytest.mark.parametrize("name", list(EXPECTED_LAYERS))
def test_analysis_layers_resolve_and_ordered(name):
    m = random_model(name)
    names = analysis_layers(m)
    assert names == EXPECTED_LAYERS[name]
    outs = {}
    def hook(mod, inp, out, n): outs.setdefault(n, tuple(out.shape))
    hs = [m.get_submodule(n).register_forward_hook(lambda mod, i, o, n=n: hook(mod, i, o, n)) for n in names]
    m.eval()
    with torch.no_grad(): m(torch.randn(2, 3, 64, 64))
    for h in hs: h.remove()
    assert list(outs) == names                             # hooks fire in this order: input to output
    reds = [64 // outs[n][-1] for n in names]
    assert reds == sorted(reds) and reds[-1] >= 16
    assert [outs[n][1] for n in names] == [i["num_chs"] for i in backbone_cfg(name)["analysis_layers"]]
    convs = conv_layers(m)
    assert convs and all(isinstance(m.get_submodule(c), nn.Conv2d) for c in convs)
    assert len(convs) == sum(isinstance(x, nn.Conv2d) for x in m.modules())


def test_torchvision_heads():
    v = random_model("vgg19")
    assert head_module(v) is v.classifier[6]
    r = create_backbone("resnet50", pretrained=False, num_classes=4)
    assert r.fc.out_features == 4 and r(torch.randn(1, 3, 64, 64)).shape == (1, 4)
    g = random_model("googlenet")
    assert g.aux1 is None and g.aux2 is None and g.transform_input


@pytest.mark.parametrize("name", list(EXPECTED_LAYERS))
def test_split_groups_cover_once(name):
    m = random_model(name)
    groups = split_groups(m)
    assert len(groups) >= 3 and all(groups)
    ids = [id(p) for g in groups for p in g]
    assert len(ids) == len(set(ids))
    assert set(ids) == {id(p) for p in m.parameters() if p.requires_grad}
    assert [id(p) for p in groups[-1]] == [id(p) for p in head_module(m).parameters()]
    assert all(isinstance(g, list) and all(isinstance(p, nn.Parameter) for p in g) for g in groups)


# ---------------------------------------------------------------- re-initialisation
def test_reinit_upper_changes_only_upper():
    m = create_backbone("efficientnet_lite0")
    before = {k: v.clone() for k, v in m.state_dict().items()}
    names = reinit_upper(m, 4)
    upper = ("blocks.4", "blocks.5", "blocks.6", "conv_head", "bn2", "classifier")
    assert names and all(n.startswith(upper) for n in names)
    after = m.state_dict()
    for k in before:
        if k.endswith("num_batches_tracked"): continue
        if k.startswith(upper):
            assert not torch.equal(before[k], after[k]), k
        else:
            assert torch.equal(before[k], after[k]), k
    assert torch.all(m.bn2.running_mean == 0) and torch.all(m.bn2.running_var == 1)
    assert block_names(m)[4] == "blocks.4"
    with pytest.raises(ValueError, match="from_block"): reinit_upper(m, 99)


# ---------------------------------------------------------------- checkpoints
def test_checkpoint_round_trip(tmp_path):
    m = create_backbone("efficientnet_lite0", num_classes=3).eval()
    f = tmp_path/"run"/"model.pth"
    save_checkpoint(m, f, classes=["a", "b", "c"], label="style", tasks={"style": 3}, path=tmp_path)
    raw = torch.load(f, weights_only=True)
    assert {"state_dict", "backbone", "num_classes", "format", "classes", "label", "tasks"} <= set(raw)
    assert raw["format"] == 1 and raw["backbone"] == "efficientnet_lite0" and raw["num_classes"] == 3
    assert checkpoint_meta(f)["classes"] == ["a", "b", "c"] and checkpoint_meta(f)["path"] == str(tmp_path)
    assert not list(f.parent.glob(".*tmp"))                # atomic write leaves no temporary file
    back = load_checkpoint(f).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad(): assert torch.allclose(back(x), m(x))
    into = load_checkpoint(f, create_backbone("efficientnet_lite0", pretrained=False, num_classes=3))
    assert all(torch.equal(a, b) for a, b in zip(into.state_dict().values(), m.state_dict().values()))


def test_checkpoint_errors(tmp_path):
    m = create_backbone("efficientnet_lite0", pretrained=False, num_classes=3)
    f = save_checkpoint(m, tmp_path/"lite.pth")
    with pytest.raises(ValueError) as e: load_checkpoint(f, random_model("googlenet"))
    msg = str(e.value)
    assert "lite.pth" in msg and "'efficientnet_lite0'" in msg and "'googlenet'" in msg and "without `model`" in msg
    with pytest.raises(ValueError, match="3-class head"):
        load_checkpoint(f, create_backbone("efficientnet_lite0", pretrained=False))
    torch.save(m.state_dict(), tmp_path/"plain.pth")
    with pytest.raises(ValueError, match="plain.pth is not an artstudy checkpoint"): load_checkpoint(tmp_path/"plain.pth")
    (tmp_path/"junk.pth").write_bytes(b"\x00garbage")
    with pytest.raises(ValueError, match="junk.pth"): load_checkpoint(tmp_path/"junk.pth")
    with pytest.raises(FileNotFoundError, match="missing.pth"): load_checkpoint(tmp_path/"missing.pth")
    with pytest.raises(TypeError, match="model"): save_checkpoint(m, tmp_path/"x.pth", model=m)
    with pytest.raises(ValueError, match="reserved"): save_checkpoint(m, tmp_path/"x.pth", backbone="other")

def test_a_tampered_checkpoint_names_the_file_and_the_mismatch(tmp_path):
    "3 class names written over a 7-class head: a clear error naming the file, before any weight is loaded."
    m = create_backbone("efficientnet_lite0", pretrained=False, num_classes=7)
    f = save_checkpoint(m, tmp_path/"model.pth", classes=list("abcdefg"))
    raw = torch.load(f, weights_only=True); raw["classes"] = ["a", "b", "c"]; torch.save(raw, f)
    for load in (load_checkpoint, checkpoint_meta):
        with pytest.raises(ValueError, match=r"model.pth lists 3 class names for a 7-class head"): load(f)
