"""Errors a person can act on, and no silent misbehaviour, at run time: a cell timeout, a damaged checkpoint's
metadata, a split that the data does not have, and the transfer-mode notebook on a multi-label dataset."""
import contextlib, io, json, shutil
from pathlib import Path
import pytest, torch, yaml
from artstudy.data import synthetic_dataset
from artstudy.pipeline import evaluate, train_run

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(n_per_class=None, n_valid_per_class=None, image_size=32, batch_size=8, epochs=2, num_workers=0,
            seed=0, progress=False)

@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("ARTSTUDY_CACHE_DIR", str(tmp_path_factory.getbasetemp()/"cache"))

def _main(*args):
    from artstudy.__main__ import main
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf): rc = main([str(a) for a in args])
    return rc, buf.getvalue()

@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    "An off-the-shelf model fitted on synthetic colours (labels.csv with splits)."
    d = tmp_path_factory.mktemp("ckpt")
    train_run(dict(TINY, dataset=str(synthetic_dataset(d/"colours", n_per_class=8, size=32))), run_dir=d/"run",
              mode="off_the_shelf")
    return d/"run"/"model.pth"

def test_a_split_the_data_does_not_have_is_refused_not_drawn_at_random(checkpoint, tmp_path):
    folder = synthetic_dataset(tmp_path/"folder", n_per_class=9, size=32, layout="folder")   # no split of its own
    with pytest.raises(ValueError, match="has no splits of its own.*leave the split out to score every image"):
        evaluate(checkpoint, folder, split="test", out=tmp_path/"ev")
    assert not (tmp_path/"ev"/"metrics.json").exists()
    assert evaluate(checkpoint, folder, out=tmp_path/"ev")["n_images"] == 27                # all of them, without a split
    rc, out = _main("evaluate", "--checkpoint", checkpoint, "--data", folder, "--out", tmp_path/"cli", "--split", "test")
    assert rc == 2 and "has no splits of its own" in out and "Traceback" not in out, out

def test_a_checkpoint_with_an_absurd_image_size_is_named(checkpoint, tmp_path):
    ck = torch.load(checkpoint, weights_only=True); ck["image_size"] = 10**6
    bad = tmp_path/"bad.pth"; torch.save(ck, bad)
    data = checkpoint.parents[1]/"colours"
    with pytest.raises(ValueError, match=r"bad.pth records an unusable image_size: 1000000.*damaged"):
        evaluate(bad, data, out=tmp_path/"ev")

def test_a_cell_timeout_names_the_cell_and_the_option(tmp_path):
    nb = ROOT/"tests"/"fixtures"/"tiny_sleep.ipynb"
    hold = tmp_path/"hold"; hold.write_text("")
    cfg = {"study": "t", "notebook": str(nb), "runs": [{"id": "slow", "params": {"hold": str(hold), "max_wait": 30.0}}]}
    (tmp_path/"t.yaml").write_text(yaml.safe_dump(cfg))
    rc, out = _main("run", tmp_path/"t.yaml", "--runs-dir", tmp_path/"runs", "--no-progress", "--timeout", "1")
    err = (tmp_path/"runs"/"t"/"slow"/"error.txt").read_text()
    assert rc == 1 and "ran longer than the --timeout of 1 s and was stopped" in err, err
    assert "KeyboardInterrupt:" not in err.splitlines()[0]
    assert not (tmp_path/"runs"/"t"/"slow"/"metrics.json").exists()

@pytest.mark.parametrize("mode", ["off_the_shelf"])
def test_transfer_modes_notebook_on_a_multi_label_dataset(tmp_path, mode):
    "The notebook finishes (it used to fail after training on a missing confusion matrix) and reports mAP per class."
    data = synthetic_dataset(tmp_path/"multi", n_per_class=8, size=32, multi_label=True)
    cfg = {"study": "ml", "notebook": "experiments/transfer_modes.ipynb",
           "base": {"dataset": str(data), "mode": mode, "image_size": 32, "batch_size": 8, "epochs": 1,
                    "n_per_class": None, "n_valid_per_class": None, "num_workers": 0},
           "seeds": [0]}
    (tmp_path/"ml.yaml").write_text(yaml.safe_dump(cfg))
    rc, out = _main("run", tmp_path/"ml.yaml", "--runs-dir", tmp_path/"runs", "--no-progress")
    run = next((tmp_path/"runs"/"ml").glob("transfer_modes-*"))
    assert rc == 0, out + ((run/"error.txt").read_text() if (run/"error.txt").exists() else "")
    m = json.loads((run/"metrics.json").read_text())
    report = m["reports"][m["eval_split"]]
    assert 0 <= m["mAP"] <= 1 and set(report["per_class_ap"]) == {"red", "green", "blue"} and "confusion" not in report
