"""The battery end to end on a collection the project has never seen (class folders, no splits, one class too small),
at a smoke budget: checks, fixed splits, a plan, every run, the report deciding the transfer-mode findings; and bad
collections refused, by name, before any training."""
import json, shutil, warnings
from pathlib import Path
import pandas as pd, pytest
from PIL import Image
from artstudy.battery import VIEW, battery, prepare_collection, study_name
from artstudy.data import DatasetError, synthetic_dataset
from artstudy.findings import FINDINGS

DECIDED = [f for f, x in FINDINGS.items() if set(x.grids) <= {"transfer_modes", "off_the_shelf", "analysis"}]

@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("ARTSTUDY_CACHE_DIR", str(tmp_path_factory.getbasetemp()/"cache"))

def _collection(path, n=12, small=3):
    src = synthetic_dataset(path, classes=("red", "green", "blue", "grey"), n_per_class=n, size=32, layout="folder")
    for f in sorted((src/"grey").glob("*.png"))[small:]: f.unlink()
    return src

@pytest.fixture(scope="module")
def done(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("battery")
    src = _collection(tmp/"my collection")
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        out = battery(src, budget=3, seeds=2, workers=2, runs_dir=tmp/"runs", image_size=32, batch_size=8, progress=False)
    return dict(src=src, out=out, runs=tmp/"runs", warnings=[str(x.message) for x in w])

def test_the_battery_runs_every_grid_and_decides_the_findings(done):
    out = done["out"]
    assert (out["runs"].status == "done").all(), out["runs"].to_string()
    assert set(out["runs"].run_id.str.split("-").str[0]) == {"transfer_modes", "off_the_shelf", "analysis"}
    f = pd.read_csv(out["folder"]/"findings.csv")
    decided = f[f.finding.isin(DECIDED)]
    assert set(decided.finding) == set(DECIDED), f.finding.tolist()
    assert decided.verdict.isin(["reproduced", "reversed", "equivalent", "inconclusive"]).all(), decided[["finding", "verdict"]]
    html = out["report"].read_text()
    assert "The best classifier, class by class" in html and "confusion on the test split" in html
    assert "Multi-task vs single-task" not in html          # a section appears only for grids the study ran

def test_small_classes_are_named_and_left_out_and_splits_are_fixed_in_the_study(done):
    out = done["out"]
    assert out["collection"].left_out == {"grey": 3}
    assert any("grey" in m and "left out" in m for m in done["warnings"])
    labels = pd.read_csv(out["folder"]/VIEW/"labels.csv")
    assert set(labels.label) == {"red", "green", "blue"} and set(labels.split) == {"train", "valid", "test"}
    assert not list(out["folder"].glob(f"{VIEW}/**/*.png"))  or (out["folder"]/VIEW/"files").is_symlink()   # linked, not copied

def test_a_rerun_resumes_with_the_same_splits_and_plan(done):
    before = (done["out"]["folder"]/VIEW/"labels.csv").read_text()
    again = battery(done["src"], budget=50, seeds=5, workers=2, runs_dir=done["runs"], report=False, progress=False)
    assert again["plan"] is None and (again["runs"].status == "skipped: finished").all(), again["runs"].status.tolist()
    assert (done["out"]["folder"]/VIEW/"labels.csv").read_text() == before

def test_two_collections_never_share_a_study(tmp_path):
    a, b = _collection(tmp_path/"a"/"art"), _collection(tmp_path/"b"/"art")
    assert study_name(a) != study_name(b) and study_name(a, "label") != study_name(a)

def test_bad_files_are_named_before_any_training(tmp_path):
    src = _collection(tmp_path/"c")
    (src/"red"/"red_001.png").write_bytes(b"not an image")
    with pytest.raises(DatasetError, match="red_001.png"): battery(src, budget=3, runs_dir=tmp_path/"runs", progress=False)
    assert not list((tmp_path/"runs").glob("*/*/params.json"))

def test_an_unknown_label_column_names_the_columns(tmp_path):
    src = synthetic_dataset(tmp_path/"csv", n_per_class=10, size=16, layout="csv")
    with pytest.raises(DatasetError, match=r"label column 'style' not found.*available label columns: \['label'\]"):
        prepare_collection(src, tmp_path/"study", label="style")

def test_a_changed_collection_is_refused_not_resplit(tmp_path):
    src = _collection(tmp_path/"d", n=10)
    prepare_collection(src, tmp_path/"study")
    Image.new("RGB", (32, 32), (200, 30, 30)).save(src/"red"/"red_new.png")
    with pytest.raises(DatasetError, match=r"changed since the battery fixed its splits in .*: 1 image\(s\) added"):
        prepare_collection(src, tmp_path/"study")

def test_the_cli_refuses_a_collection_of_one_usable_class(tmp_path):
    import contextlib, io
    from artstudy.__main__ import main
    src = _collection(tmp_path/"e", n=12, small=3)
    for c in ("green", "blue"): shutil.rmtree(src/c)
    buf = io.StringIO()
    with contextlib.redirect_stderr(buf), contextlib.redirect_stdout(io.StringIO()):
        rc = main(["battery", str(src), "--runs-dir", str(tmp_path/"runs"), "--dry-run"])
    assert rc == 2 and "the battery needs two or more" in buf.getvalue() and "grey" in buf.getvalue(), buf.getvalue()

def test_the_explorer_opens_on_the_batterys_runs_without_computing(done, tmp_path):
    "The battery prepared the explorer: served by Voilà as `make explore EXPLORE_STUDY=<study>` serves it, it opens on the first try from the cache."
    import os, sys
    sys.path.insert(0, str(Path(__file__).parent))
    from _browser import CHROMIUM, browser_missing, explorer_state, free_port, open_explorer, served_env, stop, voila, wait_http
    if (why := browser_missing()) or not (Path(sys.executable).parent/"voila").exists(): pytest.skip(why or "voila is not installed")
    from playwright.sync_api import expect, sync_playwright
    prep = done["out"]["explorer"]
    trained = [r for r in done["out"]["folder"].iterdir() if (r/"model.pth").is_file() and (r/"init.pth").is_file()]
    assert len(prep) == len(trained) > 0 and set(prep.state) == {"computed"}, prep[["run", "state", "error"]]
    env = {**served_env(tmp_path, done["out"]["folder"]), "ARTSTUDY_CACHE_DIR": os.environ["ARTSTUDY_CACHE_DIR"],
           "ARTSTUDY_RUNS_DIR": str(done["runs"])}
    port, log = free_port(), tmp_path/"voila.log"
    with open(log, "w") as out:
        p = voila(port, env, out)
        try:
            wait_http(f"http://127.0.0.1:{port}/favicon.ico", p, log)
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
                try:
                    page, errs, secs = open_explorer(browser, f"http://127.0.0.1:{port}")
                    expect(page.locator(".explorer-status")).to_contain_text("analysis read from the cache")
                    assert "ref=BN control" in explorer_state(page)
                finally: browser.close()
        finally: stop(p)
