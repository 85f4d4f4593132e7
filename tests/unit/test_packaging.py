"""The wheel and the sdist, built as a release is built (`python -m build`), and their metadata:
the license as an SPDX expression, classifiers, URLs, and dependencies that are exactly what the
package imports, with jupyter-scheduler bounded by the releases the tests cover."""
import ast
import email
import json
import importlib.metadata
import re
import sys
import tarfile
import zipfile

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from ..compat.test_jupyter_scheduler_versions import TESTED_JUPYTER_SCHEDULER
from ..dist import ROOT, build

MODULES = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "jupyter_scheduler_k8s").rglob("*.py"))  # with gateway/


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    return build(tmp_path_factory.mktemp("dist"))


@pytest.fixture(scope="module")
def metadata(dist):
    wheel, _ = dist
    with zipfile.ZipFile(wheel) as z:
        name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        return email.message_from_bytes(z.read(name))


def _requirements(metadata, extra=None):
    found = {}
    for line in metadata.get_all("Requires-Dist"):
        req = Requirement(line)
        in_extra = req.marker is not None and req.marker.evaluate({"extra": extra or ""}) and extra
        if (extra is None and req.marker is None) or in_extra:
            found[re.sub(r"[-_.]+", "-", req.name).lower()] = req
    return found


def test_the_wheel_holds_the_package_and_nothing_else(dist):
    wheel, _ = dist
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
    top = {n.split("/")[0] for n in names}
    assert top == {"jupyter_scheduler_k8s", "jupyter_scheduler_k8s-0.1.0.dist-info", "jupyter_scheduler_k8s-0.1.0.data"}, top
    # The server extension is enabled where the wheel is installed, as jupyter-scheduler's is.
    config = "jupyter_scheduler_k8s-0.1.0.data/data/etc/jupyter/jupyter_server_config.d/jupyter_scheduler_k8s.json"
    assert [n for n in names if n.startswith("jupyter_scheduler_k8s-0.1.0.data/")] == [config]
    assert json.loads(zipfile.ZipFile(wheel).read(config)) == {
        "ServerApp": {"jpserver_extensions": {"jupyter_scheduler_k8s": True}}}
    assert sorted(n for n in names if n.startswith("jupyter_scheduler_k8s/")) == MODULES
    assert "jupyter_scheduler_k8s-0.1.0.dist-info/licenses/LICENSE" in names
    entry_points = zipfile.ZipFile(wheel).read("jupyter_scheduler_k8s-0.1.0.dist-info/entry_points.txt").decode()
    assert "jupyter-scheduler-k8s = jupyter_scheduler_k8s.cli:main" in entry_points


def test_the_sdist_holds_what_a_rebuild_needs(dist):
    _, sdist = dist
    with tarfile.open(sdist) as t:
        names = {n.split("/", 1)[1] for n in t.getnames() if "/" in n}
    assert {"LICENSE", "README.md", "pyproject.toml", "PKG-INFO",
            "jupyter-config/jupyter_server_config.d/jupyter_scheduler_k8s.json"} <= names
    assert set(MODULES) <= names
    assert not [n for n in names if n.startswith((".venv", "tests/", "build/", "out/")) or "__pycache__" in n]


def test_metadata(metadata):
    assert metadata["License-Expression"] == "BSD-3-Clause"
    assert not [c for c in metadata.get_all("Classifier") if c.startswith("License ::")], \
        "a license classifier beside License-Expression is refused by PyPI"
    classifiers = set(metadata.get_all("Classifier"))
    assert {"Framework :: Jupyter", "Framework :: Jupyter :: JupyterLab", "Operating System :: POSIX :: Linux"} <= classifiers
    # Every minor version from requires-python on is claimed (the compat tests run 3.9, 3.13 and 3.14).
    oldest = int(metadata["Requires-Python"].removeprefix(">=3."))
    claimed = {int(c.rsplit(".", 1)[1]) for c in classifiers if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)}
    assert claimed == set(range(oldest, 15)), claimed
    urls = dict(u.split(", ", 1) for u in metadata.get_all("Project-URL"))
    assert {"Homepage", "Documentation", "Source", "Issues"} <= set(urls), urls
    assert all(u.startswith("https://") for u in urls.values()), urls
    assert metadata["Description-Content-Type"] == "text/markdown"


def test_jupyter_scheduler_is_bounded_by_the_tested_releases(metadata):
    spec = _requirements(metadata)["jupyter-scheduler"].specifier
    tested = [Version(v) for v in TESTED_JUPYTER_SCHEDULER]
    assert all(spec.contains(v) for v in tested), (spec, tested)
    oldest, newest = min(tested), max(tested)
    assert not spec.contains(Version(f"{oldest.major}.{oldest.minor - 1}.99")), "older than the oldest tested"
    assert not spec.contains(Version(f"{newest.major}.{newest.minor + 1}.0")), \
        "the next minor release is untested: the bound must exclude it until the tests cover it"
    assert not spec.contains(Version(f"{newest.major + 1}.0.0"))


def _imports(source: str) -> set:
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def test_the_dependencies_are_exactly_what_the_package_imports(dist, metadata):
    """Nothing unused is declared, and nothing imported is left to chance: the main list covers the
    user server's side, the `gateway` extra everything the jobs gateway's modules import."""
    wheel, _ = dist
    with zipfile.ZipFile(wheel) as z:
        imported = set().union(*(_imports(z.read(n).decode()) for n in z.namelist() if n.endswith(".py")))
    third_party = imported - set(sys.stdlib_module_names) - {"jupyter_scheduler_k8s"}
    to_dist = importlib.metadata.packages_distributions()
    needed = {re.sub(r"[-_.]+", "-", to_dist[m][0]).lower() for m in third_party}
    main, gateway = _requirements(metadata), _requirements(metadata, "gateway")
    assert set(main) | set(gateway) == needed, (sorted(set(main) | set(gateway)), sorted(needed))
    # The gateway's image installs the extra alone: it must not need the user server's packages.
    assert "jupyter-scheduler" not in gateway
