"""Fault injection: a killed runner, two runners at once, a notebook failing after its result was staged,
bad parameters and malformed YAML, and unwritable output folders. Each case must end in a clear one-paragraph message
(never a traceback) and lose or duplicate nothing. Tiny generated notebooks stand in for training, so the suite
stays well under 2 minutes."""
import os, subprocess, sys, time
from pathlib import Path
import nbformat, pytest, yaml
from artstudy.runs import run_state

ROOT = Path(__file__).resolve().parents[1]
UNWRITABLE = "/proc/self/artstudy-faults"   # mkdir fails there even for root (chmod does not stop root)

def _notebook(path) -> str:
    "A run that stages its result, waits while `HOLD` exists, fails on request, then finishes and counts itself."
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    nb.cells = [
        nbformat.v4.new_code_cell('RUN_ID = "r"\nRUN_DIR = "."\nSTUDY = "s"\nHOLD = ""\nHOLD_EARLY = ""\nFAIL_LATE = False\nCOUNTER = ""\nEPOCHS = 1',
                                  metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("import os, time\nfrom pathlib import Path\nfrom artstudy.config import stage_metrics, finish_run\n"
                                  "Path(RUN_DIR, 'started').write_text(str(os.getpid()))\n"
                                  "t0 = time.time()\n"
                                  "while HOLD_EARLY and Path(HOLD_EARLY).exists() and time.time() - t0 < 60: time.sleep(0.05)\n"
                                  "stage_metrics(RUN_DIR, {'top1': 0.5, 'epochs': EPOCHS})\n"
                                  "t0 = time.time()\n"
                                  "while HOLD and Path(HOLD).exists() and time.time() - t0 < 60: time.sleep(0.05)"),
        nbformat.v4.new_code_cell("assert not FAIL_LATE, 'a plot failed after training'"),
        nbformat.v4.new_code_cell("finish_run(RUN_DIR)\nif COUNTER:\n    with open(COUNTER, 'a') as f: f.write(RUN_ID + '\\n')")]
    nbformat.write(nb, path)
    return str(path)

@pytest.fixture
def study(tmp_path):
    "A 3-run study over the holding notebook, with its YAML, runs folder, HOLD file and execution counter."
    nb = _notebook(tmp_path/"hold.ipynb")
    hold, counter = tmp_path/"hold", tmp_path/"counter.txt"
    cfg = {"study": "f", "notebook": nb, "base": {"counter": str(counter)},
           "runs": [{"id": "a"}, {"id": "b", "params": {"hold": str(hold)}}, {"id": "c"}]}
    y = tmp_path/"f.yaml"; y.write_text(yaml.safe_dump(cfg))
    return dict(yaml=y, runs=tmp_path/"runs", dir=tmp_path/"runs"/"f", hold=hold, counter=counter, tmp=tmp_path)

def _cli(*args, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "artstudy", *map(str, args)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kw)

def _run_cli(*args, timeout=120) -> tuple[int, str]:
    p = _cli(*args); out, _ = p.communicate(timeout=timeout); return p.returncode, out

def _main(*args) -> tuple[int, str]:
    "The CLI in this process (no interpreter start-up): exit status and everything it printed."
    import contextlib, io
    from artstudy.__main__ import main
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf): rc = main([str(a) for a in args])
    return rc, buf.getvalue()

def _wait_for(pred, timeout, what, proc=None):
    t0 = time.time()
    while not pred():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"runner exited ({proc.returncode}) before {what}:\n{proc.stdout.read()}")
        if time.time() - t0 > timeout: raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)

def _gone(pid:int) -> bool:
    try: return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError): return True

def _counts(path) -> dict:
    lines = Path(path).read_text().split() if Path(path).exists() else []
    return {k: lines.count(k) for k in set(lines)}

def _no_run_is_both(d:Path):
    both = [r.name for r in d.iterdir() if (r/"error.txt").exists() and (r/"metrics.json").exists()]
    assert not both, f"runs with both error.txt and metrics.json: {both}"

# ------------------------------------------------------------------ kill -9 of the runner, then a rerun

def _kill_when_held(s, run, proc):
    "Wait until `run` has staged its result and holds; kill -9 the runner alone; wait for its kernel to die."
    _wait_for(lambda: (s["dir"]/run/"metrics.staged.json").exists(), 90, f"run {run} to stage its result", proc)
    kernel = int((s["dir"]/run/"started").read_text())
    proc.kill(); proc.wait()
    _wait_for(lambda: _gone(kernel), 15, "the orphaned kernel to die with the runner")

def test_kill_9_at_two_points_then_rerun_loses_nothing_and_computes_nothing_twice(study):
    "Killed while the first run holds after staging, then (second runner) while the second does; a third finishes."
    s = study
    cfg = yaml.safe_load(s["yaml"].read_text())
    cfg["runs"] = [{"id": "a", "params": {"hold": str(s["hold"])}}, {"id": "b", "params": {"hold": str(s["tmp"]/"hold_b")}}]
    s["yaml"].write_text(yaml.safe_dump(cfg))
    s["hold"].touch(); (s["tmp"]/"hold_b").touch()
    _kill_when_held(s, "a", _cli("run", s["yaml"], "--runs-dir", s["runs"], "--no-progress"))
    s["hold"].unlink(); time.sleep(0.3)                            # a surviving kernel would now finish run a
    assert run_state(s["dir"]/"a") == "incomplete" and not (s["dir"]/"b").exists()
    _kill_when_held(s, "b", _cli("run", s["yaml"], "--runs-dir", s["runs"], "--no-progress"))
    (s["tmp"]/"hold_b").unlink(); time.sleep(0.3)
    assert run_state(s["dir"]/"a") == "finished" and run_state(s["dir"]/"b") == "incomplete"
    assert not (s["dir"]/"b"/"metrics.json").exists()
    rc, out = _run_cli("run", s["yaml"], "--runs-dir", s["runs"], "--no-progress")
    assert rc == 0 and "skipped: finished" in out, out
    assert run_state(s["dir"]/"a") == run_state(s["dir"]/"b") == "finished"
    assert _counts(s["counter"]) == {"a": 1, "b": 1}              # 0 lost, 0 computed twice
    _no_run_is_both(s["dir"])

@pytest.mark.parametrize("stage", ["kernel running, nothing staged", "result staged, not finished"])
def test_kill_9_at_each_stage_of_a_run_is_redone_once(study, stage):
    s = study
    early = stage.startswith("kernel")
    cfg = yaml.safe_load(s["yaml"].read_text())
    cfg["runs"] = [{"id": "a", "params": {("hold_early" if early else "hold"): str(s["hold"])}}]
    s["yaml"].write_text(yaml.safe_dump(cfg)); s["hold"].touch()
    proc = _cli("run", s["yaml"], "--runs-dir", s["runs"], "--no-progress")
    _wait_for(lambda: (s["dir"]/"a"/"started").exists(), 90, "the kernel to start", proc)
    if not early: _wait_for(lambda: (s["dir"]/"a"/"metrics.staged.json").exists(), 90, "the result to be staged", proc)
    kernel = int((s["dir"]/"a"/"started").read_text())
    proc.kill(); proc.wait()
    _wait_for(lambda: _gone(kernel), 15, "the orphaned kernel to die with the runner")
    s["hold"].unlink(); time.sleep(0.3)
    assert run_state(s["dir"]/"a") == "incomplete" and not (s["dir"]/"a"/"metrics.json").exists()
    rc, out = _run_cli("run", s["yaml"], "--runs-dir", s["runs"], "--no-progress")
    assert rc == 0 and run_state(s["dir"]/"a") == "finished", out
    assert _counts(s["counter"]) == {"a": 1}

# ------------------------------------------------------------------ two runners at once

def test_second_runner_is_refused_or_waits(study):
    s = study
    s["hold"].touch()
    p1 = _cli("run", s["yaml"], "--runs-dir", s["runs"], "--no-progress")
    try:
        _wait_for(lambda: (s["dir"]/"b"/"started").exists(), 90, "run b to start", p1)
        rc, out = _main("run", s["yaml"], "--runs-dir", s["runs"], "--no-progress")
        assert rc == 2 and "is busy" in out and f"pid {p1.pid}" in out and "--wait" in out and "Traceback" not in out, out
        p3 = _cli("run", s["yaml"], "--runs-dir", s["runs"], "--no-progress", "--wait")
        time.sleep(1.0)
        assert p3.poll() is None                                   # waiting for the lock, not running anything
    finally: s["hold"].unlink(missing_ok=True)
    out1, _ = p1.communicate(timeout=120); out3, _ = p3.communicate(timeout=120)
    assert p1.returncode == 0 and p3.returncode == 0, out1 + out3
    assert out3.count("skipped: finished") >= 3                    # the waiting runner found everything done
    assert _counts(s["counter"]) == {"a": 1, "b": 1, "c": 1}
    assert not (s["dir"]/".stale").exists()                        # nobody moved a live folder aside

# ------------------------------------------------------------------ a notebook failing after training

def test_failure_after_the_result_was_staged_is_a_failed_run(study):
    s = study
    cfg = yaml.safe_load(s["yaml"].read_text())
    cfg["runs"] = [{"id": "late", "params": {"fail_late": True}}, {"id": "after", "depends_on": ["late"]}]
    s["yaml"].write_text(yaml.safe_dump(cfg))
    rc, out = _main("run", s["yaml"], "--runs-dir", s["runs"], "--no-progress")
    d = s["dir"]/"late"
    assert rc == 1 and "a plot failed after training" in (d/"error.txt").read_text()
    assert run_state(d) == "failed" and not (d/"metrics.json").exists() and not (d/"metrics.staged.json").exists()
    assert (d/"out.ipynb").exists() and not (s["dir"]/"after").exists()
    from artstudy.runs import collect
    assert len(collect("f", runs_dir=s["runs"], write=False, verbose=False)) == 0
    (d/"metrics.json").write_text("{}")                            # even a stray metrics.json beside error.txt
    assert run_state(d) == "failed"

# ------------------------------------------------------------------ bad parameters, values and YAML: before any work

@pytest.mark.parametrize("change,expected", [
    ({"base": {"epoch": 1}}, "unknown parameter 'epoch' for hold.ipynb (did you mean 'epochs'?)"),
    ({"base": {"epochs": 0}}, "epochs: Input should be greater than or equal to 1, got 0"),
    ({"seeds": 3}, "seeds: Input should be a valid list, got 3"),
])
def test_bad_parameters_fail_before_any_work(study, change, expected):
    s = study
    cfg = {**yaml.safe_load(s["yaml"].read_text()), **change}
    s["yaml"].write_text(yaml.safe_dump(cfg))
    for extra in ([], ["--dry-run"]):
        rc, out = _main("run", s["yaml"], "--runs-dir", s["runs"], "--no-progress", *extra)
        assert rc == 2 and expected in out and "Traceback" not in out, out
    assert not s["runs"].exists()                                  # nothing was created, let alone run

@pytest.mark.parametrize("text,expected", [("", "is empty"), ("study: [x\n", "is not valid YAML"),
                                          ("- study: x\n", "must be a mapping")])
def test_malformed_yaml_is_one_paragraph(tmp_path, text, expected):
    (tmp_path/"bad.yaml").write_text(text)
    from artstudy.__main__ import main
    import contextlib, io
    err = io.StringIO()
    with contextlib.redirect_stderr(err): assert main(["run", str(tmp_path/"bad.yaml")]) == 2
    assert err.getvalue().startswith("error: ") and expected in err.getvalue() and "Traceback" not in err.getvalue()

# ------------------------------------------------------------------ unwritable output folders

def test_unwritable_runs_folder_is_a_clear_error(study):
    rc, out = _main("run", study["yaml"], "--runs-dir", UNWRITABLE, "--no-progress")
    assert rc == 2 and "cannot create the study folder" in out and "--runs-dir" in out and "Traceback" not in out, out

def test_read_only_study_folder_is_a_clear_error(study):
    if os.geteuid() == 0: pytest.skip("root writes into read-only folders; the /proc case above covers root")
    study["dir"].mkdir(parents=True); os.chmod(study["dir"], 0o500)
    try: rc, out = _main("run", study["yaml"], "--runs-dir", study["runs"], "--no-progress")
    finally: os.chmod(study["dir"], 0o700)
    assert rc == 2 and "not writable" in out and "Traceback" not in out, out

def test_evaluate_checks_its_output_folder_before_any_work(tmp_path):
    rc, out = _main("evaluate", "--checkpoint", tmp_path/"no_such.pth", "--data", "pacs_art", "--out", UNWRITABLE)
    assert rc == 2 and "cannot write to" in out and "Traceback" not in out, out

# ------------------------------------------------------------------ a planted pickle in a shared run folder

class _Payload:
    "Unpickling this creates the file `marker`: proof that code from the run folder ran."
    def __init__(self, marker): self.marker = str(marker)
    def __reduce__(self): return (open, (self.marker, "w"))

def test_planted_pickle_in_the_analysis_cache_never_executes(tmp_path):
    import pickle, warnings
    import numpy as np
    from artstudy.data import load_dataset, synthetic_dataset
    from artstudy.compare import compare
    from artstudy.models import create_backbone, save_checkpoint
    ds = load_dataset(synthetic_dataset(tmp_path/"syn", n_per_class=4, size=32), progress=False)
    for seed, r in ((0, "a"), (1, "b")):
        import torch; torch.manual_seed(seed)
        save_checkpoint(create_backbone("efficientnet_lite0", pretrained=False, num_classes=3), tmp_path/r/"model.pth")
    kw = dict(layers=["blocks.2"], k=2, split=None, size=32, progress=False, n_perm=5)
    first = compare(tmp_path/"a", tmp_path/"b", ds, **kw)
    cache = tmp_path/"b"/"analysis"/f"{first['key']}.npz"
    assert cache.is_file()
    marker = tmp_path/"pwned"
    evil = np.empty(1, dtype=object); evil[0] = _Payload(marker)
    with open(cache, "wb") as f: np.savez(f, manifest=evil)              # an object array: stored as a pickle
    (cache.with_suffix(".pkl")).write_bytes(pickle.dumps(_Payload(marker)))   # the old cache format, planted too
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        again = compare(tmp_path/"a", tmp_path/"b", ds, **kw)
    assert not marker.exists(), "the planted pickle was executed"
    assert any("recomputing" in str(w.message) for w in rec)             # said, not silent
    assert again["layers"].equals(first["layers"])                        # recomputed, same numbers
