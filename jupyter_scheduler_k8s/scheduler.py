"""K8sScheduler: jupyter-scheduler's Scheduler, with jobs that live on Kubernetes.

Configure with `c.SchedulerApp.scheduler_class = "jupyter_scheduler_k8s.scheduler.K8sScheduler"`
(the Helm chart does). The DB, the REST API and the staging layout stay jupyter-scheduler's; what
changes is that no process is spawned per job. One JobMonitor in the server follows every job,
`stop_job` and `delete_job` act on the Kubernetes objects, and jobs that were in flight when the
server went away are picked up again when it starts.
"""
import asyncio
import inspect
import logging
import os
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Optional

from jupyter_core.paths import jupyter_data_dir, jupyter_runtime_dir
from jupyter_scheduler.exceptions import InputUriError
from jupyter_scheduler.models import CreateJob, DescribeJob, JobFeature, Status
from jupyter_scheduler.orm import Job
from jupyter_scheduler.scheduler import Scheduler
from jupyter_scheduler.utils import get_utc_timestamp
from traitlets import Int, default

from .config import K8sConfig, UnknownProfileError, resolve_profile
from .definitions import Definitions
from .executors import K8sExecutionManager, supported_features
from .extension import InvalidRequest
from .jobs.lifecycle import JobRun
from .jobs.steps import LOG_FORMAT, NotebookJob, Outcome
from .jobs.monitor import JobMonitor
from .kube import names, reasons
from .modes import make_admitter, make_driver
from .records import IN_FLIGHT, STOPPED_BY_USER, Rounds, end, queued


def managed_supported_features(cls):
    """With K8sScheduler, stop and delete act on the Kubernetes Job, and timeouts come from
    compute profiles and config."""
    features = supported_features(cls)
    features.update({JobFeature.stop_job: True, JobFeature.delete_job: True, JobFeature.timeout_seconds: True})
    return features


class ManagedK8sExecutionManager(K8sExecutionManager):
    """The execution manager as K8sScheduler runs it: in the server, driven by the JobMonitor."""
    supported_features = managed_supported_features


def _log_to(server_log: logging.Logger) -> None:
    """Sends the package's messages (job steps, retries, recovery) to the server's own log,
    where an operator looks; without this, Python keeps only warnings, on bare stderr."""
    package = logging.getLogger(__package__)
    if server_log is package or package.handlers or not server_log.handlers:
        return
    for handler in server_log.handlers:
        package.addHandler(handler)
    package.setLevel(server_log.getEffectiveLevel())
    package.propagate = False


class K8sScheduler(Scheduler):
    recovery_interval_seconds = Int(60, config=True, help="""
        How often jobs the database holds as in progress are matched against Kubernetes, besides
        at start-up, so that nothing stays IN_PROGRESS after its Job is gone.""")

    worker_threads = Int(4, config=True, help="""
        Threads that stage inputs and collect outputs for all jobs of this server. Jobs are
        followed by one watch whatever their number; this bounds the concurrent transfers.""")

    @default("execution_manager_class")
    def _default_execution_manager(self):
        return ManagedK8sExecutionManager

    def __init__(self, *args, backend_id: Optional[str] = None, **kwargs):
        # jupyter-scheduler 3.0 (several backends) builds each backend's scheduler with its id;
        # 2.x knows no such keyword, and traitlets would only warn about an unknown one.
        if backend_id is not None and "backend_id" in inspect.signature(Scheduler.__init__).parameters:
            kwargs["backend_id"] = backend_id
        super().__init__(*args, **kwargs)
        self.backend_id = backend_id
        if self.execution_manager_class is K8sExecutionManager:
            # The chart names K8sExecutionManager; under this scheduler it can stop and delete.
            self.execution_manager_class = ManagedK8sExecutionManager
        _log_to(self.log)
        self.k8s = K8sConfig(parent=self)
        self.driver = make_driver(self.k8s, queued=True)
        # Direct mode: this server admits its user's queue (in hub mode the gateway does).
        self.admitter = make_admitter(self.driver, self.k8s)
        self.monitor = JobMonitor(self.driver, lambda run, outcome: self.record_outcome(run.job.job_id, outcome),
                                  workers=self.worker_threads)
        # Held from a job's DB insert until the monitor tracks it, and while recovery decides:
        # recovery must never take a job that is still being created for orphaned.
        self._tracking_lock = threading.Lock()
        # stop_job and delete_job call Kubernetes: they run here, never on the server's event loop.
        self._requests = ThreadPoolExecutor(2, thread_name_prefix="jsk8s-request")
        self.recovery = Rounds("jsk8s-recovery", "recovery of in-flight jobs", self.recover,
                               lambda: self.recovery_interval_seconds, self.log)
        # Job definitions are CronJobs (definitions.py), in both modes: the CronJob controller
        # fires them, so the in-server TaskRunner must not as well.
        self.task_runner = None
        self.definitions = Definitions(self, self.record_outcome)

    # ---- jobs in ------------------------------------------------------------------------------
    def create_job(self, model: CreateJob) -> str:
        if not model.job_definition_id and not self.file_exists(model.input_uri):
            raise InputUriError(model.input_uri)
        input_path = os.path.join(self.root_dir, model.input_uri)
        if not self.execution_manager_class.validate(self.execution_manager_class, input_path):
            raise InvalidRequest("The notebook has no kernel (or is not valid JSON). Open it, select a "
                                 "kernel, save, and submit the job again.")
        try:
            resolve_profile(self.k8s, model.compute_type)
        except UnknownProfileError as e:
            raise InvalidRequest(str(e)) from None
        model.output_formats = list(model.output_formats or [])
        if LOG_FORMAT not in model.output_formats:
            model.output_formats.append(LOG_FORMAT)  # the run log is listed with the outputs

        with self._tracking_lock, self.db_session() as session:
            job = Job(**model.dict(exclude_none=True, exclude={"input_uri"}))
            # Not the ORM's default STOPPED (jupyter-scheduler #451): it is on its way.
            job.status = Status.IN_PROGRESS
            job.start_time = get_utc_timestamp()
            session.add(job)
            session.commit()
            staging_paths = self.get_staging_paths(DescribeJob.from_orm(job))
            if model.package_input_folder:
                copied = self.copy_input_folder(model.input_uri, staging_paths["input"])
                job.packaged_files = [f for f in copied if f != os.path.basename(model.input_uri)]
            else:
                self.copy_input_file(model.input_uri, staging_paths["input"])
            session.commit()
            job_id = job.job_id
            self.monitor.track(self._run_for(DescribeJob.from_orm(job), staging_paths))
        return job_id

    def copy_input_folder(self, input_uri: str, nb_copy_to_path: str) -> list:
        """Upstream's copy of the notebook's folder, minus Jupyter's own state when the folder holds
        it. On JupyterHub the folder is often the home directory, which holds the staging area: the
        copy would recurse into its own destination until the path is too long. It also holds the
        scheduler's database and the runtime files with the server's tokens, which no job needs."""
        return package_folder(os.path.dirname(os.path.join(self.root_dir, input_uri)),
                              os.path.dirname(nb_copy_to_path),
                              skip=(self.staging_path, jupyter_data_dir(), jupyter_runtime_dir()))

    def _run_for(self, model: DescribeJob, staging_paths) -> JobRun:
        job = NotebookJob.from_staging_paths(model.job_id, staging_paths, model)
        return JobRun(job, self.k8s, self.driver,
                      on_queued=lambda message: queued(self.db_session, model.job_id, message))

    # ---- jobs out -----------------------------------------------------------------------------
    def _manager(self, job_id: str):
        """The execution manager, used in the server for its DB bookkeeping only."""
        return self.execution_manager_class(job_id=job_id, root_dir=self.root_dir, db_url=self.db_url,
                                            staging_paths={})

    def record_outcome(self, job_id: str, outcome: Outcome, end_time: int = 0) -> None:
        """A job's (or a scheduled run's) outputs and outcome in its record, if it is still in
        flight: a stop that raced the outcome wins."""
        self._manager(job_id).record_files(outcome)
        end(self.db_session, job_id, Status.COMPLETED if outcome.status == "completed" else Status.FAILED,
            outcome.message, end_time)

    def _off_the_loop(self, method, *args):
        """Runs a method that calls Kubernetes on a thread. From the event loop (the REST handlers
        await what they get, through ensure_async) the result is awaitable; from any other thread
        the call waits for it."""
        future = self._requests.submit(method, *args)
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return future.result()
        return asyncio.wrap_future(future)

    def stop_job(self, job_id: str):
        return self._off_the_loop(self._stop_job, job_id)

    def delete_job(self, job_id: str):
        return self._off_the_loop(self._delete_job, job_id)

    def _stop_job(self, job_id: str, collect: bool = True):
        """STOPPED at once; then, in the background, the outputs the notebook had when it was
        interrupted (the executor saves them on SIGTERM) are collected from the PVC, and the PVC
        is deleted. With collect=False (delete_job) the caller removes the objects."""
        with self.db_session() as session:
            record = session.query(Job).filter(Job.job_id == job_id).one()
            if Status(record.status) not in IN_FLIGHT:
                return
            if self._is_scheduled_run(record):
                self.definitions.end_run(DescribeJob.from_orm(record), Status.STOPPED)
                return
            record.status = Status.STOPPING
            session.commit()
            model = DescribeJob.from_orm(record)
        run = self.monitor.untrack(job_id) or self._run_for(model, self.get_staging_paths(model))
        run.stop()
        end(self.db_session, job_id, Status.STOPPED, STOPPED_BY_USER, among=None)
        if collect and run.queued:  # it never ran: there is nothing to collect
            self.monitor.in_background(lambda: self._delete_objects_quietly(job_id))
        elif collect:
            self.monitor.in_background(lambda: self._collect_stopped(run))

    def _collect_stopped(self, run: JobRun) -> None:
        try:
            # A collection that was already under way when the stop came finishes first (and
            # deletes the PVC): the outputs are collected once.
            self.monitor.wait_idle(run.job.job_id, timeout=300)
            self.driver.wait_for_pod(run.job.job_id, names.COMPONENT_JOB, lambda pod: True if pod is None else None,
                                     timeout=60)
            if self.driver.volume_exists(run.job.job_id):
                result, written = run.collect_from_volume()
                outcome = run.outcome(result, written)
                self._manager(run.job.job_id).record_files(outcome)
        except Exception:  # noqa: BLE001 - the job is stopped either way; only its leftovers matter
            self.log.exception("collecting the partial outputs of stopped job %s failed", run.job.job_id)
        finally:
            self._delete_objects_quietly(run.job.job_id)

    def _delete_job(self, job_id: str):
        """Removes every Kubernetes object of the job, its staging files and its record,
        whatever state it is in."""
        with self.db_session() as session:
            record = session.query(Job).filter(Job.job_id == job_id).one()
            model = DescribeJob.from_orm(record)
        if self._is_scheduled_run(model):
            # Its Job is the CronJob's; one that ended was deleted when the run was imported.
            if model.status in IN_FLIGHT:
                self.definitions.end_run(model, Status.STOPPED)
        else:
            if model.status in IN_FLIGHT:
                self._stop_job(job_id, collect=False)
            self.monitor.untrack(job_id)  # a job that ended has nothing tracked; one that is ending is let go
            self.monitor.wait_idle(job_id, timeout=300)  # a collection under way must not write after the rmtree
            self.driver.delete(job_id)
        staging_paths = self.get_staging_paths(model)
        if staging_paths:
            shutil.rmtree(os.path.dirname(staging_paths["input"]), ignore_errors=True)
        with self.db_session() as session:
            session.query(Job).filter(Job.job_id == job_id).delete()
            session.commit()

    def _fail(self, job_id: str, message: str) -> None:
        """Ends a job that cannot go on as FAILED, and removes whatever it has on the cluster."""
        end(self.db_session, job_id, Status.FAILED, message, among=IN_FLIGHT)
        self._delete_objects_quietly(job_id)

    def _delete_objects_quietly(self, job_id: str) -> None:
        try:
            self.driver.delete(job_id)
        except Exception:  # noqa: BLE001 - the job's outcome stands; the Job's TTL is the backstop
            self.log.exception("could not delete the Kubernetes objects of job %s", job_id)

    # ---- recovery -----------------------------------------------------------------------------
    def recover(self) -> int:
        """Takes up jobs the DB holds as in flight that no monitor follows: after a restart their
        Jobs may still run, have finished, or be gone. Returns how many were taken up."""
        with self._tracking_lock:
            with self.db_session() as session:
                records = session.query(Job).filter(Job.status.in_(IN_FLIGHT)).all()
                models = [DescribeJob.from_orm(r) for r in records]
            models = [m for m in models if not self.monitor.tracked(m.job_id) and not self._is_scheduled_run(m)]
        taken = 0
        for model in models:
            # One job that cannot be recovered must not hold up the others.
            try:
                taken += self._recover_one(model)
            except Exception as e:  # noqa: BLE001 - the job ends with the reason; the round goes on
                self.log.exception("recovery of job %s failed", model.job_id)
                what = "stopped" if model.status == Status.STOPPING else "recovered after a server restart"
                self._fail(model.job_id, f"the job could not be {what}: {reasons.describe_error(e)}")
        if models:
            self.log.info("recovery: took up %d of %d jobs in flight that no monitor followed", taken, len(models))
        return taken

    def _recover_one(self, model: DescribeJob) -> int:
        if model.status == Status.STOPPING:
            self._stop_job(model.job_id)
            return 0
        run = self._run_for(model, self.get_staging_paths(model))
        if run.profile_error:
            self._fail(model.job_id, f"the job could not be recovered after a server restart: {run.profile_error}")
            return 0
        run.recovered = True
        self.monitor.track(run, submit=False)
        return 1

    def _is_scheduled_run(self, record) -> bool:
        """A CronJob's run: the import round follows it, not the monitor or recovery."""
        return bool(record.job_definition_id)

    # ---- job definitions: CronJobs (definitions.py); upstream keeps their records -------------
    def create_job_definition(self, model):
        return self._off_the_loop(self.definitions.create, model, super().create_job_definition,
                                  super().delete_job_definition)

    def update_job_definition(self, job_definition_id: str, model):
        return self._off_the_loop(self.definitions.update, job_definition_id, model, super().update_job_definition)

    def delete_job_definition(self, job_definition_id: str):
        return self._off_the_loop(self.definitions.delete, job_definition_id, self._delete_job,
                                  super().delete_job_definition)

    def create_job_from_definition(self, job_definition_id: str, model):
        return self._off_the_loop(self.definitions.run_now, job_definition_id, model)

    def shutdown(self) -> None:
        if self.admitter is not None:
            self.admitter.stop()
        self.recovery.stop()
        self.definitions.imports.stop()
        self.monitor.stop()
        self._requests.shutdown(wait=False, cancel_futures=True)


def package_folder(source_dir: str, staging_dir: str, skip=()) -> list:
    """Copies source_dir's content into staging_dir, leaving out the paths in `skip` (and whatever
    they hold). Returns the copied files' paths relative to staging_dir."""
    skipped = {os.path.realpath(path) for path in skip}

    def ignore(directory, entries):
        return [e for e in entries if os.path.realpath(os.path.join(directory, e)) in skipped]

    shutil.copytree(source_dir, staging_dir, ignore=ignore, dirs_exist_ok=True)
    return sorted(os.path.relpath(os.path.join(d, f), staging_dir)
                  for d, _, files in os.walk(staging_dir) for f in files)
