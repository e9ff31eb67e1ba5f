"artstudy.data: loading, validation (bad inputs), layouts, splits, subsets, the resized cache and the loaders."
import sys
from pathlib import Path
import numpy as np, pandas as pd, pytest, torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from fixtures.data_images import COLOURS, csv_dataset, mode_images, text_as_jpg, truncated_jpeg, write_jpeg, zero_byte

import artstudy.data as D
from artstudy.data import (DatasetError, eval_loader, image_cache, cache_file, load_dataset, load_image,
                           make_dls, subset, verify_checksums)
from artstudy.config import dataset_path, sha256_file

WIKIART_STYLES = ["Art_Nouveau_Modern", "Baroque", "Expressionism", "Impressionism", "Post_Impressionism",
                  "Romanticism", "Symbolism"]

@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    "Every test gets its own cache folder (validation records and resized arrays)."
    monkeypatch.setenv("ARTSTUDY_CACHE_DIR", str(tmp_path/"cache"))

def _has(name):
    try: dataset_path(name); return True
    except FileNotFoundError: return False

needs_data = pytest.mark.skipif(not _has("wikiart7"), reason="shared data not available")

@pytest.fixture
def wk_small():
    "wikiart7, 2 images per class and split (42 images); the shared data is known good, so its files are not decoded here."
    return subset(load_dataset("wikiart7", validate=False), n_per_class=2, seed=0)

# ---------------------------------------------------------------- bad inputs
def _broken(tmp_path):
    root = csv_dataset(tmp_path/"bad", n_per_class=4)
    zero_byte(root/"images/red/red_00.jpg")
    truncated_jpeg(root/"images/red/red_01.jpg")
    text_as_jpg(root/"images/green/green_00.jpg")
    (root/"images/green/green_01.jpg").unlink()
    df = pd.read_csv(root/"labels.csv", dtype=str, keep_default_na=False)
    df.loc[df.path == "images/blue/blue_00.jpg", "style"] = ""                   # empty label
    df = pd.concat([df, df[df.path == "images/blue/blue_01.jpg"]])               # duplicate row
    df.to_csv(root/"labels.csv", index=False)
    return root

BAD = ["images/red/red_00.jpg", "images/red/red_01.jpg", "images/green/green_00.jpg", "images/green/green_01.jpg",
       "images/blue/blue_00.jpg", "images/blue/blue_01.jpg"]

def test_bad_inputs_one_error_names_everything(tmp_path):
    root = _broken(tmp_path)
    with pytest.raises(DatasetError) as e: load_dataset(root)
    msg = str(e.value)
    assert isinstance(e.value, ValueError)
    for p in BAD: assert p in msg, p
    assert "zero-byte" in msg and "truncated" in msg and "not an image" in msg and "file missing" in msg
    assert "empty label" in msg and "duplicate" in msg
    assert "on_error='skip'" in msg                               # says what to do
    assert len(e.value.problems) == 6

def test_bad_inputs_skip_warns_and_drops(tmp_path):
    root = _broken(tmp_path)
    with pytest.warns(UserWarning) as rec: ds = load_dataset(root, on_error="skip")
    text = "\n".join(str(w.message) for w in rec)
    for p in BAD: assert p in text
    # 13 rows: 4 bad files, 1 empty label, 1 duplicate (its first row blue_01 is fine and kept)
    assert len(ds) == 13 - 6
    assert set(ds.df.path) == {f"images/{c}/{c}_{i:02d}.jpg" for c in ("red", "green", "blue") for i in (2, 3)} | \
        {"images/blue/blue_01.jpg"}
    assert ds.df.path.is_unique

def test_validation_is_cached_by_stat(tmp_path, monkeypatch):
    root = csv_dataset(tmp_path/"ok", n_per_class=2)
    load_dataset(root)
    monkeypatch.setattr(D, "_check_bytes", lambda data: pytest.fail("decoded again"))
    load_dataset(root)                                            # second load only stats the files
    monkeypatch.undo(); monkeypatch.setenv("ARTSTUDY_CACHE_DIR", str(tmp_path/"cache"))
    truncated_jpeg(root/"images/red/red_00.jpg")                  # size changes -> checked again
    with pytest.raises(DatasetError, match="red_00.jpg"): load_dataset(root)

def test_missing_label_column_lists_columns_and_file(tmp_path):
    root = csv_dataset(tmp_path/"d", n_per_class=2)
    with pytest.raises(DatasetError) as e: load_dataset(root, label="genre")
    assert "'genre'" in str(e.value) and "style" in str(e.value) and str(root/"labels.csv") in str(e.value)
    pd.DataFrame({"path": ["images/red/red_00.jpg"], "split": ["train"]}).to_csv(root/"labels.csv", index=False)
    with pytest.raises(DatasetError, match="available label columns: \\[\\]"): load_dataset(root)

def test_on_error_must_be_known(tmp_path):
    with pytest.raises(ValueError, match="on_error"): load_dataset(csv_dataset(tmp_path/"d", n_per_class=2), on_error="ignore")

def test_multitask_empty_other_labels_allowed_main_not(tmp_path):
    root = csv_dataset(tmp_path/"mt", n_per_class=4, extra={"genre": ["portrait", ""] * 6})
    ds = load_dataset(root, labels=["style", "genre"])
    assert ds.label == "style" and ds.labels == ["style", "genre"]
    assert ds.task_classes("genre") == ["portrait"] and ds.targets(col="genre").tolist() == [0, -1] * 6
    with pytest.raises(DatasetError, match="empty label in column 'genre'"): load_dataset(root, label="genre")
    with pytest.warns(UserWarning): ds2 = load_dataset(root, label="genre", on_error="skip")
    assert len(ds2) == 6

def test_verify_checksums(tmp_path):
    root = csv_dataset(tmp_path/"d", n_per_class=4)
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.jpg"))
    (root/"SHA256SUMS").write_text("".join(f"{sha256_file(root/f)}  {f}\n" for f in files))
    assert len(load_dataset(root, verify=True)) == 12
    write_jpeg(root/"images/red/red_02.jpg", (1, 2, 3))
    write_jpeg(root/"images/blue/blue_03.jpg", (1, 2, 3))
    with pytest.raises(DatasetError) as e: load_dataset(root, verify=True)
    assert "red_02.jpg: checksum mismatch" in str(e.value) and "blue_03.jpg: checksum mismatch" in str(e.value)
    with pytest.warns(UserWarning, match="checksum mismatch"): ds = load_dataset(root, verify=True, on_error="skip")
    assert len(ds) == 10

@needs_data
def test_verify_checksums_real_subset(wk_small):
    assert len(verify_checksums(wk_small)) == len(wk_small)

# ---------------------------------------------------------------- image modes
@pytest.mark.parametrize("name", ["grey", "cmyk", "rgba_clear", "rgba_opaque", "la", "palette", "grey16_max", "grey16"])
def test_modes_load_as_rgb_uint8(tmp_path, name):
    path, rgb = mode_images(tmp_path/"modes")[name]
    a = load_image(path)
    assert a.dtype == np.uint8 and a.shape == (16, 20, 3)
    assert tuple(int(v) for v in a[5, 5]) == rgb
    r = load_image(path, size=8)
    assert r.shape == (8, 8, 3) and tuple(int(v) for v in r[4, 4]) == rgb   # constant image: resize keeps the value

def test_modes_through_dataset_and_cache(tmp_path):
    mode_images(tmp_path/"ds"/"odd")
    ds = load_dataset(tmp_path/"ds")                              # class-folder layout, one class
    arr = image_cache(ds, size=8)
    assert arr.shape == (8, 8, 8, 3) and arr.dtype == np.uint8

# ---------------------------------------------------------------- layouts and splits
def test_class_folder_layout_resplit_stratified_seeded(tmp_path):
    for c in ("red", "green", "blue"):
        for i in range(20): write_jpeg(tmp_path/"f"/c/f"{i:02d}.jpg", COLOURS[c], seed=i)
    (tmp_path/"f"/"red"/"notes.txt").write_text("ignored")
    with pytest.warns(UserWarning, match="ignored 1 files"): ds = load_dataset(tmp_path/"f")
    assert ds.label == "label" and ds.classes == ["blue", "green", "red"]
    assert ds.counts().to_numpy().tolist() == [[14, 3, 3]] * 3   # 70/15/15 in every class
    with pytest.warns(UserWarning): again = load_dataset(tmp_path/"f")
    assert again.df.equals(ds.df)                                 # deterministic
    with pytest.warns(UserWarning): other = load_dataset(tmp_path/"f", split_seed=1)
    assert not other.df.split.equals(ds.df.split)

def test_split_folder_layout(tmp_path):
    for split, n in (("train", 3), ("val", 2), ("test", 1)):
        for c in ("cat", "dog"):
            for i in range(n): write_jpeg(tmp_path/"s"/split/c/f"{i}.jpg", seed=i)
    ds = load_dataset(tmp_path/"s")
    assert ds.classes == ["cat", "dog"]
    assert ds.counts().to_numpy().tolist() == [[3, 2, 1], [3, 2, 1]]   # "val" read as valid
    assert ds.files("test")[0] == tmp_path/"s"/"test"/"cat"/"0.jpg"

def test_labels_csv_without_split_is_resplit(tmp_path):
    root = csv_dataset(tmp_path/"d", classes=("red", "green"), n_per_class=20, split=False)
    ds = load_dataset(root)
    assert ds.counts().to_numpy().tolist() == [[14, 3, 3]] * 2

def test_absent_class_in_split_warns(tmp_path):
    root = csv_dataset(tmp_path/"d", n_per_class=4)
    df = pd.read_csv(root/"labels.csv"); df.loc[df.path.str.contains("blue") & (df.split == "test"), "split"] = "train"
    df.to_csv(root/"labels.csv", index=False)
    with pytest.warns(UserWarning, match="absent from a split.*'test': \\['blue'\\]"): load_dataset(root)

@needs_data
def test_real_default_labels():
    assert load_dataset("wikiart7", validate=False).label == "style"
    assert load_dataset("pacs_art", validate=False).label == "label"
    mt = load_dataset("wikiart_mt", labels=["style", "genre", "artist"], validate=False)
    assert mt.label == "style" and len(mt.classes) == 10
    assert len(mt.task_classes("genre")) == 10 and len(mt.task_classes("artist")) == 52
    art = mt.targets(col="artist")
    assert (art == -1).sum() == 5396 - 2983 and art.max() == 51

# ---------------------------------------------------------------- subsets
def test_subset(tmp_path):
    root = csv_dataset(tmp_path/"d", classes=("red", "green", "blue", "yellow"), n_per_class=12)   # 6/3/3 per class
    ds = load_dataset(root)
    s2 = subset(ds, n_per_class=2, seed=3)
    assert s2.counts().to_numpy().tolist() == [[2, 2, 2]] * 4
    assert subset(ds, n_per_class=2, seed=3).df.equals(s2.df)
    assert set(s2.df.path) <= set(subset(ds, n_per_class=4, seed=3).df.path)       # nested
    assert not subset(ds, n_per_class=2, seed=4).df.equals(s2.df)
    assert subset(ds, n_per_class={"train": 1}).counts().to_numpy().tolist() == [[1, 3, 3]] * 4
    assert subset(ds, n_per_class=2, splits=["train"]).counts().to_numpy().tolist() == [[2, 3, 3]] * 4
    two = subset(ds, classes=["yellow", "blue"])
    assert two.classes == ["blue", "yellow"] and sorted(set(two.targets().tolist())) == [0, 1]
    assert (two.df["style"][two.targets() == 1] == "yellow").all()
    half = subset(ds, frac=0.5)
    assert half.counts().to_numpy().tolist() == [[3, 2, 2]] * 4      # round(3)=3, round(1.5)=2
    with pytest.raises(DatasetError, match="unknown classes"): subset(ds, classes=["purple"])

# ---------------------------------------------------------------- multi-label
def test_multilabel_multihot(tmp_path):
    root = tmp_path/"ml"
    rows = [("a.jpg", "red;green", "train"), ("b.jpg", "blue", "train"), ("c.jpg", "green ; blue", "valid"),
            ("d.jpg", "red", "valid"), ("e.jpg", "blue;red;green", "test")]
    for i, (f, _, _) in enumerate(rows): write_jpeg(root/f, seed=i)
    pd.DataFrame(rows, columns=["path", "tags", "split"]).to_csv(root/"labels.csv", index=False)
    ds = load_dataset(root)
    assert ds.multi_label and ds.classes == ["blue", "green", "red"]
    assert ds.targets().tolist() == [[0, 1, 1], [1, 0, 0], [1, 1, 0], [0, 0, 1], [1, 1, 1]]
    assert ds.targets("valid").dtype == np.float32
    dls = make_dls(ds, size=16, bs=2, num_workers=0, device="cpu", seed=0)
    x, y = dls.valid.one_batch()
    assert y.dtype == torch.float32 and y.tolist() == [[1, 1, 0], [0, 0, 1]] and dls.multi_label and dls.c == 3
    assert subset(ds, classes=["blue"]).targets().tolist() == [[1], [1], [1]]

# ---------------------------------------------------------------- cache
@needs_data
def test_cache_pixels_equal_direct_decode(wk_small):
    arr = image_cache(wk_small, size=48)
    for i in (0, 17, 41):
        with Image.open(wk_small.files()[i]) as im:           # the images are square: resize is the whole transform
            ref = np.asarray(im.convert("RGB").resize((48, 48), Image.Resampling.BILINEAR))
        assert np.array_equal(arr[i], ref)

def test_cache_hit_and_content_key(tmp_path, monkeypatch):
    ds = load_dataset(csv_dataset(tmp_path/"d", n_per_class=4))
    arr = image_cache(ds, size=16)
    path = Path(arr.filename)
    assert path.parent.name == "resized" and path.suffix == ".npy"
    monkeypatch.setattr(D, "load_image", lambda *a, **k: pytest.fail("decoded on a cache hit"))
    again = image_cache(ds, size=16)
    assert Path(again.filename) == path and np.array_equal(again, arr)
    monkeypatch.undo(); monkeypatch.setenv("ARTSTUDY_CACHE_DIR", str(tmp_path/"cache"))
    assert cache_file(ds, 24) != path                             # another size, another key
    write_jpeg(ds.files()[3], (0, 0, 0), seed=99)                 # content change -> new key and new pixels
    new = image_cache(ds, size=16)
    assert Path(new.filename) != path
    assert not np.array_equal(new[3], arr[3]) and np.array_equal(new[4], arr[4])

def test_cache_refuses_bad_files(tmp_path):
    ds = load_dataset(csv_dataset(tmp_path/"d", n_per_class=2))
    text_as_jpg(ds.files()[1])
    with pytest.raises(DatasetError, match="red_01.jpg"): image_cache(ds, size=16)

# ---------------------------------------------------------------- loaders
@needs_data
def test_make_dls_real_wikiart7(wk_small):
    stats = ((0.5,) * 3, (0.5,) * 3)
    dls = make_dls(wk_small, size=32, bs=8, stats=stats, num_workers=0, seed=7, device="cpu")
    assert dls.vocab == WIKIART_STYLES and dls.c == 7
    x, y = dls.train.one_batch()
    assert x.shape == (8, 3, 32, 32) and x.dtype == torch.float32 and type(x).__name__ == "TensorImage"
    assert y.shape == (8,) and y.dtype == torch.int64 and type(y).__name__ == "TensorCategory"
    assert -1 <= x.min() and x.max() <= 1
    xv, yv = dls.valid.one_batch()                                # valid: file order, centre crop, no augmentation
    first = wk_small.files("valid")[0]
    ref = torch.from_numpy(load_image(first, 32)).permute(2, 0, 1).float() / 255
    assert torch.allclose(xv[0] * 0.5 + 0.5, ref, atol=1e-5)
    assert yv.tolist() == wk_small.targets("valid")[:8].tolist()
    x2, y2 = make_dls(wk_small, size=32, bs=8, stats=stats, num_workers=0, seed=7, device="cpu").train.one_batch()
    assert torch.equal(x, x2) and torch.equal(y, y2)               # same seed, same batch
    x3, _ = make_dls(wk_small, size=32, bs=8, stats=stats, num_workers=0, seed=8, device="cpu").train.one_batch()
    assert not torch.equal(x, x3)

@needs_data
def test_make_dls_raw_files_equal_cache(wk_small):
    a = make_dls(wk_small, size=32, bs=7, num_workers=0, device="cpu", cache=True).valid.one_batch()[0]
    b = make_dls(wk_small, size=32, bs=7, num_workers=0, device="cpu", cache=False).valid.one_batch()[0]
    assert torch.equal(a, b)

def test_make_dls_with_workers(tmp_path):
    ds = load_dataset(csv_dataset(tmp_path/"d", n_per_class=8))
    dls = make_dls(ds, size=16, bs=4, num_workers=2, device="cpu", seed=0)
    n = sum(len(yb) for _, yb in dls.train)
    assert n == 12                                                 # 12 train images, bs 4, drop_last keeps all
    assert sum(len(yb) for _, yb in dls.valid) == 6

def test_augmentation_flips_and_shifts_only(tmp_path):
    ramp = torch.arange(32, dtype=torch.uint8).repeat(16, 32, 1).unsqueeze(-1).repeat(1, 1, 1, 3)  # pixel = column
    out = D.BatchTfm(augment=True, seed=0).flip_shift(ramp)[:, 0, :, 0].long()
    for row in out:                                                # each row: a mirrored/shifted ramp, shift <= 2
        fwd = row if row[-1] > row[0] else row.flip(0)
        assert (fwd.diff().abs() <= 1).all() and abs(int(fwd[5]) - 5) <= 2
    assert len({tuple(r.tolist()) for r in out}) > 1
    still = D.BatchTfm(augment=True, shift=0, seed=0).flip_shift(ramp)[:, 0, :, 0]    # no shift: identity or mirror
    assert all(torch.equal(r, ramp[0, 0, :, 0]) or torch.equal(r, ramp[0, 0, :, 0].flip(0)) for r in still)

def test_eval_loader_file_order(tmp_path):
    ds = load_dataset(csv_dataset(tmp_path/"d", n_per_class=8))
    dl = eval_loader(ds, split="valid", size=16, bs=4)
    xs, ys = zip(*dl)
    assert torch.cat(ys).tolist() == ds.targets("valid").tolist()
    x = torch.cat(xs)
    assert x.shape == (6, 3, 16, 16) and x.is_contiguous()
    assert len(eval_loader(ds, split=None, size=16, bs=4, cache=False).dataset) == 24
    mean, std = torch.tensor(D.LITE_STATS[0]).view(3, 1, 1), torch.tensor(D.LITE_STATS[1]).view(3, 1, 1)
    ref = torch.from_numpy(load_image(ds.files("valid")[2], 16)).permute(2, 0, 1) / 255
    assert torch.allclose(x[2] * std + mean, ref, atol=1e-5)

def test_settings_reach_loaders_through_the_run_config_only(tmp_path, monkeypatch):
    "settings (here ARTSTUDY_*) fill a run's config once, at the entry; the loaders use only the arguments they get."
    from artstudy.pipeline import run_config
    monkeypatch.setenv("ARTSTUDY_IMAGE_SIZE", "24"); monkeypatch.setenv("ARTSTUDY_BATCH_SIZE", "5")
    c = run_config()
    assert (c.image_size, c.batch_size) == (24, 5)
    ds = load_dataset(csv_dataset(tmp_path/"d", n_per_class=8))
    x, _ = make_dls(ds, size=c.image_size, bs=c.batch_size, num_workers=0, device="cpu").train.one_batch()
    assert x.shape == (5, 3, 24, 24)
    x, _ = make_dls(ds, num_workers=0, device="cpu").train.one_batch()    # below the entry: the signature's defaults
    assert x.shape[2:] == (224, 224)

# ---------------------------------------------------------------- layouts misread, silent drops
def _split_tree(root, splits=("train", "valid", "test")):
    for split in splits:
        for c in ("cat", "dog"):
            for i in range(2): write_jpeg(root/split/c/f"{i}.jpg", seed=i)
    return root

def test_unknown_split_folder_beside_splits_is_an_error(tmp_path):
    root = _split_tree(tmp_path/"s", ("train", "valid", "holdout"))
    with pytest.raises(DatasetError, match=r"mixes split folders \['train', 'valid'\] with other folders \['holdout'\]"):
        load_dataset(root)

def test_stray_images_empty_classes_and_broken_links_are_reported(tmp_path):
    root = tmp_path/"f"
    for c in ("cat", "dog"):
        for i in range(6): write_jpeg(root/c/f"{i}.jpg", seed=i)
    (root/"empty_class").mkdir()
    write_jpeg(root/"stray.jpg", seed=9)
    (root/"cat"/"gone.jpg").symlink_to(tmp_path/"nowhere.jpg")
    with pytest.warns(UserWarning) as rec: ds = load_dataset(root)
    text = "\n".join(str(w.message) for w in rec)
    assert "1 images at the top level" in text and "stray.jpg" in text
    assert "1 broken links" in text and "cat/gone.jpg" in text
    assert "1 class folders without an image" in text and "empty_class" in text
    assert ds.classes == ["cat", "dog"] and len(ds) == 12

def _first_row_set(root, col, value):
    "A synthetic labels.csv dataset under `root` whose first row has `col` = `value`."
    root = csv_dataset(root, n_per_class=4)
    df = pd.read_csv(root/"labels.csv", dtype=str, keep_default_na=False)
    df.loc[0, col] = value
    df.to_csv(root/"labels.csv", index=False)
    return root

@pytest.mark.parametrize("bad", ["../outside.jpg", "/etc/passwd", "images/../../x.jpg"])
def test_csv_paths_leaving_the_dataset_are_refused(tmp_path, bad):
    root = _first_row_set(tmp_path/"d", "path", bad)
    with pytest.raises(DatasetError, match="path leaves the dataset folder"): load_dataset(root)

@pytest.mark.parametrize("missing", ["nan", "NULL", "None", "N/A"])
def test_missing_value_spellings_are_empty_labels_not_classes(tmp_path, missing):
    root = _first_row_set(tmp_path/"d", "style", missing)
    with pytest.raises(DatasetError, match="empty label"): load_dataset(root)
    with pytest.warns(UserWarning): ds = load_dataset(root, on_error="skip")
    assert missing not in ds.classes and len(ds) == 11

def test_long_error_lists_are_truncated(tmp_path):
    root = csv_dataset(tmp_path/"d", n_per_class=8)
    df = pd.read_csv(root/"labels.csv", dtype=str, keep_default_na=False)
    df["style"] = ""                                              # 24 empty labels
    df.to_csv(root/"labels.csv", index=False)
    with pytest.raises(DatasetError) as e: load_dataset(root)
    msg = str(e.value)
    assert msg.startswith("24 problem(s)") and "… and 15 more" in msg and len(msg.splitlines()) == 12
    assert len(e.value.problems) == 24                           # the full list stays on the exception
