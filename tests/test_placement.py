"""Several runs per GPU and the dry run's time estimate, without a GPU: the placement rule on hand-worked inventories,
nvidia-smi and torch.cuda mocked, the local executor's slots on fake GPUs (runs replaced by sleeps), Ray's
fractional `num_gpus` through a fake `ray` module, and estimates from synthetic summaries and bench files."""
import concurrent.futures as cf, json, os, sys, threading, time, types
from collections import Counter
from datetime import datetime
from pathlib import Path
import pandas as pd, pytest
from artstudy import runs
from artstudy.runs import (BUSY_PCT, DEFAULT_NEED_MB, RESERVE_MB, Gpu, RunSpec, bench_costs, earlier_runs, estimate_runs,
                           estimate_study, gpu_inventory, gpu_need, gpu_share, makespan, nvidia_smi, place_runs,
                           run_need_mb, run_study, runs_per_gpu)

FIX = Path(__file__).resolve().parent/"fixtures"
TINY = str(FIX/"tiny_metrics.ipynb")
H200 = dict(total_mb=143_771.0, name="NVIDIA H200")

# ------------------------------------------------------------------ the rule

@pytest.mark.parametrize("need, free, util, expected", [
    (6_000, 140_000, 0, 4),                     # memory for 22, time for ceil(100/30) = 4
    (6_000, 140_000, 30, 3),                    # ceil(70/30)
    (6_000, 140_000, 61, 2),                    # ceil(39/30)
    (6_000, 140_000, 71, 1),                    # ceil(29/30)
    (6_000, 140_000, BUSY_PCT, 0),              # someone else's GPU
    (6_000, 140_000, None, 4),                  # utilisation unknown: taken as idle
    (6_000, None, 0, 1),                        # memory unknown: one run, as before
    (10_000, RESERVE_MB + 20_000, 0, 2),        # exactly two fit
    (10_000, RESERVE_MB + 19_999, 0, 1),        # one MiB short of two
    (10_000, RESERVE_MB + 9_999, 0, 0),         # not even one
    (1_000, 140_000, 0, 4),                     # tiny runs: time, not memory, is the limit
])
def test_runs_per_gpu_thresholds(need, free, util, expected):
    assert runs_per_gpu(need, free, util) == expected

def test_runs_per_gpu_caps_and_bad_input():
    assert runs_per_gpu(1_000, 140_000, 0, run_util_pct=5) == runs.MAX_RUNS_PER_GPU       # ceil(100/5) = 20, capped
    assert runs_per_gpu(1_000, 140_000, 0, run_util_pct=5, max_runs=12) == 12
    assert run_need_mb(10_000) == pytest.approx(10_000*1.15 + 512)
    for bad in (dict(need_mb=0, free_mb=1e5), dict(need_mb=-1, free_mb=1e5), dict(need_mb=1e3, free_mb=1e5, run_util_pct=0)):
        with pytest.raises(ValueError, match="positive"): runs_per_gpu(**bad)

# ------------------------------------------------------------------ the inventory (nvidia-smi and torch mocked)

def _smi(*outputs, rc=0):
    "A fake `subprocess.run` for nvidia-smi answering each call with the next of `outputs` (the last one repeats)."
    calls = []
    def run(cmd, **kw):
        assert cmd[0] == "nvidia-smi" and "--format=csv,noheader,nounits" in cmd
        calls.append(cmd); return types.SimpleNamespace(returncode=rc, stdout=outputs[min(len(calls), len(outputs)) - 1])
    run.calls = calls
    return run

def test_nvidia_smi_samples_least_free_memory_and_mean_utilisation():
    a = "0, GPU-aaa, NVIDIA H100 80GB HBM3, 81559, 80000, 10\n1, GPU-bbb, NVIDIA H100 80GB HBM3, 81559, 20000, 100\n"
    b = "0, GPU-aaa, NVIDIA H100 80GB HBM3, 81559, 70000, 30\n1, GPU-bbb, NVIDIA H100 80GB HBM3, 81559, 21000, 90\n"
    run = _smi(a, b, a)
    rows = nvidia_smi(samples=3, interval=0, run=run)
    assert len(run.calls) == 3
    assert [(r["index"], r["uuid"], r["free_mb"], r["total_mb"]) for r in rows] == [
        ("0", "GPU-aaa", 70000, 81559), ("1", "GPU-bbb", 20000, 81559)]
    assert [r["util_pct"] for r in rows] == pytest.approx([(10 + 30 + 10)/3, (100 + 90 + 100)/3])
    assert rows[0]["name"] == "NVIDIA H100 80GB HBM3"

def test_nvidia_smi_missing_failing_or_not_reporting():
    def missing(cmd, **kw): raise FileNotFoundError("nvidia-smi")
    assert nvidia_smi(run=missing, interval=0) == []
    assert nvidia_smi(run=_smi("", rc=9), interval=0) == []                     # driver not loaded
    rows = nvidia_smi(samples=2, interval=0, run=_smi("0, GPU-m, NVIDIA A100, 40960, 30000, [N/A]\n"))
    assert rows[0]["util_pct"] is None and rows[0]["free_mb"] == 30000         # MIG: no utilisation

def test_gpu_inventory_maps_ids_and_falls_back_on_torch(monkeypatch):
    rows = [dict(index="0", uuid="GPU-aaa-111", name="H", total_mb=100.0, free_mb=90.0, util_pct=5.0),
            dict(index="1", uuid="GPU-bbb-222", name="H", total_mb=100.0, free_mb=50.0, util_pct=50.0)]
    inv = gpu_inventory(["1", "GPU-aaa", "3"], smi=lambda: rows, mem_get_info=lambda i: (7.0, 8.0) if i == 2 else None)
    assert [(g.id, g.free_mb, g.util_pct) for g in inv] == [("1", 50.0, 50.0), ("GPU-aaa", 90.0, 5.0), ("3", 7.0, None)]
    # no nvidia-smi: torch.cuda.mem_get_info (bytes, by position among the visible devices) gives free memory only
    import torch
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda i: ((10 + i) * 2**30, 80 * 2**30))
    inv = gpu_inventory(["4", "5"], smi=lambda: [])
    assert [(g.id, g.free_mb, g.total_mb, g.util_pct) for g in inv] == [("4", 10240, 81920, None), ("5", 11264, 81920, None)]
    def broken(i): raise RuntimeError("no CUDA")
    monkeypatch.setattr(torch.cuda, "mem_get_info", broken)
    assert [(g.free_mb, g.util_pct) for g in gpu_inventory(["0"], smi=lambda: [])] == [(None, None)]
    monkeypatch.setattr(runs, "visible_gpus", lambda: [])
    assert gpu_inventory(smi=lambda: pytest.fail("nvidia-smi asked without a GPU")) == []

def test_child_env_numbers_gpus_as_nvidia_smi_does(monkeypatch):
    monkeypatch.delenv("CUDA_DEVICE_ORDER", raising=False)
    env = runs.child_env("1", base={})
    assert env["CUDA_VISIBLE_DEVICES"] == "1" and env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    assert "CUDA_DEVICE_ORDER" not in runs.child_env(None, base={})
    assert runs.child_env("1", base={"CUDA_DEVICE_ORDER": "FASTEST_FIRST"})["CUDA_DEVICE_ORDER"] == "FASTEST_FIRST"

# ------------------------------------------------------------------ placement

def test_place_runs_spreads_then_stacks():
    gpus = [Gpu("0", 140_000, util_pct=0.0, **H200), Gpu("1", 140_000, util_pct=70.0, **H200),
            Gpu("2", 11_000, util_pct=0.0, **H200)]                    # memory for one run of 8,192 MiB
    assert place_runs(gpus, DEFAULT_NEED_MB) == ["0", "1", "2", "0", "0", "0"]   # 4, ceil(30/30) = 1, 1
    assert place_runs(gpus, DEFAULT_NEED_MB, workers=3) == ["0", "1", "2"]
    assert place_runs(gpus, DEFAULT_NEED_MB, per_gpu=2) == ["0", "1", "2", "0", "1", "2"]   # forced, memory or not
    with pytest.raises(RuntimeError, match=r"no GPU has room.*GPU 0 \(NVIDIA H200\): 1,000 of 143,771 MiB free, 95% busy"):
        place_runs([Gpu("0", 1_000, util_pct=95.0, **H200)], DEFAULT_NEED_MB)
    assert [gpu_share(k) for k in range(1, 9)] == [1, 0.5, 0.3333, 0.25, 0.2, 0.1666, 0.1428, 0.125]
    assert all(k * gpu_share(k) <= 1 for k in range(1, 65))
    with pytest.raises(ValueError): gpu_share(0)

def _study(tmp_path, n=8):
    return {"study": "place", "notebook": TINY, "axes": {"variant": [f"v{i}" for i in range(n)]}}

class _FakeRuns:
    "Stands in for `execute_run`: sleeps, and records each run's GPU and the most runs seen at once on each GPU."
    def __init__(self, secs=0.3):
        self.secs, self.lock, self.now, self.most, self.gpu = secs, threading.Lock(), Counter(), Counter(), {}
    def __call__(self, spec, kernel_name=None, env=None, meta=None, timeout=None):
        g = env.get("CUDA_VISIBLE_DEVICES")
        with self.lock: self.now[g] += 1; self.most[g] = max(self.most[g], self.now[g]); self.gpu[spec.run_id] = g
        time.sleep(self.secs)
        with self.lock: self.now[g] -= 1
        return runs._result(spec, "done", self.secs)

@pytest.fixture
def fake_gpus(monkeypatch):
    "Two GPUs: 0 idle (room for 4 runs), 1 busy at 70% (room for 1); runs replaced by `_FakeRuns`."
    inv = [Gpu("0", 140_000, util_pct=0.0, **H200), Gpu("1", 140_000, util_pct=70.0, **H200)]
    monkeypatch.setattr(runs, "gpu_inventory", lambda *a, **k: inv)
    monkeypatch.setattr(runs, "visible_gpus", lambda: ["0", "1"])
    fake = _FakeRuns(); monkeypatch.setattr(runs, "execute_run", fake)
    return fake

def test_local_executor_places_runs_by_memory_and_utilisation(tmp_path, fake_gpus, capsys):
    res = run_study(_study(tmp_path), runs_dir=tmp_path, progress=False)
    assert (res.status == "done").all()
    assert dict(fake_gpus.most) == {"0": 4, "1": 1}                    # 4 at a time on the idle GPU, 1 on the busy one
    assert Counter(fake_gpus.gpu.values())["0"] > Counter(fake_gpus.gpu.values())["1"]

def test_local_executor_forced_runs_per_gpu_and_workers_cap(tmp_path, fake_gpus):
    run_study(_study(tmp_path), runs_dir=tmp_path/"a", progress=False, runs_per_gpu=2)
    assert dict(fake_gpus.most) == {"0": 2, "1": 2}
    fake_gpus.most.clear()
    run_study(_study(tmp_path), runs_dir=tmp_path/"b", progress=False, runs_per_gpu="2", workers=3)
    assert dict(fake_gpus.most) == {"0": 2, "1": 1}                    # slots 0, 1, 0
    for bad in (0, -1, 65, 1.5, "two", True):
        with pytest.raises(ValueError, match="runs_per_gpu"): run_study(_study(tmp_path), runs_dir=tmp_path, runs_per_gpu=bad)

def test_local_executor_refuses_when_no_gpu_has_room(tmp_path, monkeypatch):
    monkeypatch.setattr(runs, "gpu_inventory", lambda *a, **k: [Gpu("0", 4_000, util_pct=0.0, **H200)])
    monkeypatch.setattr(runs, "execute_run", lambda *a, **k: pytest.fail("a run started"))
    with pytest.raises(RuntimeError, match="--runs-per-gpu N"): run_study(_study(tmp_path, 1), runs_dir=tmp_path, progress=False)

def _finished(folder:Path, rid:str, metrics:dict, hardware:dict|None=None, log_start:datetime|None=None, secs:float=0):
    d = folder/rid; d.mkdir(parents=True)
    (d/"params.json").write_text(json.dumps({"run_id": rid, **({"hardware": hardware} if hardware else {})}))
    (d/"metrics.json").write_text(json.dumps(metrics))
    if log_start:
        (d/"run.log").write_text(f"# {log_start.isoformat(timespec='seconds')} papermill a.ipynb -> out.ipynb\n")
        os.utime(d/"metrics.json", (log_start.timestamp() + secs,)*2)
    return d

def _spec(folder, rid, group, seed=None, deps=()):
    p = {"RUN_DIR": str(folder/rid), **({"SEED": seed} if seed is not None else {})}
    return RunSpec(folder.name, rid, "nb", p, list(deps), group)

def test_gpu_need_from_recorded_peaks_else_the_default(tmp_path):
    gpu = {"gpu": "NVIDIA H200", "device": "cuda"}
    _finished(tmp_path, "a-s1", {"gpu_peak_mb": 8_000, "train_seconds": 20}, gpu)
    _finished(tmp_path, "a-s2", {"gpu_peak_mb": 9_000}, gpu)
    specs = [_spec(tmp_path, "a-s1", "a", 1), _spec(tmp_path, "a-s2", "a", 2), _spec(tmp_path, "a-s3", "a", 3),
             _spec(tmp_path, "b-s1", "b", 1)]
    states = {"a-s1": "finished", "a-s2": "finished", "a-s3": "pending", "b-s1": "pending"}
    earlier = earlier_runs(specs, tmp_path, states)
    assert earlier.run_id.tolist() == ["a-s1", "a-s2"] and earlier.kind.tolist() == ["gpu", "gpu"]
    need, why = gpu_need(specs[2:3], earlier)
    assert need == pytest.approx(9_000*1.15 + 512) and "recorded peak" in why
    need, why = gpu_need(specs[3:], earlier)
    assert need == DEFAULT_NEED_MB and "default" in why
    need, why = gpu_need(specs[2:], earlier)                              # the larger of both
    assert need == pytest.approx(9_000*1.15 + 512) and "default for b" in why

# ------------------------------------------------------------------ Ray: fractional GPUs (a fake ray module)

class _FakeRay:
    "Enough of `ray` for the runner: records the resources each remote function asks for; tasks do not execute runs."
    def __init__(self, gpus=2, probe=None):
        self.gpus, self.probe, self.asked, self.up = gpus, probe, [], False
    def is_initialized(self): return self.up
    def init(self, **kw): self.up = True
    def shutdown(self): self.up = False
    def cluster_resources(self): return {"CPU": 8, **({"GPU": self.gpus} if self.gpus else {})}
    def cancel(self, *a, **k): pass
    def get(self, ref, timeout=None):
        if isinstance(self.probe, Exception): raise self.probe
        return ref()
    def remote(self, **res):
        self.asked.append(res)
        def deco(fn):
            def call(*args):
                if fn is runs.gpu_inventory: return lambda: self.probe
                f = cf.Future(); f.set_result(runs._result(RunSpec(**args[0]), "done"))
                return types.SimpleNamespace(future=lambda: f)
            return types.SimpleNamespace(remote=call)
        return deco

@pytest.mark.parametrize("probe, per_gpu, asked", [
    (None, 3, [{"num_gpus": 0.3333}]),                                                      # forced: no probe
    ([Gpu("5", 140_000, util_pct=0.0, **H200)], None, [{"num_gpus": 1}, {"num_gpus": 0.25}]),     # probe, then 1/4
    ([Gpu("5", 140_000, util_pct=60.0, **H200)], None, [{"num_gpus": 1}, {"num_gpus": 0.5}]),      # ceil(40/30) = 2
    ([Gpu("5", 140_000, util_pct=80.0, **H200)], None, [{"num_gpus": 1}, {"num_gpus": 1}]),        # ceil(20/30) = 1
    (TimeoutError("busy cluster"), None, [{"num_gpus": 1}, {"num_gpus": 1}]),                     # unmeasured: 1 per GPU
])
def test_ray_asks_a_fraction_of_a_gpu(tmp_path, monkeypatch, capsys, probe, per_gpu, asked):
    fake = _FakeRay(probe=probe); monkeypatch.setitem(sys.modules, "ray", fake)
    res = run_study(_study(tmp_path, 3), executor="ray", runs_dir=tmp_path, progress=False, runs_per_gpu=per_gpu)
    assert (res.status == "done").all() and fake.asked == asked and not fake.up
    if isinstance(probe, Exception): assert "one run per GPU" in capsys.readouterr().err

def test_ray_without_gpus_or_room(tmp_path, monkeypatch):
    fake = _FakeRay(gpus=0); monkeypatch.setitem(sys.modules, "ray", fake)
    run_study(_study(tmp_path, 2), executor="ray", runs_dir=tmp_path/"a", progress=False, runs_per_gpu=4)
    assert fake.asked == [{"num_cpus": 1}]
    fake = _FakeRay(probe=[Gpu("0", 3_000, util_pct=0.0, **H200)]); monkeypatch.setitem(sys.modules, "ray", fake)
    with pytest.raises(RuntimeError, match="no GPU has room"):
        run_study(_study(tmp_path, 2), executor="ray", runs_dir=tmp_path/"b", progress=False)
    assert not fake.up                                                    # the Ray instance it started is shut down

# ------------------------------------------------------------------ the time estimate

def test_makespan_hand_worked():
    r = [RunSpec("s", "a", "nb", {}), RunSpec("s", "b", "nb", {}), RunSpec("s", "c", "nb", {}, ["a"]),
         RunSpec("s", "d", "nb", {}, ["b", "c"])]
    secs = {"a": 10, "b": 20, "c": 5, "d": 30}
    assert makespan(r, secs, 1) == 65                                     # in a row
    assert makespan(r, secs, 2) == 50                                     # a 0-10, b 0-20, c 10-15, d 20-50
    assert makespan(r, secs, 8) == 50                                     # the critical path b -> d
    assert makespan(r[2:], secs, 2) == 35                                 # a and b are not in the list: done already

def test_earlier_seconds_from_summary_else_from_the_run_folder(tmp_path):
    t0 = datetime(2026, 1, 2, 3, 4, 5)
    _finished(tmp_path, "a-s1", {}, log_start=t0, secs=125)
    _finished(tmp_path, "a-s2", {}, log_start=t0, secs=999)
    pd.DataFrame([("a-s2", "done", 80.0, "", ""), ("a-s1", "skipped: finished", 0.0, "", "")],
                 columns=["run_id", "status", "seconds", "error", "run_dir"]).to_csv(tmp_path/"summary.csv", index=False)
    specs = [_spec(tmp_path, "a-s1", "a", 1), _spec(tmp_path, "a-s2", "a", 2)]
    e = earlier_runs(specs, tmp_path, {"a-s1": "finished", "a-s2": "finished"})
    assert e.set_index("run_id").seconds.to_dict() == pytest.approx({"a-s1": 125, "a-s2": 80})
    assert e.cell.tolist() == ["a", "a"] and e.kind.isna().all()          # device not recorded

def test_estimate_sources_in_order(tmp_path):
    cpu, gpu = {"cpu": "AMD EPYC", "device": "cpu", "gpu": None}, {"gpu": "NVIDIA H200", "device": "cuda"}
    t0 = datetime(2026, 1, 2, 3, 4, 5)
    _finished(tmp_path, "tm-mode_a-s1", {}, cpu, t0, 100)
    _finished(tmp_path, "tm-mode_b-s1", {}, cpu, t0, 300)
    _finished(tmp_path, "ft-s1", {}, gpu, t0, 40)
    specs = [_spec(tmp_path, f"tm-{m}-s{s}", "tm", s) for m in ("mode_a", "mode_b", "mode_f") for s in (1, 2)]
    specs += [_spec(tmp_path, f"ft-s{s}", "ft", s) for s in (1, 2)] + [_spec(tmp_path, "dg", "dg"), _spec(tmp_path, "x", "x")]
    states = {s.run_id: "finished" if s.run_id in ("tm-mode_a-s1", "tm-mode_b-s1", "ft-s1") else "pending" for s in specs}
    earlier = earlier_runs(specs, tmp_path, states)
    bench = {"runs": {"dg": 70.0}, "grids": {"ft": 12.0, "dg": 1e9}, "how": "bench: derived"}
    est = estimate_runs(specs, earlier, "cpu", bench).set_index("run_id")[["grid", "est_s", "source"]]
    assert est.loc["tm-mode_a-s2"].tolist() == ["tm", 100.0, "earlier runs of its grid point"]
    assert est.loc["tm-mode_b-s2"].tolist() == ["tm", 300.0, "earlier runs of its grid point"]
    assert est.loc["tm-mode_f-s1"].tolist() == ["tm", 200.0, "earlier runs of its grid"]        # median of 100, 300
    assert est.loc["ft-s2"].tolist() == ["ft", 12.0, "bench"]           # the GPU run is not this machine's kind
    assert est.loc["dg"].tolist() == ["dg", 70.0, "bench"]              # per run before per grid
    assert est.loc["x"].est_s is None or pd.isna(est.loc["x"].est_s)
    assert est.loc["x"].source == "no estimate"
    est = estimate_runs(specs, earlier, "cpu", {}).set_index("run_id")   # no bench: the GPU run, said so
    assert est.loc["ft-s2"].est_s == 40 and "on a GPU, not this machine's kind" in est.loc["ft-s2"].source
    est = estimate_runs(specs, earlier, "gpu", bench).set_index("run_id")
    assert est.loc["ft-s2"].tolist() == ["ft", 40.0, "earlier runs of its grid point", None]   # no training loop recorded

def test_estimate_study_totals_and_wall_time(tmp_path):
    specs = [_spec(tmp_path, f"tm-{m}-s{s}", "tm", s) for m in ("a", "b") for s in (1, 2, 3)]
    specs.append(_spec(tmp_path, "sum", "sum", deps=[s.run_id for s in specs]))
    pd.DataFrame([("tm-a-s1", "done", 60.0, "", ""), ("tm-b-s1", "done", 120.0, "", "")],
                 columns=["run_id", "status", "seconds", "error", "run_dir"]).to_csv(tmp_path/"summary.csv", index=False)
    states = {s.run_id: "finished" if s.run_id.endswith("s1") else "pending" for s in specs}
    bench = {"runs": {}, "grids": {"sum": 30.0}, "how": "bench: measured"}
    table, text = estimate_study(specs, tmp_path, slots=2, states=states, bench=bench)
    t = table.set_index("grid")
    assert t.loc["tm", ["runs", "to_do", "s_per_run", "total_s"]].tolist() == [6, 4, 90.0, 360.0]
    assert t.loc["sum", ["runs", "to_do", "total_s", "source"]].tolist() == [1, 1, 30.0, "bench"]
    assert text.endswith("The bench's figures: bench: measured."), text
    # two slots: a-s2 and b-s2 side by side (120 s), then a-s3 and b-s3 (240 s), then sum: 270 s = 4.5 min
    assert "5 of 7 run(s) to do: about 4 min of wall time on 2 slot(s) (6 min of run time" in text, text
    # on one GPU: 4 slots would finish in 150 s, but the runs' 200 s (20+20+60+60+40) of GPU work (the bench's, else the training loop
    # of the earlier run they are estimated from) bound it
    pd.DataFrame([("tm-a-s1", "done", 60.0, "", ""), ("tm-b-s1", "done", 120.0, "", "")],
                 columns=["run_id", "status", "seconds", "error", "run_dir"]).to_csv(tmp_path/"summary.csv", index=False)
    for rid, train in (("tm-a-s1", 20.0), ("tm-b-s1", 60.0)):
        _finished(tmp_path, rid, {"train_seconds": train}, {"gpu": "NVIDIA H200", "device": "cuda"})
    gpu_bench = {**bench, "busy_grids": {"sum": 40.0}}
    table, text = estimate_study(specs, tmp_path, slots=4, kind="gpu", states=states, bench=gpu_bench, gpus=1)
    assert "about 3 min of wall time on 4 slot(s)" in text and "bound by the 3 min of GPU work per GPU" in text, text
    table, text = estimate_study(specs, tmp_path, slots=4, kind="gpu", states=states, bench=gpu_bench, gpus=2)
    assert "about 2 min of wall time on 4 slot(s)" in text and "bound by" not in text, text   # 150 s > 100 s
    table, text = estimate_study(specs, tmp_path, slots=1, states=states, bench={})
    assert "1 run(s) have no estimate and count as 0 s: sum (1)" in text
    table, text = estimate_study(specs, tmp_path, slots=1, states={s.run_id: "finished" for s in specs}, bench={})
    assert text == "every run is finished." and (table.source == "finished").all()

def test_bench_costs_file(tmp_path):
    (tmp_path/"cost_paper.json").write_text(json.dumps({"estimates": {
        "gpu": {"how": "derived from the H200's measured img/s", "runs": {"r": 1.5}, "grids": {"g": 2.5}},
        "cpu": {"how": "measured", "grids": {"g": 99.0}}}}))
    b = bench_costs("paper", "gpu", folder=tmp_path)
    assert b["runs"] == {"r": 1.5} and b["grids"] == {"g": 2.5} and "derived from the H200" in b["how"]
    assert bench_costs("paper", "cpu", folder=tmp_path)["runs"] == {}
    assert bench_costs("quick", "gpu", folder=tmp_path) == {}
    (tmp_path/"cost_bad.json").write_text("{not json")
    assert bench_costs("bad", "gpu", folder=tmp_path) == {}

# ------------------------------------------------------------------ the command line

def _main(*argv):
    import contextlib, io
    from artstudy.__main__ import main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try: rc = main(list(argv))
        except SystemExit as e: rc = e.code   # argparse refuses a bad option value
    return rc, out.getvalue(), err.getvalue()

def test_cli_dry_run_shows_placement_and_estimate(tmp_path, fake_gpus, monkeypatch):
    import yaml
    cfg = tmp_path/"s.yaml"
    cfg.write_text(yaml.safe_dump({"study": "s", "notebook": TINY, "axes": {"variant": ["a", "b"]}, "seeds": [1, 2]}))
    rc, out, err = _main("run", str(cfg), "--dry-run", "--runs-dir", str(tmp_path/"runs"))
    assert rc == 0, err
    assert "GPU 0 (NVIDIA H200): 140,000 of 143,771 MiB free, 0% busy -> 4 run(s) at a time" in out
    assert "GPU 1 (NVIDIA H200): 140,000 of 143,771 MiB free, 70% busy -> 1 run(s) at a time" in out
    assert "no estimate of their time" in out and fake_gpus.gpu == {}
    rc, out, err = _main("run", str(cfg), "--dry-run", "--runs-dir", str(tmp_path/"runs"), "--runs-per-gpu", "2",
                         "--workers", "3")
    assert "-> 2 run(s) at a time" in out and "-> 1 run(s) at a time" in out and "at most 3 at a time" in out
    monkeypatch.setattr(runs, "bench_costs", lambda study, kind: {"runs": {}, "grids": {"tiny_metrics": 600.0},
                                                                  "how": f"bench: derived for {kind}"})
    rc, out, err = _main("run", str(cfg), "--dry-run", "--runs-dir", str(tmp_path/"runs"))
    assert "The bench's figures: bench: derived for gpu." in out         # this machine has (fake) GPUs
    assert "about 10 min of wall time on 5 slot(s) (40 min of run time" in out, out   # 4 runs of 600 s side by side
    rc, out, err = _main("run", str(cfg), "--dry-run", "--runs-per-gpu", "0")
    assert rc == 2 and "runs_per_gpu" in err and "greater than or equal to 1" in err, err

def test_cli_dry_run_estimate_from_a_real_earlier_run(tmp_path):
    "One real (tiny) run, then a dry run of the same study with another seed: the estimate comes from that run."
    import yaml
    cfg = tmp_path/"s.yaml"
    cfg.write_text(yaml.safe_dump({"study": "s", "notebook": TINY, "seeds": [1, 2]}))
    res = run_study(cfg, runs_dir=tmp_path/"runs", progress=False, only="*-s1")
    assert res.status.tolist() == ["done"]
    rc, out, err = _main("run", str(cfg), "--dry-run", "--runs-dir", str(tmp_path/"runs"))
    assert rc == 0, err
    assert "1 of 2 run(s) to do" in out and "earlier runs of its grid point" in out, out
    secs = pd.read_csv(tmp_path/"runs"/"s"/"summary.csv").seconds.iloc[0]
    table = run_study(cfg, runs_dir=tmp_path/"runs", dry_run=True).attrs["estimate"]
    assert table.total_s.tolist() == [round(secs)]
