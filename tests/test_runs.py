"""The sweep runner on tiny fixture notebooks (tests/fixtures: they write metrics.json at once, no training):
grid expansion, skip of finished runs, kill and resume, failures, dependencies, collect, Ray vs local, the CLI.
Needs the Jupyter kernel `python3` of this environment (`make install` registers it)."""
import itertools, json, math, os, shutil, signal, subprocess, sys, time
from collections import Counter
from pathlib import Path
import pandas as pd, pytest
from artstudy import runs
from artstudy.runs import collect, expand_grid, run_study, run_state

ROOT = Path(__file__).resolve().parents[1]
FIX = Path(__file__).resolve().parent/"fixtures"
TINY, SLEEP = str(FIX/"tiny_metrics.ipynb"), str(FIX/"tiny_sleep.ipynb")

def _counts(path) -> dict:
    "How often each run was executed (the fixtures append their RUN_ID to the COUNTER file)."
    lines = Path(path).read_text().split() if Path(path).exists() else []
    return {k: lines.count(k) for k in set(lines)}

def _cli(*args, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "artstudy", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kw)

def _write_yaml(path, cfg) -> Path:
    import yaml
    Path(path).write_text(yaml.safe_dump(cfg, sort_keys=False)); return Path(path)

# ------------------------------------------------------------------ expansion (nothing executed)

def test_expand_grid_ids_params_and_dependency_order(tmp_path):
    cfg = {"study": "quick", "base": {"x": 1.5},
           "grids": [{"name": "double", "notebook": TINY, "seeds": [1, 2],       # listed first, must run last
                      "base": {"init_from": "${run:tiny_metrics-mode_a-s{seed}}/model.pth"}},
                     {"notebook": TINY, "axes": {"variant": ["off_the_shelf", "mode_a"]}, "seeds": [1, 2],
                      "runs": [{"id": "scratch", "params": {"variant": "from_scratch"}},
                               {"id": "from_dict", "params": {"init": {"from_run": "scratch", "path": "init.pth"}}}]}]}
    specs = expand_grid(cfg, runs_dir=tmp_path)
    assert [s.run_id for s in specs] == [   # config order, each run moved after what it depends on
        "tiny_metrics-off_the_shelf-s1", "tiny_metrics-off_the_shelf-s2", "tiny_metrics-mode_a-s1",
        "tiny_metrics-mode_a-s2", "scratch", "from_dict", "double-s1", "double-s2"]
    by = {s.run_id: s for s in specs}
    assert by["tiny_metrics-mode_a-s2"].params == {
        "X": 1.5, "VARIANT": "mode_a", "SEED": 2, "STUDY": "quick", "RUN_ID": "tiny_metrics-mode_a-s2",
        "RUN_DIR": str(tmp_path/"quick"/"tiny_metrics-mode_a-s2")}
    assert by["double-s2"].depends_on == ["tiny_metrics-mode_a-s2"]
    assert by["double-s2"].params["INIT_FROM"] == str(tmp_path/"quick"/"tiny_metrics-mode_a-s2"/"model.pth")
    assert by["from_dict"].params["INIT"] == str(tmp_path/"quick"/"scratch"/"init.pth")
    assert by["scratch"].params["VARIANT"] == "from_scratch" and "SEED" not in by["scratch"].params
    assert by["scratch"].notebook == TINY
    # ids are stable: expanding again gives the same runs
    assert [s.run_id for s in expand_grid(cfg, runs_dir=tmp_path)] == [s.run_id for s in specs]

def test_expand_grid_from_yaml_file_and_bad_configs(tmp_path):
    shutil.copy(TINY, tmp_path/"exp.ipynb")   # a notebook relative to the YAML's folder
    y = _write_yaml(tmp_path/"s.yaml", {"study": "s", "notebook": "exp.ipynb", "axes": {"lr": [0.001, 1e-5]}})
    specs = expand_grid(y, runs_dir=tmp_path/"runs")
    assert [s.run_id for s in specs] == ["exp-lr0.001", "exp-lr1e_05"]
    assert [s.params["LR"] for s in specs] == [0.001, 1e-5]
    base = {"study": "s", "notebook": TINY}
    with pytest.raises(ValueError, match="unknown run 'nope'"):
        expand_grid({**base, "runs": [{"id": "a", "depends_on": ["nope"]}]}, runs_dir=tmp_path)
    with pytest.raises(ValueError, match="cycle"):
        expand_grid({**base, "runs": [{"id": "a", "params": {"i": "${run:b}/m.pth"}},
                                      {"id": "b", "params": {"i": {"from_run": "a"}}}]}, runs_dir=tmp_path)
    with pytest.raises(ValueError, match="did you mean 'axes'"):
        expand_grid({**base, "axis": {"mode": ["a"]}}, runs_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="no_such.ipynb"):
        expand_grid({"study": "s", "notebook": "no_such.ipynb"}, runs_dir=tmp_path)

# ------------------------------------------------------------------ one in-process sweep, checked by several tests

@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    "A 5-run study run twice in-process (2 workers, 2 fake GPUs): one run fails, one depends on it."
    root = tmp_path_factory.mktemp("sweep")
    counter = root/"counter.txt"
    cfg = {"study": "sweep", "notebook": TINY, "base": {"counter": str(counter)}, "axes": {"variant": ["a", "b"]},
           "seeds": [1],
           "runs": [{"id": "fail", "params": {"fail": True}},
                    {"id": "after_fail", "params": {"init_from": {"from_run": "fail", "path": "model.pth"}}},
                    {"id": "after_a", "params": {"lr": 1e-5, "init_from": "${run:tiny_metrics-a-s1}/model.pth"}}]}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(runs, "visible_gpus", lambda: ["0", "1"])
        mp.delenv("MALLOC_MMAP_MAX_", raising=False)
        first = run_study(cfg, workers=2, runs_dir=root, progress=False)
        mtimes = {p.parent.name: p.stat().st_mtime_ns for p in (root/"sweep").glob("*/out.ipynb")}
        counts = _counts(counter)
        second = run_study(cfg, workers=2, runs_dir=root, progress=False)
    return dict(root=root, cfg=cfg, first=first, second=second, mtimes=mtimes, counts1=counts,
                counts2=_counts(counter), study=root/"sweep")

def test_sweep_statuses_and_dependency_on_failed_run_is_skipped(sweep):
    st = dict(zip(sweep["first"].run_id, sweep["first"].status))
    assert st == {"tiny_metrics-a-s1": "done", "tiny_metrics-b-s1": "done", "fail": "failed",
                  "after_fail": "skipped: dependency failed", "after_a": "done"}
    assert sweep["counts1"] == {"tiny_metrics-a-s1": 1, "tiny_metrics-b-s1": 1, "fail": 1, "after_a": 1}
    assert not (sweep["study"]/"after_fail").exists()                       # never started
    m = json.loads((sweep["study"]/"after_a"/"metrics.json").read_text())
    assert m["src_score"] == 11.0                                           # read from its source run's folder
    assert m["lr"] == 1e-5 and m["lr_is_float"]                             # 1e-5 reaches the notebook as a float

def test_failing_run_keeps_notebook_and_error_and_sweep_goes_on(sweep):
    d = sweep["study"]/"fail"
    assert run_state(d) == "failed" and not (d/"metrics.json").exists()
    assert {"params.json", "out.ipynb", "error.txt", "run.log"} <= {p.name for p in d.iterdir()}
    err = (d/"error.txt").read_text()
    assert "RuntimeError: fail fails on purpose" in err and "error in cell" in err
    outs = [o for c in json.loads((d/"out.ipynb").read_text())["cells"] for o in c.get("outputs", [])]
    assert any(o.get("output_type") == "error" and o.get("ename") == "RuntimeError" for o in outs)
    assert runs.notebook_error(d/"out.ipynb")["evalue"] == "fail fails on purpose"

def test_finished_runs_are_skipped_on_resume(sweep):
    st = dict(zip(sweep["second"].run_id, sweep["second"].status))
    assert st["tiny_metrics-a-s1"] == st["after_a"] == "skipped: finished"
    assert st["fail"] == "failed" and st["after_fail"] == "skipped: dependency failed"
    # finished notebooks were not executed again; the failed one was retried
    assert sweep["counts2"] == {"tiny_metrics-a-s1": 1, "tiny_metrics-b-s1": 1, "fail": 2, "after_a": 1}
    now = {p.parent.name: p.stat().st_mtime_ns for p in sweep["study"].glob("*/out.ipynb")}
    assert all(now[k] == sweep["mtimes"][k] for k in ("tiny_metrics-a-s1", "tiny_metrics-b-s1", "after_a"))
    assert len(list((sweep["study"]/".stale").glob("fail-*"))) == 1         # the failed attempt was moved aside

def test_runs_see_run_folder_cwd_pinned_gpus_and_malloc_env(sweep):
    ms = [json.loads(p.read_text()) for p in sweep["study"].glob("*/metrics.json")]
    assert len(ms) == 3 and all(m["cwd_is_run_dir"] for m in ms)
    assert {m["env_gpu"] for m in ms} <= {"0", "1"}
    assert {m["env_malloc"] for m in ms} == {"0"}

def test_params_json_has_provenance(sweep):
    p = json.loads((sweep["study"]/"tiny_metrics-b-s1"/"params.json").read_text())
    assert p["run_id"] == "tiny_metrics-b-s1" and p["params"]["VARIANT"] == "b" and p["params"]["SEED"] == 1
    assert p["group"] == "tiny_metrics"   # the grid it came from, which the report groups by
    assert "git_commit" in p and p["versions"]["papermill"]

def test_dry_run_shows_states_and_executes_nothing(sweep):
    plan = run_study(sweep["cfg"], runs_dir=sweep["root"], dry_run=True)
    assert dict(zip(plan.run_id, plan.state)) == {"tiny_metrics-a-s1": "finished", "tiny_metrics-b-s1": "finished",
        "fail": "failed", "after_fail": "pending", "after_a": "finished"}
    assert _counts(sweep["root"]/"counter.txt") == sweep["counts2"]

def test_collect_builds_the_table(sweep):
    df = collect("sweep", runs_dir=sweep["root"], verbose=False)
    assert df.run_id.tolist() == ["after_a", "tiny_metrics-a-s1", "tiny_metrics-b-s1"]
    assert (df.study == "sweep").all()
    assert df.set_index("run_id").score.to_dict() == {"after_a": 10.0, "tiny_metrics-a-s1": 11.0,
                                                      "tiny_metrics-b-s1": 11.0}
    assert df.set_index("run_id")["detail.variant"].to_dict()["tiny_metrics-b-s1"] == "b"
    assert df.param_variant.tolist()[1:] == ["a", "b"] and pd.isna(df.param_variant.iloc[0])  # after_a has no VARIANT
    assert not {"param_run_dir", "param_study", "param_run_id"} & set(df.columns)
    assert {u["run_id"]: u["state"] for u in df.attrs["unfinished"]} == {"fail": "failed", "after_fail": "pending"}
    back = pd.read_csv(sweep["study"]/"results.csv")
    assert back.run_id.tolist() == df.run_id.tolist() and back.score.tolist() == df.score.tolist()

# ------------------------------------------------------------------ the CLI: kill, resume, failure exit status

def _wait_for(pred, timeout, what, proc=None):
    t0 = time.time()
    while not pred():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"CLI exited ({proc.returncode}) before {what}:\n{proc.stdout.read()}")
        if time.time() - t0 > timeout: raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)

def _gone(pid:int) -> bool:
    try: return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError): return True

def test_killed_run_is_redone_on_resume_and_cli_exits_nonzero(tmp_path):
    hold, counter, rd = tmp_path/"hold", tmp_path/"counter.txt", tmp_path/"runs"
    cfg = _write_yaml(tmp_path/"killme.yaml", {"study": "killme", "notebook": TINY, "base": {"counter": str(counter)},
        "runs": [{"id": "quick1"}, {"id": "sleeper", "notebook": SLEEP, "params": {"hold": str(hold)}},
                 {"id": "quick2"}, {"id": "broken", "params": {"fail": True}}]})
    study = rd/"killme"
    hold.touch()
    p = _cli("run", str(cfg), "--runs-dir", str(rd), "--no-progress", start_new_session=True)
    try: _wait_for(lambda: (study/"sleeper"/"started").exists(), 120, "the sleeping run to start", p)
    finally:
        os.killpg(p.pid, signal.SIGKILL); p.wait()
    kernel = int((study/"sleeper"/"started").read_text())
    _wait_for(lambda: _gone(kernel), 30, "the orphaned kernel to exit")    # ipykernel exits when its parent dies
    assert run_state(study/"quick1") == "finished"
    assert run_state(study/"sleeper") == "incomplete" and (study/"sleeper"/"params.json").exists()
    assert not (study/"sleeper"/"metrics.json").exists() and not (study/"quick2").exists()
    m1 = (study/"quick1"/"out.ipynb").stat().st_mtime_ns
    hold.unlink()
    p2 = _cli("run", str(cfg), "--runs-dir", str(rd), "--no-progress")
    out, _ = p2.communicate(timeout=240)
    assert p2.returncode == 1, out                                          # `broken` failed
    assert "broken" in out and "failed" in out and "skipped: finished" in out
    assert _counts(counter) == {"quick1": 1, "sleeper": 2, "quick2": 1, "broken": 1}
    assert (study/"quick1"/"out.ipynb").stat().st_mtime_ns == m1
    assert all(run_state(study/r) == "finished" for r in ("quick1", "sleeper", "quick2"))
    assert run_state(study/"broken") == "failed"
    assert len(list((study/".stale").glob("sleeper-*"))) == 1               # the killed attempt, moved aside
    from artstudy.__main__ import main
    assert main(["collect", "killme", "--runs-dir", str(rd)]) == 0
    assert sorted(pd.read_csv(study/"results.csv").run_id) == ["quick1", "quick2", "sleeper"]

def test_cli_dry_run_lists_runs_and_executes_nothing(tmp_path):
    cfg = _write_yaml(tmp_path/"dry.yaml", {"study": "dry", "notebook": TINY, "axes": {"variant": ["a", "b"]},
                                           "seeds": [1, 2]})
    p = _cli("run", str(cfg), "--dry-run", "--runs-dir", str(tmp_path/"runs"))
    out, _ = p.communicate(timeout=120)
    assert p.returncode == 0, out
    for rid in ("tiny_metrics-a-s1", "tiny_metrics-a-s2", "tiny_metrics-b-s1", "tiny_metrics-b-s2"): assert rid in out
    assert "4 pending" in out
    assert not (tmp_path/"runs").exists()

# ------------------------------------------------------------------ executors

def test_ray_missing_gives_install_hint(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ImportError, match=r'pip install -e "\.\[ray\]"'):
        run_study({"study": "r", "notebook": TINY}, executor="ray", runs_dir=tmp_path, progress=False)

def test_ray_executor_matches_local(tmp_path):
    ray = pytest.importorskip("ray")
    cfg = {"study": "cmp", "notebook": TINY, "axes": {"variant": ["b"]}, "base": {"x": 2.0},
           "runs": [{"id": "after_b", "params": {"variant": "c", "init_from": "${run:tiny_metrics-b}/model.pth"}}]}
    local = run_study(cfg, workers=2, runs_dir=tmp_path/"local", progress=False)
    assert (local.status == "done").all(), local
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try: remote = run_study(cfg, executor="ray", runs_dir=tmp_path/"ray", progress=False)
    finally: ray.shutdown()
    assert remote.status.tolist() == local.status.tolist()
    cols = ["run_id", "study", "param_variant", "param_x", "score", "src_score", "lr", "detail.variant", "cwd_is_run_dir"]
    a = collect(tmp_path/"local"/"cmp", verbose=False)[cols]
    b = collect(tmp_path/"ray"/"cmp", verbose=False)[cols]
    pd.testing.assert_frame_equal(a, b)
    assert a.set_index("run_id").src_score["after_b"] == 20.0

# ------------------------------------------------------------------ the CLI's evaluate wiring

def test_cli_evaluate_passes_its_arguments(monkeypatch, capsys):
    import types
    from artstudy.__main__ import main
    calls = []
    fake = types.ModuleType("artstudy.pipeline")
    fake.evaluate = lambda checkpoint, data, label=None, out=None, split=None, on_error="raise": calls.append(
        (checkpoint, data, label, out, split, on_error)) or {"acc": 0.5}
    monkeypatch.setitem(sys.modules, "artstudy.pipeline", fake)
    assert main(["evaluate", "--checkpoint", "m.pth", "--data", "pacs_art", "--out", "o", "--label", "object",
                 "--split", "test", "--on-error", "skip"]) == 0
    assert calls == [("m.pth", "pacs_art", "object", "o", "test", "skip")]
    main(["evaluate", "--checkpoint", "m.pth", "--data", "d", "--out", "o"])
    assert calls[-1] == ("m.pth", "d", None, "o", None, "raise")
    assert "0.5" in capsys.readouterr().out

def _expected_counts(cfg:dict) -> dict:
    "Runs per group, counted by hand from the YAML by the grammar of 09_runs: seeds × the axes' product, plus explicit runs."
    out = {}
    for g in cfg["grids"]:
        seeds, axes = (g["seeds"] if "seeds" in g else cfg.get("seeds")), g.get("axes") or {}
        n = len(seeds or [None]) * math.prod(len(v) for v in axes.values()) if axes or not g.get("runs") else 0
        n += sum(len(r.get("seeds") or [None]) for r in g.get("runs") or [])
        name = g.get("name") or Path(g["notebook"]).stem
        out[name] = out.get(name, 0) + n
    return out

@pytest.mark.parametrize("study", ["quick", "paper", "smoke", "multitask"])
def test_study_grids_expand_to_the_expected_runs(tmp_path, study):
    "The shipped grids: run counts per experiment as the YAML says, the factor axes, every source run ordered before its users."
    import yaml
    cfg = yaml.safe_load((ROOT/"configs"/f"{study}.yaml").read_text())
    specs = expand_grid(ROOT/"configs"/f"{study}.yaml", runs_dir=tmp_path)
    assert Counter(s.group for s in specs) == _expected_counts(cfg) and len({s.run_id for s in specs}) == len(specs)
    by = {s.run_id: s for s in specs}
    lr_grid = next((g for g in cfg["grids"] if g.get("name") == "lr_ratio"), None)
    if lr_grid is not None:   # every (target dataset, ratio) pair of the YAML
        axes = lr_grid["axes"]
        targets = [t["dataset"] for t in axes["target"]] if "target" in axes else [lr_grid["base"]["dataset"]]
        lr = {(s.params["DATASET"], s.params["LR_RATIO"]) for s in specs if s.group == "lr_ratio"}
        assert lr == set(itertools.product(targets, axes["lr_ratio"]))
    sc = {(s.params["DATASET"], s.params["N_SOURCE_CLASSES"], s.params["SEED"]): s for s in specs if s.group == "source_classes"}
    if study == "paper":
        assert {k for _, k, _ in sc} == {0, 2, 4, 7} and "SOURCE" not in sc["pacs_art", 0, 1].params
        src = by[sc["wikiart_mt", 2, 3].depends_on[0]]
        assert src.params["CLASSES"] == ["Baroque", "Impressionism"] and src.params["SEED"] == 3
        assert set(by["distance_gain"].depends_on) == {s.run_id for s in sc.values()}
    assert not any("NAME" in s.params for s in specs)
    order = {s.run_id: i for i, s in enumerate(specs)}
    assert all(order[d] < order[s.run_id] for s in specs for d in s.depends_on)
