"""Issue 5 end to end: K8sScheduler stops, deletes, recovers, times out, places and logs jobs."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from jupyter_scheduler.models import Status
from traitlets.config import Config

from .conftest import SchedulerHarness, leftovers, write_notebook

pytestmark = pytest.mark.e2e
HOST = str(Path(__file__).with_name("scheduler_host.py"))


def k8s_config(namespace, image, **extra):
    c = Config()
    c.K8sConfig.namespace = namespace
    c.K8sConfig.image = image
    c.K8sScheduler.recovery_interval_seconds = 2
    for key, value in extra.items():
        c.K8sConfig[key] = value
    return c


@pytest.fixture
def make_scheduler(tmp_path, kubeconfig, namespace, executor_image, monkeypatch):
    from jupyter_scheduler_k8s.scheduler import K8sScheduler
    monkeypatch.setenv("KUBECONFIG", kubeconfig)
    made = []

    def make(name="k8s", **extra):
        h = SchedulerHarness(tmp_path, name, None, scheduler_class=K8sScheduler,
                             config=k8s_config(namespace, executor_image, **extra))
        made.append(h)
        return h
    yield make
    for h in made:
        h.scheduler.shutdown()


def _wait_pod_running(core, namespace, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pods = core.list_namespaced_pod(namespace).items
        if pods and pods[0].status.phase == "Running":
            return pods[0]
        time.sleep(0.3)
    raise AssertionError("no running job pod")


def test_completes_with_run_log(make_scheduler, core, batch, namespace):
    h = make_scheduler()
    write_notebook(str(h.root / "hello.ipynb"), "print('printed by the notebook')")
    job = h.wait(h.submit("hello.ipynb"))
    assert job.status == Status.COMPLETED, job.status_message
    log_file = h.output(job, "log")
    assert "printed by the notebook" in open(log_file, encoding="utf-8").read()
    assert leftovers(core, batch, namespace) == []


def test_stop_running_job_keeps_partial_outputs(make_scheduler, core, batch, namespace):
    h = make_scheduler()
    write_notebook(str(h.root / "sleepy.ipynb"), "print('first cell done')", "import time; time.sleep(300)")
    job_id = h.submit("sleepy.ipynb")
    _wait_pod_running(core, namespace)
    time.sleep(4)  # let the first cell run
    started = time.monotonic()
    h.scheduler.stop_job(job_id)
    while h.scheduler.get_job(job_id, job_files=False).status != Status.STOPPED:
        assert time.monotonic() - started < 5, "not STOPPED within 5 s"
        time.sleep(0.1)
    assert leftovers(core, batch, namespace) == []
    job = h.scheduler.get_job(job_id, job_files=False)
    assert job.status == Status.STOPPED
    # The executor saved the notebook as it was when stopped; the backend collected it.
    assert "first cell done" in open(h.output(job, "ipynb"), encoding="utf-8").read()


def test_delete_removes_everything(make_scheduler, core, batch, namespace):
    h = make_scheduler()
    write_notebook(str(h.root / "sleepy.ipynb"), "import time; time.sleep(300)")
    job_id = h.submit("sleepy.ipynb")
    _wait_pod_running(core, namespace)
    staging = os.path.dirname(h.scheduler.get_staging_paths(h.scheduler.get_job(job_id, job_files=False))["input"])
    h.scheduler.delete_job(job_id)
    assert not os.path.exists(staging)
    assert leftovers(core, batch, namespace) == []


def test_timeout_gives_failed_with_timeout_message(make_scheduler, core, batch, namespace):
    h = make_scheduler(timeout_seconds=5)
    write_notebook(str(h.root / "sleepy.ipynb"), "import time; time.sleep(120)")
    job = h.wait(h.submit("sleepy.ipynb"), timeout=90)
    assert job.status == Status.FAILED
    assert "timed out after 5 s" in job.status_message
    assert leftovers(core, batch, namespace) == []


GPU_PROFILES = {"cpu": {"cpu_request": "100m"}, "one-gpu": {"gpu": 1}, "two-gpus": {"gpu": 2}}


def test_gpu_profile_runs_and_overcommit_fails_unschedulable(make_scheduler, core, batch, namespace):
    h = make_scheduler(profiles=GPU_PROFILES, scheduling_timeout_seconds=20)
    write_notebook(str(h.root / "gpu.ipynb"), "print('gpu ok')")
    ok = h.wait(h.submit("gpu.ipynb", compute_type="one-gpu"))
    assert ok.status == Status.COMPLETED, ok.status_message
    too_many = h.wait(h.submit("gpu.ipynb", compute_type="two-gpus"), timeout=120)
    assert too_many.status == Status.FAILED
    assert "Unschedulable" in too_many.status_message and "nvidia.com/gpu" in too_many.status_message
    assert leftovers(core, batch, namespace) == []


def test_unknown_profile_is_rejected_at_submit(make_scheduler):
    from jupyter_scheduler.exceptions import SchedulerError
    h = make_scheduler(profiles=GPU_PROFILES)
    write_notebook(str(h.root / "gpu.ipynb"), "1")
    with pytest.raises(SchedulerError, match="valid: cpu, one-gpu, two-gpus"):
        h.submit("gpu.ipynb", compute_type="huge")


def _host(state, *args, **kw):
    return subprocess.Popen([sys.executable, HOST, str(state), *args], stdout=subprocess.PIPE, text=True, **kw)


@pytest.fixture
def server_state(tmp_path, kubeconfig, namespace, executor_image, monkeypatch):
    """The state dir of a scheduler_host.py "server": its root dir, DB and config."""
    monkeypatch.setenv("KUBECONFIG", kubeconfig)
    state = tmp_path / "server"
    (state / "root").mkdir(parents=True)
    (state / "config.json").write_text(json.dumps(k8s_config(namespace, executor_image)))
    return state


def _submit_and_kill(state, core, namespace, notebook, extra=None):
    """Submits through a host process, waits for the job's pod to run, then SIGKILLs the host."""
    server = _host(state, "submit", notebook, json.dumps(extra or {}))
    job_id = server.stdout.readline().strip()
    _wait_pod_running(core, namespace)
    server.send_signal(signal.SIGKILL)  # the user's server dies mid-job
    server.wait()
    return job_id


@pytest.mark.parametrize("fails", [False, True], ids=["completes", "fails"])
def test_recovery_after_server_killed_mid_job(server_state, namespace, core, batch, fails):
    state = server_state
    body = "import time; time.sleep(8); print('slept')" + ("; raise RuntimeError('failed while nobody watched')" if fails else "")
    write_notebook(str(state / "root" / "nap.ipynb"), body)
    job_id = _submit_and_kill(state, core, namespace, "nap.ipynb", {"output_formats": ["ipynb", "html"]})
    time.sleep(12)  # the notebook ends while no server is there
    waiter = _host(state, "wait", job_id, "120")
    out, _ = waiter.communicate(timeout=180)
    job = json.loads(out)
    if fails:
        assert job["status"] == "FAILED"
        assert "RuntimeError" in job["status_message"] and "failed while nobody watched" in job["status_message"]
    else:
        assert job["status"] == "COMPLETED", job["status_message"]
    staging = state / "staging" / job_id
    outputs = {p.suffix for p in staging.iterdir()}
    assert {".ipynb", ".html", ".log"} <= outputs
    assert leftovers(core, batch, namespace) == []


def test_delete_after_restart_removes_everything(server_state, namespace, core, batch):
    state = server_state
    write_notebook(str(state / "root" / "nap.ipynb"), "import time; time.sleep(300)")
    job_id = _submit_and_kill(state, core, namespace, "nap.ipynb")
    sys.path.insert(0, os.path.dirname(HOST))
    from scheduler_host import scheduler
    s = scheduler(state)
    try:
        s.delete_job(job_id)
    finally:
        s.shutdown()
    assert not (state / "staging" / job_id).exists()
    assert leftovers(core, batch, namespace) == []
