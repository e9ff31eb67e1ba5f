"Multi-task learning on small real subsets: masked loss, per-task gradients, single-task equivalence, learned task weights, bad inputs, run folders."
import json, os
from pathlib import Path
import numpy as np, pandas as pd, pytest, torch
from PIL import Image
from artstudy.data import DatasetError, load_dataset, make_dls, subset, synthetic_dataset
from artstudy.models import create_backbone, head_module, load_checkpoint
from artstudy.train import build_learner, fit_mode
from artstudy.multitask import (MaskedMultiTaskLoss, check_tasks, load_tasks, multitask_dls, multitask_learner,
                                multitask_model, predict, single_vs_multi, task_targets)
from artstudy.pipeline import train_run

TASKS = ["style", "genre", "artist"]
TINY = dict(dataset="wikiart_mt", tasks=TASKS, n_per_class=3, n_valid_per_class=2, image_size=32, batch_size=8, epochs=1,
            num_workers=0, seed=0, progress=False, channels_last=False)

@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("ARTSTUDY_CACHE_DIR", str(tmp_path_factory.getbasetemp()/"cache"))

@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("mt_run")
    os.environ.setdefault("ARTSTUDY_CACHE_DIR", str(tmp_path_factory.getbasetemp()/"cache"))
    return d, train_run(TINY, run_dir=d)

def _ce(logits, y):
    "Cross-entropy by hand: mean over rows of logsumexp - logit of the true class."
    return np.mean([np.log(np.exp(l).sum()) - l[t] for l, t in zip(logits.astype(np.float64), y)])

def test_masked_loss_ignores_missing_labels_exactly():
    g = torch.Generator().manual_seed(0)
    preds = tuple(torch.randn(16, c, generator=g, requires_grad=True) for c in (10, 10, 52))
    ys = [torch.randint(0, c, (16,), generator=g) for c in (10, 10, 52)]
    ys[1][::3] = -1; ys[2][:11] = -1
    loss = MaskedMultiTaskLoss(TASKS, weights=dict(genre=0.5))
    got = loss(preds, *ys)
    # the weighted *mean* over the tasks labelled in the batch (weights 1, .5, 1): a single task's scale
    ref = sum(w * _ce(p.detach().numpy()[(y >= 0).numpy()], y[y >= 0].numpy()) for w, p, y in zip((1, .5, 1), preds, ys)) / 2.5
    assert abs(got.item() - ref) < 1e-5
    got.backward()
    for p, y in zip(preds, ys):      # a missing label contributes exactly nothing, not even through the softmax
        assert torch.all(p.grad[y < 0] == 0) and torch.all(p.grad[y >= 0].abs().sum(1) > 0)
    # changing a missing row's logits changes nothing
    preds2 = tuple(p.detach().clone() for p in preds); preds2[2][:11] += 100 * torch.randn(11, 52)
    assert torch.equal(loss(preds2, *ys), got.detach())
    # a task with no label in the batch adds 0
    none = [ys[0], ys[1], torch.full((16,), -1)]
    ref2 = (_ce(preds[0].detach().numpy(), ys[0].numpy()) + .5 * _ce(preds[1].detach().numpy()[(ys[1] >= 0).numpy()], ys[1][ys[1] >= 0].numpy())) / 1.5
    assert abs(loss(preds, *none).item() - ref2) < 1e-5

def test_each_head_gets_gradients_only_from_its_own_task():
    torch.manual_seed(0)
    model = multitask_model("efficientnet_lite0", dict(style=10, genre=10, artist=52), pretrained=False).train()
    x, heads = torch.randn(4, 3, 32, 32), head_module(model).heads
    full = [torch.tensor([1, 2, 3, 4]), torch.tensor([0, 1, 2, 3]), torch.tensor([5, 6, 7, 8])]
    for i, t in enumerate(TASKS):
        model.zero_grad(set_to_none=True)
        ys = [y if j == i else torch.full((4,), -1) for j, y in enumerate(full)]
        MaskedMultiTaskLoss(TASKS)(model(x), *ys).backward()
        for other in TASKS:
            g = heads[other].weight.grad
            if other == t: assert g is not None and g.abs().sum() > 0
            else: assert g is None or torch.all(g == 0), f"head {other} got a gradient from task {t}"
        assert model.conv_stem.weight.grad.abs().sum() > 0      # the shared body learns from every task

def test_one_task_multitask_model_equals_the_single_task_path():
    "Same weights: a one-task multi-head model gives the single-task model's loss and gradients (and the same groups)."
    torch.manual_seed(0)
    single = create_backbone("efficientnet_lite0", pretrained=False, num_classes=7).train()
    multi = multitask_model("efficientnet_lite0", dict(style=7), pretrained=False).train()
    sd = {k.replace("classifier.", "classifier.heads.style."): v for k, v in single.state_dict().items()}
    multi.load_state_dict(sd, strict=True)
    x, y = torch.randn(6, 3, 48, 48), torch.tensor([0, 1, 2, 3, 4, 6])
    from fastai.losses import CrossEntropyLossFlat
    ls, lm = CrossEntropyLossFlat()(single(x), y), MaskedMultiTaskLoss(["style"])(multi(x), y)
    ls.backward(); lm.backward()
    assert torch.allclose(ls, lm, atol=1e-6), (ls, lm)
    gs = {k.replace("classifier.", "classifier.heads.style."): p.grad for k, p in single.named_parameters()}
    for k, p in multi.named_parameters(): assert torch.allclose(p.grad, gs[k], atol=1e-6), k
    # the same parameter groups and learning rates as train.build_learner (discriminative rates kept)
    ds = subset(load_dataset("wikiart7"), n_per_class={"train": 2, "valid": 1, "test": 0}, seed=0)
    stats = ((.5,)*3, (.5,)*3)
    ls_ = build_learner(make_dls(ds, size=32, bs=4, stats=stats, num_workers=0, device="cpu"), "efficientnet_lite0", "mode_a")
    dsm, tc = load_tasks("wikiart7", ["style"]); dsm = subset(dsm, n_per_class={"train": 2, "valid": 1, "test": 0}, seed=0)
    lm_ = multitask_learner(multitask_dls(dsm, tc, size=32, bs=4, stats=stats, num_workers=0, device="cpu"), "efficientnet_lite0", "mode_a")
    assert [len(g) for g in ls_.splitter(ls_.model)] == [len(g) for g in lm_.splitter(lm_.model)]
    for l in (ls_, lm_): l.create_opt()
    from artstudy.train import group_lrs
    assert group_lrs(ls_.transfer_cfg, len(ls_.opt.param_groups)) == group_lrs(lm_.transfer_cfg, len(lm_.opt.param_groups))

def test_uncertainty_weights_are_optimised_and_change():
    ds, tc = load_tasks("wikiart_mt", TASKS)
    ds = subset(ds, n_per_class={"train": 2, "valid": 1}, seed=0)
    dls = multitask_dls(ds, tc, size=32, bs=8, num_workers=0, device="cpu")
    learn = multitask_learner(dls, "efficientnet_lite0", "mode_a", uncertainty=True, channels_last=False)
    lv = learn.loss_func.log_vars
    before = lv.detach().clone()
    with learn.no_bar(), learn.no_logging(): fit_mode(learn, 1)
    assert any(p is lv for p in learn.opt.param_groups[-1]["params"]), "log-variances must be in the head group"
    assert learn.opt.param_groups[-1]["lr"] == 1e-2
    assert not torch.equal(lv.detach(), before) and torch.all(lv.detach() != 0)

def test_multitask_fast_path_is_the_single_task_one():
    """mixed_precision='bf16' and channels_last give a multi-task learner the single-task fast path: the body computes in
    bf16, the master weights stay fp32 and the masked loss is finite."""
    from artstudy.train import ChannelsLastInput, DeviceAutocast
    ds, tc = load_tasks("wikiart_mt", ["style", "genre"])
    ds = subset(ds, n_per_class={"train": 2, "valid": 1}, seed=0)
    learn = multitask_learner(multitask_dls(ds, tc, size=32, bs=8, num_workers=0, device="cpu"), "efficientnet_lite0",
                              "mode_a", mixed_precision="bf16", channels_last=True)
    assert {type(c) for c in learn.cbs} >= {DeviceAutocast, ChannelsLastInput}
    seen = []
    h = learn.model.conv_stem.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    with learn.no_bar(), learn.no_logging(): fit_mode(learn, 1)
    h.remove()
    assert set(seen) == {torch.bfloat16} and learn.model.conv_stem.weight.dtype == torch.float32
    assert np.isfinite(learn.recorder.values[-1][0])

def test_bad_task_column_and_one_class_task_errors(tmp_path):
    with pytest.raises(DatasetError, match="task column 'medium' not found.*label columns"):
        load_tasks("wikiart_mt", ["style", "medium"])
    with pytest.raises(DatasetError, match="not found"):
        train_run(TINY, run_dir=tmp_path/"bad", tasks=["style", "Genre"])
    with pytest.raises(ValueError, match="at least one task"): load_tasks("wikiart_mt", [])
    root = synthetic_dataset(tmp_path/"syn", n_per_class=6, size=16)
    df = pd.read_csv(root/"labels.csv"); df["museum"] = "louvre"; df["period"] = ["old"] * 9 + [""] * 9
    df.to_csv(root/"labels.csv", index=False)
    with pytest.raises(DatasetError, match="'museum' has only 1 class"): load_tasks(root, ["label", "museum"])
    ds, tc = load_tasks(root, ["label"])
    df["period"] = ["old", "new"] * 9; df.to_csv(root/"labels.csv", index=False)
    ds, tc = load_tasks(root, ["label", "period"])
    ds.df.loc[ds.df.split == "train", "period"] = "old"        # one class left among the training labels
    with pytest.raises(DatasetError, match="'period'.*1 class"): check_tasks(ds, tc)

def test_targets_keep_missing_labels_as_minus_one():
    ds, tc = load_tasks("wikiart_mt", TASKS)
    assert ds.label == "style" and len(ds) == 5396 and [len(c) for c in tc.values()] == [10, 10, 52]
    y = task_targets(ds, tc)
    assert y.shape == (5396, 3) and (y[:, :2] >= 0).all() and (y[:, 2] >= 0).sum() == 2983    # README: 2983 artists known
    ds_a, tc_a = load_tasks("wikiart_mt", ["artist"])      # artist has gaps: loaded (and subset) by style
    assert ds_a.label == "style" and len(ds_a) == 5396 and list(tc_a) == ["artist"]

def test_tiny_real_run_writes_a_complete_run_folder(tiny_run):
    d, m = tiny_run
    assert sorted(os.listdir(d)) == ["history.csv", "init.pth", "metrics.staged.json", "model.pth", "params.json"]
    hist = pd.read_csv(d/"history.csv")
    for t in TASKS: assert {f"{t}_acc", f"{t}_top5", f"{t}_f1"} <= set(hist.columns), hist.columns
    saved, params = json.loads((d/"metrics.staged.json").read_text()), json.loads((d/"params.json").read_text())
    for t in TASKS: assert {f"{t}_acc", f"valid_{t}_acc", f"{t}_f1", f"{t}_top5"} <= set(saved)
    from artstudy.config import dataset_path
    table = pd.read_csv(dataset_path("wikiart_mt")/"labels.csv", keep_default_na=False)
    test = table[table.split == "test"]
    for t in ("style", "genre"):   # scored on every labelled test image: subsets never reduce the test split
        assert saved[f"{t}_n"] == (test[t].str.strip() != "").sum() > 700
    assert saved["tasks"] == TASKS and saved["setting"] == "multi" and saved["n_train"] == 30
    assert saved["n_labelled_train"]["style"] == 30 and saved["n_labelled_train"]["artist"] < 30
    assert params["versions"]["torch"] and "labels.csv" in params["data"]["checksums"] and params["tasks"] == TASKS
    assert saved == json.loads(json.dumps(m, default=str))
    meta = load_checkpoint(d/"model.pth").checkpoint_meta
    assert meta["heads"] == {"style": 10, "genre": 10, "artist": 52} and list(meta["tasks_classes"]) == TASKS

def test_tiny_real_run_saves_per_task_predictions(tiny_run):
    "Per split and task, the saved predictions give the task's accuracy exactly; targets are labels.csv's, -1 where empty."
    import hashlib
    from artstudy.config import PREDICTIONS, dataset_path, run_predictions
    d, m = tiny_run
    assert list(m[PREDICTIONS]) == ["valid", "test"]
    for split in ("valid", "test"):
        for t in TASKS:
            pr, rep = run_predictions(d/"metrics.staged.json", split, task=t), m["reports"][split][t]
            assert len(pr["pred"]) == (rep["n_images"] if rep else 0) and (rep is None or pr["correct"].mean() == rep["top1"])
    table = pd.read_csv(dataset_path("wikiart_mt")/"labels.csv", keep_default_na=False)
    test, saved = table[table.split == "test"], m[PREDICTIONS]["test"]
    tc = load_checkpoint(d/"model.pth").checkpoint_meta["tasks_classes"]
    assert saved["n"] == len(test) and saved["files"] == hashlib.sha256("\n".join(test.path).encode()).hexdigest()
    for t in TASKS:
        assert saved["tasks"][t]["target"] == [tc[t].index(v.strip()) if v.strip() else -1 for v in test[t]]
        assert m[f"{t}_acc"] == run_predictions(d/"metrics.staged.json", "test", task=t)["correct"].mean()

def test_predict_path_pil_and_tensor_agree(tiny_run):
    d, _ = tiny_run
    model = load_checkpoint(d/"model.pth")
    ds, _ = load_tasks("wikiart_mt", TASKS)
    f = ds.files("test")[0]
    a = predict(model, f)
    assert set(a) == set(TASKS) and a["artist"]["label"] in model.checkpoint_meta["tasks_classes"]["artist"]
    assert abs(sum(a["genre"]["probs"].values()) - 1) < 1e-5
    b = predict(model, Image.open(f))
    c = predict(model, torch.from_numpy(np.asarray(Image.open(f).convert("RGB"))))
    for t in TASKS:
        assert a[t]["label"] == b[t]["label"] == c[t]["label"]
        assert np.allclose(list(a[t]["probs"].values()), list(c[t]["probs"].values()), atol=1e-6)

def test_analysis_metrics_run_on_a_multitask_checkpoint(tiny_run):
    d, _ = tiny_run
    from artstudy.compare import compare
    out = compare("init", d, "wikiart_mt", split="valid", n_images=12, k=4, size=32, bs=6, progress=False)
    tab = out["layers"]
    assert len(tab) == 9 and list(out["classes"])[:1] == ["Abstract_Expressionism"] and tab["cka"].between(0, 1.0001).all()

def test_single_vs_multi_table_from_runs(tmp_path):
    res = pd.DataFrame(dict(tasks=[["style"], ["style"], ["style", "genre"], ["style", "genre"], ["genre"]],
                            style_acc=[.4, .6, .5, .7, np.nan], genre_acc=[np.nan, np.nan, .3, .3, .2]))
    tab = single_vs_multi(res).set_index(["task", "setting"])
    assert tab.loc[("style", "single"), "mean"] == pytest.approx(.5) and tab.loc[("style", "multi"), "mean"] == pytest.approx(.6)
    assert tab.loc[("style", "single"), "std"] == pytest.approx(np.std([.4, .6], ddof=1)) and tab.loc[("genre", "single"), "n"] == 1

def test_config_sweep_runs_the_notebook_through_the_runner(tmp_path):
    "configs/multitask.yaml cut to 2 settings x 1 seed at a tiny budget: papermill runs, per-task results, report's F7."
    import yaml
    from artstudy.runs import collect, run_study
    from artstudy.findings import decide_findings
    cfg = yaml.safe_load((Path(__file__).resolve().parents[1]/"configs"/"multitask.yaml").read_text())
    g = cfg["grids"][0]
    assert {r["id"] for r in g["runs"]} == {"single_style", "single_genre", "single_artist", "multi"}
    assert all(len(r["seeds"]) >= 3 for r in g["runs"])
    cfg["study"], cfg["base"]["image_size"], cfg["base"]["batch_size"] = "mt_tiny", 32, 8
    g["base"].update(epochs=1, n_per_class=3, n_valid_per_class=2)
    g["runs"] = [dict(r, seeds=[1]) for r in g["runs"] if r["id"] in ("single_style", "multi")]
    summary = run_study(cfg, runs_dir=tmp_path, progress=False)
    assert (summary.status == "done").all(), summary.to_string()
    res = collect(tmp_path/"mt_tiny", verbose=False)
    assert len(res) == 2 and (tmp_path/"mt_tiny"/"multi-s1"/"out.ipynb").is_file()
    tab = single_vs_multi(res).set_index(["task", "setting"])
    assert tab.loc[("style", "single"), "n"] == 1 and tab.loc[("style", "multi"), "n"] == 1
    f7 = decide_findings(res.assign(group="multitask"), pattern="F7")
    assert f7.condition.tolist() == [f"wikiart_mt {t}" for t in ("style", "genre", "artist")]   # every task has its row
    assert f7.n.tolist() == [1, 0, 0] and f7.verdict.tolist()[1:] == ["not run", "not run"]   # one seed: reported, not decided

def test_cli_evaluates_a_multitask_checkpoint_on_every_task(tiny_run, tmp_path):
    "`python -m artstudy evaluate` on a multi-head checkpoint scores each task on its labelled rows."
    from artstudy.__main__ import main
    from artstudy.config import dataset_path
    d, _ = tiny_run
    assert main(["evaluate", "--checkpoint", str(d), "--data", "wikiart_mt", "--split", "valid", "--out", str(tmp_path)]) == 0
    res = json.loads((tmp_path/"metrics.json").read_text())
    df = pd.read_csv(dataset_path("wikiart_mt")/"labels.csv", keep_default_na=False)
    valid = df[df.split == "valid"]
    for t in TASKS:
        assert res[f"{t}_n"] == int((valid[t].str.strip() != "").sum()) and 0 <= res[f"{t}_acc"] <= 1
