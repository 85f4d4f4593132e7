"""kube/queue.py, the pure part: which suspended Jobs the queue admits, in which order, and what a
waiting job's user reads. Jobs are written in the API's shapes (data_pkg.helpers.job)."""
import pytest

from jupyter_scheduler_k8s.kube import names, queue

from .data_pkg import helpers as h


def _job(user: str, number: int, *, suspend=True, staging=False, status=None, deleting=False, at=None,
         created=h.CREATED):
    annotations = {names.ANNOTATION_USERNAME: user}
    if staging:
        annotations[names.ANNOTATION_STAGING] = "inputs"
    if at is not None:
        annotations[names.ANNOTATION_QUEUED_AT] = f"{at:.6f}"
    return h.job([], status={} if status is None else status, suspend=suspend, annotations=annotations,
                 name=f"jsk8s-{user}-{number}", deleting=deleting, created=created)


def _names(jobs):
    return [j.metadata.name for j in jobs]


def test_a_user_under_the_cap_gets_the_free_slots_oldest_first():
    jobs = [_job("alice", 1, suspend=False, status={"active": 1})] + \
        [_job("alice", n, at=1000 - n) for n in range(2, 7)]  # 6 is the oldest
    assert _names(queue.admissions(jobs, cap=3)) == ["jsk8s-alice-6", "jsk8s-alice-5"]


def test_at_the_cap_nothing_is_admitted():
    running = [_job("bob", n, suspend=False, status={"active": 1}) for n in range(2)]
    assert queue.admissions(running + [_job("bob", 9, at=1)], cap=2) == []


def test_users_take_turns():
    """Alice's hundred do not go ahead of Bob's one: each user's oldest first, in turns."""
    alice = [_job("alice", n, at=n) for n in range(100)]
    bob = [_job("bob", 0, at=500)]
    admitted = _names(queue.admissions(alice + bob, cap=2))
    assert admitted == ["jsk8s-alice-0", "jsk8s-bob-0", "jsk8s-alice-1"]


def test_no_cap_admits_every_queued_job():
    jobs = [_job("alice", n, at=n) for n in range(7)]
    assert len(queue.admissions(jobs, cap=0)) == 7


@pytest.mark.parametrize("job", [
    _job("alice", 1, suspend=False, status={"active": 1, "ready": 1}),  # its result is written: held for collection
    _job("alice", 1, suspend=False, status={"succeeded": 1}),
    _job("alice", 1, suspend=False, status={"failed": 1}),
    _job("alice", 1, suspend=False, status={"active": 1}, deleting=True),  # stopped
], ids=["ready", "succeeded", "failed", "deleting"])
def test_what_no_longer_takes_a_slot(job):
    assert not queue.is_running(job)
    assert _names(queue.admissions([job, _job("alice", 2, at=1)], cap=1)) == ["jsk8s-alice-2"]


def test_a_job_admitted_but_without_a_pod_yet_takes_its_slot():
    """Between the admission and the Job controller's pod, the slot is taken: no double admission."""
    just_admitted = _job("alice", 1, suspend=False, status={})
    assert queue.is_running(just_admitted)
    assert queue.admissions([just_admitted, _job("alice", 2, at=1)], cap=1) == []


def test_staging_and_stopped_jobs_are_not_admitted():
    staging = _job("alice", 1, staging=True, at=1)
    stopped = _job("alice", 2, deleting=True, at=2)
    assert not queue.is_queued(staging) and not queue.is_queued(stopped)
    assert queue.admissions([staging, stopped], cap=5) == []


def test_a_scheduled_run_without_a_stamp_is_ordered_by_its_creation():
    run = _job("alice", 1, created="2025-06-01T01:02:03Z")  # 1748739723
    later = _job("alice", 2, at=1748739724)
    earlier = _job("alice", 3, at=1748739722)
    assert _names(queue.admissions([later, run, earlier], cap=1)) == ["jsk8s-alice-3"]
    assert _names(queue.admissions([later, run], cap=1)) == ["jsk8s-alice-1"]


def test_waiting_jobs_are_told_why_once():
    running = [_job("alice", n, suspend=False, status={"active": 1}) for n in range(2)]
    waiting = _job("alice", 5, at=5)
    notes = queue.waiting_notes(running + [waiting], cap=2, admitted=[])
    message = notes["jsk8s-alice-5"]
    assert message.startswith("waiting: 2 of your jobs are running") and "limits.runningJobsPerUser: 2" in message
    waiting.metadata.annotations[names.ANNOTATION_WAITING] = message
    assert queue.waiting_notes(running + [waiting], cap=2, admitted=[]) == {}
    assert queue.queue_note(waiting) == message
    assert queue.queue_note(running[0]) is None


def test_the_patches():
    assert queue.admit_patch() == {"spec": {"suspend": False},
                                   "metadata": {"annotations": {names.ANNOTATION_WAITING: None}}}
    assert queue.staged_patch() == {"metadata": {"annotations": {names.ANNOTATION_STAGING: None}}}


def test_the_queue_selector_takes_jobs_and_scheduled_runs():
    assert names.queue_selector() == ("app.kubernetes.io/managed-by=jupyter-scheduler-k8s,"
                                      "app.kubernetes.io/component in (notebook-job,scheduled-run)")
    assert names.queue_selector("a@b").endswith(",hub.jupyter.org/username=" + names.safe_slug("a@b"))
    assert names.queue_selector("").endswith(",!hub.jupyter.org/username")  # a server without a user name


class _Batch:
    """Lists the given Jobs and records patches: enough to drive one admission pass."""

    def __init__(self, jobs):
        self.jobs, self.patches, self.selectors = jobs, [], []

    def list_namespaced_job(self, namespace, label_selector):
        self.selectors.append(label_selector)
        return type("List", (), {"items": self.jobs})()

    def patch_namespaced_job(self, name, namespace, body):
        self.patches.append((name, body))


def _pass(jobs, username, cap=1):
    batch = _Batch(jobs)
    admitter = queue.Admitter(type("Clients", (), {"batch": batch})(), "jobs", lambda: cap, username=username,
                              elect=False)
    return admitter.admit_once(), batch


def test_a_server_without_a_user_name_admits_its_own_jobs():
    """Direct mode outside JupyterHub: the Jobs carry no owner, and are still admitted."""
    unowned = h.job([], status={}, suspend=True, name="jsk8s-mine")
    admitted, batch = _pass([unowned], username="")
    assert admitted == 1 and batch.patches == [("jsk8s-mine", queue.admit_patch())]


def test_a_server_admits_only_its_owners_jobs_and_the_gateway_everyones():
    jobs = [_job("alice", 1, at=1), _job("bob", 1, at=2)]
    assert [name for name, _ in _pass(jobs, username="alice")[1].patches] == ["jsk8s-alice-1"]
    assert sorted(name for name, _ in _pass(jobs, username=None)[1].patches) == ["jsk8s-alice-1", "jsk8s-bob-1"]


def test_the_queue_order_is_when_the_user_submitted_within_an_hour_and_not_ahead_of_now():
    import time
    now = time.time()
    assert abs(float(queue.stamp(now - 5)) - (now - 5)) < 0.001
    assert float(queue.stamp(now - 86400)) >= now - 3601  # an old claim jumps no queue by much
    assert float(queue.stamp(now + 86400)) <= time.time() + 0.001
    assert abs(float(queue.stamp(None)) - now) < 5
