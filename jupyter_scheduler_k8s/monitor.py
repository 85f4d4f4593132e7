"""Drives every in-flight job of one server from a single pod watch and a small worker pool.

The watch thread only reads pod states and asks each job's JobRun what to do next; the blocking
work (creating objects, streaming files, cleaning up) runs in a bounded thread pool, so fifty
jobs cost one watch connection and a handful of threads, not fifty processes, and the server's
event loop never waits on Kubernetes.
"""
import logging
import queue
import threading
from typing import Callable, Dict

from . import names
from .reasons import describe_error
from .lifecycle import Collect, CollectFromVolume, Fail, JobRun, Locate, Outcome, StageIn
from .watch import LIST, TICK, pod_events

log = logging.getLogger(__name__)


class JobMonitor:
    def __init__(self, core_factory: Callable, namespace: str, selector: str,
                 on_outcome: Callable[[JobRun, Outcome], None], workers: int = 4, tick: float = 5):
        self._core_factory, self.namespace, self.selector = core_factory, namespace, selector
        self.on_outcome, self.tick = on_outcome, tick
        self.pool = _Workers(workers)
        self.runs: Dict[str, JobRun] = {}
        self.pods: Dict[str, object] = {}
        self.busy = set()
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
        with self.lock:
            self.pods.pop(job_id, None)
            return self.runs.pop(job_id, None)

    def tracked(self, job_id: str) -> bool:
        with self.lock:
            return job_id in self.runs

    def in_background(self, task: Callable[[], None]) -> None:
        """Runs a task on the job workers (e.g. collecting a stopped job's partial outputs)."""
        self.pool.submit(task)

    def start(self) -> None:
        with self.lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._watch, name="jsk8s-watch", daemon=True)
                self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    # ---- the watch ----------------------------------------------------------------------------
    def _watch(self) -> None:
        core = self._core_factory()
        while not self._stop.is_set():
            try:
                for kind, obj in pod_events(core, self.namespace, self.selector, self.tick, self._stop.is_set):
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
            if run is None or job_id in self.busy:
                return
            pod = self.pods.get(job_id)
        try:
            step = run.decide(pod)
        except Exception:
            log.exception("job %s: cannot read its pod state", job_id)
            return
        if isinstance(step, StageIn):
            self._act(run, lambda: run.stage_in(step.pod))
        elif isinstance(step, Locate):
            self._act(run, lambda: self._located(run))
        elif isinstance(step, (Collect, CollectFromVolume, Fail)):
            self._act(run, lambda: self._finish(run, step), final=True)

    def _located(self, run: JobRun) -> None:
        step = run.locate()
        if step is not None:
            self._finish(run, step)

    def _finish(self, run: JobRun, step) -> None:
        try:
            outcome = run.finish(step)
        except Exception as e:  # noqa: BLE001 - the job must still end, with a reason
            log.exception("job %s: finishing failed", run.job.job_id)
            outcome = Outcome("failed", f"the backend could not finish the job: {describe_error(e)}")
        self._conclude(run, outcome)

    def _conclude(self, run: JobRun, outcome: Outcome) -> None:
        """Records the outcome while the job is still tracked, so the scheduler's recovery never
        sees it untracked yet still in progress; a job untracked meanwhile (stopped, deleted)
        takes no outcome."""
        if self.tracked(run.job.job_id):
            self.on_outcome(run, outcome)
        self.untrack(run.job.job_id)

    def _act(self, run: JobRun, action: Callable[[], None], final: bool = False) -> None:
        job_id = run.job.job_id
        with self.lock:
            if job_id in self.busy:
                return
            self.busy.add(job_id)

        def work():
            try:
                action()
            except Exception as e:  # noqa: BLE001
                log.exception("job %s: step failed", job_id)
                if self.tracked(job_id):
                    run._delete_quietly()
                    self._conclude(run, Outcome("failed", f"the backend failed: {describe_error(e)}"))
            finally:
                with self.lock:
                    self.busy.discard(job_id)
                if not final:
                    self._evaluate(job_id)  # the pod may have moved on while we worked

        self.pool.submit(work)


class _Workers:
    """A fixed set of daemon threads. (ThreadPoolExecutor's threads are joined at interpreter
    exit, so one transfer stuck on a dead connection would hold the server's shutdown.)"""

    def __init__(self, count: int):
        self.tasks = queue.SimpleQueue()
        for i in range(count):
            threading.Thread(target=self._serve, name=f"jsk8s-job-{i}", daemon=True).start()

    def submit(self, task: Callable[[], None]) -> None:
        self.tasks.put(task)

    def _serve(self):
        while True:
            self.tasks.get()()


def names_job_id(pod) -> str:
    return (pod.metadata.labels or {}).get(names.LABEL_JOB_ID, "")
