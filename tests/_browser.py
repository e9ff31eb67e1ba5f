"""Helpers shared by the browser tests (`test_browser.py`: the explorer in Voilà; `test_lab.py`: the explorer in
JupyterLab) and `bench/explorer_open.py`: the system Chromium, a fake finished run, serving a process on a free local
port, waiting for the explorer to be interactive, and reading its widgets and plotly figures in the page. Never runs
`playwright install`: the browser is Debian's /usr/bin/chromium."""
import json, os, signal, socket, subprocess, sys, time, urllib.error, urllib.request
from pathlib import Path
import pytest, torch

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("ARTSTUDY_CHROMIUM", "/usr/bin/chromium")

def browser_missing() -> str|None:
    "Why a browser test cannot run here (no Chromium, no Playwright), or None."
    if not Path(CHROMIUM).exists(): return f"no Chromium at {CHROMIUM} (Debian: apt-get install -y chromium)"
    try: import playwright.sync_api  # noqa: F401
    except ImportError: return "playwright is not installed (pip install -e '.[explorer]'; never `playwright install`)"
    return None

def free_port() -> int:
    with socket.socket() as s: s.bind(("127.0.0.1", 0)); return s.getsockname()[1]

def fake_run(d:Path) -> Path:
    """A verified finished run folder without training: two random Lite0 checkpoints, the params the explorer reads, and a
    result staged with the checkpoints' digests and finished, as the runner does."""
    from artstudy.config import finish_run, stage_metrics
    from artstudy.models import create_backbone, save_checkpoint
    from artstudy.data import dataset_path
    for seed, f in ((0, "init.pth"), (1, "model.pth")):
        torch.manual_seed(seed)
        save_checkpoint(create_backbone("efficientnet_lite0", pretrained=False, num_classes=7), d / f)
    (d / "params.json").write_text(json.dumps(dict(image_size=48, data=dict(path=str(dataset_path("wikiart7")), label="style"))))
    stage_metrics(d, dict(run_id=d.name, top1=0.0)); finish_run(d, quiet=True)
    return d

def served_env(tmp_path:Path, run:Path) -> dict:
    "The environment of a served explorer: HOME and TMPDIR inside `tmp_path` (Jupyter and Chromium write there)."
    home = tmp_path / "home"; (home / "tmp").mkdir(parents=True, exist_ok=True)
    return dict(os.environ, HOME=str(home), TMPDIR=str(home / "tmp"), ARTSTUDY_EXPLORE_RUNS=str(run), IN_TEST="1",
                ARTSTUDY_CACHE_DIR=str(tmp_path / "cache"), ARTSTUDY_RUNS_DIR=str(tmp_path / "runs"), PYTHONUNBUFFERED="1")

def wait_http(url:str, proc:subprocess.Popen, log:Path, timeout:float=120) -> None:
    "Wait until `url` answers (any HTTP status); fail with the server's log if `proc` exits or time runs out."
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None: pytest.fail(f"the server exited ({proc.returncode}): {log.read_text()[-3000:]}")
        try: urllib.request.urlopen(url, timeout=1); return
        except urllib.error.HTTPError: return
        except OSError: time.sleep(0.2)
    pytest.fail(f"{url} did not answer within {timeout:.0f} s: {log.read_text()[-3000:]}")

def voila(port:int, env:dict, log, *extra, notebook:str="nbs/explore.ipynb") -> subprocess.Popen:
    "Voilà serving `notebook` as `make explore` does (`artstudy.explorer.VOILA_ARGS`; `extra` replaces or adds options)."
    from artstudy.explorer import VOILA_ARGS
    exe, given = Path(sys.executable).parent / "voila", {a.split("=")[0] for a in extra}
    args = [a for a in VOILA_ARGS if a.split("=")[0] not in given] + list(extra)
    return subprocess.Popen([str(exe) if exe.exists() else "voila", notebook, f"--port={port}", *args],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)

def stop(proc:subprocess.Popen, group:bool=False) -> None:
    "SIGTERM `proc` (its whole process group when `group`, e.g. make and its child), then kill it after 15 s."
    send = (lambda s: os.killpg(proc.pid, s)) if group else proc.send_signal
    try: send(signal.SIGTERM)
    except ProcessLookupError: return
    try: proc.wait(15)
    except subprocess.TimeoutExpired:
        try: send(signal.SIGKILL)
        except ProcessLookupError: pass
        proc.wait()

# The explorer's FigureWidget elements carry a class `explorer-fig-<name>`; plotly draws in that element or inside it.
PLOT = """n => { const w = document.querySelector(`.explorer-fig-${n}`); if (!w) return null;
    return w.classList.contains('js-plotly-plot') ? w : w.querySelector('.js-plotly-plot'); }"""

def fig_data(page, name):
    "The plotly traces of explorer figure `name`, read in the page."
    return page.evaluate(f"""n => {{ const el = ({PLOT})(n);
        return el && el.data ? el.data.map(t => ({{type: t.type, name: t.name, n: (t.y || t.x || []).length}})) : null; }}""", name)

def wait_plot(page, name, cond, timeout=60_000):
    "Wait until JS `cond` (over the plot element `el`) holds for explorer figure `name`."
    page.wait_for_function(f"""n => {{ const el = ({PLOT})(n); return !!(el && el.data && ({cond})); }}""", arg=name, timeout=timeout)

def open_explorer(ctx, url:str, timeout:float=180_000, state:str="layer=", metric:str="el.data.length == 2"):
    """A new page of `ctx` (a browser or a browser context) on the explorer at `url`, the list of its JS errors, and the
    seconds until it is interactive: the state label reads `state` and the metric, feature-visualisation and top-k figures
    are drawn (`metric`: a JS condition over the metric plot `el`)."""
    from playwright.sync_api import expect
    t0 = time.perf_counter()
    page = ctx.new_page(**({"viewport": dict(width=1300, height=2000)} if hasattr(ctx, "new_context") else {}))
    errs = watch_errors(page)
    page.goto(url, wait_until="domcontentloaded", timeout=timeout)
    expect(page.locator(".explorer-state")).to_contain_text(state, timeout=timeout)   # the kernel ran the notebook
    wait_plot(page, "metric", metric, timeout)
    wait_plot(page, "featvis", "el.data.length == 2", timeout)   # the two placeholders until 'Render'
    wait_plot(page, "topk", "el.data.length >= 1", timeout)
    return page, errs, time.perf_counter() - t0

def plotly_imports(page) -> int:
    "How many times the page imported plotly's widget module (the explorer's figures share one import per bundle widget)."
    return page.evaluate("() => Object.keys(globalThis.__artstudy_plotly || {}).length")

def explorer_state(page) -> str: return page.locator(".explorer-state").inner_text()

def watch_errors(page) -> list:
    "A list that collects the page's JavaScript errors as they happen: console errors and uncaught exceptions."
    errs = []
    page.on("console", lambda m: m.type == "error" and errs.append(m.text))
    page.on("pageerror", lambda e: errs.append(f"uncaught {e}"))
    return errs

# What a widget whose comm was closed under a live view logs (ipywidgets' WidgetModel.sync), and kin
WIDGET_ERRORS = ("comm channel", "Syncing error", "Could not create", "Failed to create view", "Error setting state")

def widget_errors(errs:list) -> list:
    "The errors in `errs` that come from the widgets (not the offline font or JupyterLab version noise)."
    return [e for e in errs if any(w.lower() in e.lower() for w in WIDGET_ERRORS)]
