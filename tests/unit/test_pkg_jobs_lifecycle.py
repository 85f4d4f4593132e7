"""jobs/lifecycle.py, pure parts: NotebookJob from staging paths, JobRun.decide on hand-written and recorded pod states,
KubeDriver.build_objects and JobRun.run_log_name. No API server: the clients object refuses any use."""
import json
import types

import pytest
from jupyter_scheduler.models import DescribeJob
from kubernetes.client.rest import ApiException
from traitlets.config import Config

from jupyter_scheduler_k8s.kube import names, reasons, transfer
from jupyter_scheduler_k8s.config import K8sConfig
from jupyter_scheduler_k8s.kube.driver import KubeDriver
from jupyter_scheduler_k8s.jobs.lifecycle import JobRun
from jupyter_scheduler_k8s.jobs.steps import (
    Collect, CollectFromVolume, Fail, JobFailed, Locate, NotebookJob, Outcome, Submit,
)
from jupyter_scheduler_k8s.kube.transfer import log_tail_bytes
from jupyter_scheduler_k8s.kube.safe_tar import UnsafeOutputError

from .data_pkg import helpers as h
from .data_pkg.helpers import clean_env, serialize  # noqa: F401 (fixture)
from .test_pkg_kube_manifests import restricted_violations

pytestmark = pytest.mark.usefixtures("clean_env")

JOB_ID = "5f0c9a52-1e4b-4d8e-9a57-2c1f0b7d3e11"
STAGING = f"/srv/jupyter/.local/share/jupyter/scheduler_staging_area/{JOB_ID}"
STAGING_PATHS = {
    "input": f"{STAGING}/my notebook.ipynb",
    "ipynb": f"{STAGING}/my notebook-2026-11-26-01-02-03-AM.ipynb",
    "html": f"{STAGING}/my notebook-2026-11-26-01-02-03-AM.html",
}


class NoApi:
    """Stands in for clients.Clients: the context name is known, any API use is a test failure."""

    def __init__(self, context_name="kind-jsk8s"):
        self.context_name = context_name

    def _refuse(self):
        raise AssertionError("this state must be decided without the Kubernetes API")

    api_client = property(lambda self: self._refuse())
    core = property(lambda self: self._refuse())
    batch = property(lambda self: self._refuse())


def model(**kwargs):
    fields = dict(job_id=JOB_ID, name="My nightly report", runtime_environment_name="py311", url="/jobs/x",
                  create_time=1764118923000, update_time=1764118923000, input_filename="my notebook.ipynb",
                  output_formats=["ipynb", "html"])
    fields.update(kwargs)
    return DescribeJob(**fields)


def make_run(cfg_traits=None, job=None, context="kind-jsk8s") -> JobRun:
    cfg = K8sConfig(config=Config({"K8sConfig": cfg_traits or {}}))
    return JobRun(job or NotebookJob.from_staging_paths(JOB_ID, STAGING_PATHS, model()), cfg,
                  KubeDriver(cfg, NoApi(context)))


def build_objects(cfg_traits=None, job=None, context="kind-jsk8s"):
    """KubeDriver.build_objects for a job, with the profile and timeout its JobRun resolves."""
    run = make_run(cfg_traits, job, context)
    return run.driver.build_objects(run.job, run.profile, run.timeout_seconds)


# ---- NotebookJob.from_staging_paths -------------------------------------------------------------------

def test_from_staging_paths_keeps_the_exact_output_names():
    paths = {
        "input": f"{STAGING}/Ünïcode report 名前.ipynb",
        "ipynb": f"{STAGING}/Ünïcode report 名前-2026-11-26-01-02-03-PM.ipynb",
        "html": f"{STAGING}/Ünïcode report 名前-2026-11-26-01-02-03-PM.html",
        "pdf": f"{STAGING}/Ünïcode report 名前-2026-11-26-01-02-03-PM.pdf",
    }
    job = NotebookJob.from_staging_paths(JOB_ID, paths)
    assert job.job_id == JOB_ID
    assert job.staging_dir == STAGING
    assert job.input_file == "Ünïcode report 名前.ipynb"
    assert job.outputs == {
        "ipynb": "Ünïcode report 名前-2026-11-26-01-02-03-PM.ipynb",
        "html": "Ünïcode report 名前-2026-11-26-01-02-03-PM.html",
        "pdf": "Ünïcode report 名前-2026-11-26-01-02-03-PM.pdf",
    }
    assert list(job.outputs) == ["ipynb", "html", "pdf"]
    # No model: defaults.
    assert (job.parameters, job.package_input_folder, job.job_name, job.compute_type, job.environment) == \
        ({}, False, "", None, None)


def test_from_staging_paths_reads_the_model():
    job = NotebookJob.from_staging_paths(JOB_ID, STAGING_PATHS, model(
        parameters={"a": "1", "city": "Zürich"}, package_input_folder=True, compute_type="gpu"))
    assert job.outputs == {"ipynb": "my notebook-2026-11-26-01-02-03-AM.ipynb",
                           "html": "my notebook-2026-11-26-01-02-03-AM.html"}
    assert job.parameters == {"a": "1", "city": "Zürich"}
    assert job.package_input_folder is True
    assert job.job_name == "My nightly report"
    assert job.compute_type == "gpu"
    assert job.environment == "py311"


def test_from_staging_paths_takes_the_submit_time_for_the_queues_order():
    assert NotebookJob.from_staging_paths(JOB_ID, STAGING_PATHS, model()).submitted == 1764118923.0
    assert NotebookJob.from_staging_paths(JOB_ID, STAGING_PATHS).submitted is None


def test_from_staging_paths_model_without_optional_fields():
    job = NotebookJob.from_staging_paths(JOB_ID, STAGING_PATHS, model())
    assert (job.parameters, job.package_input_folder, job.compute_type) == ({}, False, None)


def test_from_staging_paths_does_not_alias_the_models_parameters():
    m = model(parameters={"a": "1"})
    job = NotebookJob.from_staging_paths(JOB_ID, STAGING_PATHS, m)
    job.parameters["b"] = "2"
    assert m.parameters == {"a": "1"}


# ---- JobRun.decide ----------------------------------------------------------------------------------

def test_decide_a_running_pod_this_run_did_not_stage_asks_whether_its_inputs_came():
    """Taken up after a restart: the Job says whether the inputs are on the volume (located)."""
    run = make_run()
    assert run.decide(h.pod(h.running_status())) == Locate()
    assert run.pod_name == "jsk8s-job-abcde"


def test_decide_running_staged_waits():
    run = make_run()
    run.staged = True
    assert run.decide(h.pod(h.running_status())) is None


def test_decide_ready_is_collect():
    run = make_run()
    run.staged = True
    assert run.decide(h.pod(h.running_status(ready=True))) == Collect("jsk8s-job-abcde")
    # Ready even though this JobRun never staged (a server that restarted): collect, don't stage again.
    assert make_run().decide(h.pod(h.running_status(ready=True))) == Collect("jsk8s-job-abcde")


@pytest.mark.parametrize("code,reason", [(0, "Completed"), (1, "Error")])
def test_decide_terminated_0_or_1_collects_from_the_volume(code, reason):
    assert isinstance(make_run().decide(h.pod(h.terminated_status(code, reason))), CollectFromVolume)


def test_decide_deadline_with_exit_1_still_collects_partial_outputs():
    # The executor traps SIGTERM, writes result.json and exits 1: the outputs are on the PVC.
    status = h.terminated_status(1, "Error", pod_reason="DeadlineExceeded",
                                 pod_message="Pod was active on the node longer than the specified deadline")
    assert isinstance(make_run().decide(h.pod(status)), CollectFromVolume)


def test_decide_deadline_killed_fails_with_the_timeout():
    status = h.terminated_status(137, "Error", pod_reason="DeadlineExceeded",
                                 pod_message="Pod was active on the node longer than the specified deadline")
    assert make_run({"timeout_seconds": 3600}).decide(h.pod(status)) == Fail("timed out after 3600 s")


def test_decide_oom_killed_fails():
    run = make_run({"memory_limit": "2Gi"})
    step = run.decide(h.pod(h.terminated_status(137, "OOMKilled"), memory_limit="2Gi"))
    assert isinstance(step, Fail)
    assert step.message == "OOMKilled: the notebook exceeded its memory limit of 2Gi"


def test_decide_bad_spec_exit_2_fails_with_the_log():
    status = h.terminated_status(2, "Error", message="jsk8s-executor run: bad spec: 'input' is missing")
    step = make_run().decide(h.pod(status))
    assert step == Fail("the executor exited with code 2 (Error): jsk8s-executor run: bad spec: 'input' is missing")


def test_decide_failed_pod_without_container_status():
    step = make_run().decide(h.pod({"phase": "Failed", "reason": "NodeLost", "message": "node went away"}))
    assert isinstance(step, Fail)
    assert "NodeLost" in step.message


@pytest.mark.parametrize("reason,message", [
    ("ImagePullBackOff", 'Back-off pulling image "registry.example.org/nope:1"'),
    ("ErrImageNeverPull", 'Container image "registry.example.org/nope:1" is not present with pull policy of Never'),
])
def test_decide_image_pull_problem_fails_naming_the_image(reason, message):
    image = "registry.example.org/nope:1"
    step = make_run().decide(h.pod(h.waiting_status(reason, message, image=image), image=image))
    assert isinstance(step, Fail)
    assert step.message.startswith(f"{reason}: image '{image}'")


def test_decide_container_creating_waits():
    assert make_run().decide(h.pod(h.waiting_status("ContainerCreating", ""))) is None


def test_decide_unschedulable_young_waits():
    # Created "now": well inside the default scheduling timeout (300 s).
    from datetime import datetime, timezone
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert make_run().decide(h.pod(h.unschedulable_status(), created=now)) is None


def test_decide_unschedulable_old_fails_with_the_schedulers_reason():
    run = make_run({"scheduling_timeout_seconds": 0})
    step = run.decide(h.pod(h.unschedulable_status()))  # created 2025-06-01T01:02:03Z
    assert step == Fail(f"Unschedulable: {h.UNSCHEDULABLE_MESSAGE}")


def test_decide_no_pod_yet_waits():
    # Just submitted, no pod seen: wait (the API is only asked after the scheduling timeout).
    run = make_run()
    run.created = True
    assert run.decide(None) is None


def test_decide_not_created_yet_submits():
    """The first submit failed on its way (the API server was away): it is tried again."""
    assert isinstance(make_run().decide(None), Submit)


def test_decide_a_recovered_run_locates_before_it_submits_anything():
    run = make_run()
    run.recovered = True
    assert isinstance(run.decide(None), Locate)


# ---- JobRun.located: what the Job and PVC read from the API mean ------------------------------------

def _never():
    raise AssertionError("not needed for this answer")


def _located(run, job, pvc=None, events=None):
    return run.located(job, _never if pvc is None else (lambda: pvc), _never if events is None else (lambda: events))


def test_located_running_job_waits_for_its_pod():
    run = make_run()
    run.recovered = True
    assert _located(run, h.job([], status={"active": 1})) is None
    assert run.created


def test_located_running_job_whose_pod_went_fails():
    run = make_run()
    run.seen_pod = True
    assert _located(run, h.job([], status={"active": 1})) == Fail("the job pod was deleted before it finished")


def test_located_job_without_a_pod_for_too_long_names_the_newest_warning():
    run = make_run({"scheduling_timeout_seconds": 0})
    step = _located(run, h.job([], status={}), events="FailedCreate: exceeded quota")
    assert step == Fail("FailedCreate: exceeded quota")


def _now(seconds_ago: float = 0) -> str:
    from datetime import datetime, timedelta, timezone
    return (datetime.now(timezone.utc) - timedelta(seconds=seconds_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_located_the_wait_for_a_pod_starts_when_the_queue_admits_the_job():
    """Created long ago but admitted just now (startTime is reset on admission): no timeout yet."""
    run = make_run({"scheduling_timeout_seconds": 60})
    assert _located(run, h.job([], status={}, start_time=_now(5))) is None
    assert _located(run, h.job([], status={}, start_time=_now(120)), events="") == Fail(
        "the Job created no pod in time")


def test_located_a_job_whose_inputs_never_came_is_submitted_again():
    """The server went away during stage-in: the Job is still marked; the inputs are sent again."""
    run = make_run()
    run.recovered = True
    staging = h.job([], status={}, suspend=True, annotations={names.ANNOTATION_STAGING: "inputs"})
    assert _located(run, staging) == Submit()
    assert not run.staged


def test_located_a_queued_job_waits_and_says_why_then_runs():
    said = []
    run = make_run()
    run.on_queued = said.append
    note = "waiting: 2 of your jobs are running, the most that run at once (limits.runningJobsPerUser: 2)"
    queued = h.job([], status={}, suspend=True, annotations={names.ANNOTATION_WAITING: note}, start_time=None)
    assert _located(run, queued) is None
    assert _located(run, queued) is None  # said once
    assert said == [note] and run.queued == note and run.staged
    # Waiting, it asks the API now and then, not at every tick.
    assert run.decide(None) is None
    run.located_at -= 31
    assert run.decide(None) == Locate()
    # Admitted: IN_PROGRESS again, and its pod is awaited from the admission on.
    assert _located(run, h.job([], status={}, start_time=_now(1))) is None
    assert said == [note, None] and run.queued is None


def test_located_a_queued_job_before_the_admitter_wrote_why():
    said = []
    run = make_run()
    run.on_queued = said.append
    assert _located(run, h.job([], status={}, suspend=True, start_time=None)) is None
    assert said == ["waiting in the queue to start"]


def test_a_pod_seen_ends_the_wait_in_the_queue():
    said = []
    run = make_run()
    run.on_queued = said.append
    run.queued = "waiting"
    run.staged = True
    assert run.decide(h.pod(h.running_status())) is None
    assert said == [None]


def test_located_deadline_on_the_job_is_a_timeout():
    run = make_run({"timeout_seconds": 30})
    step = _located(run, h.job([{"type": "Failed", "status": "True", "reason": "DeadlineExceeded"}]))
    assert isinstance(step, Fail) and "timed out after 30 s" in step.message


def test_located_finished_job_is_collected_from_its_volume():
    assert _located(make_run(), h.job([], status={"succeeded": 1}), pvc=True) == CollectFromVolume()


def test_located_job_being_deleted_does_not_wait_for_a_pod():
    """Someone deleted a running Job (its finalizers keep it a while): it will never run again.
    Waiting for its pod would keep the job IN_PROGRESS until the scheduling timeout."""
    run = make_run()
    run.recovered = True
    deleting = h.job([], status={"active": 1}, deleting=True)
    assert _located(run, deleting, pvc=True) == CollectFromVolume()
    assert "no longer exist" in _located(run, deleting, pvc=False).message


def test_located_job_and_volume_gone_fails():
    assert _located(make_run(), None, pvc=False) == Fail(
        "the Kubernetes Job and its volume no longer exist; the job's outputs are lost")


# ---- KubeDriver.build_objects ---------------------------------------------------------------------------

CFG = {
    "namespace": "jupyter-jobs",
    "image": "registry.example.org/jsk8s-executor:0.1.0",
    "username": "alice@example.com",
    "storage_size": "5Gi",
    "storage_class": "fast-ssd",
    "cpu_request": "250m",
    "memory_limit": "1Gi",
    "extra_labels": {"team": "data"},
    "extra_annotations": {"cost-center": "42"},
    "job_ttl_seconds": 120,
    "collect_hold_seconds": 900,
    "node_selector": {"pool": "notebooks"},
    "profiles": {
        "small": {"cpu_limit": "1", "memory_limit": "2Gi"},
        "gpu": {"cpu_request": "4", "memory_request": "16Gi", "memory_limit": "16Gi", "gpu": 1,
                "node_selector": {"accelerator": "nvidia"},
                "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                "timeout_seconds": 7200},
    },
    "environments": [{"name": "py311", "image": "registry.example.org/jsk8s-py311:1"},
                     {"name": "r", "image": "registry.example.org/jsk8s-r:1"}],
}


def test_build_objects_uses_the_profile_and_the_environment():
    job = NotebookJob.from_staging_paths(JOB_ID, STAGING_PATHS, model(compute_type="gpu", parameters={"a": "1"}))
    pvc, k8s_job = build_objects(CFG, job)
    pvc, k8s_job = serialize(pvc), serialize(k8s_job)
    name = "jsk8s-" + JOB_ID
    labels = {
        "team": "data",
        "app.kubernetes.io/managed-by": "jupyter-scheduler-k8s",
        "app.kubernetes.io/component": "notebook-job",
        "scheduler.jupyter.org/job-id": JOB_ID,
        "hub.jupyter.org/username": pvc["metadata"]["labels"]["hub.jupyter.org/username"],
        "scheduler.jupyter.org/job-name": pvc["metadata"]["labels"]["scheduler.jupyter.org/job-name"],
    }
    annotations = {"cost-center": "42", "hub.jupyter.org/username": "alice@example.com",
                   "scheduler.jupyter.org/job-name": "My nightly report"}
    assert labels["hub.jupyter.org/username"].startswith("alice-example.com-")
    assert pvc == {
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": "jupyter-jobs", "labels": labels, "annotations": annotations},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "fast-ssd",
                 "resources": {"requests": {"storage": "5Gi"}}},
    }
    # The Job may not run until its inputs are on the volume; unqueued (no admitter), it is not suspended.
    assert k8s_job["metadata"] == {"name": name, "namespace": "jupyter-jobs", "labels": labels,
                                   "annotations": {**annotations, "scheduler.jupyter.org/staging": "inputs"}}
    assert "suspend" not in k8s_job["spec"]
    assert k8s_job["spec"]["ttlSecondsAfterFinished"] == 120
    assert k8s_job["spec"]["activeDeadlineSeconds"] == 7260
    pod_spec = k8s_job["spec"]["template"]["spec"]
    assert pod_spec["activeDeadlineSeconds"] == 7200
    assert pod_spec["nodeSelector"] == {"pool": "notebooks", "accelerator": "nvidia"}
    assert pod_spec["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert pod_spec["volumes"] == [{"name": "job", "persistentVolumeClaim": {"claimName": name}}]
    container = pod_spec["containers"][0]
    assert container["image"] == "registry.example.org/jsk8s-py311:1"
    assert container["imagePullPolicy"] == "Never"  # kind context, no configured policy
    # The default cpu limit (2) is below the profile's request: the limit follows the request.
    assert container["resources"] == {"requests": {"cpu": "4", "memory": "16Gi"},
                                      "limits": {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "1"}}
    spec = json.loads(container["env"][0]["value"])
    assert container["env"][0]["name"] == "JSK8S_SPEC"
    assert spec == {
        "input": "my notebook.ipynb",
        "outputs": {"ipynb": "my notebook-2026-11-26-01-02-03-AM.ipynb",
                    "html": "my notebook-2026-11-26-01-02-03-AM.html"},
        "parameters": {"a": "1"},
        "kernel_name": None,
        "cell_timeout": None,
        "collect_hold_seconds": 900,
    }


def test_build_objects_queued_makes_the_job_suspended():
    run = make_run(CFG)
    run.driver.queued = True
    _, k8s_job = run.driver.build_objects(run.job, run.profile, run.timeout_seconds)
    assert k8s_job.spec.suspend is True
    assert k8s_job.metadata.annotations["scheduler.jupyter.org/staging"] == "inputs"


def test_build_objects_default_profile_and_image():
    job = NotebookJob.from_staging_paths(JOB_ID, STAGING_PATHS)  # no model: no compute type, no environment
    _, k8s_job = build_objects(CFG, job, context="in-cluster")
    k8s_job = serialize(k8s_job)
    pod_spec = k8s_job["spec"]["template"]["spec"]
    container = pod_spec["containers"][0]
    assert container["image"] == "registry.example.org/jsk8s-executor:0.1.0"
    assert container["imagePullPolicy"] == "IfNotPresent"
    # "small" is the first profile; unset keys come from the traits.
    assert container["resources"] == {"requests": {"cpu": "250m", "memory": "1Gi"},
                                      "limits": {"cpu": "1", "memory": "2Gi"}}
    assert "activeDeadlineSeconds" not in pod_spec and "activeDeadlineSeconds" not in k8s_job["spec"]
    assert pod_spec["nodeSelector"] == {"pool": "notebooks"}
    assert "tolerations" not in pod_spec
    assert "scheduler.jupyter.org/job-name" not in k8s_job["metadata"]["labels"]


@pytest.mark.parametrize("compute_type", [None, "small", "gpu"])
def test_build_objects_pod_passes_pod_security_restricted(compute_type):
    job = NotebookJob.from_staging_paths(JOB_ID, STAGING_PATHS, model(compute_type=compute_type))
    _, k8s_job = build_objects(CFG, job)
    pod_spec = serialize(k8s_job)["spec"]["template"]["spec"]
    assert restricted_violations(pod_spec) == []
    assert pod_spec["automountServiceAccountToken"] is False


def test_build_objects_configured_pull_policy_wins():
    _, k8s_job = build_objects(dict(CFG, image_pull_policy="Always"))
    assert serialize(k8s_job)["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"] == "Always"


def test_build_objects_is_repeatable():
    job = NotebookJob.from_staging_paths(JOB_ID, STAGING_PATHS, model(compute_type="gpu"))
    first = [serialize(o) for o in build_objects(CFG, job)]
    assert [serialize(o) for o in build_objects(CFG, job)] == first


def test_unknown_compute_type_fails_at_submit_but_can_be_cleaned_up():
    """A profile removed since submission: the run can still stop and clean up, never submit."""
    job = NotebookJob.from_staging_paths(JOB_ID, STAGING_PATHS, model(compute_type="huge"))
    run = make_run(CFG, job)
    assert "Unknown compute type 'huge'; valid: small, gpu" in run.profile_error
    with pytest.raises(JobFailed, match="small, gpu"):
        run.submit()


# ---- JobRun.run_log_name ----------------------------------------------------------------------------

def test_run_log_name_is_beside_the_outputs():
    assert make_run().run_log_name() == "my notebook-2026-11-26-01-02-03-AM.log"


def test_run_log_name_unicode_and_dots():
    paths = {"input": f"{STAGING}/rapport v1.2 été.ipynb", "html": f"{STAGING}/rapport v1.2 été-2026-11-26-01-02-03-PM.html"}
    run = make_run(job=NotebookJob.from_staging_paths(JOB_ID, paths))
    assert run.run_log_name() == "rapport v1.2 été-2026-11-26-01-02-03-PM.log"


def test_run_log_name_without_outputs_uses_the_input():
    run = make_run(job=NotebookJob.from_staging_paths(JOB_ID, {"input": f"{STAGING}/my notebook.ipynb"}))
    assert run.run_log_name() == "my notebook.log"


def test_run_log_name_is_not_an_output_or_the_input():
    run = make_run()
    assert run.run_log_name() not in list(run.job.outputs.values()) + [run.job.input_file]


# ---- the run log keeps its end ------------------------------------------------------------------

def test_log_tail_keeps_the_end_from_a_line_start():
    lines = [f"line {i}\n".encode() for i in range(10000)]
    chunks = [b"".join(lines[i:i + 7]) for i in range(0, len(lines), 7)]
    data, cut = log_tail_bytes(chunks, 1000)
    assert data.endswith(b"line 9999\n") and data.startswith(b"line ")
    assert len(data) <= 1000 and cut + len(data) == sum(map(len, lines))


def test_log_tail_of_a_short_log_is_the_whole_log():
    assert log_tail_bytes([b"a\n", b"b\n"], 1000) == (b"a\nb\n", 0)


# ---- JobRun.finish when the outputs cannot be collected -------------------------------------------------

DEADLINE = dict(pod_reason="DeadlineExceeded", pod_message="Pod was active on the node longer than the specified deadline")


def finishing_run(error, cfg_traits=None):
    """A run whose collection raises `error`; no run log (no pod name was seen)."""
    run = make_run(cfg_traits)

    def collect_from_volume():
        raise error
    run.collect_from_volume = collect_from_volume
    return run


@pytest.mark.parametrize("error", [transfer.TransferError("no data from the pod for 600s"),
                                   ApiException(status=0, reason="Handshake status 500"), ConnectionResetError()])
def test_finish_raises_transient_errors_so_the_step_is_tried_again(error):
    with pytest.raises(type(error)):
        finishing_run(error).finish(CollectFromVolume())


@pytest.mark.parametrize("error,kept", [
    (JobFailed("the output collector pod did not start in time"), True),
    (transfer.CommandFailed("stage-out from pod p failed (exit code 1): no usable result.json"), False),
    (UnsafeOutputError("refused link 'x' in the job's outputs"), False),
])
def test_finish_keeps_the_volume_only_where_outputs_may_be(error, kept):
    outcome = finishing_run(error).finish(CollectFromVolume())
    assert outcome.status == "failed" and outcome.keep_volume is kept
    assert outcome.message.startswith("collecting the outputs failed: ")
    assert (f"kept on volume jsk8s-{JOB_ID} in namespace" in outcome.message) is kept


def test_finish_the_deadline_outranks_a_failed_collection():
    """The pod was stopped at its deadline before it wrote result.json: the user reads the timeout."""
    ended = h.pod(h.terminated_status(1, "Error", **DEADLINE))
    run = finishing_run(transfer.CommandFailed("stage-out from pod p failed (exit code 1): no usable result.json"),
                        {"timeout_seconds": 5})
    outcome = run.finish(CollectFromVolume(ended))
    assert outcome.message.startswith("timed out after 5 s; its outputs could not be collected: stage-out")
    assert not outcome.keep_volume


def test_finish_the_deadline_outranks_a_failed_collection_after_the_pod_was_ready(monkeypatch):
    """The pod turned Ready, then its deadline ended it before stage-out could read result.json
    (seen once in CI): the volume has nothing either, and the user still reads the timeout."""
    ended = h.pod(h.terminated_status(1, "Error", **DEADLINE))
    run = finishing_run(transfer.CommandFailed("stage-out from pod p-collect failed (exit code 1): no usable result.json"),
                        {"timeout_seconds": 5})

    def collect(pod, component=None):
        raise transfer.CommandFailed("stage-out from pod p failed (exit code 1): no usable result.json")
    monkeypatch.setattr(run, "collect", collect)
    monkeypatch.setattr(run, "_terminated_pod", lambda pod_name: ended if pod_name == "p" else None)
    outcome = run.finish(Collect("p"))
    assert outcome.message.startswith("timed out after 5 s; its outputs could not be collected: stage-out from pod p-collect")
    assert not outcome.keep_volume


def test_a_pod_that_floods_its_stage_out_fails_the_job_without_reading_its_volume(monkeypatch):
    run = finishing_run(AssertionError("the volume must not be read"))

    def collect(pod, component=None):
        raise transfer.PrintedTooMuch("stage-out in pod p printed more than 1 MiB and was cut off; it ended: x")
    monkeypatch.setattr(run, "collect", collect)
    outcome = run.finish(Collect("p"))
    assert outcome.status == "failed" and not outcome.keep_volume
    assert outcome.message == "collecting the outputs failed: stage-out in pod p printed more than 1 MiB and " \
                              "was cut off; it ended: x"


def test_finish_deletes_nothing():
    """finish() only collects: the caller records the outcome, then cleans up."""
    run = make_run()
    assert run.finish(Fail("Unschedulable: 0/1 nodes are available")) == Outcome(
        "failed", "Unschedulable: 0/1 nodes are available")


class Deletes:
    """A driver that records what cleanup asks it to delete."""

    def __init__(self):
        self.calls = []

    def delete(self, job_id, keep_volume=False, collector=True):
        self.calls.append((job_id, keep_volume, collector))


@pytest.mark.parametrize("keep", [False, True])
def test_cleanup_keeps_the_volume_when_the_outcome_says_so(keep):
    driver = Deletes()
    run = JobRun(NotebookJob.from_staging_paths(JOB_ID, STAGING_PATHS, model()), K8sConfig(), driver)
    run.cleanup(Outcome("failed", "x", keep_volume=keep))
    # The pod on the volume too: a stage-in that failed may have left it.
    assert driver.calls == [(JOB_ID, keep, True)]


def test_collect_keeps_the_outputs_when_release_is_killed(monkeypatch):
    """The pod exits as soon as release marks the outputs collected, which can kill release itself."""
    run = make_run()

    def killed(*args, **kwargs):
        raise transfer.CommandFailed("release in pod p failed (exit code 137)")
    run.driver = types.SimpleNamespace(receive_outputs=lambda *a, **k: ({"status": "completed"}, ["out.ipynb"]),
                                       release=killed)
    assert run.collect("p") == ({"status": "completed"}, ["out.ipynb"])


# ---- an eviction through the Eviction API (a node drain), recorded from the local cluster --------

def test_an_evicted_pod_is_collected_from_its_volume_and_the_message_names_the_eviction():
    """Recorded (data/record_states.py): the pod of a running notebook evicted as `kubectl drain`
    does. The executor saw SIGTERM, wrote result.json and exited 1, so the outputs are on the
    volume; the user reads that the pod was evicted, not the executor's guess that the job was
    stopped or timed out."""
    from .data_pkg.recorded import recorded
    running, terminating, ended = (recorded(f"evicted-pod-{state}") for state in ("running", "terminating", "ended"))
    assert make_run().decide(running) == Locate()
    step = make_run().decide(ended)
    assert isinstance(step, CollectFromVolume)
    result = {"status": "failed", "outputs": ["report-out.ipynb"], "side_effects": [],
              "error": {"message": "The job was terminated (stopped, or past its deadline) while running cell 2"}}
    outcome = make_run().outcome(result, {"report-out.ipynb"}, ended_pod=ended)
    assert outcome.status == "failed" and outcome.outputs == ["report-out.ipynb"]
    assert outcome.message == "the job's pod was evicted (a node drain, or another user of the Eviction API): " \
                              "Eviction API: evicting", outcome.message
    # While it is being deleted it says so already; the Job's own failure adds nothing.
    assert "evicted" in reasons.terminated_problem(terminating)
    assert reasons.disruption(running) is None
    assert reasons.job_problem(recorded("evicted-job")) is None
