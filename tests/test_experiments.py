"Papermill smoke runs of every experiment notebook through the batch runner, then the study report, on tiny real data."
import json
from pathlib import Path
import pandas as pd, pytest, yaml
from artstudy.report import findings_table, render_report, study_results, analysis_layers_table, weight_change_table
from artstudy.runs import run_study

ROOT = Path(__file__).resolve().parents[1]

@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    "configs/smoke.yaml cut further: 2 modes x 2 seeds, one analysis pair, and one seed of every other experiment."
    runs = tmp_path_factory.mktemp("runs")
    cfg = yaml.safe_load((ROOT/"configs"/"smoke.yaml").read_text())
    cfg["study"] = "tiny"
    g = {x["name"]: x for x in cfg["grids"]}
    g["transfer_modes"]["axes"]["mode"] = ["off_the_shelf", "mode_a"]
    g["analysis"]["runs"] = g["analysis"]["runs"][:1]
    g["lr_ratio"]["axes"]["lr_ratio"] = [0.1]
    summary = run_study(cfg, runs_dir=runs, progress=False, workers=2)
    return runs, summary

def test_every_experiment_notebook_runs_under_papermill(tiny_study):
    runs, summary = tiny_study
    assert (summary.status == "done").all(), summary.to_string()
    notebooks = {json.loads((runs/"tiny"/r/"params.json").read_text())["notebook"] for r in summary.run_id}
    assert {Path(n).name for n in notebooks} == {p.name for p in (ROOT/"nbs"/"experiments").glob("*.ipynb")} - {"report.ipynb"}
    for r in summary.run_id:
        d = runs/"tiny"/r
        assert (d/"out.ipynb").is_file() and (d/"metrics.json").is_file()

def test_runner_params_survive_the_training_record(tiny_study):
    "The runner writes params.json first; train_run adds to it instead of replacing the notebook parameters."
    runs, _ = tiny_study
    p = json.loads((runs/"tiny"/"double_finetune-wikiart7_mode_a-s1"/"params.json").read_text())
    assert p["params"]["SOURCE_NAME"] == "wikiart7_mode_a" and p["mode"] == "double" and p["versions"]["torch"]

def test_report_renders_findings_and_figures(tiny_study):
    runs, _ = tiny_study
    res = study_results("tiny", runs_dir=runs)
    assert set(res.group) == {"transfer_modes", "analysis", "double_finetune", "multitask", "lr_ratio", "source_styles",
                              "source_classes", "distance_gain"}   # grouped by grid: source_styles uses transfer_modes.ipynb
    ft = findings_table(res, analysis_layers_table("tiny", runs_dir=runs)).set_index("finding")
    assert list(ft.index) == ["F1", "F2", "F3", "F4", "F5", "F6", "F7", "F8a", "F8b", "F8c", "F9"]
    assert ft.verdict["F3"] != "not run" and ft.verdict["F7"] != "not run" and ft.verdict["F8b"] != "not run"
    assert ft.verdict["F9"] == "not run"   # its analysis pairs were cut
    pairs = pd.read_csv(runs/"tiny"/"distance_gain"/"pairs.csv")
    assert len(pairs) == 4 and pairs.emd.gt(0).all() and pairs.similarity.between(0, 1).all()   # 2 sources x 2 targets
    wc = weight_change_table("tiny", "source_classes", runs_dir=runs)
    assert set(wc.run_id) == set(res.run_id[res.group == "source_classes"]) and (wc.relative_frobenius > 0).all()
    assert wc.block.iloc[0] == "stem" and "blocks.6" in set(wc.block)
    html = render_report("tiny", runs_dir_=runs)
    text = html.read_text()
    assert html.name == "report.html" and "Plotly.newPlot" in text and "F1" in text
    assert (runs/"tiny"/"findings.csv").is_file()
