"Explorer and saliency on a tiny real run: figure builders, the widget reacting to its controls, saliency maps, export."
import json, os
from pathlib import Path
import numpy as np, pytest, torch
import plotly.graph_objects as go
from artstudy.explorer import (FilterExplorer, channel_figures, channel_summary, channel_table,
                               explore, export_channel, find_browser, find_runs, plot_class_histogram, run_comparison,
                               sort_channels)
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
    assert figs["metrics"].data[0].text[0] == f"{channel_table(res, layer).D_k[ch]:.3f}"
    assert figs["metrics"].data[0].y[:2] == ("D_k (relative change)", "top-k overlap")

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
    assert (str(ex.run), "init", "blocks.4", ex.channel) in ex._fv
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
