"""The queue: which suspended Jobs to admit, and the admitter that does it.

Every job's Job (and every scheduled run's, in hub mode) is made with `spec.suspend: true`, so it
makes no pod until it is admitted by clearing `suspend`, as Kueue admits a Job. A one-off job's
Job also carries ANNOTATION_STAGING until its inputs are on its volume; only then may it run.
The Jobs are the queue: nothing is kept in a process, so a waiting job needs neither the user's
server nor the gateway that accepted it.

`admissions()` is the pure decision, from the Jobs as listed: each user runs at most `cap` at
once; a user's jobs start oldest first; when several users have room, their jobs are taken in
turns (round robin), so that one user's hundred do not go ahead of another's one.

`Admitter` acts on it. In hub mode every gateway replica runs one, and a Lease (the official
client's leader election) lets only one of them admit at a time: two admitting at once could
each see a free slot and together pass the cap (docs/design.md, "The queue").
"""
import logging
import socket
import threading
import time
import uuid
from datetime import datetime, timezone
from typing import Callable, Dict, Iterable, List, Optional

from kubernetes import watch as k8s_watch
from kubernetes.client import CoordinationV1Api
from kubernetes.client.rest import ApiException
from kubernetes.leaderelection import electionconfig, leaderelection
from kubernetes.leaderelection.resourcelock.leaselock import LeaseLock

from . import names

log = logging.getLogger(__name__)
# The election logs every try at INFO: a follower would write a line every RETRY_SECONDS.
logging.getLogger("leaderelection").setLevel(logging.WARNING)

LEASE_NAME = "jsk8s-admission"
_ENDED = ("Complete", "Failed", "SuccessCriteriaMet", "FailureTarget")


def owner(job) -> str:
    return (job.metadata.annotations or {}).get(names.ANNOTATION_USERNAME, "")


def _ended(job) -> bool:
    status = job.status
    if status is not None and (status.succeeded or status.failed):
        return True
    return any(c.type in _ENDED and c.status == "True" for c in (status.conditions or [] if status else []))


def is_suspended(job) -> bool:
    return bool(job.spec and job.spec.suspend)


def is_staging(job) -> bool:
    """Its inputs are not on its volume yet: it may not run, and does not wait in the queue."""
    return names.ANNOTATION_STAGING in (job.metadata.annotations or {})


def is_running(job) -> bool:
    """Admitted and not done: its pod is coming, or runs the notebook. A pod that is Ready has
    written its result and only holds it for collection: its slot is free again."""
    if job.metadata.deletion_timestamp is not None or is_suspended(job) or _ended(job):
        return False
    return not (job.status and (job.status.ready or 0) > 0)


def is_queued(job) -> bool:
    return (job.metadata.deletion_timestamp is None and is_suspended(job) and not is_staging(job)
            and not _ended(job))


def _queued_at(job) -> tuple:
    """Oldest first: the time the backend put in the annotation (scheduled runs have none: their
    creation time), then the name, for a stable order."""
    created = job.metadata.creation_timestamp
    created = created.timestamp() if created is not None else 0.0
    try:
        at = float((job.metadata.annotations or {}).get(names.ANNOTATION_QUEUED_AT, created))
    except ValueError:
        at = created
    return at, job.metadata.name


def running_count(jobs: Iterable, user: str) -> int:
    return sum(1 for j in jobs if owner(j) == user and is_running(j))


def waiting_message(running: int, cap: int) -> str:
    """The status message of a job that waits for a slot."""
    return (f"waiting: {running} of your jobs {'is' if running == 1 else 'are'} running, the most that run at "
            f"once (limits.runningJobsPerUser: {cap}); this one starts when one of them ends")


def admissions(jobs: Iterable, cap: int) -> List:
    """The queued Jobs to admit now, in the order to admit them. cap 0: no limit."""
    jobs = list(jobs)
    waiting: Dict[str, List] = {}
    for job in sorted((j for j in jobs if is_queued(j)), key=_queued_at):
        waiting.setdefault(owner(job), []).append(job)
    free = {user: (len(queue) if not cap else max(0, cap - running_count(jobs, user)))
            for user, queue in waiting.items()}
    # Turns: each user's oldest first, users in the order of their oldest waiting job.
    admitted, turn = [], 0
    while True:
        taken = [queue[turn] for user, queue in waiting.items() if turn < min(len(queue), free[user])]
        if not taken:
            return admitted
        admitted.extend(taken)
        turn += 1


def waiting_notes(jobs: Iterable, cap: int, admitted: Iterable) -> Dict[str, str]:
    """Job name -> the message for each queued Job that stays queued and does not carry it yet."""
    jobs, admitted = list(jobs), {j.metadata.name for j in admitted}
    notes = {}
    for job in jobs:
        if is_queued(job) and job.metadata.name not in admitted and cap:
            message = waiting_message(running_count(jobs, owner(job)), cap)
            if (job.metadata.annotations or {}).get(names.ANNOTATION_WAITING) != message:
                notes[job.metadata.name] = message
    return notes


def admit_patch() -> dict:
    return {"spec": {"suspend": False}, "metadata": {"annotations": {names.ANNOTATION_WAITING: None}}}


def note_patch(message: str) -> dict:
    return {"metadata": {"annotations": {names.ANNOTATION_WAITING: message}}}


def staged_patch() -> dict:
    return {"metadata": {"annotations": {names.ANNOTATION_STAGING: None}}}


def stamp(submitted: Optional[float] = None) -> str:
    """The queued-at annotation: when the job was submitted, at most an hour ago (a client's
    claim cannot jump a queue by much), and never in the future; now if unknown."""
    now = datetime.now(timezone.utc).timestamp()
    return f"{min(now, max(now - 3600, submitted or now)):.6f}"


class _Election(leaderelection.LeaderElection):
    """The client's leader election, which stops trying (and renewing) once its admitter stops:
    the client's own loops never end."""

    def __init__(self, config, stopped: Callable[[], bool]):
        super().__init__(config)
        self.stopped = stopped

    def try_acquire_or_renew(self):
        return not self.stopped() and super().try_acquire_or_renew()

    def acquire(self):
        while not self.stopped():
            if self.try_acquire_or_renew():
                return True
            time.sleep(self.election_config.retry_period)
        return False


class Admitter:
    """Admits queued Jobs of the namespace (or of one owner, in direct mode) whenever a Job
    changes, and every `resync` seconds. With `elect`, only while this process holds the Lease."""

    LEASE_SECONDS, RENEW_SECONDS, RETRY_SECONDS = 15, 10, 2

    def __init__(self, clients, namespace: str, cap: Callable[[], int], username: Optional[str] = None,
                 elect: bool = True, resync: float = 10, lease: str = LEASE_NAME):
        """username: None admits every user's Jobs (the gateway); a name (which may be empty),
        only that owner's (a server in direct mode)."""
        self.clients, self.namespace, self.cap, self.username = clients, namespace, cap, username
        self.elect, self.resync, self.lease = elect, resync, lease
        self.identity = f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"
        self._changed = threading.Event()
        self._stop = threading.Event()
        self._leading = threading.Event()
        self._election = None
        self.threads: List[threading.Thread] = []

    # ---- one pass ---------------------------------------------------------------------------
    def admit_once(self) -> int:
        """Lists the Jobs, admits what may run, notes why the rest waits. Returns how many it admitted."""
        jobs = [j for j in self.clients.batch.list_namespaced_job(
            self.namespace, label_selector=names.queue_selector(self.username)).items
            if self.username is None or owner(j) == self.username]
        cap = self.cap()
        chosen = admissions(jobs, cap)
        admitted = 0
        for job in chosen:
            if not self.may_act():
                return admitted
            if self._patch(job, admit_patch()):
                admitted += 1
                log.info("admitted %s of %s", job.metadata.name, owner(job))
        for name, message in waiting_notes(jobs, cap, chosen).items():
            if not self.may_act():
                break
            self._patch_named(name, note_patch(message))
        return admitted

    def _patch(self, job, body) -> bool:
        return self._patch_named(job.metadata.name, body)

    def _patch_named(self, name: str, body) -> bool:
        try:
            self.clients.batch.patch_namespaced_job(name, self.namespace, body)
            return True
        except ApiException as e:
            if e.status != 404:  # a Job deleted meanwhile is no longer queued
                raise
            return False

    def may_act(self) -> bool:
        """Leading, and the Lease renewed recently enough that no other replica can hold it yet."""
        if self._stop.is_set():
            return False
        if not self.elect:
            return True
        election = self._election
        if not self._leading.is_set() or election is None:
            return False
        renewed = election.observed_time_milliseconds / 1000
        return time.time() - renewed < self.RENEW_SECONDS

    # ---- threads ----------------------------------------------------------------------------
    def start(self) -> "Admitter":
        self.threads = [threading.Thread(target=self._watch, name="jsk8s-queue-watch", daemon=True),
                        threading.Thread(target=self._loop, name="jsk8s-queue", daemon=True)]
        if self.elect:
            self.threads.append(threading.Thread(target=self._campaign, name="jsk8s-queue-lease", daemon=True))
        for thread in self.threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._changed.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._changed.wait(self.resync)
            self._changed.clear()
            if self._stop.is_set():
                return
            if not self.may_act():
                continue
            try:
                self.admit_once()
            except Exception:  # noqa: BLE001 - the next change or resync tries again
                log.exception("the queue's admission pass failed")
                self._stop.wait(2)

    def _watch(self) -> None:
        """Any change of a queued or running Job is a reason to look again."""
        while not self._stop.is_set():
            try:
                stream = k8s_watch.Watch().stream(
                    self.clients.batch.list_namespaced_job, self.namespace,
                    label_selector=names.queue_selector(self.username), timeout_seconds=60)
                for _ in stream:
                    self._changed.set()
                    if self._stop.is_set():
                        return
            except Exception as e:  # noqa: BLE001 - watch again; the resync covers the gap
                log.warning("the queue's Job watch ended: %s", e)
                self._stop.wait(2)

    def _campaign(self) -> None:
        """Stands for the Lease again and again: a replica that loses it becomes a candidate."""
        while not self._stop.is_set():
            lock = LeaseLock(self.lease, self.namespace, self.identity)
            lock.api_instance = CoordinationV1Api(self.clients.api_client)  # our timeouts and retries
            config = electionconfig.Config(lock, lease_duration=self.LEASE_SECONDS, renew_deadline=self.RENEW_SECONDS,
                                           retry_period=self.RETRY_SECONDS, onstarted_leading=self._lead,
                                           onstopped_leading=self._leading.clear)
            self._election = _Election(config, self._stop.is_set)
            try:
                self._election.run()
            except Exception:  # noqa: BLE001 - stand again
                log.exception("the queue's leader election failed")
            self._leading.clear()
            self._stop.wait(self.RETRY_SECONDS)

    def _lead(self) -> None:
        log.info("%s admits the queue's jobs (holds Lease %s)", self.identity, self.lease)
        self._leading.set()
        self._changed.set()
        # The lead lasts while the election's thread renews the Lease (returning would end it).
        while self._leading.is_set() and not self._stop.is_set():
            self._stop.wait(1)


def queue_note(job) -> Optional[str]:
    """The message of a queued Job: the admitter's, or a general one before it has written it."""
    if not is_queued(job):
        return None
    return (job.metadata.annotations or {}).get(names.ANNOTATION_WAITING) or "waiting in the queue to start"
