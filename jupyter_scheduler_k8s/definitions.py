"""K8sScheduler's job definitions: CronJobs that run whether or not the user's server is up.

jupyter-scheduler fires definitions from a TaskRunner inside the server, so a culled server runs
nothing. Here each definition is a CronJob (schedules.py) and the TaskRunner is off. The server
only keeps its job list in step: every run the CronJob made appears under its definition, first
IN_PROGRESS and then, once it ended, with its outputs, which are imported from the definition's
volume. Runs that happened while the server was down are imported when it is back.

A run's job id is its Kubernetes Job's uid, so a run is imported once whoever sees it first.

`Definitions` is a part of K8sScheduler (`scheduler.definitions`): the scheduler keeps the records
and the staged files (upstream's code, handed in where a step needs it), this the CronJobs and
the runs' import; what it uses of the scheduler is named in `__init__`.
"""
import logging
import os
import shutil
import tempfile
import threading
from typing import Callable, Dict, List

from jupyter_scheduler.exceptions import SchedulerError
from jupyter_scheduler.models import CreateJob, DescribeJob, DescribeJobDefinition, Status
from jupyter_scheduler.orm import Job, JobDefinition
from jupyter_scheduler.utils import create_output_filename, get_utc_timestamp

from .config import UnknownProfileError, resolve_profile
from .extension import InvalidRequest
from .jobs.steps import LOG_FORMAT, Outcome, is_transient
from .kube import names, queue, reasons, transfer
from .kube.base import NotFound, OverLimit
from .kube.schedules import Definition, ScheduleError, check_timezone, input_files, is_finished
from .modes import make_schedules
from .records import ACTIVE, IN_FLIGHT, STOPPED_BY_USER, Rounds, end, queued

log = logging.getLogger(__name__)
GONE = "the run's Kubernetes Job is gone (deleted, or older than the schedule's retention) before its outputs were imported"


def _millis(moment) -> int:
    return int(moment.timestamp() * 1000) if moment else get_utc_timestamp()


class Definitions:
    def __init__(self, scheduler, record_outcome: Callable[[str, Outcome, int], None]):
        # What is used of the scheduler: its DB, staging area, root dir, configuration, driver,
        # execution manager (to validate a notebook) and upstream's get_job_definition.
        self.db_session, self.get_staging_paths = scheduler.db_session, scheduler.get_staging_paths
        self.get_job_definition = scheduler.get_job_definition
        self.root_dir, self.staging_path, self.k8s = scheduler.root_dir, scheduler.staging_path, scheduler.k8s
        self.execution_manager_class = scheduler.execution_manager_class
        self.record_outcome = record_outcome
        self.schedules = make_schedules(scheduler.driver)
        # Held while runs are imported, and by whatever adds, stops or deletes a run, so that a
        # run is neither imported twice nor brought back after it was deleted.
        self._import_lock = threading.Lock()
        self.imports = Rounds("jsk8s-import", "importing scheduled runs", self.import_runs,
                              lambda: self.k8s.schedule_import_interval_seconds, log)

    # ---- definitions in ------------------------------------------------------------------------
    def _definition(self, model: DescribeJobDefinition) -> Definition:
        paths = self.get_staging_paths(model)
        return Definition(
            definition_id=model.job_definition_id, name=model.name or "", input_file=model.input_filename,
            outputs={fmt: os.path.basename(p) for fmt, p in paths.items() if fmt not in ("input", LOG_FORMAT)},
            log_name=create_output_filename(model.input_filename, model.create_time, LOG_FORMAT),
            schedule=model.schedule, timezone=model.timezone, active=bool(model.active),
            parameters=dict(model.parameters or {}), compute_type=model.compute_type,
            environment=model.runtime_environment_name)

    def _check_definition(self, schedule, time_zone, compute_type, input_path=None) -> None:
        if not schedule:
            raise InvalidRequest("A job definition needs a schedule (a cron expression such as '0 8 * * *').")
        if input_path and not self.execution_manager_class.validate(self.execution_manager_class, input_path):
            raise InvalidRequest("The notebook has no kernel (or is not valid JSON). Open it, select a "
                                 "kernel, save, and create the job definition again.")
        try:
            resolve_profile(self.k8s, compute_type)
            check_timezone(time_zone)
        except (UnknownProfileError, ScheduleError) as e:
            raise InvalidRequest(str(e)) from None

    def _snapshot_source(self, model: DescribeJobDefinition):
        staging_dir = os.path.dirname(self.get_staging_paths(model)["input"])
        return staging_dir, input_files(staging_dir, bool(model.package_input_folder), model.input_filename)

    def create(self, model, add_record: Callable, delete_record: Callable) -> str:
        """A definition: its record and staged inputs (upstream's `add_record`), then its volume,
        snapshot and CronJob; on a failure, none of them."""
        self._check_definition(model.schedule, model.timezone, model.compute_type,
                               os.path.join(self.root_dir, model.input_uri))
        definition_id = add_record(model)
        try:
            described = self.get_job_definition(definition_id)
            definition, profile = self._definition(described), resolve_profile(self.k8s, described.compute_type)
            root, files = self._snapshot_source(described)
            self.schedules.create(definition, profile)  # suspended until its inputs are on the volume
            self.schedules.snapshot(definition_id, definition.environment, root, files)
            self.schedules.update(definition, profile)
        except Exception as e:
            self._remove_definition_quietly(definition_id)
            delete_record(definition_id)
            shutil.rmtree(os.path.join(self.staging_path, definition_id), ignore_errors=True)
            if isinstance(e, (ScheduleError, OverLimit)):
                raise InvalidRequest(str(e)) from None
            raise SchedulerError(f"The job definition could not be created on Kubernetes: {reasons.describe_error(e)}") from e
        return definition_id

    def update(self, job_definition_id: str, model, update_record: Callable) -> None:
        current = self.get_job_definition(job_definition_id)
        self._check_definition(model.schedule or current.schedule,
                               model.timezone if model.timezone is not None else current.timezone,
                               model.compute_type or current.compute_type,
                               os.path.join(self.root_dir, model.input_uri) if model.input_uri else None)
        update_record(job_definition_id, model)
        described = self.get_job_definition(job_definition_id)
        try:
            if model.input_uri:
                root, files = self._snapshot_source(described)
                self.schedules.snapshot(job_definition_id, described.runtime_environment_name, root, files)
            self.schedules.update(self._definition(described), resolve_profile(self.k8s, described.compute_type))
        except ScheduleError as e:
            raise InvalidRequest(str(e)) from None
        except NotFound as e:
            raise SchedulerError(f"The job definition's CronJob is gone ({e}); delete the definition and create it again.") from None

    def delete(self, job_definition_id: str, delete_job: Callable[[str], None], delete_record: Callable) -> None:
        """The CronJob first, so that no new run starts (its Jobs and pods go with it); then each
        run (`delete_job`, on this thread: upstream's delete_job for each would queue behind this
        very request on the request threads), and the record."""
        self.schedules.delete(job_definition_id)
        with self.db_session() as session:
            runs = [job_id for (job_id,) in session.query(Job.job_id).filter(Job.job_definition_id == job_definition_id)]
        for job_id in runs:
            delete_job(job_id)
        delete_record(job_definition_id)
        shutil.rmtree(os.path.join(self.staging_path, job_definition_id), ignore_errors=True)

    def _remove_definition_quietly(self, definition_id: str) -> None:
        try:
            self.schedules.delete(definition_id)
        except Exception:  # noqa: BLE001 - the caller reports the first error
            log.exception("could not remove the Kubernetes objects of job definition %s", definition_id)

    def run_now(self, job_definition_id: str, model) -> str:
        """"Run now": a Job from the CronJob's template, listed at once as IN_PROGRESS."""
        definition = self.get_job_definition(job_definition_id)
        overrides = model.dict(exclude_none=True) if model is not None else {}
        with self._import_lock:
            try:
                job = self.schedules.run_now(job_definition_id, overrides.get("parameters"))
            except NotFound as e:
                raise SchedulerError(f"The job definition's CronJob is gone ({e}).") from None
            return self._add_run(definition, job, overrides)

    # ---- runs in the job list --------------------------------------------------------------------
    def _add_run(self, definition: DescribeJobDefinition, job, overrides=None) -> str:
        """The run's record, IN_PROGRESS, with the definition's settings; its input is the
        definition's staged notebook."""
        attributes = definition.dict(exclude={"schedule", "timezone", "active", "job_definition_id", "create_time",
                                              "update_time", "url", "packaged_files"}, exclude_none=True)
        attributes.update(overrides or {})
        attributes["output_formats"] = list(dict.fromkeys([*(attributes.get("output_formats") or []), LOG_FORMAT]))
        attributes["input_uri"] = definition.input_filename
        create = CreateJob(**attributes)
        started = job.status.start_time if job.status else None
        with self.db_session() as session:
            record = Job(**create.dict(exclude_none=True, exclude={"input_uri"}))
            record.job_id = job.metadata.uid
            record.job_definition_id = definition.job_definition_id
            record.status = Status.IN_PROGRESS
            record.create_time = _millis(job.metadata.creation_timestamp)
            record.start_time = _millis(started or job.metadata.creation_timestamp)
            session.add(record)
            session.commit()
            described = DescribeJob.from_orm(record)
        source = os.path.join(self.staging_path, definition.job_definition_id, definition.input_filename)
        target = self.get_staging_paths(described)["input"]
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if os.path.isfile(source):
            shutil.copyfile(source, target)
        return described.job_id

    def import_runs(self) -> int:
        """Lists the runs of this server's definitions, adds new ones, imports those that ended and
        fails those whose Job is gone. Returns how many were imported."""
        with self._import_lock:
            runs = self.schedules.list_runs()
            with self.db_session() as session:
                definitions = {d.job_definition_id: DescribeJobDefinition.from_orm(d)
                               for d in session.query(JobDefinition).all()}
                known = {j.job_id: Status(j.status) for j in
                         session.query(Job).filter(Job.job_definition_id.isnot(None)).all()}
            ended: Dict[str, List] = {}
            seen = set()
            for job in runs:
                definition = definitions.get((job.metadata.labels or {}).get(names.LABEL_DEFINITION_ID, ""))
                if definition is None:
                    continue  # not a definition of this server's
                seen.add(job.metadata.uid)
                if job.metadata.uid not in known:
                    self._add_run(definition, job)
                    known[job.metadata.uid] = Status.IN_PROGRESS
                if is_finished(job) and known[job.metadata.uid] in ACTIVE:
                    ended.setdefault(definition.job_definition_id, []).append(job)
                elif known[job.metadata.uid] in (Status.IN_PROGRESS, Status.QUEUED):
                    # Waiting in the queue (hub mode: runs count against the owner's cap), or admitted.
                    note = queue.queue_note(job)
                    if (known[job.metadata.uid] == Status.QUEUED) != bool(note):
                        queued(self.db_session, job.metadata.uid, note)
            for job_id, status in known.items():
                if status in ACTIVE and job_id not in seen:
                    self.record_outcome(job_id, Outcome("failed", GONE), 0)
            imported = 0
            for definition_id, jobs in ended.items():
                imported += self._import(definitions[definition_id], jobs)
        if imported:
            log.info("imported %d scheduled runs", imported)
        return imported

    def _import(self, definition: DescribeJobDefinition, jobs) -> int:
        self.schedules.start_holder(definition.job_definition_id, definition.runtime_environment_name)
        imported = 0
        try:
            for job in jobs:
                try:
                    self._import_one(definition, job)
                    imported += 1
                except Exception as e:  # noqa: BLE001 - one run must not hold up the others
                    if is_transient(e):
                        log.warning("importing run %s failed, will try again: %s", job.metadata.name,
                                    reasons.describe_error(e))
                        continue
                    log.exception("importing run %s failed", job.metadata.name)
                    self.record_outcome(job.metadata.uid, Outcome(
                        "failed", f"its outputs could not be imported: {reasons.describe_error(e)}"), 0)
                    self.schedules.delete_run(definition.job_definition_id, job.metadata.name)
        finally:
            self.schedules.remove_holder(definition.job_definition_id)
        return imported

    def _import_one(self, definition: DescribeJobDefinition, job) -> None:
        """The run's outputs under the names jupyter-scheduler gives this run, its outcome, and
        then its files on the volume and its Job are removed."""
        with self.db_session() as session:
            model = DescribeJob.from_orm(session.query(Job).filter(Job.job_id == job.metadata.uid).one())
        paths = self.get_staging_paths(model)
        staging_dir = os.path.dirname(paths["input"])
        os.makedirs(staging_dir, exist_ok=True)
        spec = self._definition(definition)
        with tempfile.TemporaryDirectory(dir=staging_dir, prefix=".import-") as tmp:
            try:
                result, written = self.schedules.receive_run(definition.job_definition_id, job.metadata.name, tmp,
                                                             self.k8s.output_size_limit)
            except transfer.CommandFailed:
                result, written = None, []  # no result.json: the pod's or the Job's state says why
            renames = {name: os.path.basename(paths[fmt]) for fmt, name in spec.outputs.items() if fmt in paths}
            renames[spec.log_name] = os.path.basename(paths[LOG_FORMAT])
            outputs, side_effects = [], []
            for rel in written:
                target = renames.get(rel, rel)
                os.makedirs(os.path.dirname(os.path.join(staging_dir, target)), exist_ok=True)
                os.replace(os.path.join(tmp, rel), os.path.join(staging_dir, target))
                (outputs if rel in renames else side_effects).append(target)
        run = (definition.job_definition_id, job.metadata.name)
        if result is None:
            pod_state = self.schedules.run_pod(*run)
            message = (reasons.terminated_problem(pod_state) or reasons.job_problem(job)
                       or "the run ended without a result (its pod was lost or killed)")
            outcome = Outcome("failed", message, outputs, side_effects)
        else:
            problem = reasons.result_problem(result, self.schedules.run_pod(*run) if result.get("status") != "completed" else None)
            outcome = Outcome("failed" if problem else "completed", problem or "", outputs, side_effects)
        ended = job.status.completion_time if job.status else None
        if ended is None:
            ended = next((c.last_transition_time for c in (job.status.conditions or []) if c.status == "True"), None) \
                if job.status else None
        self.record_outcome(job.metadata.uid, outcome, _millis(ended))
        try:
            self.schedules.forget_run(*run)
        except transfer.TransferError as e:  # the volume's retention removes it later
            log.warning("could not remove run %s from its volume: %s", job.metadata.name, e)
        self.schedules.delete_run(*run)

    def end_run(self, model: DescribeJob, status: Status) -> None:
        """Stop or delete of a run: its Job is deleted (the pod gets SIGTERM); what it wrote stays
        on the volume until the retention removes it."""
        with self._import_lock:
            for job in self.schedules.list_runs(model.job_definition_id):
                if job.metadata.uid == model.job_id:
                    self.schedules.delete_run(model.job_definition_id, job.metadata.name)
            end(self.db_session, model.job_id, status, STOPPED_BY_USER, among=IN_FLIGHT)


__all__ = ["Definitions"]
