"Safe writes under hostile conditions: file modes follow the umask, and a full disk gives one clear error (issue 23)."
import errno, json, os, shutil, subprocess, sys
from pathlib import Path
import pytest, torch
from artstudy import config, fetch
from artstudy.config import atomic_path, atomic_save, atomic_write_json, atomic_write_text

WRITERS = {
    "text": lambda p: atomic_write_text(p, "new\n" * 50_000),
    "json": lambda p: atomic_write_json(p, {"x": list(range(50_000))}),
    "checkpoint": lambda p: atomic_save({"w": torch.arange(100_000.)}, p),
    "csv via atomic_path": lambda p: _csv(p),
    "fetched file": lambda p: fetch._write(p, b"x" * 200_000),
}

def _csv(p):
    with atomic_path(p) as tmp: tmp.write_text("a,b\n" * 50_000)
    return p

@pytest.fixture
def umask():
    "Set the umask for one test; the old one comes back after it."
    old = os.umask(0o022)
    yield lambda m: os.umask(m)
    os.umask(old)

@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002], ids=lambda m: f"umask {m:03o}")
def test_written_files_get_the_mode_open_would_give(tmp_path, umask, mask):
    umask(mask)
    with open(tmp_path/"plain", "w"): pass                      # what a normal open() gives under this umask
    want = (tmp_path/"plain").stat().st_mode & 0o777
    assert want == 0o666 & ~mask
    for name, write in WRITERS.items():
        p = tmp_path/name.replace(" ", "_"); write(p)
        assert oct(p.stat().st_mode & 0o777) == oct(want), name
        write(p)                                                   # an overwrite too (a new file replaces the old)
        assert oct(p.stat().st_mode & 0o777) == oct(want), name
    assert not list(tmp_path.glob(".*.tmp"))

def _full_temp(path):
    "A temporary file that is a link to /dev/full: the kernel answers every write with ENOSPC, as on a full disk."
    link = path.parent/f".{path.name}.full.tmp"; link.symlink_to("/dev/full")
    return link

def _check_no_space(p, err, old):
    "One clear OSError naming the folder and the file; the target as it was; no temporary file left."
    assert isinstance(err, OSError) and err.errno == errno.ENOSPC
    assert str(err) == (f"no space left on {p.parent} while writing {p.name} (nothing was written under that name): "
                        "free space there and rerun"), str(err)
    assert "enforce fail" not in str(err) and err.__cause__ is None and err.__suppress_context__
    if old is None: assert not p.exists()
    else: assert p.read_bytes() == old
    assert not [q for q in p.parent.iterdir() if q.name.startswith(".")], list(p.parent.iterdir())

@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
@pytest.mark.parametrize("name", list(WRITERS))
@pytest.mark.parametrize("old", [b"old contents\n", None], ids=["over an old file", "new file"])
def test_a_full_disk_is_named_and_nothing_half_written_is_left(tmp_path, monkeypatch, name, old):
    p = tmp_path/"out"/"file"; p.parent.mkdir()
    if old is not None: p.write_bytes(old)
    monkeypatch.setattr(config, "_new_temp", _full_temp)
    with pytest.raises(OSError) as e: WRITERS[name](p)
    _check_no_space(p, e.value, old)

def test_torchs_own_error_text_on_a_full_disk_becomes_the_clear_one(tmp_path, monkeypatch):
    "torch's zip writer on a full disk: its real RuntimeError (from /dev/full) is turned into the no-space error."
    if not Path("/dev/full").exists(): pytest.skip("needs /dev/full")
    with pytest.raises(RuntimeError) as raw: torch.save({"w": torch.zeros(100_000)}, "/dev/full")
    assert "inline_container" in str(raw.value) or "iostream" in str(raw.value)   # what the user saw before
    p = tmp_path/"model.pth"; p.write_bytes(b"old")
    monkeypatch.setattr(config, "_new_temp", _full_temp)
    with pytest.raises(OSError) as e: atomic_save({"w": torch.zeros(100_000)}, p)
    _check_no_space(p, e.value, b"old")

def test_other_errors_are_not_called_a_full_disk(tmp_path, monkeypatch):
    "The same torch text, or any other error, on a disk with space stays what it was; the temporary file still goes."
    def torch_save(obj, f):
        Path(f).write_bytes(b"PK\x03\x04half")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")
    monkeypatch.setattr(torch, "save", torch_save)
    with pytest.raises(RuntimeError, match="unexpected pos"): atomic_save({"w": 1}, tmp_path/"model.pth")
    with pytest.raises(OSError) as e:
        with atomic_path(tmp_path/"a.txt") as tmp: raise OSError(errno.EIO, "Input/output error")
    assert e.value.errno == errno.EIO
    with pytest.raises(TypeError, match="not JSON serialisable"): atomic_write_json(tmp_path/"b.json", {"x": object()})
    assert list(tmp_path.iterdir()) == []

_TINY_DISK = r"""
import json, sys, torch
from pathlib import Path
from artstudy.config import atomic_save, atomic_write_json, atomic_write_text
d = Path(sys.argv[1]); res = {}
writers = {"checkpoint": lambda p: atomic_save({"w": torch.arange(200_000.)}, p),      # 800 kB on a 256 kB disk
           "text": lambda p: atomic_write_text(p, "x" * 400_000),
           "json": lambda p: atomic_write_json(p, {"x": list(range(100_000))})}
for name, write in writers.items():
    p = d/name; p.write_bytes(b"old")
    try: write(p); res[name] = "written"
    except Exception as e: res[name] = [type(e).__name__, getattr(e, "errno", None), str(e), p.read_bytes().decode()]
atomic_write_text(d/"small.txt", "fits")              # the disk still works once the failed write is cleaned up
res["left"] = sorted(q.name for q in d.iterdir())
print(json.dumps(res))
"""

def test_a_real_tiny_filesystem_fills_up(tmp_path):
    "A 256 kB tmpfs mounted in a private mount namespace (root, or a user namespace): real writes, a real full disk."
    mnt = tmp_path/"disk"; mnt.mkdir()
    if not shutil.which("unshare") or not shutil.which("mount"): pytest.skip("needs unshare and mount (util-linux)")
    ns = ["unshare", "-m", "--propagation", "private"] if os.geteuid() == 0 else ["unshare", "-rm"]
    mount = f'mount -t tmpfs -o size=256k tmpfs "{mnt}"'
    probe = subprocess.run([*ns, "sh", "-c", mount], capture_output=True, text=True, timeout=60)
    if probe.returncode: pytest.skip(f"cannot mount a tmpfs here: {probe.stderr.strip()[:200]}")
    r = subprocess.run([*ns, "sh", "-c", f'{mount} && exec "$0" -c "$1" "{mnt}"', sys.executable, _TINY_DISK],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout.strip().splitlines()[-1])
    for name in ("checkpoint", "text", "json"):
        typ, code, msg, content = res[name]
        assert (typ, code, content) == ("OSError", errno.ENOSPC, "old"), res[name]
        assert msg.startswith(f"no space left on {mnt} while writing {name} ") and msg.endswith("free space there and rerun")
    assert res["left"] == ["checkpoint", "json", "small.txt", "text"]    # no temporary file left behind
    assert not any(mnt.iterdir())                                          # the mount never leaked out of its namespace
