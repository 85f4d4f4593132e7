"""jobs/monitor.py's bookkeeping without a cluster: steps that fail are tried again or end the job,
work for a job that was let go is dropped, and an outcome is recorded before anything is deleted.
(The watch and the steps on Kubernetes are tested end to end in tests/e2e.)"""
import threading
import types

import pytest
from kubernetes.client.rest import ApiException

from jupyter_scheduler_k8s.jobs import monitor as monitor_module
from jupyter_scheduler_k8s.jobs.steps import STEP_ATTEMPTS, JobFailed, is_transient
from jupyter_scheduler_k8s.jobs.monitor import JobMonitor
from jupyter_scheduler_k8s.kube.transfer import CommandFailed, TransferError


class FakeRun:
    def __init__(self, job_id="job-1", events=None):
        self.job = types.SimpleNamespace(job_id=job_id)
        self.name, self.namespace = f"jsk8s-{job_id}", "jobs"
        self.events = events if events is not None else []

    def decide(self, pod):
        return None

    def cleanup_quietly(self, outcome=None):
        self.events.append(("cleanup", outcome.keep_volume if outcome else None))


@pytest.fixture
def monitor():
    outcomes = []
    m = JobMonitor(None,  # no watch in these tests
                   on_outcome=lambda run, outcome: (outcomes.append(outcome), run.events.append(("record", outcome.status))),
                   workers=2)
    m.outcomes = outcomes
    yield m
    m.stop()


def tracked(monitor, run):
    with monitor.lock:
        monitor.runs[run.job.job_id] = run
    return run


def step(monitor, run, action, final=False):
    monitor._act(run, action, final=final)
    monitor.wait_idle(run.job.job_id, timeout=10)


def fail_with(error):
    def action():
        raise error
    return action


def test_a_transient_failure_is_tried_again_then_ends_the_job_keeping_its_volume(monitor):
    run = tracked(monitor, FakeRun())
    for attempt in range(1, STEP_ATTEMPTS):
        step(monitor, run, fail_with(ApiException(status=503, reason="Service Unavailable")))
        assert monitor.tracked("job-1") and monitor.outcomes == [], attempt
    step(monitor, run, fail_with(ApiException(status=503, reason="Service Unavailable")))
    assert not monitor.tracked("job-1")
    [outcome] = monitor.outcomes
    assert outcome.status == "failed" and outcome.keep_volume
    assert outcome.message.startswith(f"the backend failed {STEP_ATTEMPTS} times in a row: Kubernetes API error 503")
    assert "volume jsk8s-job-1 in namespace jobs is kept" in outcome.message


def test_a_success_resets_the_count_of_failures(monitor):
    run = tracked(monitor, FakeRun())
    for _ in range(STEP_ATTEMPTS - 1):
        step(monitor, run, fail_with(TransferError("no data from the pod for 600s")))
    step(monitor, run, lambda: None)
    step(monitor, run, fail_with(TransferError("no data from the pod for 600s")))
    assert monitor.tracked("job-1") and monitor.outcomes == []


@pytest.mark.parametrize("error,message", [
    (ApiException(status=422, reason="Unprocessable Entity"), "Kubernetes API error 422: Unprocessable Entity"),
    (JobFailed("Unknown compute type 'huge'; valid: small"), "Unknown compute type 'huge'; valid: small"),
    (CommandFailed("stage-in to pod p failed (exit code 1): refusing link 'x'"), "stage-in to pod p failed"),
    (AttributeError("'NoneType' object has no attribute 'status'"), "AttributeError: 'NoneType' object"),
])
def test_a_refusal_ends_the_job_at_once(monitor, error, message):
    run = tracked(monitor, FakeRun())
    step(monitor, run, fail_with(error))
    [outcome] = monitor.outcomes
    assert outcome.status == "failed" and outcome.message.startswith(message) and not outcome.keep_volume


@pytest.mark.parametrize("status,transient", [(400, False), (404, False), (409, False), (422, False), (401, True),
                                              (403, True), (408, True), (429, True), (500, True), (503, True),
                                              (0, True)])
def test_is_transient_api_errors(status, transient):
    assert is_transient(ApiException(status=status)) is transient


@pytest.mark.parametrize("error,transient", [
    (TransferError("no data from the pod for 600s"), True), (ConnectionResetError(), True),
    (CommandFailed("stage-out failed (exit code 1)"), False), (JobFailed("x"), False), (KeyError("x"), False)])
def test_is_transient_other_errors(error, transient):
    assert is_transient(error) is transient


def test_a_failed_step_is_not_tried_again_at_once(monitor):
    run = tracked(monitor, FakeRun())
    step(monitor, run, fail_with(TransferError("connection reset")))
    before = dict(monitor.busy)
    monitor._evaluate("job-1")  # a pod event right after the failure
    assert monitor.busy == before == {}
    assert monitor.retry_at["job-1"] > 0


def test_the_outcome_is_recorded_before_the_objects_are_deleted(monitor):
    events = []
    run = tracked(monitor, FakeRun(events=events))
    step(monitor, run, lambda: monitor._conclude(run, monitor_module.Outcome("completed")), final=True)
    assert events == [("record", "completed"), ("cleanup", False)]
    assert not monitor.tracked("job-1")


def test_work_queued_for_a_job_that_was_let_go_is_dropped(monitor):
    gate, ran = threading.Event(), []
    blockers = [tracked(monitor, FakeRun(f"busy-{i}")) for i in range(2)]
    for blocker in blockers:  # both workers wait: the next step stays queued
        monitor._act(blocker, gate.wait)
    run = tracked(monitor, FakeRun())
    monitor._act(run, lambda: ran.append("submitted"))
    monitor.untrack("job-1")  # stopped or deleted meanwhile
    gate.set()
    monitor.wait_idle("job-1", timeout=10)
    assert ran == []


def test_one_step_per_job_at_a_time(monitor):
    gate = threading.Event()
    run = tracked(monitor, FakeRun())
    monitor._act(run, gate.wait, final=True)
    assert "job-1" in monitor.busy
    second = []
    monitor._act(run, lambda: second.append(1))
    gate.set()
    monitor.wait_idle("job-1", timeout=10)
    assert second == [] and "job-1" not in monitor.busy
