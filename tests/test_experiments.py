"Papermill smoke runs of every experiment notebook through the batch runner, then the study report, on tiny real data."
import json
from pathlib import Path
import pandas as pd, pytest, yaml
from artstudy.findings import FINDINGS, decide_findings
from artstudy.report import render_report, study_results, analysis_layers_table, weight_change_table
from artstudy.runs import run_study

ROOT = Path(__file__).resolve().parents[1]

@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    "configs/smoke.yaml cut further: Mode A and scratch x 2 seeds, one analysis pair, two LR ratios."
    runs = tmp_path_factory.mktemp("runs")
    cfg = yaml.safe_load((ROOT/"configs"/"smoke.yaml").read_text())
    cfg["study"] = "tiny"
    g = {x["name"]: x for x in cfg["grids"]}
    g["transfer_modes"]["axes"]["mode"] = ["mode_a", "from_scratch"]
    g["analysis"]["axes"]["pair"] = g["analysis"]["axes"]["pair"][:1]
    g["lr_ratio"]["axes"]["lr_ratio"] = [0.1, 1.0]   # F8a's rule needs a ratio below the reference and one at it
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
    p = json.loads((runs/"tiny"/"double_finetune-wikiart7-n_per_class3-s1"/"params.json").read_text())
    assert p["params"]["SOURCE_NAME"] == "wikiart7" and p["mode"] == "double" and p["versions"]["torch"]
    assert p["hardware"]["cpu"] and p["hardware"]["torch_threads"] >= 1

def test_report_renders_findings_and_figures(tiny_study):
    runs, _ = tiny_study
    res = study_results("tiny", runs_dir=runs)
    assert set(res.group) == {"source", "transfer_modes", "off_the_shelf", "analysis", "double_finetune", "multitask", "lr_ratio",
                              "source_styles", "source_classes", "distance_gain"}   # grouped by grid, not by notebook
    ft = decide_findings(res, analysis_layers_table("tiny", runs_dir=runs), analysis_layers_table("tiny", runs_dir=runs, part="jackknife"))
    assert list(dict.fromkeys(ft.finding)) == list(FINDINGS)   # every registered finding has a row, in registry order
    decided = ft.set_index("finding")
    verdicts = ("reproduced", "reversed", "inconclusive", "equivalent")
    for f in ("F1", "F2", "F3", "F4", "F5", "F6", "F8a", "F8b", "F10"):   # two seeds each: decided, whatever the verdict
        v = decided.loc[[f]]
        assert v.verdict.map(lambda x: x.startswith(verdicts)).all() and (v.n >= 1).all(), (f, v.to_dict("records"))
    assert (decided.loc[["F1"]].n == 2).all() and decided.loc[["F1"]].ci_low.notna().all()
    assert "crossed" in decided.loc["F1", "test"] and "jackknife" in decided.loc["F3", "test"]   # shared images in both intervals
    assert res.correct.map(lambda c: isinstance(c, dict)).sum() >= len(res[res.group.isin(["transfer_modes", "off_the_shelf"])])
    assert decided.loc[["F9"]].verdict.tolist() == ["not run"]   # its imagenet_vs_mode_b pair was cut
    pairs = pd.read_csv(runs/"tiny"/"distance_gain"/"pairs.csv")
    assert len(pairs) == 4 and pairs.emd.gt(0).all() and pairs.similarity.between(0, 1).all()   # 2 sources x 2 targets
    wc = weight_change_table("tiny", "source_classes", runs_dir=runs)
    assert set(wc.run_id) == set(res.run_id[res.group == "source_classes"]) and (wc.relative_frobenius > 0).all()
    assert wc.block.iloc[0] == "stem" and "blocks.6" in set(wc.block)
    html = render_report("tiny", runs_dir_=runs)
    text = html.read_text()
    assert html.name == "report.html" and "Plotly.newPlot" in text and "F1" in text
    assert (runs/"tiny"/"findings.csv").is_file() and (runs/"tiny"/"layers.csv").is_file()
    assert ">nan<" not in text.lower() and "<details>" in text   # blank cells, long tables folded
