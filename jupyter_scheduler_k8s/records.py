"""The job list's records (jupyter-scheduler's database) as the backend ends them, and the rounds
that keep them in step with Kubernetes: recovery of jobs in flight (scheduler.py) and the import
of scheduled runs (definitions.py)."""
import logging
import threading
from typing import Callable, Optional

from jupyter_scheduler.models import Status
from jupyter_scheduler.orm import Job
from jupyter_scheduler.utils import get_utc_timestamp

from .kube import reasons

# A job in flight; a stop under way is one too, for whatever ends it.
ACTIVE = (Status.CREATED, Status.QUEUED, Status.IN_PROGRESS)
IN_FLIGHT = ACTIVE + (Status.STOPPING,)
STOPPED_BY_USER = "stopped by the user"


def end(db_session, job_id: str, status: Status, message: str = "", end_time: int = 0, among=ACTIVE) -> None:
    """Ends the job's record with `status` and the user's `message`, if its status is still one of
    `among` (None: whatever it is): a stop that raced an outcome wins, and an ended job stays as
    it ended."""
    with db_session() as session:
        query = session.query(Job).filter(Job.job_id == job_id)
        if among is not None:
            query = query.filter(Job.status.in_(among))
        query.update(
            {"status": status, "end_time": end_time or get_utc_timestamp(),
             "status_message": reasons.short(message) if message else None}, synchronize_session=False)
        session.commit()


def queued(db_session, job_id: str, message: Optional[str]) -> None:
    """QUEUED with the queue's message while the job waits for a slot; IN_PROGRESS once it is
    admitted. Only a job still in one of those two states changes: a stop wins."""
    with db_session() as session:
        session.query(Job).filter(Job.job_id == job_id, Job.status.in_((Status.QUEUED, Status.IN_PROGRESS))).update(
            {"status": Status.QUEUED if message else Status.IN_PROGRESS,
             "status_message": reasons.short(message) if message else None}, synchronize_session=False)
        session.commit()


class Rounds:
    """`work()` on a daemon thread of its own, at once and then every `interval()` seconds until
    stop(). A round that fails is logged ("<what> failed"), and the next one comes."""

    def __init__(self, name: str, what: str, work: Callable[[], object], interval: Callable[[], float],
                 log: logging.Logger):
        self.what, self.work, self.interval, self.log = what, work, interval, log
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.work()
            except Exception:  # noqa: BLE001 - try again next round
                self.log.exception("%s failed", self.what)
            self._stop.wait(self.interval())

    def stop(self, wait: float = 0) -> None:
        self._stop.set()
        if wait:
            self.thread.join(wait)
