"""The backend against the oldest and the newest jupyter-scheduler release it claims
(pyproject.toml's bound; tests/unit/test_packaging.py ties the two together). Each gets its own
venv, with that release and the backend installed from its wheel, not from this checkout, and the
package's unit tests run there: they drive upstream's Scheduler, database models and execution
managers, which is where releases differ. (The e2e tiers use the newest, in .venv and the images.)

jupyter-scheduler 3.0 (several backends, a `backend_id` keyword) has no release on PyPI yet, not even
a pre-release: test_pkg_scheduler.py checks that the keyword is accepted."""
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ..dist import ROOT, build

TESTED_JUPYTER_SCHEDULER = ("2.11.0", "2.12.1")
CACHE = Path(os.environ.get("JSK8S_CACHE_DIR", "/var/cache/jupyter-scheduler-k8s")) / "venvs"
# What the unit tests import besides the package and its dependencies (and the gateway's extra).
TEST_REQUIREMENTS = ["pytest>=7", "pytest-timeout", "nbformat"]
# The executor's own round trip needs the executor package, which only the image installs; the
# README's map is the checkout's, which the copied tests run without.
DESELECT = "not executors_stage_out and not readmes_map"


def _venv(version: str) -> Path:
    """A cached venv with jupyter-scheduler==version and everything else the wheel and the unit
    tests need (the wheel itself is installed fresh by each run)."""
    import tomllib
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = sorted([f"jupyter-scheduler=={version}", *TEST_REQUIREMENTS,
                           *(r for r in project["dependencies"] if not r.startswith("jupyter-scheduler")),
                           *project["optional-dependencies"]["gateway"]])
    key = hashlib.sha256("\n".join(requirements + [sys.version]).encode()).hexdigest()[:12]
    venv = CACHE / f"jupyter-scheduler-{version}-{key}"
    if not (venv / ".complete").exists():
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = subprocess.run([venv / "bin" / "pip", "install", "-q", *requirements],
                             capture_output=True, text=True, timeout=900)
        assert pip.returncode == 0, pip.stderr[-3000:]
        (venv / ".complete").touch()
    return venv


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    return build(tmp_path_factory.mktemp("dist"))[0]


class Run:
    """The package's unit tests under one jupyter-scheduler release, started in the background so
    that both releases' runs (mostly waiting on sockets and sleeps) overlap."""

    def __init__(self, version: str, wheel: Path, where: Path):
        self.version, self.venv = version, _venv(version)
        python = str(self.venv / "bin" / "python")
        subprocess.run([python, "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall", str(wheel)],
                       check=True, capture_output=True)
        # The wheel's own requirements (the bound included) hold in this venv.
        check = subprocess.run([python, "-m", "pip", "check"], capture_output=True, text=True)
        assert check.returncode == 0, check.stdout
        # The tests, away from the checkout, so that the package is imported from the wheel.
        tests = where / "tests"
        shutil.copytree(ROOT / "tests" / "unit", tests / "unit", ignore=shutil.ignore_patterns("__pycache__"))
        (tests / "__init__.py").touch()
        selected = sorted(str(p.relative_to(where)) for p in (tests / "unit").glob("test_pkg_*.py"))
        self.imported = subprocess.run([python, "-c", "import jupyter_scheduler, jupyter_scheduler_k8s as p; "
                                        "print(jupyter_scheduler.__version__, p.__file__)"],
                                       cwd=where, capture_output=True, text=True, check=True).stdout.split()
        self.process = subprocess.Popen([python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", DESELECT,
                                         *selected], cwd=where, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})

    def result(self):
        try:
            out, err = self.process.communicate(timeout=900)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise
        return self.process.returncode, out, err


@pytest.fixture(scope="module")
def runs(wheel, tmp_path_factory):
    started = {v: Run(v, wheel, tmp_path_factory.mktemp(f"js-{v}")) for v in TESTED_JUPYTER_SCHEDULER}
    yield started
    for run in started.values():
        if run.process.poll() is None:
            run.process.kill()
            run.process.wait()


@pytest.mark.parametrize("version", TESTED_JUPYTER_SCHEDULER)
def test_unit_tests_pass_with_jupyter_scheduler(version, runs):
    run = runs[version]
    assert run.imported[0] == version and run.imported[1].startswith(str(run.venv)), run.imported
    returncode, out, err = run.result()
    print(f"jupyter-scheduler {version}:\n{out[-1500:]}")
    assert returncode == 0, out[-6000:] + err[-2000:]
    assert " passed" in out and " failed" not in out
