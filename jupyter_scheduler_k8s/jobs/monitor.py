"""Drives every in-flight job of one server from a single pod watch and a small worker pool.

The watch thread only reads pod states and asks each job's JobRun what to do next; the blocking
work (creating objects, streaming files, cleaning up) runs in a bounded thread pool, so fifty
jobs cost one watch connection and a handful of threads, not fifty processes, and the server's
event loop never waits on Kubernetes.
"""
import logging
import random
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Callable, Dict

from kubernetes.client.rest import ApiException

from ..kube import names
from ..kube.base import Driver
from ..kube.reasons import describe_error
from ..kube.transfer import CommandFailed
from ..kube.watch import LIST, TICK
from .lifecycle import JobRun
from .steps import (
    STEP_ATTEMPTS, Collect, CollectFromVolume, Fail, JobFailed, Locate, Outcome, Submit, is_transient,
)

log = logging.getLogger(__name__)


class JobMonitor:
    def __init__(self, driver: Driver, on_outcome: Callable[[JobRun, Outcome], None], workers: int = 4, tick: float = 5):
        self.driver, self.on_outcome, self.tick = driver, on_outcome, tick
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="jsk8s-job")
        self.runs: Dict[str, JobRun] = {}
        self.pods: Dict[str, object] = {}
        self.busy: Dict[str, Future] = {}  # job id -> the step queued or running for it (one at most)
        self.failures: Dict[str, int] = {}  # consecutive failed steps
        self.retry_at: Dict[str, float] = {}  # no step before this time (after a failed one)
        self.lock = threading.RLock()
        self._stop = threading.Event()
        self._thread = None

    # ---- bookkeeping --------------------------------------------------------------------------
    def track(self, run: JobRun, submit: bool = True) -> None:
        with self.lock:
            self.runs[run.job.job_id] = run
        self.start()
        if submit:
            self._act(run, run.submit)
        else:
            self._evaluate(run.job.job_id)

    def untrack(self, job_id: str):
        """Lets a job go (stopped, deleted or ended); work still queued for it is dropped."""
        with self.lock:
            self.pods.pop(job_id, None)
            self.failures.pop(job_id, None)
            self.retry_at.pop(job_id, None)
            return self.runs.pop(job_id, None)

    def wait_idle(self, job_id: str, timeout: float) -> None:
        """Waits for the step in progress for a job, if any, to end (e.g. before deleting its files)."""
        with self.lock:
            future = self.busy.get(job_id)
        if future is not None:
            wait([future], timeout)

    def tracked(self, job_id: str) -> bool:
        with self.lock:
            return job_id in self.runs

    def in_background(self, task: Callable[[], None]) -> None:
        """Runs a task on the job workers (e.g. collecting a stopped job's partial outputs)."""
        self.pool.submit(_logged(task))

    def start(self) -> None:
        with self.lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._watch, name="jsk8s-watch", daemon=True)
                self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.pool.shutdown(wait=False, cancel_futures=True)

    # ---- the watch ----------------------------------------------------------------------------
    def _watch(self) -> None:
        while not self._stop.is_set():
            try:
                for kind, obj in self.driver.pod_events(None, names.COMPONENT_JOB, self.tick, self._stop.is_set):
                    self._on_event(kind, obj)
            except Exception:  # keep monitoring: a broken watch must not strand the jobs
                log.exception("job watch failed; restarting it")
                self._stop.wait(2)

    def _on_event(self, kind, obj) -> None:
        if kind == LIST:
            with self.lock:
                self.pods = {names_job_id(p): p for p in obj if names_job_id(p)}
                ids = list(self.runs)
        elif kind == TICK:
            with self.lock:
                ids = list(self.runs)
        else:
            job_id = names_job_id(obj)
            if not job_id:
                return
            with self.lock:
                if kind == "DELETED":
                    self.pods.pop(job_id, None)
                else:
                    self.pods[job_id] = obj
            ids = [job_id]
        for job_id in ids:
            self._evaluate(job_id)

    def _evaluate(self, job_id: str) -> None:
        with self.lock:
            run = self.runs.get(job_id)
            if run is None or job_id in self.busy or time.monotonic() < self.retry_at.get(job_id, 0):
                return
            pod = self.pods.get(job_id)
        try:
            step = run.decide(pod)
        except Exception:
            log.exception("job %s: cannot read its pod state", job_id)
            return
        if isinstance(step, Submit):
            self._act(run, run.submit)
        elif isinstance(step, Locate):
            self._act(run, lambda: self._located(run))
        elif isinstance(step, (Collect, CollectFromVolume, Fail)):
            self._act(run, lambda: self._finish(run, step), final=True)

    def _located(self, run: JobRun) -> None:
        step = run.locate()
        if isinstance(step, Submit):
            run.submit()
        elif step is not None:
            self._finish(run, step)

    def _finish(self, run: JobRun, step) -> None:
        outcome = run.finish(step)
        self._conclude(run, outcome)

    def _conclude(self, run: JobRun, outcome: Outcome) -> None:
        """Records the outcome while the job is still tracked, so the scheduler's recovery never
        sees it untracked yet still in progress, and only then deletes the job's objects. A job
        untracked meanwhile (stopped, deleted) takes no outcome: whoever let it go decides."""
        if self.tracked(run.job.job_id):
            log.info("job %s: %s%s", run.job.job_id, outcome.status, f": {outcome.message}" if outcome.message else "")
            self.on_outcome(run, outcome)
        run.cleanup_quietly(outcome)
        self.untrack(run.job.job_id)

    def _act(self, run: JobRun, action: Callable[[], None], final: bool = False) -> None:
        job_id = run.job.job_id
        with self.lock:
            if job_id in self.busy:
                return

            def work():
                try:
                    if self.runs.get(job_id) is run:  # not stopped or deleted while it waited
                        action()
                        with self.lock:
                            self.failures.pop(job_id, None)
                            self.retry_at.pop(job_id, None)
                except Exception as e:  # noqa: BLE001 - the pool's threads never die; the job is tried again
                    self._step_failed(run, e)
                finally:
                    with self.lock:
                        self.busy.pop(job_id, None)
                    if not final and not self._stop.is_set():
                        self._evaluate(job_id)  # the pod may have moved on while we worked

            self.busy[job_id] = self.pool.submit(work)

    def _step_failed(self, run: JobRun, error: Exception) -> None:
        """A step that failed for a reason that may pass is tried again later (every step is
        idempotent), after a growing pause; one that keeps failing ends the job, keeping its
        volume, where outputs may already be. Any other error ends the job at once."""
        job_id = run.job.job_id
        if not self.tracked(job_id):
            return
        if not is_transient(error):
            log.warning("job %s: step failed: %s", job_id, describe_error(error), exc_info=not isinstance(
                error, (JobFailed, CommandFailed, ApiException)))
            message = str(error) if isinstance(error, (JobFailed, CommandFailed)) else describe_error(error)
            self._conclude(run, Outcome("failed", message))
            return
        with self.lock:
            count = self.failures[job_id] = self.failures.get(job_id, 0) + 1
            self.retry_at[job_id] = time.monotonic() + min(30, 2 ** count) * random.uniform(0.5, 1)
        log.warning("job %s: step failed (%d of %d): %s", job_id, count, STEP_ATTEMPTS, describe_error(error))
        if count >= STEP_ATTEMPTS:
            self._conclude(run, Outcome(
                "failed", f"the backend failed {count} times in a row: {describe_error(error)} (the job's volume "
                f"{run.name} in namespace {run.namespace} is kept until the job is deleted)", keep_volume=True))


def _logged(task: Callable[[], None]) -> Callable[[], None]:
    def logged():
        try:
            task()
        except Exception:  # noqa: BLE001 - a background task's failure is logged, never lost
            log.exception("background task failed")
    return logged


def names_job_id(pod) -> str:
    return (pod.metadata.labels or {}).get(names.LABEL_JOB_ID, "")
