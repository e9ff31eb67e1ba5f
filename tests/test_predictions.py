"Per-image predictions and convergence flags of real tiny runs: saved with the metrics, equal to the reported scores."
import hashlib, json, shutil
import numpy as np, pandas as pd, pytest, torch
from artstudy.config import PREDICTIONS, RunFolder, atomic_write_json, finish_run, read_json, run_predictions
from artstudy.data import eval_loader, load_dataset, subset, synthetic_dataset
from artstudy.models import load_checkpoint
from artstudy.pipeline import convergence, evaluate, train_run
from artstudy.runs import collect

TINY = dict(dataset="wikiart7", n_per_class=4, n_valid_per_class=2, image_size=48, batch_size=8, epochs=1,
            num_workers=0, eval_splits=["valid"], seed=0, progress=False)
STATS = ((.5,)*3, (.5,)*3)

@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("ARTSTUDY_CACHE_DIR", str(tmp_path_factory.getbasetemp()/"cache"))

@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    "Two finished runs on the same 28 + 14 wikiart7 images (Mode A, and an off-the-shelf head on stored features)."
    root = tmp_path_factory.mktemp("pred")/"study"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ARTSTUDY_CACHE_DIR", str(tmp_path_factory.getbasetemp()/"cache"))
        out = {mode: train_run(TINY, run_dir=root/mode, mode=mode) for mode in ("mode_a", "off_the_shelf")}
    for mode in out: finish_run(root/mode, quiet=True)
    return root, out

def _valid_subset():
    "The run's validation images, drawn again from the labels table (4 train, 2 valid per style, seed 0)."
    return subset(load_dataset("wikiart7"), n_per_class={"train": 4, "valid": 2}, seed=0).split("valid")

def _by_hand(ckpt, ds):
    "Top-1 class of each image of `ds` by a plain loop over the saved model (no pipeline code)."
    model = load_checkpoint(ckpt).eval()
    dl = eval_loader(ds, split=None, size=48, bs=16, stats=STATS)
    with torch.no_grad(): return torch.cat([model(x).argmax(1) for x, _ in dl]).numpy()

@pytest.mark.parametrize("mode", ["mode_a", "off_the_shelf"])
def test_predictions_are_saved_in_order_and_give_the_reported_top1(runs, mode):
    root, out = runs
    saved = read_json(root/mode/"metrics.json")
    assert list(saved[PREDICTIONS]) == ["valid"] and saved[PREDICTIONS] == json.loads(json.dumps(out[mode][PREDICTIONS]))
    pr, ds = run_predictions(root/mode, "valid"), _valid_subset()
    assert pr["correct"].mean() == saved["top1"] == saved["valid_top1"]          # exactly, not approximately
    assert pr["n"] == len(pr["pred"]) == 14 and pr["index"].tolist() == list(range(14))
    np.testing.assert_array_equal(pr["target"], ds.targets())
    np.testing.assert_array_equal(pr["pred"], _by_hand(root/mode/"model.pth", ds))
    assert pr["files_digest"] == hashlib.sha256("\n".join(ds.df.path).encode()).hexdigest()

def test_two_runs_on_the_same_images_share_the_digest(runs):
    root, _ = runs
    a, b = run_predictions(root/"mode_a", "valid"), run_predictions(root/"off_the_shelf", "valid")
    assert a["files_digest"] == b["files_digest"] and (a["target"] == b["target"]).all()
    other = subset(load_dataset("wikiart7"), n_per_class={"train": 4, "valid": 2}, seed=1).split("valid")
    assert hashlib.sha256("\n".join(other.df.path).encode()).hexdigest() != a["files_digest"]

def test_results_table_leaves_predictions_out(runs):
    root, _ = runs
    df = collect(root, write=False, verbose=False)
    assert len(df) == 2 and "top1" in df and not [c for c in df if c.startswith(PREDICTIONS)]

def test_a_run_without_predictions_says_to_rerun_it(runs, tmp_path):
    root, _ = runs
    shutil.copytree(root/"mode_a", tmp_path/"old")
    old = read_json(tmp_path/"old"/"metrics.json"); del old[PREDICTIONS]
    atomic_write_json(tmp_path/"old"/"metrics.json", old)
    with pytest.raises(ValueError, match=r"old/metrics.json has no per-image predictions.*Rerun it"):
        run_predictions(tmp_path/"old")
    with pytest.raises(ValueError, match="rerun it with 'test' in eval_splits"): run_predictions(root/"mode_a", "test")
    with pytest.raises(FileNotFoundError, match="not finished"): run_predictions(tmp_path/"nothing")

def test_one_epoch_runs_stopped_at_their_cap(runs):
    "One epoch allowed and its loss the lowest so far: the run was still improving, so it is not converged."
    for m in runs[1].values():
        got = (m["best_epoch"], m["epochs_run"], m["at_epoch_cap"], m["converged"], m["early_stopped"])
        assert got == (0, 1, True, False, False)

def test_evaluate_saves_the_predictions_of_the_split_it_scores(tmp_path):
    "`evaluate` of a run's checkpoint on its own test split gives the run's own per-image predictions."
    root = synthetic_dataset(tmp_path/"colours", n_per_class=12, size=32)
    m = train_run(dict(TINY, dataset=str(root), n_per_class=None, n_valid_per_class=None, image_size=32, epochs=3,
                       eval_splits=["valid", "test"]), run_dir=tmp_path/"run", mode="off_the_shelf")
    ev = evaluate(tmp_path/"run", root, split="test", out=tmp_path/"ev", num_workers=0)
    mine, theirs = run_predictions(tmp_path/"ev", "test"), run_predictions(RunFolder(tmp_path/"run").staged, "test")
    assert mine["correct"].mean() == ev["top1"] and theirs["correct"].mean() == m["top1"]
    assert mine["files_digest"] == theirs["files_digest"] and mine["n"] == 6
    np.testing.assert_array_equal(mine["target"], theirs["target"]); np.testing.assert_array_equal(mine["pred"], theirs["pred"])
    everything = evaluate(tmp_path/"run", root, num_workers=0)[PREDICTIONS]
    assert list(everything) == ["all"] and everything["all"]["n"] == 36

def test_fastai_mode_counts_its_best_epoch_over_both_fits(tmp_path):
    "`fine_tune` fits twice (1 frozen epoch, then the rest): `best_epoch` is still the row of history.csv."
    m = train_run(TINY, run_dir=tmp_path, mode="fastai", epochs=3)
    h = pd.read_csv(tmp_path/"history.csv")
    assert h.phase.tolist() == [1, 2, 2] and m["epochs_run"] == 3
    assert m["best_epoch"] == int(h.valid_loss.idxmin()) and m["at_epoch_cap"] == (m["best_epoch"] == 2)

@pytest.mark.parametrize("best,run,allowed,cap,converged", [
    (4, 5, 5, True, False),      # best at the last allowed epoch: still improving
    (2, 5, 5, False, True),      # fixed budget, best before the last epoch
    (1, 4, 5, False, True),      # early stopping
    (0, 1, 1, True, False),      # one epoch allowed
    (1, 2, 1, True, False),      # fine_tune with epochs=1 runs two epochs: the cap is the last one run
    (None, 5, 5, False, False),  # no finite validation loss
])
def test_convergence_rule(best, run, allowed, cap, converged):
    got = convergence(best, run, allowed)
    assert (got["at_epoch_cap"], got["converged"], got["early_stopped"]) == (cap, converged, 0 < run < allowed)
