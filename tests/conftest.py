"Shared pytest setup: slow-test opt-in, and a per-session cache folder so tests never touch the user's caches."
import os, pytest

def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="run tests marked slow")

def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long real-data runs (make test-slow)")

def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"): return
    skip = pytest.mark.skip(reason="slow: run with --runslow (make test-slow)")
    for item in items:
        if "slow" in item.keywords: item.add_marker(skip)

@pytest.fixture(autouse=True, scope="session")
def _offline_env(tmp_path_factory):
    "No hub downloads, ever; caches of models go to a temporary folder."
    home = tmp_path_factory.mktemp("torch_home")
    for k, v in dict(HF_HUB_OFFLINE="1", TORCH_HOME=str(home), ARTSTUDY_QUIET="1").items(): os.environ.setdefault(k, v)
    yield
