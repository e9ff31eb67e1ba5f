"""The one parameter schema (artstudy.params): a generated table of bad values for every parameter, each refused by
the schema, by `RunConfig` and by the batch runner before any kernel starts; strict YAML; the command line's types;
and the copies that derive from the schema (notebook parameter cells, settings) cannot drift."""
import contextlib, io, json, os, typing
from pathlib import Path
import nbformat, pytest, yaml
from artstudy.params import (FIELDS, RUN_FIELDS, SETTING_FIELDS, ParamsError, check_value, experiment_notebooks,
                             load_yaml, read_parameter_cell, run_params, sync_parameter_cells)
from artstudy.pipeline import RunConfig, run_config
from artstudy.runs import RunSpec, check_specs, load_study

ROOT = Path(__file__).resolve().parents[1]

def _base(ann):
    "The non-None types an annotation admits (Optional/Union/Annotated unwrapped)."
    o, a = typing.get_origin(ann), typing.get_args(ann)
    if o is typing.Annotated: return _base(a[0])
    if o is typing.Union: return [t for x in a if x is not type(None) for t in _base(x)]
    return [ann]

def bad_values(name:str) -> list:
    "Values that the field `name` must refuse: wrong types, and values beyond its hard and sane limits."
    f, types = FIELDS[name], _base(FIELDS[name].annotation)
    origins = {typing.get_origin(t) or t for t in types}
    out = []
    if not origins & {str, typing.Literal, list}: out.append("abc")           # text where a number or a flag is due
    if not origins & {int, float, bool}: out.append(3)                        # a number where text or a list is due
    if int in origins and bool not in origins: out += [1.5, True]             # not whole; a flag is not a count
    if float in origins: out.append(True)
    if bool in origins and len(origins) == 1: out += ["yes", 1]               # YAML `yes` quoted, or a count
    if list in origins: out += [[3], {"a": 1}]                                # items of the wrong type, a mapping
    if dict in origins: out.append([1, 2])
    if typing.Literal in origins or name in ("mode", "then", "backbone", "device"): out.append("no_such_choice")
    for m in f.metadata:
        if getattr(m, "ge", None) is not None: out.append(m.ge - 1)
        if getattr(m, "gt", None) is not None: out.append(m.gt)
        if getattr(m, "le", None) is not None: out.append(m.le + 1)
        if getattr(m, "min_length", None): out.append([])
        if getattr(m, "pattern", None): out.append("../escape")
    if (sane := (f.json_schema_extra or {}).get("sane")) is not None: out.append(int(sane) * 10 + 1)
    if f.default is None and not out: pass
    return out

TABLE = [(n, v) for n in FIELDS for v in bad_values(n)]

def test_the_table_covers_every_parameter():
    "Every field gets at least one bad value (a field that accepts anything would need a reason)."
    covered = {n for n, _ in TABLE}
    free_text = {n for n in FIELDS if set(_base(FIELDS[n].annotation)) == {str} and not FIELDS[n].metadata}
    assert set(FIELDS) - covered <= free_text, sorted(set(FIELDS) - covered - free_text)
    assert len(covered) >= len(FIELDS) - len(free_text)

@pytest.mark.parametrize("name,value", TABLE, ids=[f"{n}={v!r}"[:40] for n, v in TABLE])
def test_every_bad_value_is_refused_by_name(name, value):
    why = check_value(name, value)
    assert why and why.startswith(name), (name, value, why)
    if name in RUN_FIELDS and check_value(name, value, override_bounds=[name]):
        # RunConfig (the Python API, where a caller is explicit) holds the hard limits: one ParamsError naming the field
        with pytest.raises(ParamsError, match=rf"(?s)nothing was run.*{name}"): RunConfig(**{name: value})

def test_good_values_pass_and_sane_bounds_lift_only_by_name():
    for name, f in FIELDS.items():
        assert check_value(name, f.default) is None, (name, f.default)
    assert check_value("epochs", 5000) and check_value("epochs", 5000, override_bounds=["epochs"]) is None
    assert check_value("epochs", 0, override_bounds=["epochs"])              # a hard limit never lifts

# ------------------------------------------------------------------ the batch runner: checked before any kernel

def _notebook(path, names:dict) -> str:
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    nb.cells = [nbformat.v4.new_code_cell("\n".join(f"{k} = {v!r}" for k, v in names.items()), metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell("raise SystemExit('a kernel must never start for a bad grid')")]
    nbformat.write(nb, path); return str(path)

def _spec(nb, **params):
    return RunSpec("t", "r", nb, {**{k.upper(): v for k, v in params.items()}, "RUN_DIR": "."})

@pytest.fixture(scope="module")
def schema_nb(tmp_path_factory):
    "A notebook taking every schema parameter, with the schema's defaults."
    p = tmp_path_factory.mktemp("nb")/"all.ipynb"
    return _notebook(p, {n.upper(): f.default for n, f in FIELDS.items() if n not in ("dataset",)} | {"DATASET": None})

GRID_TABLE = [(n, v) for n, v in TABLE if n not in ("study", "run_id", "run_dir")][::3]   # those three the runner sets

@pytest.mark.parametrize("name,value", GRID_TABLE, ids=[f"{n}={v!r}"[:40] for n, v in GRID_TABLE])
def test_the_runner_refuses_bad_values_before_any_kernel(schema_nb, name, value):
    with pytest.raises(ValueError, match=rf"(?s)nothing was run.*{name}"): check_specs([_spec(schema_nb, **{name: value})])

@pytest.fixture(scope="module")
def art(tmp_path_factory):
    from artstudy.data import synthetic_dataset
    return str(synthetic_dataset(tmp_path_factory.mktemp("art")/"colours", n_per_class=3, size=16, layout="csv"))

@pytest.mark.parametrize("params,expected", [
    (dict(label="stlye"), "'stlye' is not a label column"),
    (dict(classes=["red", "purple"]), "['purple'] are not classes of 'label'"),
    (dict(tasks=["label", "genre"]), "'genre' is not a label column"),
    (dict(tasks=["label"], task_weights={"artist": 0.5}), "task_weights: ['artist'] are not among tasks"),
    (dict(subset_by="colour"), "'colour' is not a label column"),
])
def test_labels_and_classes_are_checked_against_the_dataset(schema_nb, art, params, expected):
    with pytest.raises(ValueError, match="nothing was run") as e: check_specs([_spec(schema_nb, dataset=art, **params)])
    assert expected in str(e.value), str(e.value)
    check_specs([_spec(schema_nb, dataset=art, label="label", classes=["red", "green"])])   # the good ones pass

def test_a_missing_dataset_is_named(schema_nb, tmp_path):
    with pytest.raises(ValueError, match="dataset: .*no_such_set"): check_specs([_spec(schema_nb, dataset=str(tmp_path/"no_such_set"))])

# ------------------------------------------------------------------ the study YAML, loaded strictly

@pytest.mark.parametrize("text,expected", [
    ("study: a\nstudy: b\nnotebook: x\n", "key 'study' is given twice (lines 1 and 2)"),
    ("study: a\ngrids:\n  - name: g\n    base: {epochs: 1, epochs: 2}\n", "key 'epochs' is given twice"),
    ("study: a\nbase: [1, 2]\n", "base: Input should be a valid dictionary"),
    ("study: a\ngrids: []\n", "grids is empty"),
    ("study: a\nseeds: []\n", "seeds is empty"),
    ("study: a\naxes: {mode: []}\n", "axes.mode is empty"),
    ("study: a\nruns: []\n", "runs is empty"),
    ("study: a\nseeds: [1, two]\n", "seeds[1]: Input should be a valid integer"),
    ("study: ../up\n", "study: String should match pattern"),
    ("study: a\ngrids: [{notebok: x}]\n", "unknown key 'grids[0].notebok' (did you mean 'notebook'?)"),
    ("study: a\nruns: [{id: r, parmas: {}}]\n", "did you mean 'params'"),
    ("study: a\noverride_bounds: [mode]\n", "no sane bound to lift"),
    ("notebook: x\n", "study is missing"),
])
def test_bad_study_configs_are_named(tmp_path, text, expected):
    (tmp_path/"s.yaml").write_text(text)
    with pytest.raises(ValueError) as e: load_study(tmp_path/"s.yaml")
    assert expected in str(e.value), str(e.value)

@pytest.mark.parametrize("content,expected", [(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "is not a text file"),
                                              (b"study: caf\xe9\n", "is not UTF-8 text")])
def test_binary_and_non_utf8_files_are_named(tmp_path, content, expected):
    (tmp_path/"s.yaml").write_bytes(content)
    with pytest.raises(ValueError, match=expected) as e: load_study(tmp_path/"s.yaml")
    assert str(tmp_path/"s.yaml") in str(e.value)

def _main(*args):
    from artstudy.__main__ import main
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
        try: rc = main([str(a) for a in args])
        except SystemExit as e: rc = e.code
    return rc, buf.getvalue()

def test_run_on_a_folder_or_a_word_says_what_to_give(tmp_path):
    rc, out = _main("run", tmp_path, "--dry-run")
    assert rc == 2 and "is a folder: give a study YAML file" in out and "Traceback" not in out, out
    rc, out = _main("run", "quick", "--dry-run")
    assert rc == 2 and "neither a study YAML file nor a YAML mapping" in out, out

@pytest.mark.parametrize("args,expected", [(["--workers", "0"], "greater than or equal to 1"),
                                           (["--workers", "-5"], "greater than or equal to 1"),
                                           (["--timeout", "-5"], "greater than or equal to 1"),
                                           (["--workers", "2.5"], "is not a whole number")])
def test_command_line_values_follow_the_schema(tmp_path, args, expected):
    rc, out = _main("run", tmp_path/"x.yaml", *args)
    assert rc == 2 and expected in out, out

def test_sane_bounds_in_a_grid_are_lifted_by_the_study(tmp_path, schema_nb):
    cfg = {"study": "t", "notebook": schema_nb, "base": {"epochs": 5000}}
    rc, out = _main("run", _yaml(tmp_path, cfg), "--dry-run", "--runs-dir", tmp_path/"runs")
    assert rc == 2 and "override_bounds: [epochs]" in out, out
    rc, out = _main("run", _yaml(tmp_path, {**cfg, "override_bounds": ["epochs"]}), "--dry-run", "--runs-dir", tmp_path/"runs")
    assert rc == 0, out

def _yaml(tmp_path, cfg) -> Path:
    p = tmp_path/"s.yaml"; p.write_text(yaml.safe_dump(cfg)); return p

# ------------------------------------------------------------------ one source: nothing derived from it drifts

def test_every_parameter_cell_is_rendered_from_the_schema():
    assert sync_parameter_cells(write=False) == [], "run `python -m artstudy params --sync` (make check does)"

@pytest.mark.parametrize("nb", experiment_notebooks(ROOT/"nbs"/"experiments"), ids=lambda p: p.stem)
def test_notebooks_take_only_schema_parameters_and_leave_settings_to_settings_ini(nb):
    d = read_parameter_cell(nb)
    assert set(d) <= set(FIELDS), sorted(set(d) - set(FIELDS))
    assert all(d[k] is None for k in SETTING_FIELDS if k in d), {k: d[k] for k in SETTING_FIELDS if k in d}

@pytest.mark.parametrize("nb", [p for p in experiment_notebooks(ROOT/"nbs"/"experiments") if "run_params(globals()" in p.read_text()],
                         ids=lambda p: p.stem)
def test_settings_reach_a_notebook_run(nb, monkeypatch):
    "A notebook's defaults, gathered as its code gathers them, give a RunConfig with ARTSTUDY_IMAGE_SIZE and settings.ini's values."
    monkeypatch.setenv("ARTSTUDY_IMAGE_SIZE", "72")
    ns = {k.upper(): v for k, v in read_parameter_cell(nb).items()}
    p = run_params(ns)
    if p.get("tasks"): p["dataset"] = "wikiart_mt"
    c = run_config(p, mode="mode_a" if p.get("mode") == "double" else p.get("mode", "mode_a"))
    assert c.image_size == 72
    from artstudy.config import get_setting
    assert (c.backbone, c.batch_size) == (get_setting("backbone"), get_setting("batch_size"))

def test_training_notebooks_can_set_speed_and_device_from_a_grid():
    for nb in experiment_notebooks(ROOT/"nbs"/"experiments"):
        if "train_run(" in nb.read_text():
            assert {"channels_last", "mixed_precision", "device"} <= set(read_parameter_cell(nb)), nb.name

def test_settings_ini_values_are_checked_against_the_schema(monkeypatch):
    monkeypatch.setenv("ARTSTUDY_BATCH_SIZE", "0")
    with pytest.raises(ParamsError, match="ARTSTUDY_BATCH_SIZE: batch_size: Input should be greater than or equal to 1"): run_config()

@pytest.mark.parametrize("params,expected", [
    (dict(mode="double"), "mode 'double' needs init_from"),
    (dict(mode="mode_a", head_fit="logreg"), "head_fit='logreg' fits one off-the-shelf head"),
    (dict(mode="double", init_from="runs/x", then="double"), "the second fine-tuning is one transfer mode"),
    (dict(device="cuda:0"), "this machine has no CUDA device"),
])
def test_rules_between_fields_are_checked_before_any_kernel(params, expected):
    "A notebook that hands its parameters to RunConfig unchanged gets RunConfig's rules checked by the runner."
    import torch
    if "device" in params and torch.cuda.device_count(): pytest.skip("this machine has a GPU")
    nb = str(ROOT/"nbs"/"experiments"/"transfer_modes.ipynb")
    with pytest.raises(ValueError, match="nothing was run") as e: check_specs([_spec(nb, **params)])
    assert expected in str(e.value), str(e.value)

def test_a_long_class_list_is_cut_in_the_message():
    nb = str(ROOT/"nbs"/"experiments"/"transfer_modes.ipynb")
    with pytest.raises(ValueError) as e: check_specs([_spec(nb, dataset="wikiart7", label="artist", classes=["x"])])
    assert "… and" in str(e.value) and len(str(e.value)) < 2000, len(str(e.value))
