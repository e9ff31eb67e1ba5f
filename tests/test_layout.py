"The project's shape: import direction between modules, notebook hygiene, and matching environment files."
import ast, json, re, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
ORDER = ["config", "fetch", "stats", "data", "models", "features", "train", "multitask", "pipeline", "activations", "metrics", "compare", "featvis", "saliency",
         "explorer", "runs", "findings", "report"]

def _imports(path):
    "Every artstudy module `path` imports: top level and inside functions, absolute (`artstudy.x`) and relative (`.x`)."
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module: yield node.module.split(".")[0]
            else: yield from (a.name for a in node.names)   # from . import x
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("artstudy."):
            yield node.module.split(".")[1]
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("artstudy."): yield a.name.split(".")[1]

@pytest.mark.parametrize("mod", [m for m in ORDER if (ROOT/"artstudy"/f"{m}.py").exists()])
def test_imports_go_one_way(mod):
    "A module imports only modules that come before it in reading order."
    bad = [m for m in _imports(ROOT/"artstudy"/f"{mod}.py") if m in ORDER and ORDER.index(m) >= ORDER.index(mod)]
    assert not bad, f"artstudy.{mod} imports later modules {bad}: move the shared code down (see STYLE.md §2)"

def test_imports_inside_functions_are_seen():
    "The graph above reads imports made inside functions and relative ones: the pipeline's own imports are found."
    found = set(_imports(ROOT/"artstudy"/"pipeline.py"))
    assert {"config", "data", "features", "models", "train", "multitask"} <= found, found

@pytest.mark.parametrize("mod", ["data", "stats", "features", "activations", "metrics", "compare", "featvis", "saliency", "explorer", "findings", "report"])
def test_analysis_modules_load_without_fastai(mod):
    "In a fresh interpreter, importing a data or analysis module loads no fastai (directly or through another module)."
    code = f"import sys, artstudy.{mod}; sys.exit(1 if any(m == 'fastai' or m.startswith('fastai.') for m in sys.modules) else 0)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, f"importing artstudy.{mod} loaded fastai: {r.stderr[-500:]}"

def test_analysis_modules_do_not_need_fastai():
    for mod in ("config", "fetch", "stats", "models", "features", "activations", "metrics", "compare", "featvis", "findings"):
        p = ROOT/"artstudy"/f"{mod}.py"
        if p.exists():
            bad = [l for l in p.read_text().splitlines() if re.match(r"\s*(from|import)\s+fastai", l)]
            assert not bad, f"artstudy.{mod} must not import fastai: {bad}"

@pytest.mark.parametrize("mod", ["data", "models", "features", "train", "multitask", "activations", "metrics"])
def test_lower_layers_never_read_settings(mod):
    "Settings are read once, where a run or an analysis starts (`pipeline.RunConfig`, the CLI); below that, explicit arguments."
    p = ROOT/"artstudy"/f"{mod}.py"
    assert "get_setting" not in p.read_text(), f"artstudy.{mod} reads settings: take the value as an argument instead"

def test_notebooks_have_no_outputs_and_default_exp_first():
    for nb in sorted((ROOT/"nbs").glob("[0-9]*.ipynb")):
        cells = json.loads(nb.read_text())["cells"]
        assert cells[0]["source"][0].startswith("#| default_exp"), f"{nb.name}: first cell must be #| default_exp"
        assert not any(c.get("outputs") for c in cells), f"{nb.name} has outputs: run nbdev-clean"

def test_experiment_notebooks_have_one_parameters_cell_and_no_defs():
    for nb in sorted((ROOT/"nbs"/"experiments").glob("*.ipynb")):
        cells = json.loads(nb.read_text())["cells"]
        tagged = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
        assert len(tagged) == 1, f"{nb.name}: needs exactly one cell tagged 'parameters', found {len(tagged)}"
        code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
        assert not re.search(r"^\s*(def|class)\s", code, re.M), f"{nb.name}: library code belongs in a library notebook"

def test_environment_yml_installs_pyproject():
    env = (ROOT/"environment.yml").read_text()
    assert "-e .[dev]" in env, "environment.yml must install the package from pyproject.toml"

def test_no_machine_specific_paths_committed():
    for p in list(ROOT.glob("*.md")) + list(ROOT.glob("configs/*.yaml")) + [ROOT/"settings.ini"]:
        if p.exists(): assert "/work/" not in p.read_text() and "/root/" not in p.read_text(), p
