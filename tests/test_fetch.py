"`python -m artstudy data fetch|verify` against local git repositories laid out like the public sources (offline)."
import csv, hashlib, io, json, re, shlex, shutil, signal, subprocess, sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
import pytest
from artstudy import config, fetch
from artstudy.__main__ import main
from artstudy.fetch import FetchError, fetch_dataset, local_source, read_manifest, verify_dataset, write_manifest

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

def _repair(out):
    "The repair command that `data verify` printed, as arguments for `main`."
    cmd = re.search(r"Run `(python -m artstudy data fetch [^`]+)`", out)
    assert cmd, out
    return shlex.split(cmd[1])[3:]

def test_verify_suggests_the_repair_command_for_the_copy_it_checked(sources, tmp_path):
    "--root, --manifests and a folder in an odd place (a space in its name) are all in the command, which works as printed."
    root, src = tmp_path/"my data", f"{sources.as_uri()}/src/{{repository}}"
    fetch_dataset("wikiart_mt", to=root, source=src, manifests=sources/"man", progress=False, log=lambda s: None)
    rels = [f[0] for f in read_manifest("wikiart_mt", sources/"man")["files"]]
    for broken in ([rels[0]], ["labels.csv", rels[1]]):                # labels.csv gone too: still repaired in place
        for rel in broken: (root/"wikiart_mt"/rel).unlink()
        rc, out, _ = _cli("data", "verify", "wikiart_mt", "--root", str(root), "--manifests", str(sources/"man"))
        assert rc == 1 and f"{len(broken)} missing" in out, out
        args = _repair(out)
        assert args[:4] == ["data", "fetch", "wikiart_mt", "--to"] and args[4:] == [str(root), "--manifests", str(sources/"man")]
        rc, _, err = _cli(*args, "--source", src, "--no-progress")
        assert rc == 0, err
        assert verify_dataset("wikiart_mt", root/"wikiart_mt", sources/"man")["ok"]
    assert sorted(p.name for p in root.iterdir()) == ["wikiart_mt"]     # repaired in place, no second copy

def test_verify_without_a_manifest_says_where_to_restore_from(tmp_path):
    d = tmp_path/"mine"; (d/"images"/"a").mkdir(parents=True); (d/"images"/"a"/"1.jpg").write_bytes(b"x")
    (d/"SHA256SUMS").write_text(f"{hashlib.sha256(b'y').hexdigest()}  images/a/1.jpg\n")
    rep = verify_dataset("mine", d, tmp_path/"no-manifests")
    assert fetch.format_report(rep).endswith("1 corrupt (images/a/1.jpg) of 1 files. Restore them from where this copy "
                                             "came from: mine has no manifest to fetch it with.")

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

def _mirror_without(repo, mirror, paths):
    "A bare copy of git repository `repo` that lacks the blobs of `paths` and, like a plain server, cannot filter."
    subprocess.run(["git", "clone", "-q", "--bare", "--no-local", str(repo), str(mirror)], check=True)
    assert subprocess.run(["git", "config", "--get", "uploadpack.allowFilter"], cwd=mirror).returncode == 1
    packs = mirror/"objects"/"pack"
    for pack in list(packs.glob("*.pack")):                            # every object loose, so that one can be deleted
        data = pack.read_bytes()
        for f in packs.glob(pack.stem + ".*"): f.unlink()
        subprocess.run(["git", "unpack-objects", "-q"], cwd=mirror, input=data, check=True)
    gone = [subprocess.run(["git", "rev-parse", f"HEAD:{p}"], cwd=mirror, capture_output=True, text=True,
                           check=True).stdout.strip() for p in paths]
    for oid in gone: (mirror/"objects"/oid[:2]/oid[2:]).unlink()
    return gone

def _models_mirror(tmp_path, name, missing):
    "Real-format manifest rows of `name`, in a mirror that also holds two model files, and lacks the files `missing`."
    real = json.loads((MANIFESTS/name/"source.json").read_text())
    rows = _pick(name, 3)
    files = {r["source"]: _bytes(name, r["path"]) for r in rows} | {"models/vgg.h5": b"h5" * 5000, "models/rn.pth": b"pt" * 5000}
    _, commit = local_source(tmp_path/"src", files)
    mirror = tmp_path/"mirror"/f"{real['repository']}.git"
    gone = _mirror_without(tmp_path/"src", mirror, [p for p in files if p in missing(rows)])
    _mini_manifest(tmp_path/"man", name, rows, commit, real)
    return rows, mirror, gone, ["--source", f"{(tmp_path/'mirror').as_uri()}/{{repository}}.git", "--manifests", str(tmp_path/"man")]

def test_a_mirror_that_cannot_filter_and_lacks_files_nobody_needs(tmp_path):
    "wikiart7's mirror without its two model files, served without filters: only the wanted files are read, in place."
    rows, mirror, gone, args = _models_mirror(tmp_path, "wikiart7", lambda rows: ["models/vgg.h5", "models/rn.pth"])
    r = subprocess.run(["git", "clone", "-q", "--bare", "--filter=blob:none", mirror.as_uri(), str(tmp_path/"c")],
                       capture_output=True, text=True)
    assert r.returncode and any(f"unable to read {g}" in r.stderr for g in gone)   # what a plain (partial) clone does
    rc, _, err = _cli("data", "fetch", "wikiart7", "--no-progress", "--keep-cache", "--to", str(tmp_path/"data"), *args)
    assert rc == 0, err
    for row in rows: assert (tmp_path/"data"/"wikiart7"/row["path"]).read_bytes() == _bytes("wikiart7", row["path"])
    cache = next((tmp_path/"data"/".git-cache").iterdir())
    objects = [p for p in (cache/"objects").rglob("*") if p.is_file() and "info" not in p.parts]
    assert objects == [], objects                                           # nothing copied from the mirror

def test_a_wanted_file_the_mirror_lacks_is_named(tmp_path):
    rows, _, gone, args = _models_mirror(tmp_path, "pacs_art", lambda rows: [rows[1]["source"]])
    rc, _, err = _cli("data", "fetch", "pacs_art", "--no-progress", "--to", str(tmp_path/"data"), *args)
    assert rc == 1 and f"{rows[1]['path']} ← {rows[1]['source']}: not in" in err and f"blob {gone[0][:12]} is missing" in err, err
    assert (tmp_path/"data"/".pacs_art.partial"/rows[0]["path"]).is_file()  # the others are kept for a resume

def test_a_server_that_cannot_filter_names_the_cause(tmp_path, monkeypatch):
    "A remote (git's ext:: transport runs upload-pack as a server would) without filters, lacking an unneeded blob."
    _, commit = local_source(tmp_path/"src", {"pics/a.jpg": b"A" * 10, "models/big.pth": b"M" * 1000})
    gone = _mirror_without(tmp_path/"src", tmp_path/"mirror"/"me"/"src.git", ["models/big.pth"])
    write_manifest(tmp_path/"man", "toy", {"images/x/1.jpg": ("pics/a.jpg", b"A" * 10)}, "me/src", commit)
    for k, v in dict(GIT_CONFIG_COUNT="1", GIT_CONFIG_KEY_0="protocol.ext.allow", GIT_CONFIG_VALUE_0="always").items():
        monkeypatch.setenv(k, v)
    with pytest.raises(FetchError) as e:
        fetch_dataset("toy", to=tmp_path/"data", source=f"ext::git %s {tmp_path}/mirror/{{repository}}.git",
                      manifests=tmp_path/"man", progress=False, log=lambda s: None)
    msg = str(e.value)
    assert f"remote: fatal: unable to read {gone[0]}" in msg, msg          # the line that names the cause, kept
    assert "cannot filter blobs" in msg and "uploadpack.allowFilter" in msg and "--method https" in msg, msg

@pytest.mark.parametrize("source, method, says", [
    ("file:///m/{repositry}.git", "git", "unknown placeholder {repositry} (did you mean {repository}?); the valid ones "
                                         "are {repository}, {owner}, {repo}"),
    ("file:///m/{owner}/{name}", "git", "unknown placeholder {name}; the valid ones are {repository}, {owner}, {repo}"),
    ("file:///m/{repository}/{path}", "git", "unknown placeholder {path} ({commit} and {path} are for --method https"),
    ("file:///m/{repository}/{commit}/{paht}", "https", "{paht} (did you mean {path}?); the valid ones are {repository}, "
                                                        "{owner}, {repo}, {commit}, {path}"),
    ("file:///m/{repository}", "https", "has no {path}"),
    ("file:///m/{repository", "git", "is not a valid template"),
    ("file:///m/{0}", "git", "unknown placeholder {0}"),
])
def test_a_misspelt_placeholder_is_named_with_the_valid_ones(sources, tmp_path, source, method, says):
    rc, out, err = _cli("data", "fetch", "pacs_art", "--no-progress", "--to", str(tmp_path), "--method", method,
                        "--source", source, "--manifests", str(sources/"man"))
    assert rc == 1 and f"error: --source {source!r}" in err and says in err, err
    assert "missing key" not in err and list(tmp_path.iterdir()) == []     # refused before anything was written
