"""paper_cost: what a study (configs/paper.yaml by default) costs: measured on this machine, and DERIVED for one GPU
from a measured GPU model throughput (issue 25, part 3). Not a ratio: it writes bench/out/cost_<study>.json, whose
per-run seconds `python -m artstudy run --dry-run` uses for grids that no earlier run of the study has measured.

1. Count. `expand_grid` gives the study's runs. Each run's images come from its parameters (over the notebook's
   defaults) and the datasets' split sizes (labels.csv): training images × EPOCHS passes forward and backward (the
   cap: PATIENCE may stop earlier; fastai's fine_tune is 1 frozen + EPOCHS-1 epochs, still EPOCHS), and forward-only
   images: the validation split every epoch, then valid + test at the end; an off-the-shelf run one feature pass over
   train, valid and test; an analysis run 4 passes over its split (A, B, two controls) and 2 over B's training
   images (BN recalibration of the controls); distance_gain one pass over each (source, target) pair's training
   images.
2. Measure, on this machine's CPU, at the study's image size: Lite0 (channels-last, fp32, SGD momentum) training
   img/s at batch 32 and 64 and inference img/s at batch 64, on synthetic tensors; the bytes of activations a batch of
   64 saves for backward (the base of the runner's DEFAULT_NEED_MB); and 2 real runs through `python -m artstudy run`
   (the transfer_modes notebook on pacs_art, 2 images per class, 1 epoch, test split whole), whose wall time less
   their images at the measured rates is a run's fixed cost: process and kernel start, imports, data, checkpoints,
   scoring, plots.
3. Estimate. CPU: fixed + training images / training img/s + forward images / inference img/s (measured rates).
   GPU, DERIVED, not measured: the same with the GPU's training rate R (`--gpu-img-s`, default 5,570 img/s: the H200,
   224 px, bf16, batch 128, issue 25) or the loader's (`--loader-img-s`, 3,942 img/s there, when the loader is the
   limit), inference at R × the CPU's inference/training ratio, and the CPU's fixed cost. The study on one GPU: one
   run at a time (the sum), and with k runs sharing it (the runner's rule; the fixed costs overlap other runs' GPU
   work): the runner's schedule on k slots, but never less than the GPU's busy time.
Usage: python bench/paper_cost.py [--config configs/paper.yaml] [--quick] [--gpu-img-s 5570] [--loader-img-s 3942]
"""
import argparse, json, math, os, subprocess, sys, tempfile, time
from collections import Counter
from pathlib import Path
import _common as C

H200 = dict(device="NVIDIA H200 (issue 25: 224 px, bf16, batch 128)", model_img_s=5570.0, loader_img_s=3942.0)

# ------------------------------------------------------------------ 1. count

def _tables():
    from artstudy.config import dataset_path
    from artstudy.data import label_columns, read_table
    cache = {}
    def get(name):
        if name not in cache:
            df, _ = read_table(dataset_path(name)); cache[name] = (df, label_columns(df))
        return cache[name]
    return get

def split_sizes(p:dict, table) -> dict:
    "Images of each split a run with (upper-case) parameters `p` uses: n_per_class caps train, n_valid_per_class valid."
    df, cols = table(p["DATASET"])
    col = p.get("SUBSET_BY") or p.get("LABEL") or cols[0]
    if p.get("CLASSES"): df = df[df[col].isin(p["CLASSES"])]
    def n(split, per):
        g = df[df.split == split].groupby(col).size()
        return int(g.clip(upper=per).sum()) if per else int(g.sum())
    return dict(train=n("train", p.get("N_PER_CLASS")), valid=n("valid", p.get("N_VALID_PER_CLASS")), test=n("test", None))

def run_images(spec, specs_by_id, defaults, table) -> dict:
    "Training (forward + backward) and forward-only images of one run, from its notebook and parameters."
    p = {**defaults, **spec.params}
    nb = Path(spec.notebook).stem
    if nb == "analysis":
        src = next(specs_by_id[d] for d in spec.depends_on)
        n_b = split_sizes({**defaults, **src.params}, table)["train"] if p.get("CALIB") == "run" else p.get("N_CALIB") or 0
        n = split_sizes(p, table)[p.get("SPLIT") or "valid"]
        n = min(n, p["N_IMAGES"]) if p.get("N_IMAGES") else n
        return dict(train=0, forward=4 * n + 2 * n_b)
    if nb == "distance_gain":
        pairs = {(d.params["DATASET"], d.params.get("LABEL"), d.params.get("SOURCE_NAME")): d for d in
                 (specs_by_id[r] for r in spec.depends_on) if d.params.get("SOURCE")}
        fwd = 0
        for (ds, label, _), d in pairs.items():
            src = specs_by_id[next(x for x in d.depends_on if specs_by_id[x].group != d.group)]
            per = p.get("N_PER_CLASS")
            fwd += split_sizes({**src.params, "N_PER_CLASS": per or src.params.get("N_PER_CLASS")}, table)["train"]
            fwd += split_sizes(dict(DATASET=ds, LABEL=label, N_PER_CLASS=per), table)["train"]
        return dict(train=0, forward=fwd)
    s, e = split_sizes(p, table), int(p.get("EPOCHS") or 1)
    if p.get("MODE") == "off_the_shelf": return dict(train=0, forward=s["train"] + s["valid"] + s["test"])
    return dict(train=s["train"] * e, forward=s["valid"] * e + s["valid"] + s["test"])

def count(config) -> tuple[list, dict]:
    from artstudy.runs import expand_grid, notebook_params
    with tempfile.TemporaryDirectory() as d: specs = expand_grid(config, runs_dir=d)
    by_id, table, nbp = {s.run_id: s for s in specs}, _tables(), {}
    imgs = {}
    for s in specs:
        if s.notebook not in nbp: nbp[s.notebook] = notebook_params(s.notebook)
        imgs[s.run_id] = run_images(s, by_id, nbp[s.notebook], table)
    return specs, imgs

# ------------------------------------------------------------------ 2. measure

def model_rates(size:int, quick:bool) -> dict:
    "Lite0 training img/s (batch 32, 64) and inference img/s (batch 64) on this CPU, and the activations of a batch of 64."
    import torch
    from artstudy.models import create_backbone
    torch.manual_seed(0)
    m = create_backbone("efficientnet_lite0", pretrained=False, num_classes=7).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(m.parameters(), lr=1e-3, momentum=0.9)
    lossf = torch.nn.CrossEntropyLoss()
    def batch(bs): return (torch.randn(bs, 3, size, size).contiguous(memory_format=torch.channels_last),
                           torch.randint(0, 7, (bs,)))
    def train(bs, steps):
        x, y = batch(bs); m.train()
        def step(): opt.zero_grad(set_to_none=True); lossf(m(x), y).backward(); opt.step()
        step()                                              # warm-up
        t = time.perf_counter()
        for _ in range(steps): step()
        return bs * steps / (time.perf_counter() - t)
    def infer(bs, steps):
        x, _ = batch(bs); m.eval()
        with torch.inference_mode():
            m(x); t = time.perf_counter()
            for _ in range(steps): m(x)
        return bs * steps / (time.perf_counter() - t)
    out = dict(train_img_s_bs32=train(32, 2 if quick else 3), train_img_s_bs64=train(64, 1 if quick else 2),
               infer_img_s_bs64=infer(64, 2 if quick else 3))
    saved = {}
    def pack(t):
        saved.setdefault(t.untyped_storage().data_ptr(), t.untyped_storage().nbytes()); return t
    m.train(); x, y = batch(64)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t): loss = lossf(m(x), y)
    del loss
    n_params = sum(p.numel() for p in m.parameters())
    out.update(activations_mb_bs64_fp32=sum(saved.values()) / 2**20, params=n_params,
               weights_grads_momentum_mb=3 * 4 * n_params / 2**20, threads=torch.get_num_threads())
    return out

REAL_RUN = """study: cost_probe
notebook: experiments/transfer_modes.ipynb
seeds: {seeds}
base: {{dataset: pacs_art, mode: mode_a, image_size: {size}, batch_size: 32, epochs: 1, n_per_class: 2,
        n_valid_per_class: 1, num_workers: 0}}
"""

def real_runs(size:int, runs_dir:Path, n:int=2) -> dict:
    "`n` real runs through `python -m artstudy run` (one at a time): wall seconds, their images, their train img/s."
    cfg = runs_dir/"cost_probe.yaml"; cfg.write_text(REAL_RUN.format(size=size, seeds=list(range(1, n + 1))))
    t = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "artstudy", "run", str(cfg), "--runs-dir", str(runs_dir), "--no-progress",
                        "--workers", "1"], cwd=C.ROOT, capture_output=True, text=True, env=C.fast_env())
    if r.returncode: raise SystemExit(f"the probe runs failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
    import pandas as pd
    from artstudy.runs import expand_grid
    summ = pd.read_csv(runs_dir/"cost_probe"/"summary.csv")
    specs, table = expand_grid(cfg, runs_dir=runs_dir), _tables()
    from artstudy.runs import notebook_params
    nbp = notebook_params(specs[0].notebook)
    rows = []
    for s, secs in zip(specs, summ.seconds):
        m = json.loads((s.run_dir/"metrics.json").read_text())
        rows.append(dict(run_id=s.run_id, wall_s=float(secs), train_seconds=m.get("train_seconds"),
                         train_img_per_s=m.get("train_img_per_s"), **run_images(s, {}, nbp, table)))
    return dict(runs=rows, sweep_wall_s=time.perf_counter() - t)

# ------------------------------------------------------------------ 3. estimate

def seconds(imgs, fixed, train_rate, fwd_rate) -> float:
    return fixed + imgs["train"] / train_rate + imgs["forward"] / fwd_rate

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(C.ROOT/"configs"/"paper.yaml"))
    ap.add_argument("--gpu-img-s", type=float, default=H200["model_img_s"], help="measured GPU model training img/s")
    ap.add_argument("--loader-img-s", type=float, default=H200["loader_img_s"], help="measured GPU loader img/s")
    ap.add_argument("--gpu", default=H200["device"], help="the GPU those figures were measured on")
    ap.add_argument("--quick", action="store_true", help="fewer timed steps, one real run")
    ap.add_argument("--reuse", action="store_true", help="derive again from the CPU measurements of the last "
                    "bench/out/cost_<study>.json (e.g. for another GPU's --gpu-img-s) instead of measuring")
    a = ap.parse_args()
    before = C.loadavg()
    specs, imgs = count(a.config)
    study = specs[0].study
    size = Counter(int(s.params.get("IMAGE_SIZE") or 224) for s in specs).most_common(1)[0][0]
    if a.reuse:
        old = json.loads((C.OUT/f"cost_{study}.json").read_text())["measured_cpu"]
        rates = {k: v for k, v in old.items() if k not in ("probe", "fixed_s_per_run", "fixed_s_each", "loadavg_before")}
        probe = old["probe"]
        before = old.get("loadavg_before", before)
    else:
        rates = model_rates(size, a.quick)
        with tempfile.TemporaryDirectory() as d: probe = real_runs(size, Path(d), 1 if a.quick else 2)
    tr, fw = rates["train_img_s_bs64"], rates["infer_img_s_bs64"]
    fixed_each = [r["wall_s"] - r["train"] / tr - r["forward"] / fw for r in probe["runs"]]
    fixed = max(0.0, min(fixed_each))   # the warm one (the first also caches the test split at this size)
    fwd_ratio = fw / tr
    from artstudy.runs import RUN_UTIL_PCT, makespan, runs_per_gpu, DEFAULT_NEED_MB
    cpu = {s.run_id: seconds(imgs[s.run_id], fixed, tr, fw) for s in specs}
    gpu = {}
    for label, rate in (("model_bound", a.gpu_img_s), ("loader_bound", min(a.gpu_img_s, a.loader_img_s))):
        gpu[label] = {s.run_id: seconds(imgs[s.run_id], fixed, rate, rate * fwd_ratio) for s in specs}
    image_s = {k: sum(v[r] - fixed for r in v) for k, v in gpu.items()}
    busy = {r: i["train"] / a.gpu_img_s + i["forward"] / (a.gpu_img_s * fwd_ratio) for r, i in imgs.items()}
    busy_s = sum(busy.values())   # the GPU's own work: the floor of the study's time on one GPU
    share = {k: busy_s / sum(v.values()) for k, v in gpu.items()}
    k = runs_per_gpu(DEFAULT_NEED_MB, 140_000, 0)   # an idle H200, the default need
    total = {lab: dict(one_at_a_time_s=sum(v.values()),
                       k_per_gpu_s=max(makespan(specs, v, k), busy_s))
             for lab, v in gpu.items()}
    grids = {}
    for s in specs:
        g = grids.setdefault(s.group, dict(runs=0, train_images=0, forward_images=0, cpu_s=0.0, gpu_s=0.0, gpu_loader_s=0.0,
                                           busy_s=0.0))
        g["busy_s"] += busy[s.run_id]
        g["runs"] += 1; g["train_images"] += imgs[s.run_id]["train"]; g["forward_images"] += imgs[s.run_id]["forward"]
        g["cpu_s"] += cpu[s.run_id]; g["gpu_s"] += gpu["model_bound"][s.run_id]; g["gpu_loader_s"] += gpu["loader_bound"][s.run_id]
    per_run = lambda col: {g: round(v[col] / v["runs"], 1) for g, v in grids.items()}
    how_gpu = (f"DERIVED, not measured: {fixed:.0f} s fixed per run (measured on this CPU) + training images at "
               f"{a.gpu_img_s:,.0f} img/s ({a.gpu}) + forward images at {a.gpu_img_s * fwd_ratio:,.0f} img/s (x{fwd_ratio:.2f}, "
               "the CPU's inference/training ratio)")
    how_cpu = (f"measured on this CPU ({os.cpu_count()} cores, load {before[0]}): {fixed:.0f} s fixed per run + "
               f"{tr:.1f} training img/s + {fw:.1f} inference img/s at {size} px")
    res = dict(
        bench="paper_cost", study=study, config=str(a.config), image_size=size, runs=len(specs),
        train_images=sum(i["train"] for i in imgs.values()), forward_images=sum(i["forward"] for i in imgs.values()),
        grids={g: {**{c: (round(x, 1) if isinstance(x, float) else x) for c, x in v.items()}} for g, v in grids.items()},
        measured_cpu=dict(**{c: round(x, 2) if isinstance(x, float) else x for c, x in rates.items()}, fixed_s_per_run=round(fixed, 1),
                          fixed_s_each=[round(x, 1) for x in fixed_each], probe=probe, loadavg_before=before),
        gpu_given=dict(device=a.gpu, model_img_s=a.gpu_img_s, loader_img_s=a.loader_img_s),
        gpu_derived=dict(how=how_gpu, runs_per_gpu=k, gpu_busy_s=round(busy_s), gpu_share_of_a_run=
                         {lab: round(v, 3) for lab, v in share.items()}, runner_run_util_pct=RUN_UTIL_PCT,
                         one_gpu={lab: {c: round(x) for c, x in v.items()} for lab, v in total.items()},
                         need_mb=dict(activations_fp32_bs64=round(rates["activations_mb_bs64_fp32"]),
                                      weights_grads_momentum=round(rates["weights_grads_momentum_mb"]),
                                      resident_wikiart7_train_valid=round((5880 + 1260) * size * size * 3 / 2**20),
                                      runner_default=DEFAULT_NEED_MB)),
        cpu_total_s_one_at_a_time=round(sum(cpu.values())),
        estimates=dict(cpu=dict(how=how_cpu, derived=False, runs={r: round(x, 1) for r, x in cpu.items()}, grids=per_run("cpu_s")),
                       gpu=dict(how=how_gpu, derived=True, runs={r: round(x, 1) for r, x in gpu["model_bound"].items()},
                                grids=per_run("gpu_s"), busy_runs={r: round(x, 2) for r, x in busy.items()},
                                busy_grids=per_run("busy_s"))),
        loadavg_before=before, loadavg_after=C.loadavg(), machine=C.machine())
    C.emit(f"cost_{study}", res)

if __name__ == "__main__":
    C.ensure_fast_env()
    main()
