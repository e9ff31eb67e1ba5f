"""Shared helpers of the benchmarks (not a benchmark: `make bench` skips files starting with `_`).

- `fast_env()` / `ensure_fast_env()`: the environment of the CPU fast path (glibc allocator settings, and OpenMP
  threads that sleep rather than spin: `OMP_WAIT_POLICY=PASSIVE`). They must be set before the
  process starts, so a benchmark that finds them missing re-executes itself with them (as `make` does by exporting them).
- `machine()`: what the numbers were measured on, including the load average (the CPU is shared).
- `run_worker(script, *args, env=...)`: run a benchmark's `--worker` mode in a fresh process and read its JSON line.
- `emit(name, result)`: print the result as JSON and write it to bench/out/<name>.json.
- `real_batches(n, size)`: n wikiart7 training images at `size` px from the resized cache, normalised (0.5/0.5).
"""
import json, os, platform, statistics, subprocess, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path: sys.path.insert(0, str(ROOT))
OUT = ROOT/"bench"/"out"
from artstudy.config import FAST_CPU_ENV   # the fast-path environment, defined once for the package and benchmarks

def fast_env(base=None, on=True, keys=None) -> dict:
    "A copy of the environment with the fast-path variables (or only `keys`) set (`on`) and the others removed."
    env = dict(os.environ if base is None else base)
    for k, v in FAST_CPU_ENV.items():
        if on and (keys is None or k in keys): env[k] = v
        else: env.pop(k, None)
    return env

def has_fast_env() -> bool: return all(os.environ.get(k) == v for k, v in FAST_CPU_ENV.items())

def ensure_fast_env():
    "Re-execute this script with the allocator settings if they are missing (what `make bench` exports anyway)."
    if not has_fast_env() and not os.environ.get("BENCH_NO_REEXEC"):
        os.execve(sys.executable, [sys.executable, *sys.argv], fast_env())

def run_worker(script, *args, env=None) -> dict:
    "Run `script --worker *args` in a fresh process (its own peak memory, its own environment); its last line read as JSON."
    r = subprocess.run([sys.executable, str(script), "--worker", *map(str, args)], capture_output=True, text=True, env=env)
    if r.returncode: raise RuntimeError(r.stderr[-3000:])
    return json.loads(r.stdout.strip().splitlines()[-1])

def loadavg() -> list: return [round(v, 2) for v in os.getloadavg()]

def machine(**extra) -> dict:
    import torch
    cuda = torch.cuda.is_available()
    return dict(cpu_count=os.cpu_count(), torch_threads=torch.get_num_threads(), torch=torch.__version__,
                python=platform.python_version(), cuda=torch.cuda.get_device_name(0) if cuda else None,
                fast_env={k: os.environ.get(k) for k in FAST_CPU_ENV}, date=time.strftime("%Y-%m-%dT%H:%M:%S"), **extra)

def median(xs): return float(statistics.median(xs))

def emit(name:str, result:dict) -> dict:
    "Print `result` as JSON and write bench/out/<name>.json."
    OUT.mkdir(parents=True, exist_ok=True)
    s = json.dumps(result, indent=1, default=str)
    print(s); (OUT/f"{name}.json").write_text(s + "\n")
    return result

def real_batches(n:int, size:int=128, n_per_class:int|None=None, seed:int=0):
    "n wikiart7 training images (uint8 cache → normalised float, NCHW) and their labels; 7 classes."
    import numpy as np, torch
    from artstudy.data import load_dataset, subset, image_cache
    ds = load_dataset("wikiart7")
    ds = subset(ds, n_per_class={"train": n_per_class or -(-n // len(ds.classes))}, seed=seed, splits=["train"]).split("train")
    arr = image_cache(ds, size)
    idx = np.arange(min(n, len(ds)))
    x = torch.from_numpy(np.asarray(arr[idx])).permute(0, 3, 1, 2).float().div_(255).sub_(0.5).div_(0.5).contiguous()
    y = torch.as_tensor(ds.targets()[idx])
    return x, y
