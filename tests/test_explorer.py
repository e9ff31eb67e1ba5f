"Explorer and saliency on a tiny real run: figure builders, the widget reacting to its controls, saliency maps, export."
import json, os
from pathlib import Path
import numpy as np, pytest, torch
import plotly.graph_objects as go
from artstudy.explorer import (DK_LABEL, FilterExplorer, channel_figures, channel_summary, channel_table, checkpoint_path,
                               explore, export_channel, find_browser, find_runs, format_dk, plot_channel_metric,
                               plot_class_histogram, run_comparison, sort_channels)
from artstudy.models import load_checkpoint
from artstudy.saliency import compare_saliency, grad_cam, integrated_gradients, image_tensor, saliency

TINY = dict(dataset="wikiart7", n_per_class=3, n_valid_per_class=2, image_size=48, epochs=1, num_workers=0,
            progress=False, mode="mode_a")

@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    "Batch-1 tensors of 32-48 px gain nothing from 2 threads, and on a shared CPU 2 OpenMP threads can be 100x slower."
    n = torch.get_num_threads(); torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

@pytest.fixture(scope="module")
def run(tmp_path_factory):
    "One tiny trained run (21 WikiArt images at 48 px, one epoch) in a temporary study folder."
    from artstudy.pipeline import train_run
    d = tmp_path_factory.mktemp("study") / "tiny"
    from artstudy.config import finish_run
    train_run(dict(TINY, study="t", run_id="tiny"), run_dir=d)
    finish_run(d, quiet=True)
    return d

@pytest.fixture(scope="module")
def res(run): return run_comparison(run, "init", k=5, n_images=16)

@pytest.fixture(scope="module")
def models(run): return load_checkpoint(run / "init.pth").eval(), load_checkpoint(run / "model.pth").eval()

def test_run_comparison_reads_the_run_and_caches(run, res):
    assert find_runs(run.parent) == {"tiny": run}
    assert res["meta"]["size"] == 48 and res["meta"]["n_images"] == 16 and res["meta"]["k"] == 5
    assert len(list((run / "analysis").glob("*.npz"))) == 1
    assert run_comparison(run, "init", k=5, n_images=16)["key"] == res["key"]  # read back from the cache

def test_channel_table_and_sorting(res):
    t = channel_table(res, "blocks.5")
    assert list(t.columns) == ["D_k", "overlap", "entropy_a", "entropy_b", "dead_a", "dead_b"] and len(t) == 192
    order = sort_channels(t, "D_k")
    slow = sorted(range(192), key=lambda c: (np.isnan(t.D_k[c]), -np.nan_to_num(t.D_k[c]), c))  # a plain loop
    assert list(order) == slow
    assert t.overlap.dropna().between(0, 1 + 1e-6).all() and t.entropy_b.dropna().between(0, 1 + 1e-6).all()

def test_panels_have_the_expected_traces(res):
    layer = "blocks.6"
    ch = int(sort_channels(channel_table(res, layer), "D_k")[0])
    s = channel_summary(res, layer, ch)
    figs = channel_figures(res, layer, ch, labels=("init", "tuned"), n_show=5, thumb=32)
    assert set(figs) == {"metric", "featvis", "topk", "classes", "metrics"}
    assert all(isinstance(f, go.Figure) for f in figs.values())
    assert [t.name for t in figs["metric"].data] == ["channels", f"channel {ch}"] and figs["metric"].data[1].x == (0,)
    assert len(figs["metric"].data[0].x) == 320
    assert [type(t).__name__ for t in figs["topk"].data] == ["Image"] * (len(s["topk"]["a"]) + len(s["topk"]["b"]))
    assert [t.name for t in figs["featvis"].data] == ["init (not rendered)", "tuned (not rendered)"]
    h = figs["classes"]
    assert [t.name for t in h.data] == ["init", "tuned"] and list(h.data[0].x) == res["classes"]
    codes = res["labels"][s["topk"]["b"]]
    assert [int(v) for v in h.data[1].y] == [int((codes == c).sum()) for c in range(len(res["classes"]))]
    assert figs["metrics"].data[0].text[0] == format_dk(channel_table(res, layer).D_k[ch])
    assert figs["metrics"].data[0].y[:2] == (DK_LABEL, "top-k overlap")

def test_bad_inputs(res):
    with pytest.raises(ValueError, match="not in the comparison"): channel_table(res, "blocks.99")
    with pytest.raises(IndexError, match="out of range"): channel_summary(res, "blocks.0", 16)
    with pytest.raises(ValueError, match="cannot sort"): sort_channels(channel_table(res, "blocks.0"), "speed")
    with pytest.raises(ValueError, match="single-label"): plot_class_histogram({"a": [0]}, np.zeros((3, 2)), ["x", "y"])

def test_widget_reacts_to_layer_and_channel(run, tmp_path):
    ex = FilterExplorer(run.parent, k=5, n_images=16, featvis=dict(steps=4, size=32, cache=tmp_path / "fv"),
                        n_show=4, thumb=32, export_dir=tmp_path)
    assert ex.layer_w.value == "bn2" and ex.rank_w.max == 1279 and "layer=bn2" in ex.state.value
    ex.layer_w.value = "blocks.4"
    assert ex.rank_w.max == 111 and ex.rank_w.value == 0 and "layer=blocks.4" in ex.state.value
    assert len(ex.figures["metric"].data[0].y) == 112 and ex.figures["metric"].layout.title.text.startswith("blocks.4")
    ch0 = ex.channel
    ex.rank_w.value = 3
    assert ex.channel == int(sort_channels(channel_table(ex.result, "blocks.4"), "D_k")[3]) != ch0
    assert f"channel={ex.channel} rank=3" in ex.state.value and ex.figures["metric"].data[1].x == (3,)
    assert ex.figures["metrics"].layout.title.text == f"blocks.4 : channel {ex.channel}"
    fv = ex.render_featvis()
    assert [t.name for t in ex.figures["featvis"].data] == list(ex.labels) and fv[ex.labels[0]].shape == (3, 32, 32)
    ex.auto_w.value = True; ex.rank_w.value = 4  # auto render: the new channel is drawn at once
    assert (str(ex.run), "control", "blocks.4", ex.channel) in ex._fv
    assert [t.name for t in ex.figures["featvis"].data] == list(ex.labels)
    fig = ex.show_saliency(n_steps=4)
    assert len(fig.data) == 8 and len(ex.figures["saliency"].data) == 8
    out = ex.export(tmp_path / "panel.html")
    assert out.is_file() and out.stat().st_size > 100_000 and "saliency" in out.read_text()
    assert "exported to" in ex.status.value
    assert ex.export(tmp_path / "panel.gif") is None and "export failed" in ex.status.value
    assert explore(run.parent, k=5, n_images=16).children  # the function form builds the same box

def test_saliency_shape_and_models_differ(res, models):
    img = image_tensor(res["files"][0], 48)
    assert img.shape == (3, 48, 48) and 0 <= img.min() and img.max() <= 1
    a, b = models
    for f in (lambda m: grad_cam(m, img, layer="blocks.6", target=2), lambda m: integrated_gradients(m, img, target=2, n_steps=8)):
        ma, mb = f(a), f(b)
        assert ma.shape == mb.shape == (48, 48) and (ma >= 0).all()
        assert not torch.allclose(ma, mb)
    s = saliency(b, img, n_steps=4, classes=res["classes"])
    assert s["name"] in res["classes"] and 0 < s["prob"] <= 1 and s["layer"] == "bn2"
    fig = compare_saliency(a, b, res["files"][0], labels=("init", "tuned"), size=48, n_steps=4, classes=res["classes"])
    assert [t.name for t in fig.data][:4] == ["init image", "init image", "init Grad-CAM", "init integrated gradients"]
    assert np.asarray(fig.data[2].z).shape == (48, 48)

def test_export_html_and_png(res, tmp_path, monkeypatch):
    figs = channel_figures(res, "blocks.2", 0, n_show=3, thumb=32)
    html = export_channel(figs, tmp_path / "a" / "ch.html", title="blocks.2:0")
    assert html.is_file() and html.read_text().count("Plotly.newPlot") == len(figs)
    if find_browser() is not None:
        png = export_channel([figs["classes"], figs["metrics"]], tmp_path / "ch.png")
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    monkeypatch.delenv("BROWSER_PATH", raising=False); monkeypatch.setenv("PATH", "")
    with pytest.raises(RuntimeError, match="apt-get install chromium"): export_channel(figs, tmp_path / "ch2.png")
    assert not (tmp_path / "ch2.png").exists()


def test_find_runs_resolves_project_relative_paths_and_skips_failed_runs(run, tmp_path, monkeypatch):
    import artstudy.explorer as E
    monkeypatch.setattr(E, "project_root", lambda: run.parent.parent)   # the project holds <study>/tiny
    monkeypatch.chdir(tmp_path)                                   # elsewhere, as a notebook running in nbs/ is
    assert find_runs(f"{run.parent.name}/tiny") == {"tiny": run}
    (tmp_path / "failed").mkdir()
    for f in ("metrics.json", "model.pth", "init.pth", "error.txt"): (tmp_path / "failed" / f).write_text("x")
    assert find_runs(tmp_path) == {}

def test_explore_notebook_names_the_paths_it_tried(tmp_path):
    import papermill as pm
    env = {"ARTSTUDY_EXPLORE_RUNS": "runs/no_such_study/x"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        with pytest.raises(pm.PapermillExecutionError) as e:
            nbs = Path(__file__).resolve().parents[1] / "nbs"
            pm.execute_notebook(str(nbs / "explore.ipynb"), str(tmp_path / "out.ipynb"), cwd=str(nbs), progress_bar=False,
                                kernel_name="python3")
    finally:
        for k, v in old.items():
            if v is None: os.environ.pop(k, None)
            else: os.environ[k] = v
    from artstudy.config import project_root
    assert e.value.ename == "FileNotFoundError" and str(project_root() / "runs/no_such_study/x") in e.value.evalue
    out = json.loads((tmp_path / "out.ipynb").read_text())
    assert not any("Showing a tiny demo run" in "".join(o.get("text", "")) for c in out["cells"] for o in c.get("outputs", []))

def test_plotly_bundle_ships_once(run, tmp_path):
    "Every figure widget sends a small shim and a reference; plotly's 5 MB module travels once, in one bundle widget."
    import plotly
    from ipywidgets.widgets.widget import _instances
    from artstudy.explorer import _PlotlyBundle
    ex = FilterExplorer(run.parent, k=5, n_images=16, n_show=4, thumb=32, export_dir=tmp_path)
    ex.rank_w.value = 1                                                               # a redraw: six new figure widgets
    FilterExplorer(run.parent, k=5, n_images=16, n_show=4, thumb=32, export_dir=tmp_path)   # and a second explorer
    bundle = (Path(plotly.__file__).parent / "package_data" / "widgetbundle.js").read_bytes()
    loaders = [w for w in _instances.values() if isinstance(w, _PlotlyBundle)]
    figs = [w for w in _instances.values() if isinstance(w, go.FigureWidget)]
    assert len(loaders) == 1 and loaders[0].bundle == bundle and len(bundle) > 4_000_000
    assert len(figs) >= 18 and all(f in figs for f in ex.figures.values())
    for f in figs:
        s = f.get_state(["_esm", "_bundle"])
        assert len(s["_esm"]) < 2_000 and s["_bundle"] == f"IPY_MODEL_{loaders[0].model_id}"
    assert sum(len(f._esm) for f in figs) + len(loaders[0].bundle) < 1.05 * len(bundle)   # all the JavaScript sent: one bundle


# ---------------------------------------------------------------- the reference: the BN control by default
def test_default_reference_is_the_bn_control_of_the_runs_own_training_images(run, res, tmp_path):
    "The explorer opens on the BN control; it is the init with BN statistics re-estimated on the run's training images."
    from artstudy.compare import run_training_images
    from artstudy.data import eval_loader
    ex = FilterExplorer(run.parent, k=5, n_images=16, n_show=4, thumb=32, export_dir=tmp_path)
    assert ex.ref_w.value == "control" and ex.labels == ("BN control", "tiny") and "ref=BN control" in ex.state.value
    assert [o[1] for o in ex.ref_w.options] == ["control", "init"]           # one run: no other run to compare with
    ctl = checkpoint_path(run, "control")
    assert ctl.parent == run / "analysis" and ex.result["meta"]["run_a"] == str(ctl)
    c, i = torch.load(ctl, weights_only=True)["state_dict"], torch.load(run / "init.pth", weights_only=True)["state_dict"]
    stats = {k for k in i if k.rsplit(".", 1)[-1] in ("running_mean", "running_var", "num_batches_tracked")}
    assert all(torch.equal(c[k], i[k]) for k in i if k not in stats)           # no weight moved
    # by hand: the stem BN's running mean is the mean of the stem conv's output over the run's 21 training images
    init = load_checkpoint(run / "init.pth").eval()
    with torch.no_grad():
        dl = eval_loader(run_training_images(run), split=None, size=48, bs=64, stats=((0.5,) * 3, (0.5,) * 3))
        outs = [init.conv_stem(x) for x, *_ in dl]
    assert [len(o) for o in outs] == [21]                                       # one batch: BN's average is its mean
    hand = outs[0].mean((0, 2, 3))
    torch.testing.assert_close(c["bn1.running_mean"], hand, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(c["bn1.running_mean"], i["bn1.running_mean"])
    # the same conv weights as init: the same D_k, whichever of the two is the reference
    ctrl = run_comparison(run, k=5, n_images=16)
    for layer in ("blocks.2", "blocks.6"):
        np.testing.assert_allclose(channel_table(ctrl, layer).D_k, channel_table(res, layer).D_k, rtol=1e-6, equal_nan=True)
    mtime = ctl.stat().st_mtime_ns
    assert checkpoint_path(run, "control") == ctl and ctl.stat().st_mtime_ns == mtime   # made once, then found
    ex.ref_w.value = "init"
    assert ex.labels == ("init", "tiny") and ex.result["meta"]["run_a"] == str(run / "init.pth")

# ---------------------------------------------------------------- D_k in readable units
def _parse(text:str) -> float:
    "A number written by `format_dk` (plain, or m×10ⁿ with superscript digits), read back."
    if "×10" not in text: return float(text)
    m, e = text.split("×10")
    return float(m) * 10 ** int(e.translate(str.maketrans("⁻⁰¹²³⁴⁵⁶⁷⁸⁹", "-0123456789")))

@pytest.mark.parametrize("v", [3.7e-6, 4.2e-4, 9.96e-4, 0.0123, 0.5, 1.0, 37.0, 2.5e4, -6e-5])
def test_format_dk_shows_the_magnitude(v):
    t = format_dk(v)
    assert t != "0.000" and any(ch in "123456789" for ch in t)                  # never a row of zeros
    assert abs(_parse(t) - v) <= 0.05 * abs(v)                                  # two significant digits
    assert len(t.split("×")[0].replace("-", "").replace(".", "").lstrip("0")) == 2

def test_dk_panels_of_a_real_run_are_readable(res):
    "Fine-tuning moves filters by about 10⁻³: the bar, the hover text and the axis show that, and the label says D_k's unit."
    t = channel_table(res, "blocks.6")
    ch = int(sort_channels(t, "D_k")[0])
    v = float(t.D_k[ch])
    assert 0 < v < 1e-2, v                                                      # small: what '.3f' showed as 0.000
    bar = channel_figures(res, "blocks.6", ch, n_show=2, thumb=32)["metrics"].data[0]
    assert bar.y[0] == DK_LABEL and "mean|ΔW| / mean|W₀|" in bar.y[0] and "ratio" in bar.y[0]
    assert bar.text[0] == format_dk(v) and abs(_parse(bar.text[0]) - v) <= 0.05 * v
    fig = plot_channel_metric(t, "D_k", ch)
    assert fig.layout.yaxis.title.text == DK_LABEL and fig.layout.yaxis.exponentformat == "power"
    assert fig.data[0].text[0] == format_dk(v) and "%{text}" in fig.data[0].hovertemplate

# ---------------------------------------------------------------- ready when the study is: prepare_explorer
@pytest.fixture(scope="module", autouse=True)
def _own_cache(tmp_path_factory):
    "Thumbnails (and any other cache) of these tests go to a temporary folder, not to the project's cache."
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ARTSTUDY_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        yield

def _study(run, root:Path, names=("good",)) -> Path:
    "A study folder under `root` holding copies of the tiny run under `names` (copies: the module's run stays as it is)."
    import shutil
    for n in names: shutil.copytree(run, root / "study" / n, ignore=shutil.ignore_patterns("analysis"))
    return root / "study"

def _files(*folders) -> dict:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for d in folders for p in Path(d).rglob("*") if p.is_file()}

def _no_loading(monkeypatch):
    "Make loading a model or a dataset fail: what must not happen once the study is prepared."
    import artstudy.data, artstudy.models
    def boom(*a, **k): raise AssertionError("loaded a model or a dataset")
    for mod, name in ((artstudy.models, "load_checkpoint"), (artstudy.data, "load_dataset")): monkeypatch.setattr(mod, name, boom)

def test_prepare_explorer_prepares_the_verified_runs_once(run, tmp_path, monkeypatch):
    from artstudy.config import cache_dir, read_json, run_problem
    from artstudy.explorer import PREPARED, prepare_explorer, read_prepared
    study = _study(run, tmp_path, ("good", "bare", "tampered"))
    (study / "bare" / "metrics.json").write_text("{}")                                   # finished, but holds no result
    (study / "tampered" / "model.pth").write_bytes((study / "tampered" / "init.pth").read_bytes())   # changed once finished
    assert run_problem(study / "good") is None and run_problem(study / "bare") and run_problem(study / "tampered")
    prep = prepare_explorer(study, k=5, n_images=16)
    assert prep.run.tolist() == ["good"] and prep.state.tolist() == ["computed"], prep.error.tolist()
    assert not (study / "bare" / "analysis").exists() and not (study / "tampered" / "analysis").exists()   # never touched
    row = prep.iloc[0]
    assert Path(row.control).is_file() and Path(row.control).parent == study / "good" / "analysis"
    assert Path(row.analysis).is_file() and len(list((study / "good" / "analysis").glob("explorer-*.json"))) == 1
    assert row.thumbnails > 0 and len(list((cache_dir() / "thumbs").glob("*.png"))) >= row.thumbnails
    rec = read_prepared(study)
    assert rec == read_json(study / PREPARED) and rec["runs"] == ["good"] and (rec["k"], rec["n_images"], rec["split"]) == (5, 16, "valid")
    assert read_prepared(study / "good") == rec                                           # from a run folder too
    # a second call finds everything by its key: no model, no dataset is loaded, nothing is written
    made = _files(study, cache_dir())
    _no_loading(monkeypatch)
    again = prepare_explorer(study, k=5, n_images=16)
    assert again.state.tolist() == ["cached"] and again.analysis.tolist() == prep.analysis.tolist()
    assert {k: v for k, v in _files(study, cache_dir()).items() if not k.endswith(PREPARED)} == \
           {k: v for k, v in made.items() if not k.endswith(PREPARED)}

def test_a_prepared_study_opens_without_loading_a_model_or_the_data(run, tmp_path):
    "In a fresh process, as in Voilà's kernel: the explorer opens on the prepared run and imports no model or data code."
    import subprocess, sys
    from artstudy.explorer import prepare_explorer
    study = _study(run, tmp_path)
    prepare_explorer(study, k=5, n_images=16)
    made = _files(study, os.environ["ARTSTUDY_CACHE_DIR"])
    code = ("import sys\nfrom artstudy.explorer import FilterExplorer\n"
            f"ex = FilterExplorer({str(study)!r}, k=5, n_images=16)\n"
            "print(ex.status.value)\n"
            "print('loaded:', [m for m in ('artstudy.models', 'artstudy.data', 'timm', 'torchvision', 'sklearn') if m in sys.modules])\n"
            "print('topk images:', len(ex.figures['topk'].data))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=os.environ, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "analysis read from the cache" in r.stdout and "loaded: []" in r.stdout, r.stdout
    assert int(r.stdout.split("topk images:")[1]) > 0
    assert _files(study, os.environ["ARTSTUDY_CACHE_DIR"]) == made   # nothing computed, nothing written

def test_the_comparison_index_follows_what_the_comparison_reads(run, tmp_path, monkeypatch):
    "The index is keyed by contents: the same inputs find the result without a model; a changed checkpoint recomputes."
    from artstudy.config import CHECKPOINTS, finish_run, read_json, sha256_file, stage_metrics
    from artstudy.data import synthetic_dataset
    from artstudy.explorer import _dataset_id, _folder_digest
    r = _study(run, tmp_path) / "good"
    first = run_comparison(r, "init", k=5, n_images=16)
    with monkeypatch.context() as mp:
        _no_loading(mp)
        assert run_comparison(r, "init", k=5, n_images=16)["key"] == first["key"]        # found by the index alone
    (r / "model.pth").write_bytes((r / "init.pth").read_bytes())                        # another model under the same name,
    m = read_json(r / "metrics.json"); m.pop(CHECKPOINTS)                               # recorded as the run's own
    stage_metrics(r, m); finish_run(r, quiet=True)
    moved = run_comparison(r, "init", k=5, n_images=16)
    assert moved["key"] != first["key"] and moved["meta"]["b"] == sha256_file(r / "init.pth")
    assert np.nanmax(channel_table(moved, "blocks.6").D_k) == 0                          # the model is the init now
    # a folder dataset is identified by its listing: a new image changes its digest
    d = synthetic_dataset(tmp_path / "syn", classes=["a", "b"], n_per_class=4, size=16, layout="folder")
    before = _folder_digest(d)
    (d / "a" / "extra.png").write_bytes((d / "a" / "a_000.png").read_bytes())
    assert _folder_digest(d) != before
    root, label, digest = _dataset_id(r)                                                # a labels.csv dataset: its table
    assert Path(root).name == "wikiart7" and digest == sha256_file(Path(root) / "labels.csv")
