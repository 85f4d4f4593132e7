"""safe_tar guards what comes back from job pods (untrusted: the notebook ran arbitrary code), and
its bounds lean on tarfile, which changes between Python versions. Its unit tests therefore run on
the oldest Python `requires-python` allows and on newer ones than this machine's 3.11, each in a
Debian root filesystem that ci/pythons/rootfs makes (and caches): bullseye has 3.9.2, which also
lacks tarfile.data_filter (3.9.17), trixie has 3.13 and forky (Debian testing) 3.14."""
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SUITES = {"bullseye": "3.9.", "trixie": "3.13.", "forky": "3.14."}
# The executor's own round trip needs the executor package, which runs on the image's Python only.
DESELECT = "not executors_stage_out"
CHROOT = shutil.which("chroot") or "/usr/sbin/chroot"


def _rootfs(suite: str) -> Path:
    if os.geteuid() != 0 or not shutil.which("debootstrap"):
        why = "needs root and debootstrap to make a Debian root filesystem"
        if os.environ.get("CI"):
            pytest.fail(f"{why} (CI is set, so this fails instead of skipping)")
        pytest.skip(why)
    made = subprocess.run([str(REPO / "ci" / "pythons" / "rootfs"), suite], capture_output=True, text=True)
    assert made.returncode == 0, made.stderr[-3000:]
    return Path(made.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("suite", sorted(SUITES))
def test_safe_tar_unit_tests_pass_on(suite):
    rootfs = _rootfs(suite)
    inside = f"/tmp/jsk8s-{uuid.uuid4().hex[:8]}"
    work = rootfs / inside.lstrip("/")
    try:
        (work / "jupyter_scheduler_k8s" / "kube").mkdir(parents=True)
        for module in ("__init__.py", "kube/__init__.py", "kube/safe_tar.py"):
            shutil.copy(REPO / "jupyter_scheduler_k8s" / module, work / "jupyter_scheduler_k8s" / module)
        shutil.copy(REPO / "tests" / "unit" / "test_pkg_kube_safe_tar.py", work)
        env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": inside, "LANG": "C.UTF-8", "HOME": "/tmp"}
        version = subprocess.run([CHROOT, str(rootfs), "python3", "-c", "import sys; print(sys.version)"],
                                 capture_output=True, text=True, env=env, check=True).stdout
        assert version.startswith(SUITES[suite]), version
        ran = subprocess.run(
            [CHROOT, str(rootfs), "python3", "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", DESELECT,
             f"--rootdir={inside}", f"{inside}/test_pkg_kube_safe_tar.py"],
            capture_output=True, text=True, env=env, timeout=600)
        print(f"Python {version.split()[0]} in {suite}:\n{ran.stdout[-2000:]}")
        assert ran.returncode == 0, ran.stdout[-5000:] + ran.stderr[-2000:]
        assert " passed" in ran.stdout and " failed" not in ran.stdout
    finally:
        shutil.rmtree(work, ignore_errors=True)
