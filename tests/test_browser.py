"""The explorer notebook served by Voilà, driven by Debian's headless Chromium through Playwright: the page loads, a
change of layer and of channel redraws the figures, the page logs no widget error and imports plotly's module once, and
a second open of the same run reads the analysis from the run's cache and is interactive sooner than the first (and,
with `ARTSTUDY_STRICT_TIMING=1`, as `make test-browser` sets on a quiet machine, within `SECOND_OPEN_S`). Skips
(with the reason) when Chromium, Voilà or Playwright is missing. Never runs `playwright install`: the system browser at
/usr/bin/chromium is used."""
import os, shutil, signal, subprocess, sys, time, urllib.request
from pathlib import Path
import pytest
from _browser import (CHROMIUM, ROOT, browser_missing, explorer_state, fake_run, fig_data, free_port, served_env,
                      plotly_imports, wait_plot, watch_errors, widget_errors)

VOILA = Path(sys.executable).parent / "voila"

def _why_skip():
    if not VOILA.exists() and not shutil.which("voila"): return "voila is not installed (pip install -e '.[explorer]')"
    return browser_missing()

pytestmark = pytest.mark.skipif(_why_skip() is not None, reason=str(_why_skip()))
SECOND_OPEN_S = 15   # issue 15: a second open (analysis cached) is interactive within 15 s

@pytest.fixture
def served(tmp_path):
    "Voilà serving nbs/explore.ipynb on a fake run, on 127.0.0.1 only; HOME and TMPDIR point into tmp_path."
    run = fake_run(tmp_path / "runs" / "study" / "fake")
    env = served_env(tmp_path, run); home = Path(env["HOME"])
    port = free_port()
    log = open(tmp_path / "voila.log", "w")
    p = subprocess.Popen([str(VOILA) if VOILA.exists() else "voila", "nbs/explore.ipynb", "--no-browser", f"--port={port}",
                          "--Voila.ip=127.0.0.1", "--Voila.port_retries=0"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):  # readiness on /favicon.ico: GET / would execute the notebook
            if p.poll() is not None: pytest.fail(f"voila exited: {(tmp_path / 'voila.log').read_text()[-2000:]}")
            try:
                urllib.request.urlopen(url + "/favicon.ico", timeout=1); break
            except OSError: time.sleep(0.1)
        yield url, home, tmp_path
    finally:
        p.send_signal(signal.SIGTERM)
        try: p.wait(15)
        except subprocess.TimeoutExpired: p.kill(); p.wait()
        log.close()

def _open(browser, url, t0):
    "A new page on the explorer (a new Voilà kernel), its JS error list, and the seconds until it is interactive."
    from playwright.sync_api import expect
    page = browser.new_page(viewport=dict(width=1300, height=2000))
    errs = watch_errors(page)
    page.goto(url, wait_until="domcontentloaded", timeout=180_000)
    expect(page.locator(".explorer-state")).to_contain_text("layer=bn2", timeout=180_000)  # the kernel ran the notebook
    wait_plot(page, "metric", "el.data.length == 2 && el.data[0].y.length == 1280")
    wait_plot(page, "featvis", "el.data.length == 2")   # the two placeholders until 'Render'
    return page, errs, time.perf_counter() - t0

def test_explorer_page_reacts(served):
    from playwright.sync_api import sync_playwright, expect
    url, home, tmp = served
    t0 = time.perf_counter()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        page = None
        try:
            page, errs, t_ready = _open(browser, url, t0)
            state = page.locator(".explorer-state")
            expect(page.locator(".explorer-status")).to_contain_text("compared in")   # the first open computes
            assert [t["name"] for t in fig_data(page, "metric")] == ["channels", "channel " + explorer_state(page).split("channel=")[1].split()[0]]
            assert {t["type"] for t in fig_data(page, "topk")} <= {"image"} and fig_data(page, "classes")[0]["type"] == "bar"
            # change the layer with the dropdown
            page.locator(".widget-dropdown", has_text="layer").locator("select").select_option("blocks.4")
            expect(state).to_contain_text("layer=blocks.4 ", timeout=60_000)
            wait_plot(page, "metric", "el.data[0].y.length == 112")
            before = explorer_state(page)
            title0 = page.locator(".explorer-fig-metrics .gtitle").text_content()
            # change the channel: two quick keyboard presses on the focused slider handle (two redraws in a row)
            handle = page.locator(".widget-slider", has_text="rank").locator(".noUi-handle")
            handle.focus()
            for _ in range(2): handle.press("ArrowRight")
            expect(state).to_contain_text("rank=2", timeout=60_000)
            ch = explorer_state(page).split("channel=")[1].split()[0]
            expect(page.locator(".explorer-fig-metrics .gtitle")).to_have_text(f"blocks.4 : channel {ch}", timeout=60_000)
            assert page.locator(".explorer-fig-metrics .gtitle").text_content() != title0 and explorer_state(page) != before
            wait_plot(page, "metric", "el.data[1].x[0] == 2 && el.data[0].y.length == 112")
            wait_plot(page, "featvis", "el.data.length == 2")
            shot = tmp / "explorer.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
            if os.environ.get("ARTSTUDY_SCREENSHOTS"): shutil.copy(shot, Path(os.environ["ARTSTUDY_SCREENSHOTS"]) / "explorer.png")
            assert not widget_errors(errs), errs   # e.g. "no comm channel defined" from a widget closed under its view
            assert plotly_imports(page) == 1       # 24 figure widgets so far, one import of plotly's 5 MB module
            # a second open of the same run reads the analysis from the run's cache instead of recomputing it
            t1 = time.perf_counter()
            page, errs2, t_ready2 = _open(browser, url, t1)
            expect(page.locator(".explorer-status")).to_contain_text("analysis read from the cache")
            assert not widget_errors(errs2), errs2
            assert plotly_imports(page) == 1
        except Exception:
            if page is not None: page.screenshot(path=str(tmp / "failed.png"), full_page=True)  # for the post-mortem
            raise
        finally: browser.close()
    print(f"browser test: first open interactive after {t_ready:.1f} s, second open after {t_ready2:.1f} s, "
          f"total {time.perf_counter() - t0:.1f} s; JS errors: {errs + errs2}")
    assert t_ready2 < t_ready, "the second open (analysis cached) was not faster than the first"
    # the absolute target holds on a quiet machine (`make test-browser`); under `make test` the other worker shares the cores
    if os.environ.get("ARTSTUDY_STRICT_TIMING"):
        assert t_ready2 <= SECOND_OPEN_S, f"the second open took {t_ready2:.1f} s (limit {SECOND_OPEN_S} s)"
