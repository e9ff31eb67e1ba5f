"""A run's state is verified, not trusted: every file of a finished run folder corrupted in turn, a checkpoint with one
flipped byte, a run folder that is a symlink out of its study, dependencies (in this study or another) that failed or
were damaged, and a `report` killed with -9 while its kernel runs. One bad run never stops `collect` or the others."""
import json, os, shutil, signal, subprocess, sys, time
from pathlib import Path
import nbformat, psutil, pytest, torch, yaml
from artstudy.config import (CHECKPOINTS, PREDICTIONS, RunFolder, atomic_write_json, check_checkpoint, finish_run,
                             run_problem, stage_metrics)
from artstudy.models import create_backbone, load_checkpoint, save_checkpoint
from artstudy.runs import collect, run_status, run_study, study_status

ROOT = Path(__file__).resolve().parents[1]
RESULT = ("metrics.json", "params.json", "init.pth", "model.pth")   # the files whose damage unfinishes a run

def _flip(path, keep_mtime=False):
    "Flip one byte in the middle of `path` (inside a tensor for a checkpoint), optionally restoring its mtime."
    st, b = os.stat(path), bytearray(Path(path).read_bytes())
    b[len(b)//2] ^= 0xFF
    Path(path).write_bytes(b)
    if keep_mtime: os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))

def _truncate(path): Path(path).write_bytes(Path(path).read_bytes()[:os.path.getsize(path)//2])
def _garbage(path): Path(path).write_bytes(b"\x00\xffnot what was written\x89")

@pytest.fixture(scope="module")
def template(tmp_path_factory):
    "A finished Lite0 run folder as a run leaves it: two real checkpoints, params, history, notebook, log, metrics."
    d = tmp_path_factory.mktemp("template")/"run"; d.mkdir()
    torch.manual_seed(0)
    for f in ("init.pth", "model.pth"):
        save_checkpoint(create_backbone("efficientnet_lite0", pretrained=False, num_classes=3), d/f, classes=["a", "b", "c"])
    atomic_write_json(d/"params.json", {"study": "s", "params": {"MODE": "mode_a", "SEED": 1}})
    (d/"history.csv").write_text("epoch,train_loss\n0,1.0\n")
    (d/"out.ipynb").write_text(nbformat.writes(nbformat.v4.new_notebook()))
    (d/"run.log").write_text("# papermill ...\n")
    stage_metrics(d, {"run_id": "run", "top1": 0.5, "eval_split": "test",
                      PREDICTIONS: {"test": {"n": 2, "files": "x", "pred": [0, 1], "target": [0, 0]}}})
    finish_run(d, quiet=True)
    return d

@pytest.fixture
def study(tmp_path, template):
    "A study folder with two copies of the finished run: `good` (to damage) and `other` (left alone)."
    s = tmp_path/"runs"/"s"
    for name in ("good", "other"): shutil.copytree(template, s/name)
    return s

def _check_collect(study, damaged:str|None):
    "`collect` never raises; `other` is always collected, `good` only if undamaged, else named with why."
    df = collect(study, verbose=False)
    un = {u["run_id"]: u for u in df.attrs["unfinished"]}
    assert "other" in set(df.run_id)
    if damaged is None: assert "good" in set(df.run_id) and not un
    else: assert "good" not in set(df.run_id) and damaged in un["good"]["error"], un
    assert not any(c.startswith((PREDICTIONS, CHECKPOINTS)) for c in df.columns)

def test_a_finished_run_is_verified(study):
    assert run_status(study/"good") == ("finished", "")
    rec = json.loads((study/"good"/"metrics.json").read_text())[CHECKPOINTS]
    assert sorted(rec) == ["init.pth", "model.pth"]
    _check_collect(study, None)

def test_every_file_of_a_run_folder_damaged_in_turn(study, template):
    "Each file, truncated, flipped and replaced with garbage: a result file unfinishes the run, any other is harmless."
    files = sorted(os.listdir(template))
    assert set(RESULT) <= set(files) and len(files) >= 7, files
    for f in files:
        for damage in (_truncate, _flip, _garbage):
            shutil.rmtree(study/"good"); shutil.copytree(template, study/"good")
            damage(study/"good"/f)
            st, why = run_status(study/"good")
            if f in RESULT: assert st == "invalid" and f in why, (f, damage.__name__, st, why)
            else: assert (st, why) == ("finished", ""), (f, damage.__name__, why)
            _check_collect(study, f if f in RESULT else None)

@pytest.mark.parametrize("name, damage, why", [
    ("truncated result", lambda d: _truncate(d/"metrics.json"), "metrics.json truncated"),
    ("empty result", lambda d: (d/"metrics.json").write_text(""), "metrics.json is empty"),
    ("result not a mapping", lambda d: (d/"metrics.json").write_text("[1, 2]"), "metrics.json holds a list"),
    ("no metrics", lambda d: (d/"metrics.json").write_text("{}"), "metrics.json holds no metrics"),
    ("no headline", lambda d: atomic_write_json(d/"metrics.json", {"run_id": "good"}), "has no headline metric"),
    ("no run id", lambda d: atomic_write_json(d/"metrics.json", {"top1": 0.5}), "has no run_id"),
    ("flipped byte, mtime restored", lambda d: _flip(d/"model.pth", keep_mtime=True),
     "model.pth changed since it was staged (digest mismatch)"),
    ("flipped init", lambda d: _flip(d/"init.pth"), "init.pth changed since it was staged"),
    ("checkpoint swapped", lambda d: shutil.copy(d/"init.pth", d/"model.pth"), "model.pth changed since it was staged"),
    ("checkpoint deleted", lambda d: (d/"model.pth").unlink(), "model.pth is missing"),
    ("digests dropped, byte flipped", lambda d: (_flip(d/"model.pth"), atomic_write_json(d/"metrics.json", {
        k: v for k, v in json.loads((d/"metrics.json").read_text()).items() if k != CHECKPOINTS})), "model.pth is corrupt (the zip CRC"),
    ("digests malformed", lambda d: atomic_write_json(d/"metrics.json", {"run_id": "good", "top1": .5, CHECKPOINTS: [1]}),
     "malformed 'checkpoints' record"),
    ("params garbage", lambda d: _garbage(d/"params.json"), "params.json is not valid JSON"),
    ("params not a mapping", lambda d: (d/"params.json").write_text('"x"'), "params.json holds a str"),
    ("result linked from outside", lambda d: (shutil.move(d/"metrics.json", d.parent.parent/"m.json"),
                                              os.symlink(d.parent.parent/"m.json", d/"metrics.json")), "metrics.json lies outside the run folder"),
])
def test_damage_is_named(study, name, damage, why):
    damage(study/"good")
    st, got = run_status(study/"good")
    assert st == "invalid" and why in got, (name, st, got)
    _check_collect(study, why)
    st = study_status(study).set_index("run_id")
    assert st.loc["good", "state"] == "invalid" and why in st.loc["good", "error"]

def test_a_run_folder_outside_its_study_is_not_one_of_its_runs(study, tmp_path):
    shutil.move(study/"good", tmp_path/"elsewhere")
    os.symlink(tmp_path/"elsewhere", study/"good")
    assert run_status(tmp_path/"elsewhere") == ("finished", "")        # a good run where it lives
    st, why = run_status(study/"good")
    assert st == "invalid" and why.startswith("outside the study folder"), why
    _check_collect(study, "outside the study folder")

def test_failed_and_unfinished_runs_are_named(study):
    (study/"good"/"error.txt").write_text("run good failed: RuntimeError: boom\n...")
    assert run_status(study/"good") == ("failed", "run good failed: RuntimeError: boom")
    _check_collect(study, "RuntimeError: boom")
    (study/"good"/"error.txt").unlink(); (study/"good"/"metrics.json").unlink()
    assert run_status(study/"good")[0] == "incomplete"

# ------------------------------------------------------------------ every checkpoint load checks it

def test_a_damaged_checkpoint_is_refused_by_name(study):
    from artstudy.train import init_model
    ck = study/"good"/"model.pth"
    _flip(ck, keep_mtime=True)
    assert torch.load(ck, weights_only=True)["backbone"] == "efficientnet_lite0"   # torch alone would use it
    for load in (lambda: load_checkpoint(ck), lambda: load_checkpoint(study/"good"/"model.pth", map_location="cpu"),
                 lambda: init_model("efficientnet_lite0", 3, init_from=study/"good"),
                 lambda: create_backbone("efficientnet_lite0", pretrained=False, weights_path=ck)):
        with pytest.raises(ValueError) as e: load()
        msg = str(e.value)
        assert str(ck) in msg and "digest mismatch" in msg and "rerun the run" in msg and "restore the file" in msg, msg
        assert "\x1b" not in msg
    outside = study.parent/"loose.pth"; shutil.copy(ck, outside)   # no run folder: the zip CRCs
    with pytest.raises(ValueError, match=r"loose.pth is corrupt \(the zip CRC of its entry"): load_checkpoint(outside)
    assert check_checkpoint(study/"other"/"model.pth") == study/"other"/"model.pth"

class Planted: "An object that `torch.load(weights_only=True)` refuses."

def test_checkpoint_errors_carry_no_colour_codes(tmp_path):
    from artstudy.__main__ import error_message
    torch.save({"state_dict": {}, "backbone": Planted()}, tmp_path/"planted.pth")
    with pytest.raises(ValueError) as e: load_checkpoint(tmp_path/"planted.pth")
    assert "planted.pth" in str(e.value) and "\x1b" not in str(e.value)
    assert error_message(ValueError("\x1b[1mWeightsUnpickler error:\x1b[0m x")) == "error: WeightsUnpickler error: x"

# ------------------------------------------------------------------ the runner: redo with why, dependencies

def _notebook(path) -> str:
    "A run that saves a small checkpoint, stages `{run_id, top1}`, counts itself and finishes."
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    nb.cells = [nbformat.v4.new_code_cell('RUN_ID = "r"\nRUN_DIR = "."\nSTUDY = "s"\nCOUNTER = ""\nINIT_FROM = ""',
                                          metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell(
                    "from pathlib import Path\nimport torch\nfrom artstudy.config import stage_metrics, finish_run, check_checkpoint\n"
                    "if INIT_FROM: check_checkpoint(INIT_FROM)\n"
                    "torch.save({'w': torch.arange(4096.)}, Path(RUN_DIR, 'model.pth'))\n"
                    "stage_metrics(RUN_DIR, {'run_id': RUN_ID, 'top1': 0.5})\n"
                    "if COUNTER:\n    with open(COUNTER, 'a') as f: f.write(RUN_ID + '\\n')\n"
                    "finish_run(RUN_DIR)")]
    nbformat.write(nb, path)
    return str(path)

def _counts(path) -> dict:
    lines = Path(path).read_text().split() if Path(path).exists() else []
    return {k: lines.count(k) for k in set(lines)}

def _finished_source(d:Path, **kw):
    d.mkdir(parents=True)
    torch.save({"w": torch.arange(4096.)}, d/"model.pth")
    stage_metrics(d, {"run_id": d.name, "top1": 0.5, **kw}); finish_run(d, quiet=True)

def test_run_redoes_a_damaged_run_and_says_why(tmp_path, capfd):
    nb, counter, runs = _notebook(tmp_path/"nb.ipynb"), tmp_path/"counter.txt", tmp_path/"runs"
    cfg = {"study": "s", "notebook": nb, "base": {"counter": str(counter)}, "runs": [{"id": i} for i in "abcd"]}
    d = runs/"s"
    for r in "abcd": _finished_source(d/r)   # as the notebook leaves them (no kernel: faster)
    assert run_study(cfg, runs_dir=runs, progress=False).status.tolist() == ["skipped: finished"] * 4
    _flip(d/"a"/"model.pth", keep_mtime=True)
    _truncate(d/"b"/"metrics.json")
    shutil.move(d/"c", tmp_path/"c_elsewhere"); os.symlink(tmp_path/"c_elsewhere", d/"c")
    capfd.readouterr()
    res = run_study(cfg, runs_dir=runs, progress=False).set_index("run_id").status
    assert res.to_dict() == {"a": "done", "b": "done", "c": "done", "d": "skipped: finished"}
    err = capfd.readouterr().err
    assert "redoing a: model.pth changed since it was staged (digest mismatch)" in err, err
    assert "redoing b: metrics.json truncated" in err and "redoing c: outside the study folder" in err, err
    assert _counts(counter) == {"a": 1, "b": 1, "c": 1}
    assert all(run_status(d/r) == ("finished", "") for r in "abcd") and not (d/"c").is_symlink()
    assert run_status(tmp_path/"c_elsewhere") == ("finished", "")      # the folder outside was not touched
    assert len(list((d/".stale").iterdir())) == 3                      # the damaged folders, kept for post-mortems

def test_a_run_starts_only_from_verified_runs_of_another_study(tmp_path):
    runs, src = tmp_path/"runs", tmp_path/"runs"/"src"
    for r in ("ok", "failed", "bad"): _finished_source(src/r)
    (src/"failed"/"error.txt").write_text("run failed failed: RuntimeError: out of memory\n")
    _flip(src/"bad"/"model.pth")
    (src/"busy").mkdir(); (src/"busy"/"params.json").write_text("{}")   # still running (or killed)
    nb = _notebook(tmp_path/"nb.ipynb")
    cfg = {"study": "dst", "notebook": nb, "runs": [
        {"id": "from_failed", "params": {"init_from": "${run:src/failed}/model.pth"}},
        {"id": "from_bad", "params": {"init_from": "${run:src/bad}/model.pth"}},
        {"id": "from_busy", "params": {"init_from": str(src/"busy"/"model.pth")}},     # a plain path counts too
        {"id": "from_missing", "params": {"init_from": "${run:src/never}/model.pth"}},
        {"id": "from_ok", "params": {"init_from": "${run:src/ok}/model.pth"}},
        {"id": "after", "params": {"init_from": "${run:from_failed}/model.pth"}}]}
    plan = run_study(cfg, runs_dir=runs, dry_run=True).set_index("run_id").depends_on
    assert plan["from_busy"] == "src/busy" and plan["after"] == "from_failed"
    res = run_study(cfg, runs_dir=runs, progress=False).set_index("run_id")
    assert res.status.to_dict() == {**{r: "skipped: dependency failed" for r in ("from_failed", "from_bad", "from_busy",
                                    "from_missing", "after")}, "from_ok": "done"}
    err = res.error
    assert "src/failed is not verified finished (failed: run failed failed: RuntimeError: out of memory)" in err["from_failed"]
    assert "src/bad" in err["from_bad"] and "model.pth changed since it was staged (digest mismatch)" in err["from_bad"]
    assert "src/busy is not verified finished (incomplete" in err["from_busy"]
    assert "src/never is not verified finished (pending: not started)" in err["from_missing"]
    assert err["after"].startswith("dependency failed: from_failed (dependency src/failed")
    assert sorted(p.name for p in (runs/"dst").iterdir() if not p.name.startswith(".")) == ["from_ok", "study.yaml", "summary.csv"]

# ------------------------------------------------------------------ the report: nothing outlives it

def _report_notebook(path, hold:Path) -> str:
    "A stand-in report: writes its kernel's pid, then waits while `hold` exists."
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    nb.cells = [nbformat.v4.new_code_cell('STUDY = "s"\nRUNS_DIR = None', metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell(f"import os, time\nfrom pathlib import Path\nPath('kernel.pid').write_text(str(os.getpid()))\n"
                                          f"t0 = time.time()\nwhile Path({str(hold)!r}).exists() and time.time() - t0 < 60: time.sleep(0.05)\n"
                                          "print('report of', STUDY)")]
    nbformat.write(nb, path)
    return str(path)

def test_report_names_left_out_runs_and_writes_html_in_process(study, tmp_path, capfd):
    _truncate(study/"good"/"metrics.json")
    from artstudy.report import render_report
    html = render_report("s", runs_dir_=study.parent, notebook=_report_notebook(tmp_path/"r.ipynb", tmp_path/"no-hold"))
    assert html == study/"report.html" and "report of s" in html.read_text()
    assert "good (invalid: metrics.json truncated)" in capfd.readouterr().err

@pytest.mark.parametrize("stage", ["kernel", "export"])
def test_kill_9_of_report_leaves_no_process(study, tmp_path, stage):
    "kill -9 of `report` while its kernel runs, or once report.ipynb is written (while the HTML is made): nothing survives it."
    hold = tmp_path/"hold"
    if stage == "kernel": hold.touch()
    nb = _report_notebook(tmp_path/"r.ipynb", hold)
    code = f"from artstudy.report import render_report; render_report('s', runs_dir_={str(study.parent)!r}, notebook={nb!r})"
    p = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    mark = study/("kernel.pid" if stage == "kernel" else "report.ipynb")
    try:
        t0 = time.time()
        while not mark.exists():
            assert p.poll() is None and time.time() - t0 < 120, f"the report ended before {mark.name} appeared"
            time.sleep(0.01)
        kids = psutil.Process(p.pid).children(recursive=True)
        if stage == "kernel": assert int((study/"kernel.pid").read_text()) in {k.pid for k in kids}
        p.kill(); p.wait(); killed = time.time()
        _, alive = psutil.wait_procs(kids, timeout=10)
        assert not alive, f"outlived the report: {[k.cmdline() for k in alive]}"
        hold.unlink(missing_ok=True); time.sleep(2)   # a surviving kernel or converter would write now
        html = study/"report.html"
        assert not html.exists() or html.stat().st_mtime <= killed, "report.html was written after the kill"
        if stage == "kernel": assert not (study/"report.ipynb").exists()
    finally:
        if p.poll() is None: p.kill()
