"""The parameters cell of every experiment notebook, as papermill reads it (`papermill --help-notebook`, the batch
runner's `notebook_params`): every parameter has a type and a help text, and papermill parses each line without a
warning (an `=` inside a comment, or an annotation its pattern cannot read, makes it skip or mis-read a line)."""
import ast, json, logging
from pathlib import Path
import papermill as pm, pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "nbs" / "experiments").glob("*.ipynb"))

def _parameters_source(nb:Path) -> str:
    [cell] = [c for c in json.loads(nb.read_text())["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    return "".join(cell["source"])

def _assigned(src:str) -> dict:
    "Independent reference: the names assigned in the cell with their annotation (or None), read by Python's own parser."
    out = {}
    for node in ast.parse(src).body:
        if isinstance(node, ast.AnnAssign): out[node.target.id] = ast.unparse(node.annotation)
        elif isinstance(node, ast.Assign):
            for t in node.targets: out[t.id] = None
    return out

def test_every_experiment_notebook_is_in_the_smoke_grids():
    "The experiment notebooks are the registry: each is run by a grid of configs/smoke.yaml (tests/test_experiments), the report by `report`."
    import yaml
    cfg = yaml.safe_load((ROOT/"configs"/"smoke.yaml").read_text())
    gridded = {Path(g["notebook"]).name for g in cfg["grids"]}
    assert NOTEBOOKS and {p.name for p in NOTEBOOKS} - {"report.ipynb"} == gridded

@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_parameter_has_a_type_and_help(nb, caplog):
    with caplog.at_level(logging.DEBUG, logger="papermill"):
        params = pm.inspect_notebook(str(nb))
    warnings = [r.getMessage() for r in caplog.records if r.name.startswith("papermill") and r.levelno >= logging.WARNING]
    assert not warnings, f"{nb.name}: papermill could not parse its parameters cell: {warnings}"
    expected = _assigned(_parameters_source(nb))
    assert list(params) == list(expected), f"{nb.name}: papermill sees {list(params)}, Python assigns {list(expected)}"
    untyped = [k for k, a in expected.items() if a is None]
    assert not untyped, f"{nb.name}: annotate {untyped} (e.g. `EPOCHS: int = 3  # help`)"
    for name, p in params.items():
        assert p["inferred_type_name"] == expected[name].replace("'", ""), (nb.name, name, p["inferred_type_name"])
        assert p["help"], f"{nb.name}: {name} needs a help comment (`{name}: ... = ...  # what it means`)"

@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.stem)
def test_parameters_cell_runs_alone(nb):
    "The cell defines every name it annotates (e.g. imports `Optional`), so the notebook runs top to bottom."
    src = _parameters_source(nb); ns = {}
    exec(compile(src, nb.name, "exec"), ns)
    assert set(_assigned(src)) <= set(ns)

def test_an_equals_sign_in_a_comment_is_caught(tmp_path, caplog):
    "The check above is not vacuous: papermill warns about, and drops, a typed parameter line whose comment holds an `=`."
    nb = {"cells": [{"id": "bad0", "cell_type": "code", "metadata": {"tags": ["parameters"]}, "execution_count": None, "outputs": [],
                     "source": 'MODE: str = "mode_a"  # help\nTHEN: str = "mode_a"  # with MODE="double": the second mode\n'}],
          "metadata": {"kernelspec": {"name": "python3", "language": "python", "display_name": "Python 3"},
                       "language_info": {"name": "python"}}, "nbformat": 4, "nbformat_minor": 5}
    (tmp_path / "bad.ipynb").write_text(json.dumps(nb))
    with caplog.at_level(logging.WARNING, logger="papermill"):
        params = pm.inspect_notebook(tmp_path / "bad.ipynb")
    assert list(params) == ["MODE"] and any("Unable to parse line 2" in r.getMessage() for r in caplog.records)

def test_progress_is_for_people_not_papermill(tmp_path):
    "`interactive()` (progress bars of training) is False in a kernel papermill started by hand, True in one nbconvert started."
    import subprocess, sys, os
    from pathlib import Path
    nb = {"cells": [{"id": "p0", "cell_type": "code", "metadata": {}, "execution_count": None, "outputs": [],
                     "source": "from artstudy.config import interactive\nprint('interactive', interactive())"}],
          "metadata": {"kernelspec": {"name": "python3", "language": "python", "display_name": "Python 3"},
                       "language_info": {"name": "python"}}, "nbformat": 4, "nbformat_minor": 5}
    (tmp_path / "probe.ipynb").write_text(json.dumps(nb))
    env = {k: v for k, v in os.environ.items() if k not in ("ARTSTUDY_QUIET", "IN_TEST", "ARTSTUDY_RUNNER", "PAPERMILL_EXECUTION")}
    bin_ = Path(sys.executable).parent
    def printed(out): return "".join("".join(o.get("text", "")) for o in json.loads(out.read_text())["cells"][0]["outputs"])
    subprocess.run([str(bin_ / "papermill"), "probe.ipynb", "pm.ipynb"], cwd=tmp_path, env=env, check=True, capture_output=True)
    subprocess.run([str(bin_ / "jupyter"), "nbconvert", "--to", "notebook", "--execute", "probe.ipynb", "--output", "nbc.ipynb"],
                   cwd=tmp_path, env=env, check=True, capture_output=True)
    assert "interactive False" in printed(tmp_path / "pm.ipynb") and "interactive True" in printed(tmp_path / "nbc.ipynb")
