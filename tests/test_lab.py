"""The explorer where most readers meet it: `make lab` (JupyterLab on 127.0.0.1, with a token, from a temporary HOME)
opens `nbs/explore.ipynb` on a fake run; Debian's headless Chromium, driven by Playwright, runs all cells, and the
explorer's widgets render and redraw their figures when the layer changes. Skips (with the reason) when Chromium,
Playwright or make is missing. The notebook is a copy in a temporary folder: JupyterLab autosaves what it runs."""
import json, shutil, subprocess, sys, time, urllib.error, urllib.request
from pathlib import Path
import pytest
from _browser import (CHROMIUM, ROOT, browser_missing, explorer_state, fake_run, fig_data, free_port, plotly_imports,
                      served_env, stop, wait_http, wait_plot, watch_errors, widget_errors)

def _why_skip():
    if shutil.which("make") is None: return "make is not installed"
    return browser_missing()

pytestmark = pytest.mark.skipif(_why_skip() is not None, reason=str(_why_skip()))
TOKEN = "artstudy-test-token"

def _user_settings(home:Path):
    "No news fetching (offline) in the temporary HOME's JupyterLab settings."
    d = home / ".jupyter" / "lab" / "user-settings" / "@jupyterlab" / "apputils-extension"
    d.mkdir(parents=True, exist_ok=True)
    (d / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false"}))

@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    "`make lab` serving a copy of nbs/explore.ipynb (root: a temporary folder) on a fake run, on 127.0.0.1 only."
    tmp_path = tmp_path_factory.mktemp("lab")
    run = fake_run(tmp_path / "runs" / "study" / "fake")
    root = tmp_path / "project"; (root / "nbs").mkdir(parents=True)
    shutil.copy(ROOT / "nbs" / "explore.ipynb", root / "nbs" / "explore.ipynb")
    env = served_env(tmp_path, run); _user_settings(Path(env["HOME"]))
    env["JUPYTER_TOKEN"] = TOKEN
    for k in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL"): env.pop(k, None)   # when pytest itself runs under make
    port, log = free_port(), tmp_path / "lab.log"
    with open(log, "w") as out:
        p = subprocess.Popen(["make", "-s", "-o", "install", "lab", f"VENV={sys.prefix}", f"LAB_PORT={port}", f"LAB_ROOT={root}",
                              "LAB_ARGS=--no-browser --ServerApp.port_retries=0"], cwd=ROOT, env=env, stdout=out,
                             stderr=subprocess.STDOUT, start_new_session=True)   # its own group: make and jupyter stop together
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/api", p, log)
        yield url, root, tmp_path
    finally:
        stop(p, group=True)

def _api(url, path): return json.loads(urllib.request.urlopen(f"{url}{path}?token={TOKEN}", timeout=10).read())

def test_make_lab_serves_the_project_kernel_locally(lab):
    url, root, _ = lab
    specs = _api(url, "/api/kernelspecs")
    spec = specs["kernelspecs"][specs["default"]]["spec"]
    assert specs["default"] == "python3" and spec["display_name"] == "Python 3 (artstudy)", specs
    assert Path(spec["argv"][0]).parent.resolve() == Path(sys.executable).parent.resolve(), spec["argv"]
    assert [c["name"] for c in _api(url, "/api/contents/nbs")["content"]] == ["explore.ipynb"]
    with pytest.raises(urllib.error.HTTPError, match="403"):   # the token is required
        urllib.request.urlopen(f"{url}/api/contents/nbs", timeout=10)

def _run_all(page):
    "Run > Run All Cells, with the notebook focused; once more if no cell started (a menu click can land too early)."
    for _ in range(2):
        page.locator(".jp-Notebook .jp-Cell").first.click()
        page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
        page.locator(".lm-Menu-item:not(.lm-mod-disabled)", has_text="Run All Cells").first.click()
        try:
            page.wait_for_function("""() => [...document.querySelectorAll('.jp-CodeCell .jp-InputPrompt')]
                                      .some(p => /\\[(\\*|\\d+)\\]/.test(p.textContent))""", timeout=20_000)
            return
        except Exception: page.keyboard.press("Escape")
    raise AssertionError("Run All Cells did not start any cell")

def test_explorer_renders_and_reacts_in_jupyterlab(lab):
    from playwright.sync_api import sync_playwright, expect
    url, root, tmp = lab
    t0 = time.perf_counter()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport=dict(width=1400, height=2000))
        errs = watch_errors(page)
        try:
            page.goto(f"{url}/lab/tree/nbs/explore.ipynb?token={TOKEN}", wait_until="domcontentloaded", timeout=180_000)
            expect(page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']")).to_have_count(1, timeout=180_000)
            expect(page.locator(".jp-Toolbar-kernelName").first).to_have_text("Python 3 (artstudy)")
            _run_all(page)
            state = page.locator(".explorer-state")
            expect(state).to_contain_text("layer=bn2", timeout=300_000)   # the kernel ran the notebook; the widget rendered
            wait_plot(page, "metric", "el.data.length == 2 && el.data[0].y.length == 1280")
            t_ready = time.perf_counter() - t0
            assert {t["type"] for t in fig_data(page, "topk")} <= {"image"} and fig_data(page, "classes")[0]["type"] == "bar"
            title0 = page.locator(".explorer-fig-metrics .gtitle").text_content()
            assert title0.startswith("bn2 : channel"), title0
            # change the layer with the dropdown: every figure redraws for the new layer
            page.locator(".widget-dropdown", has_text="layer").locator("select").select_option("blocks.4")
            expect(state).to_contain_text("layer=blocks.4 ", timeout=120_000)
            wait_plot(page, "metric", "el.data[0].y.length == 112")
            ch = explorer_state(page).split("channel=")[1].split()[0]
            expect(page.locator(".explorer-fig-metrics .gtitle")).to_have_text(f"blocks.4 : channel {ch}", timeout=60_000)
            expect(page.locator(".jp-OutputArea-output", has_text="Traceback")).to_have_count(0)
            wait_plot(page, "featvis", "el.data.length == 2")
            assert not widget_errors(errs), errs   # e.g. "no comm channel defined" from a widget closed under its view
            assert plotly_imports(page) == 1       # twelve figure widgets, one import of plotly's 5 MB module
            page.screenshot(path=str(tmp / "lab.png"), full_page=True)
        except Exception:
            page.screenshot(path=str(tmp / "failed.png"), full_page=True)   # for the post-mortem
            raise
        finally: browser.close()
    print(f"JupyterLab test: explorer rendered after {t_ready:.1f} s, total {time.perf_counter() - t0:.1f} s; JS errors: {errs}")
