"`python -m artstudy data fetch|verify` against local git repositories laid out like the public sources (offline)."
import csv, hashlib, io, json, shutil, signal, subprocess, sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
import pytest
from artstudy import config, fetch
from artstudy.__main__ import main
from artstudy.fetch import FetchError, fetch_dataset, local_source, read_manifest, verify_dataset

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent/"shared"/"data"
MANIFESTS = ROOT/"data"/"manifests"
NAMES = ["pacs_art", "wikiart7", "wikiart_mt"]

def _pick(name, n=4):
    "A few rows of the real manifest; for wikiart_mt, rows whose source name has non-ASCII (mojibake) characters too."
    rows = list(csv.DictReader(open(MANIFESTS/name/"labels.csv", encoding="utf-8", newline="")))
    odd = [r for r in rows if not r["source"].isascii()][:2]
    return rows[:n] + odd

def _bytes(name, rel):
    "The real image if ../shared/data is here, else stand-in bytes (fetching does not decode images)."
    p = SHARED/name/rel
    return p.read_bytes() if p.is_file() else hashlib.sha256(f"{name}/{rel}".encode()).digest() * 40

def _mini_manifest(man, name, rows, commit, real):
    "A manifest in the real format (real columns, real source.json) for `rows`, pinned to `commit`."
    d = man/name; d.mkdir(parents=True)
    with open(d/"labels.csv", "w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0])); w.writeheader(); w.writerows(rows)
    sums = {r["path"]: hashlib.sha256(_bytes(name, r["path"])).hexdigest() for r in rows}
    sums["labels.csv"] = config.sha256_file(d/"labels.csv")
    (d/"SHA256SUMS").write_text("".join(f"{h}  {p}\n" for p, h in sorted(sums.items())))
    (d/"source.json").write_text(json.dumps({**real, "commit": commit, "images": len(rows)}))

@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    "Three local sources at tmp/src/<owner>/<repo> holding the picked files at their source paths, plus a decoy."
    tmp = tmp_path_factory.mktemp("sources")
    for name in NAMES:
        real = json.loads((MANIFESTS/name/"source.json").read_text())
        rows = _pick(name)
        files = {r["source"]: _bytes(name, r["path"]) for r in rows} | {"README.md": b"not part of the dataset"}
        _, commit = local_source(tmp/"src"/real["repository"], files)
        _mini_manifest(tmp/"man", name, rows, commit, real)
    return tmp

def _cli(*args):
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err): rc = main(list(args))
    return rc, out.getvalue(), err.getvalue()

def _fetch_args(src, to): return ["--to", str(to), "--source", f"{src.as_uri()}/src/{{repository}}", "--manifests", str(src/"man")]

def test_fetch_rebuilds_the_three_datasets_byte_for_byte(sources, tmp_path):
    rc, out, err = _cli("data", "fetch", "--no-progress", *_fetch_args(sources, tmp_path))
    assert rc == 0, err
    assert "non-commercial research" in out and "Li, Yang, Song" in out       # the licence terms are printed
    assert sorted(p.name for p in tmp_path.iterdir()) == NAMES                 # no partial folder, no git cache left
    for name in NAMES:
        sums = read_manifest(name, sources/"man")["sums"]
        for rel, h in sums.items():
            data = (tmp_path/name/rel).read_bytes()
            assert hashlib.sha256(data).hexdigest() == h, rel
            if rel != "labels.csv": assert data == _bytes(name, rel), rel
        assert (tmp_path/name/"labels.csv").read_bytes() == (sources/"man"/name/"labels.csv").read_bytes()
        assert "Licence:" in (tmp_path/name/"LICENSE.txt").read_text()
        assert json.loads((tmp_path/name/"source.json").read_text())["repository"] in (tmp_path/name/"LICENSE.txt").read_text()
        assert config.dataset_path(name, root=tmp_path) == (tmp_path/name).resolve()
    rc, out, _ = _cli("data", "verify", "--root", str(tmp_path), "--manifests", str(sources/"man"))
    assert rc == 0 and out.count("present and verified") == 3, out

def test_without_git_files_come_one_url_each_mojibake_names_included(sources, tmp_path, monkeypatch):
    monkeypatch.setattr(fetch.shutil, "which", lambda name: None)         # no git: `auto` falls back to per-file URLs
    files = read_manifest("wikiart_mt", sources/"man")["files"]
    assert any(not src.isascii() for _, src, _ in files)                  # jalpv1 names with mojibake
    rc, _, err = _cli("data", "fetch", "wikiart_mt", "--no-progress", "--to", str(tmp_path), "--manifests", str(sources/"man"),
                      "--source", f"{sources.as_uri()}/src/{{repository}}/{{path}}")
    assert rc == 0, err
    for rel, _, h in files: assert (tmp_path/"wikiart_mt"/rel).read_bytes() == _bytes("wikiart_mt", rel)
    assert verify_dataset("wikiart_mt", tmp_path/"wikiart_mt", sources/"man")["ok"]

def test_verify_names_missing_and_corrupt_files(sources, tmp_path):
    fetch_dataset("wikiart_mt", to=tmp_path, source=f"{sources.as_uri()}/src/{{repository}}", manifests=sources/"man",
                  progress=False, log=lambda s: None)
    rels = [f[0] for f in read_manifest("wikiart_mt", sources/"man")["files"]]
    (tmp_path/"wikiart_mt"/rels[0]).unlink(); (tmp_path/"wikiart_mt"/rels[1]).write_bytes(b"flipped")
    rc, out, _ = _cli("data", "verify", "wikiart_mt", "--root", str(tmp_path), "--manifests", str(sources/"man"))
    assert rc == 1
    assert f"1 missing ({rels[0]})" in out and f"1 corrupt ({rels[1]})" in out and "data fetch wikiart_mt" in out, out

def test_a_corrupted_source_file_is_named_and_not_kept(sources, tmp_path):
    "A source whose file differs from the manifest: the error names the dataset file and its source path."
    rows = _pick("pacs_art")
    files = {r["source"]: _bytes("pacs_art", r["path"]) for r in rows}
    bad = rows[1]; files[bad["source"]] = files[bad["source"]][:-10] + b"corrupted!"
    real = json.loads((MANIFESTS/"pacs_art"/"source.json").read_text())
    _, commit = local_source(tmp_path/"src"/real["repository"], files)
    _mini_manifest(tmp_path/"man", "pacs_art", rows, commit, real)
    rc, _, err = _cli("data", "fetch", "pacs_art", "--no-progress", *_fetch_args(tmp_path, tmp_path/"data"))
    assert rc == 1 and f"{bad['path']} ← {bad['source']}" in err and real["repository"] in err, err
    assert not (tmp_path/"data"/"pacs_art").exists()                      # no dataset under the final name
    part = tmp_path/"data"/".pacs_art.partial"
    assert not (part/bad["path"]).exists() and (part/rows[0]["path"]).is_file()

_KILLER = """
import os, signal, sys, tempfile
from artstudy import fetch
orig, n = fetch._write, [0]
def write(path, data):
    n[0] += 1
    if n[0] == 3:   # killed in the middle of writing the third file
        fd, _ = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"); os.write(fd, data[:7])
        os.kill(os.getpid(), signal.SIGKILL)
    orig(path, data)
fetch._write = write
fetch.fetch_dataset(sys.argv[1], to=sys.argv[2], source=sys.argv[3], manifests=sys.argv[4], batch=1, progress=False)
"""

def test_a_killed_fetch_resumes_without_refetching(sources, tmp_path, monkeypatch):
    src, man = f"{sources.as_uri()}/src/{{repository}}", str(sources/"man")
    r = subprocess.run([sys.executable, "-c", _KILLER, "wikiart7", str(tmp_path), src, man], capture_output=True, text=True)
    assert r.returncode == -signal.SIGKILL, r.stderr
    files = read_manifest("wikiart7", man)["files"]
    part = tmp_path/".wikiart7.partial"
    assert [(part/f[0]).is_file() for f in files] == [True, True] + [False]*(len(files) - 2)   # never half a file
    assert list(part.rglob(".*.tmp")) and not (tmp_path/"wikiart7").exists()
    written = []
    monkeypatch.setattr(fetch, "_write", lambda p, d, orig=fetch._write: (written.append(p.name), orig(p, d)))
    out = fetch_dataset("wikiart7", to=tmp_path, source=src, manifests=man, progress=False, log=lambda s: None)
    assert sorted(written) == sorted([Path(f[0]).name for f in files[2:]] + ["labels.csv", "SHA256SUMS"])
    assert verify_dataset("wikiart7", out, man)["ok"] and not list(out.rglob(".*.tmp"))

def test_a_wrong_commit_is_refused(sources, tmp_path):
    man = tmp_path/"man"; shutil.copytree(sources/"man"/"pacs_art", man/"pacs_art")
    meta = json.loads((man/"pacs_art"/"source.json").read_text())
    for commit, msg in [("1"*40, f"fetching commit {'1'*40} from"), ("main", "full 40-hex commit")]:
        (man/"pacs_art"/"source.json").write_text(json.dumps({**meta, "commit": commit}))
        with pytest.raises(FetchError, match=msg):
            fetch_dataset("pacs_art", to=tmp_path/"data", source=f"{sources.as_uri()}/src/{{repository}}", manifests=man,
                          progress=False, log=lambda s: None)
    assert not (tmp_path/"data"/"pacs_art").exists()

def test_an_unreachable_source_is_named(sources, tmp_path):
    with pytest.raises(FetchError, match=r"from file:///nonexistent/MachineLearning2020/Homework3-PACS .*the commit the manifest pins"):
        fetch_dataset("pacs_art", to=tmp_path, source="file:///nonexistent/{repository}", manifests=sources/"man",
                      progress=False, log=lambda s: None)

def test_data_roots_fail_loudly(tmp_path, monkeypatch):
    monkeypatch.setenv("ARTSTUDY_DATA", str(tmp_path/"typo"))
    with pytest.raises(FileNotFoundError, match="given by ARTSTUDY_DATA, is not a folder"): config.dataset_path("wikiart7")
    monkeypatch.delenv("ARTSTUDY_DATA")
    (tmp_path/"empty").mkdir()
    with pytest.raises(FileNotFoundError, match=f"{tmp_path.resolve()}/empty is empty"): config.dataset_path(tmp_path/"empty")
    (tmp_path/"wikiart7").mkdir(); (tmp_path/".wikiart7.partial").mkdir()
    monkeypatch.setattr(config, "data_roots", lambda root=None: [tmp_path.resolve(), tmp_path.resolve()/"other"])
    with pytest.raises(FileNotFoundError) as e: config.dataset_path("wikiart7")
    msg = str(e.value)
    assert f"{tmp_path.resolve()}/wikiart7 is empty" in msg and f"{tmp_path.resolve()}/other/wikiart7 does not exist" in msg
    assert "interrupted fetch" in msg and "python -m artstudy data fetch wikiart7" in msg, msg

def test_fetch_imports_only_config():
    "artstudy.fetch sits just above config: no artstudy.data, no fastai (so `data fetch` works before anything else)."
    import ast
    tree = ast.parse((ROOT/"artstudy"/"fetch.py").read_text())
    ours = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level}
    ours |= {n.module.split(".")[1] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and not n.level
             and (n.module or "").startswith("artstudy.")}
    other = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert ours == {"config"} and "fastai" not in other, (ours, other)
