"""How long the explorer takes to open after a study, in Voilà with headless Chromium (issue 24: the first open after
the study ≤ 10 s, later opens ≤ 5 s).

The study's runs (default: the `transfer_modes-*` runs of `runs/smoke`, what a battery trains) are copied, without
anything the explorer made, into a temporary study (hard links: nothing is written into the original), with a fresh
cache folder. `prepare_explorer` then runs on it, as a battery does after its runs (timed, and timed again: a second
call must find everything). Voilà serves `nbs/explore.ipynb` on that study as `make explore` does
(`artstudy.explorer.VOILA_ARGS`: a preheated kernel) and one Chromium opens it:

- **first open**: the page is requested as soon as Voilà listens (so it waits for the kernel that Voilà starts
  ahead), and is timed until it is interactive: the state label is there and the metric, feature-visualisation and
  top-k figures are drawn;
- **later opens**: another page in the same browser, `--gap` seconds after the previous one (someone reading the
  explorer between opens), `--later` times; their median.

With `--plain` (on by default, off with `--quick`) the same is measured without the preheated kernel, for comparison.
Every open must read the prepared analysis ("analysis read from the cache"); the JSON records each page's status line,
the time until Voilà sent the page (`page_s`) and until it was interactive (`open_s`), and the load average: the CPU
is shared, so read the numbers with it. Prints `{"skipped": reason}` without Chromium, Playwright, Voilà or the study.

    python bench/explorer_open.py [--study runs/smoke] [--runs 'transfer_modes-*'] [--later 3] [--gap 30] [--quick]
"""
import argparse, fnmatch, os, shutil, statistics, sys, tempfile, time
from pathlib import Path
from _common import ROOT, emit, loadavg, machine

sys.path.insert(0, str(ROOT / "tests"))
from _browser import CHROMIUM, browser_missing, free_port, open_explorer, stop, voila, wait_http

TARGETS = dict(first_open_s=10, later_open_s=5)

def _skip_reason(study:Path) -> str|None:
    if not (Path(sys.executable).parent / "voila").exists() and not shutil.which("voila"): return "voila is not installed"
    if why := browser_missing(): return why
    if not study.is_dir(): return f"no study at {study}: make study-smoke (a few minutes), or pass --study"
    return None

def copy_study(src:Path, dst:Path, pattern:str) -> list[str]:
    "Hard-link (else copy) the run folders of `src` matching `pattern` into `dst`, without their `analysis/` folders."
    names = sorted(d.name for d in src.iterdir() if d.is_dir() and fnmatch.fnmatch(d.name, pattern))
    def link(s, d):
        try: os.link(s, d)
        except OSError: shutil.copy2(s, d)
    for n in names: shutil.copytree(src / n, dst / n, ignore=shutil.ignore_patterns("analysis"), copy_function=link)
    return names

def measure(study:Path, env:dict, log:Path, later:int, gap:float, *extra) -> dict:
    "Serve the explorer on `study`, open it at once, then `later` times `gap` s apart; each open's times and status."
    from playwright.sync_api import sync_playwright
    port = free_port()
    with open(log, "w") as out:
        p = voila(port, env, out, *extra)
        url = f"http://127.0.0.1:{port}"
        opens = []
        try:
            wait_http(url + "/favicon.ico", p, log, timeout=120)
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
                ctx = browser.new_context(viewport=dict(width=1300, height=2000))   # one browser: its HTTP cache stays
                try:
                    for i in range(1 + later):
                        if i: time.sleep(gap)
                        load = os.getloadavg()[0]
                        page, errs, t = open_explorer(ctx, url)
                        nav = page.evaluate("() => performance.getEntriesByType('navigation')[0].responseEnd / 1000")
                        opens.append(dict(open_s=round(t, 2), page_s=round(nav, 2), load_1m=round(load, 2),
                                          status=page.locator(".explorer-status").inner_text(),
                                          js_errors=[e for e in errs if "ERR_NAME_NOT_RESOLVED" not in e]))
                        page.close()
                finally: browser.close()
        finally: stop(p)
    later_s = [o["open_s"] for o in opens[1:]]
    return dict(first_open_s=opens[0]["open_s"], later_open_s=round(statistics.median(later_s), 2) if later_s else None,
                computed_at_open=any("read from the cache" not in o["status"] for o in opens), opens=opens)

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--study", default=str(ROOT / "runs" / "smoke"), help="a finished study folder")
    ap.add_argument("--runs", default="transfer_modes-*", help="which of its run folders to copy (a glob)")
    ap.add_argument("--later", type=int, default=3, help="later opens, after the first")
    ap.add_argument("--gap", type=float, default=30, help="seconds between opens")
    ap.add_argument("--no-plain", dest="plain", action="store_false", help="skip the measurement without preheating")
    ap.add_argument("--quick", action="store_true", help="2 later opens, 20 s apart, no --plain (what `make bench` runs)")
    a = ap.parse_args()
    if a.quick: a.later, a.gap, a.plain = 2, 20, False
    src = Path(a.study).resolve()
    if why := _skip_reason(src): return emit("explorer_open", {"skipped": why})
    from artstudy.explorer import VOILA_ARGS, prepare_explorer
    load0 = loadavg()
    with tempfile.TemporaryDirectory(prefix="explorer_open-") as tmp:
        tmp = Path(tmp); study = tmp / "runs" / src.name
        names = copy_study(src, study, a.runs)
        if not names: return emit("explorer_open", {"skipped": f"no run folder of {src} matches {a.runs!r}"})
        home = tmp / "home"; (home / "tmp").mkdir(parents=True)
        env = dict(os.environ, HOME=str(home), TMPDIR=str(home / "tmp"), ARTSTUDY_EXPLORE_RUNS=str(study),
                   ARTSTUDY_CACHE_DIR=str(tmp / "cache"), ARTSTUDY_RUNS_DIR=str(tmp / "runs"), PYTHONUNBUFFERED="1")
        os.environ["ARTSTUDY_CACHE_DIR"] = env["ARTSTUDY_CACHE_DIR"]   # prepare_explorer's thumbnails, where the kernel reads them
        t = time.perf_counter(); prep = prepare_explorer(study); prep_s = time.perf_counter() - t
        t = time.perf_counter(); again = prepare_explorer(study); again_s = time.perf_counter() - t
        counts = lambda df: {k: int(v) for k, v in df.state.value_counts().items()}
        bad = prep[prep.state == "failed"]
        res = dict(bench="explorer_open", study=str(src), runs=names, voila_args=list(VOILA_ARGS), targets=TARGETS,
                   prepare=dict(seconds=round(prep_s, 1), second_call_s=round(again_s, 2), states=counts(prep),
                                second_call_states=counts(again), failed=dict(zip(bad.run, bad.error)),
                                per_run_s={r: round(float(s), 1) for r, s in zip(prep.run, prep.seconds)}))
        res["preheated"] = measure(study, env, tmp / "voila.log", a.later, a.gap)
        res.update(first_open_s=res["preheated"]["first_open_s"], later_open_s=res["preheated"]["later_open_s"])
        if a.plain: res["plain"] = measure(study, env, tmp / "voila-plain.log", a.later, 2, "--preheat_kernel=False")
    res.update(meets_targets={k: res[k] is not None and res[k] <= v for k, v in TARGETS.items()},
               load_avg_before=load0, load_avg_after=loadavg(), machine=machine(chromium=CHROMIUM))
    return emit("explorer_open", res)

if __name__ == "__main__": main()
