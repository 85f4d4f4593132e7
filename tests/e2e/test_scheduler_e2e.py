"""K8sScheduler as installed: a real Jupyter server, configured by the chart's ConfigMap, holding a
token of the chart's ServiceAccount, driven through the REST API that JupyterLab's scheduler UI
calls. Stop, delete, recovery after the server is killed, timeouts, profiles, output formats and
the run log, each leaving nothing behind in the jobs namespace."""
import sqlite3
import time
import urllib.error

import nbformat
import pytest

from jupyter_scheduler_k8s.kube import names

from .conftest import leftovers, wait_log, write_notebook

pytestmark = pytest.mark.e2e

GPU_PROFILES = {"cpu": {"cpu_request": "100m"}, "one-gpu": {"gpu": 1}, "two-gpus": {"gpu": 2}}


def _wait_pods_running(core, namespace, count=1, timeout=90):
    deadline = time.monotonic() + timeout
    while True:
        pods = [p for p in core.list_namespaced_pod(namespace, label_selector=JOB_PODS).items
                if p.status.phase == "Running"]
        if len(pods) >= count:
            return pods
        assert time.monotonic() < deadline, f"fewer than {count} running job pods"
        time.sleep(0.3)


HOLD = "e2e.jupyter-scheduler-k8s/hold"
# Job pods, not the pod that holds a job's volume while its inputs are staged.
JOB_PODS = f"{names.LABEL_MANAGED_BY}={names.MANAGED_BY},{names.LABEL_COMPONENT}={names.COMPONENT_JOB}"


def _wait_no_pod(core, namespace, selector, timeout=90):
    deadline = time.monotonic() + timeout
    while core.list_namespaced_pod(namespace, label_selector=selector).items:
        assert time.monotonic() < deadline, f"pods {selector} still there after {timeout}s"
        time.sleep(0.3)


def _listed(server, job_id) -> bool:
    return job_id in [j["job_id"] for j in server.request("GET", "/scheduler/jobs?max_items=1000")["jobs"]]


# ---- stop and delete ---------------------------------------------------------------------------------

def test_stop_running_job_keeps_partial_outputs(make_server, core, batch, jobs_namespace):
    server = make_server()
    write_notebook(str(server.root / "sleepy.ipynb"), "print('first cell done', flush=True)",
                   "import time; time.sleep(300)")
    job_id = server.create_job("sleepy.ipynb")
    (pod,) = _wait_pods_running(core, jobs_namespace)
    wait_log(core, jobs_namespace, pod.metadata.name, "first cell done")  # the first cell has run
    server.stop_job(job_id)
    assert server.job(job_id)["status"] == "STOPPED"
    assert leftovers(core, batch, jobs_namespace) == []
    job = server.job(job_id)
    assert job["status"] == "STOPPED" and job["status_message"] == "stopped by the user"
    # The executor saved the notebook as it was when stopped; the backend collected it.
    assert "first cell done" in server.output(job, "ipynb").read_text()


@pytest.mark.parametrize("state", ["running", "completed", "stopped"])
def test_delete_removes_everything(make_server, core, batch, jobs_namespace, state):
    server = make_server()
    write_notebook(str(server.root / "nap.ipynb"), "import time; time.sleep(300 if %r == 'running' else 0)" % state)
    job_id = server.create_job("nap.ipynb")
    if state == "completed":
        assert server.wait(job_id)["status"] == "COMPLETED"
    else:
        _wait_pods_running(core, jobs_namespace)
    if state == "stopped":
        server.stop_job(job_id)
        assert server.job(job_id)["status"] == "STOPPED"
    staging = server.staging_dir(job_id)
    assert staging.exists()
    server.delete_job(job_id)
    assert not _listed(server, job_id)
    assert not staging.exists()
    assert leftovers(core, batch, jobs_namespace) == []


# ---- recovery after the server is killed ----------------------------------------------------------------

@pytest.mark.parametrize("fails", [False, True], ids=["completes", "fails"])
def test_recovery_after_server_killed_mid_job(make_server, core, batch, jobs_namespace, fails):
    """The server is killed once the notebook runs (its inputs are staged), the notebook ends
    while no server is there (seen as the admin, in the pod's log), and the server that comes
    back collects it."""
    server = make_server()
    body = "import time; time.sleep(8); print('slept')" + ("; raise RuntimeError('failed while nobody watched')" if fails else "")
    write_notebook(str(server.root / "nap.ipynb"), body)
    job_id = server.create_job("nap.ipynb", output_formats=["ipynb", "html"])
    (pod,) = _wait_pods_running(core, jobs_namespace)
    wait_log(core, jobs_namespace, pod.metadata.name, "[jsk8s] staged")
    server.kill()
    wait_log(core, jobs_namespace, pod.metadata.name, "for the outputs to be collected")  # the notebook ended
    assert "[jsk8s] collected" not in core.read_namespaced_pod_log(pod.metadata.name, jobs_namespace)
    job = make_server().wait(job_id, timeout=180)
    if fails:
        assert job["status"] == "FAILED"
        assert "RuntimeError" in job["status_message"] and "failed while nobody watched" in job["status_message"]
    else:
        assert job["status"] == "COMPLETED", job["status_message"]
    assert {".ipynb", ".html", ".log"} <= {p.suffix for p in server.staging_dir(job_id).iterdir()}
    assert "slept" in server.output(job, "log").read_text()
    assert leftovers(core, batch, jobs_namespace) == []


def test_recovery_goes_on_past_jobs_it_cannot_take_up(make_server, core, batch, jobs_namespace):
    """Four jobs in flight when the server dies: one whose profile is gone from the config when it
    comes back, one whose Job and PVC were deleted meanwhile, one the DB holds as STOPPING, and a
    healthy one, which must still complete."""
    from jupyter_scheduler_k8s.kube import names
    profiles = {"small": {"cpu_request": "100m"}, "doomed": {"cpu_request": "100m"}}
    server = make_server(profiles=profiles)
    write_notebook(str(server.root / "nap.ipynb"), "import time; time.sleep(15); print('slept')")
    doomed = server.create_job("nap.ipynb", compute_type="doomed")
    vanished, stopping, healthy = (server.create_job("nap.ipynb", compute_type="small") for _ in range(3))
    _wait_pods_running(core, jobs_namespace, count=4)
    server.kill()
    with sqlite3.connect(server.state / "data" / "scheduler.sqlite") as db:
        db.execute("UPDATE jobs SET status = 'STOPPING' WHERE job_id = ?", (stopping,))
    # The vanished job's Job lingers, being deleted, after its pod has gone (as it does while
    # garbage collection runs): recovery must not wait for a pod that will never come.
    gone = names.object_name(vanished)
    batch.patch_namespaced_job(gone, jobs_namespace, {"metadata": {"finalizers": [HOLD]}})
    batch.delete_namespaced_job(gone, jobs_namespace, propagation_policy="Foreground")
    core.delete_namespaced_persistent_volume_claim(gone, jobs_namespace)
    _wait_no_pod(core, jobs_namespace, names.job_selector(vanished))
    try:
        restarted = make_server(profiles={"small": profiles["small"]})
        assert restarted.wait(healthy, timeout=180)["status"] == "COMPLETED"
        failed = restarted.wait(doomed, timeout=60)
        assert failed["status"] == "FAILED"
        assert "Unknown compute type 'doomed'" in failed["status_message"] and "small" in failed["status_message"]
        lost = restarted.wait(vanished, timeout=60)
        assert lost["status"] == "FAILED" and "no longer exist" in lost["status_message"]
        assert restarted.wait(stopping, timeout=60)["status"] == "STOPPED"
    finally:
        batch.patch_namespaced_job(gone, jobs_namespace, {"metadata": {"finalizers": None}})
    assert leftovers(core, batch, jobs_namespace) == []


# ---- what the form sends, and what comes back ----------------------------------------------------------

def test_form_defaults_every_offered_format(make_server, core, batch, jobs_namespace):
    server = make_server()
    write_notebook(str(server.root / "report.ipynb"), "total = sum(range(10))\nprint('total is', total)")
    defaults = server.form_defaults()
    assert set(defaults["output_formats"]) == {"ipynb", "html", "md", "py"}
    job = server.wait(server.create_job("report.ipynb", **defaults))
    assert job["status"] == "COMPLETED", job["status_message"]
    assert "total is 45" in server.output(job, "md").read_text()
    script = server.output(job, "py").read_text()
    assert "total = sum(range(10))" in script
    compile(script, "report.py", "exec")
    assert nbformat.read(server.output(job, "ipynb"), as_version=4).cells[0].outputs[0]["text"] == "total is 45\n"
    assert "total is 45" in server.output(job, "html").read_text()
    assert "total is 45" in server.output(job, "log").read_text()
    assert leftovers(core, batch, jobs_namespace) == []


def test_long_failing_run_log_keeps_the_traceback(make_server, core, batch, jobs_namespace):
    server = make_server(run_log_limit=64 * 1024)
    write_notebook(str(server.root / "chatty.ipynb"),
                   "for i in range(20000):\n    print('line', i, 'x' * 40)",
                   "def deep():\n    raise ValueError('the real reason')\ndeep()")
    job = server.wait(server.create_job("chatty.ipynb"))
    assert job["status"] == "FAILED" and "the real reason" in job["status_message"]
    log = server.output(job, "log").read_text()
    assert len(log.encode()) <= 64 * 1024 + 200
    assert log.startswith("[jsk8s] the first ") and "line 0 " not in log
    tail = "\n".join(log.splitlines()[-20:])
    assert "ValueError" in tail and "the real reason" in tail and "deep()" in tail
    assert leftovers(core, batch, jobs_namespace) == []


# ---- limits and profiles ---------------------------------------------------------------------------------

def test_timeout_gives_failed_with_timeout_message(make_server, core, batch, jobs_namespace):
    server = make_server(timeout_seconds=5)
    write_notebook(str(server.root / "sleepy.ipynb"), "import time; time.sleep(120)")
    job = server.wait(server.create_job("sleepy.ipynb"), timeout=90)
    assert job["status"] == "FAILED"
    assert "timed out after 5 s" in job["status_message"]
    assert leftovers(core, batch, jobs_namespace) == []


def test_gpu_profile_runs_and_overcommit_fails_unschedulable(make_server, core, batch, jobs_namespace):
    server = make_server(profiles=GPU_PROFILES, scheduling_timeout_seconds=20)
    write_notebook(str(server.root / "gpu.ipynb"), "print('gpu ok')")
    ok = server.wait(server.create_job("gpu.ipynb", compute_type="one-gpu"))
    assert ok["status"] == "COMPLETED", ok["status_message"]
    too_many = server.wait(server.create_job("gpu.ipynb", compute_type="two-gpus"), timeout=120)
    assert too_many["status"] == "FAILED"
    assert "Unschedulable" in too_many["status_message"] and "nvidia.com/gpu" in too_many["status_message"]
    assert leftovers(core, batch, jobs_namespace) == []


def test_unknown_profile_is_rejected_at_submit(make_server):
    server = make_server(profiles=GPU_PROFILES)
    write_notebook(str(server.root / "gpu.ipynb"), "1")
    with pytest.raises(urllib.error.HTTPError) as e:
        server.create_job("gpu.ipynb", compute_type="huge")
    assert "valid: cpu, one-gpu, two-gpus" in e.value.read().decode()
