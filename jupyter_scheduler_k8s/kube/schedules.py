"""Job definitions as CronJobs: what a definition asks of Kubernetes (docs/design.md, "Schedules").

A definition is a CronJob and a PVC of the same name. The PVC holds the input snapshot, which
every run copies, and each run's files until the user's server imports them; so runs need no
server, and the runs of a culled server wait on the volume. `Definition` says what to run;
`KubeSchedules` acts, scoped to one owner like `driver.KubeDriver`, whose helpers it uses.
"""
import logging
import secrets
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from kubernetes.client.rest import ApiException

from ..config import image_for
from . import executor, manifests, names, reasons, transfer
from .clients import absent_on_404, delete_exactly, pull_policy
from .base import NotFound, OverLimit, Schedules
from .driver import KubeDriver
from .watch import WaitTimeout, first_answer, pod_events

log = logging.getLogger(__name__)


class ScheduleError(ValueError):
    """A definition Kubernetes would refuse, said in the user's terms."""


@dataclass
class Definition:
    """What a job definition runs: everything comes from jupyter-scheduler's definition model."""
    definition_id: str
    name: str
    input_file: str
    outputs: Dict[str, str]  # format -> file name, as the definition's staging paths name them
    log_name: str
    schedule: str
    timezone: Optional[str] = None
    active: bool = True
    parameters: Dict = field(default_factory=dict)
    compute_type: Optional[str] = None
    environment: Optional[str] = None


def check_timezone(timezone: Optional[str]) -> Optional[str]:
    """The IANA name for spec.timeZone, or None for the controller's own (UTC)."""
    if not timezone:
        return None
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(f"Unknown time zone {timezone!r}: use an IANA name such as Europe/Paris or UTC") from None
    return timezone


def is_finished(job) -> bool:
    status = job.status
    return bool(status and (status.succeeded or status.failed or any(
        c.type in ("Complete", "Failed") and c.status == "True" for c in status.conditions or [])))


class KubeSchedules(Schedules):
    """`queue_runs`: runs are made suspended and wait in the queue (kube/queue.py). The gateway
    sets it; in direct mode the admitter is the user's server, which a run must not need."""

    def __init__(self, driver: KubeDriver, queue_runs: bool = False):
        self.driver, self.cfg, self.clients = driver, driver.cfg, driver.clients
        self.namespace, self.owner, self.queue_runs = driver.namespace, driver.owner, queue_runs

    # ---- the objects ---------------------------------------------------------------------------
    def build_cronjob(self, definition: Definition, profile: dict):
        d, p = definition, profile
        name = names.definition_name(d.definition_id)
        spec = executor.spec(d.input_file, d.outputs, d.parameters, collect_hold_seconds=0)
        retention = executor.retention(self.cfg.schedule_runs_kept, self.cfg.schedule_run_max_age_seconds,
                                       d.log_name, self.cfg.run_log_limit)
        return manifests.make_cronjob(
            name, self.namespace, self._labels(d, names.COMPONENT_SCHEDULE), self._annotations(d),
            run_labels=self._labels(d, names.COMPONENT_SCHEDULED_RUN),
            schedule=d.schedule, time_zone=check_timezone(d.timezone), suspend=not d.active,
            concurrency_policy=self.cfg.schedule_concurrency_policy,
            starting_deadline_seconds=self.cfg.schedule_starting_deadline_seconds,
            # Finished Jobs are the index of the runs to import: keep as many as the volume keeps
            # runs, and no longer than it keeps them.
            history_limit=self.cfg.schedule_runs_kept, ttl_seconds=self.cfg.schedule_run_max_age_seconds,
            image=image_for(self.cfg, d.environment),
            pull_policy=pull_policy(self.cfg.image_pull_policy, self.clients.context_name),
            spec=spec, retention=retention, suspend_runs=self.queue_runs,
            container_resources=manifests.resources(p["cpu_request"], p["cpu_limit"], p["memory_request"],
                                                    p["memory_limit"], int(p["gpu"] or 0)),
            node_selector=p["node_selector"], tolerations=p["tolerations"],
            timeout_seconds=int(p["timeout_seconds"] or 0))

    def _labels(self, d: Definition, component: str) -> dict:
        return names.definition_labels(d.definition_id, component, self.owner, d.name, self.cfg.extra_labels)

    def _selector(self, definition_id: str, component: str) -> str:
        """The owner's objects of one definition (or all) by label; owns() then checks the exact name."""
        selector = names.definition_selector(definition_id, component)
        if self.owner:
            selector += f",{names.LABEL_USERNAME}={names.safe_slug(self.owner)}"
        return selector

    def _annotations(self, d: Definition) -> dict:
        return names.annotations(self.owner, d.name, self.cfg.extra_annotations)

    def create(self, definition: Definition, profile: dict) -> None:
        """The volume and the CronJob, suspended: the caller sends the snapshot and then sets the
        definition's own state with update(), so that no run starts without inputs."""
        self.clients.api_client  # resolves the context, which the pull policy depends on
        cronjob = self.build_cronjob(definition, profile)  # refuses a bad time zone before anything exists
        self._check_definitions_limit(definition.definition_id)
        cronjob.spec.suspend = True
        name = names.definition_name(definition.definition_id)
        pvc = manifests.make_pvc(name, self.namespace, self._labels(definition, names.COMPONENT_SCHEDULE),
                                 self._annotations(definition), self.cfg.storage_size, self.cfg.storage_class)
        self.driver.create_owned(self.clients.core.create_namespaced_persistent_volume_claim, pvc,
                                 self.clients.core.read_namespaced_persistent_volume_claim)
        try:
            self.driver.create_owned(self.clients.batch.create_namespaced_cron_job, cronjob,
                                     self.clients.batch.read_namespaced_cron_job)
        except ApiException as e:
            raise self._refused(e) from None

    def _check_definitions_limit(self, definition_id: str) -> None:
        """OverLimit if the owner has K8sConfig.definitions_per_user CronJobs besides this one (a
        retried create is not a new definition)."""
        limit = self.cfg.definitions_per_user
        if not limit:
            return
        name = names.definition_name(definition_id)
        theirs = [c for c in self.clients.batch.list_namespaced_cron_job(
            self.namespace, label_selector=self._selector("", names.COMPONENT_SCHEDULE)).items
                  if self.driver.owns(c) and c.metadata.name != name]
        if len(theirs) >= limit:
            raise OverLimit(f"You have {len(theirs)} job definition{'s' if len(theirs) > 1 else ''}, the most one "
                            f"user may have (limits.definitionsPerUser: {limit}). Delete one to create another.")

    def update(self, definition: Definition, profile: dict) -> None:
        """Schedule, time zone, pause, parameters, formats and profile, on the existing CronJob."""
        if self.read_cronjob(definition.definition_id) is None:
            raise NotFound(f"the CronJob of job definition {definition.definition_id} is gone")
        cronjob = self.build_cronjob(definition, profile)
        try:
            self.clients.batch.patch_namespaced_cron_job(cronjob.metadata.name, self.namespace,
                                                         {"metadata": {"labels": cronjob.metadata.labels},
                                                          "spec": self.clients.api_client.sanitize_for_serialization(
                                                              cronjob.spec)})
        except ApiException as e:
            raise self._refused(e) from None

    @staticmethod
    def _refused(e: ApiException) -> Exception:
        if e.status in (400, 422):
            return ScheduleError(reasons.describe_error(e).replace("Kubernetes API error 422: ", ""))
        return e

    def read_cronjob(self, definition_id: str):
        cronjob = absent_on_404(self.clients.batch.read_namespaced_cron_job,
                                names.definition_name(definition_id), self.namespace)
        return cronjob if cronjob is not None and self.driver.owns(cronjob) else None

    def read_volume(self, definition_id: str):
        pvc = absent_on_404(self.clients.core.read_namespaced_persistent_volume_claim,
                            names.definition_name(definition_id), self.namespace)
        return pvc if pvc is not None and self.driver.owns(pvc) else None

    def delete(self, definition_id: str) -> None:
        """The CronJob (its Jobs and pods go with it), the holder pod and the volume. Safe to repeat."""
        cronjob = self.read_cronjob(definition_id)
        if cronjob is not None:
            delete_exactly(self.clients.batch.delete_namespaced_cron_job, cronjob, self.namespace)
        self.remove_holder(definition_id)
        pvc = self.read_volume(definition_id)
        if pvc is not None:
            delete_exactly(self.clients.core.delete_namespaced_persistent_volume_claim, pvc, self.namespace)

    # ---- runs ------------------------------------------------------------------------------------
    def run_now(self, definition_id: str, parameters: Optional[dict] = None):
        """A Job from the CronJob's template (like `kubectl create job --from=cronjob/...`);
        returns it. `parameters` replace the definition's for this run."""
        cronjob = self.read_cronjob(definition_id)
        if cronjob is None:
            raise NotFound(f"the CronJob of job definition {definition_id} is gone")
        job = manifests.job_from_cronjob(cronjob, names.manual_run_name(definition_id, secrets.token_hex(3)))
        if parameters is not None:
            manifests.set_spec_parameters(job, parameters)
        return self.clients.batch.create_namespaced_job(self.namespace, job)

    def list_runs(self, definition_id: str = "") -> list:
        """The owner's run Jobs (of one definition, or all), made by their definition's CronJob."""
        jobs = self.clients.batch.list_namespaced_job(
            self.namespace, label_selector=self._selector(definition_id, names.COMPONENT_SCHEDULED_RUN)).items
        cronjobs = {}
        runs = []
        for job in jobs:
            if not self.driver.owns(job):
                continue
            definition = (job.metadata.labels or {}).get(names.LABEL_DEFINITION_ID, "")
            if definition not in cronjobs:
                cronjob = self.read_cronjob(definition)
                cronjobs[definition] = cronjob.metadata.uid if cronjob is not None else None
            # Only the CronJob's own Jobs (its uid is set by the API server): labels can be forged.
            if cronjobs[definition] and any(ref.uid == cronjobs[definition] for ref in job.metadata.owner_references or []):
                runs.append(job)
        return runs

    def read_run(self, definition_id: str, run_name: str):
        """The owner's run Job of that name, made by the definition's CronJob; or None."""
        job = absent_on_404(self.clients.batch.read_namespaced_job, run_name, self.namespace)
        cronjob = self.read_cronjob(definition_id) if job is not None and self.driver.owns(job) else None
        if cronjob is None or not any(ref.uid == cronjob.metadata.uid for ref in job.metadata.owner_references or []):
            return None
        return job

    def run_pod(self, definition_id: str, run_name: str):
        """The run's pod, if it is still there (for its termination reason)."""
        job = self.read_run(definition_id, run_name)
        if job is None:
            return None
        pods = self.clients.core.list_namespaced_pod(
            self.namespace, label_selector=f"batch.kubernetes.io/controller-uid={job.metadata.uid}").items
        return pods[-1] if pods else None

    def delete_run(self, definition_id: str, run_name: str) -> None:
        """Deletes the run's Job (its pod gets SIGTERM). Gone already is done."""
        job = self.read_run(definition_id, run_name)
        if job is not None:
            delete_exactly(self.clients.batch.delete_namespaced_job, job, self.namespace)

    # ---- the holder pod: the volume's files, read and written by exec ---------------------------
    def create_holder(self, definition_id: str, environment: Optional[str] = None, hold_seconds: int = 600):
        """Creates the pod on the definition's volume (for the snapshot and for importing runs),
        unless it exists; returns its name and the volume's uid, for holder_state."""
        pvc = self.read_volume(definition_id)
        if pvc is None:
            raise NotFound(f"the volume of job definition {definition_id} is gone")
        name = names.holder_name(definition_id)
        self.driver.create_pod_on_volume(
            name, pvc, names.definition_labels(definition_id, names.COMPONENT_COLLECTOR, self.owner,
                                               extra=self.cfg.extra_labels),
            names.annotations(self.owner, extra=self.cfg.extra_annotations), environment, hold_seconds)
        return name, pvc.metadata.uid

    def read_pod(self, name: str):
        return absent_on_404(self.clients.core.read_namespaced_pod, name, self.namespace)

    def start_holder(self, definition_id: str, environment: Optional[str] = None, hold_seconds: int = 600) -> str:
        """create_holder, then waits (a watch) until the pod runs; returns its name."""
        name, volume_uid = self.create_holder(definition_id, environment, hold_seconds)
        selector = (f"{names.LABEL_MANAGED_BY}={names.MANAGED_BY},{names.LABEL_COMPONENT}={names.COMPONENT_COLLECTOR},"
                    f"{names.LABEL_DEFINITION_ID}={names.safe_slug(definition_id)}")
        try:
            answer = first_answer(pod_events(self.clients.core, self.namespace, selector, 5),
                                  lambda p: holder_state(p, name, volume_uid), self.cfg.scheduling_timeout_seconds)
        except WaitTimeout:
            raise ScheduleError(HOLDER_LATE) from None
        if isinstance(answer, Exception):
            raise answer
        return answer

    def holder(self, definition_id: str) -> str:
        """The name of the definition's running holder pod, checked: its controller is the
        definition's volume, by uid. NotFound otherwise."""
        name = names.holder_name(definition_id)
        pod = absent_on_404(self.clients.core.read_namespaced_pod, name, self.namespace)
        pvc = self.read_volume(definition_id)
        if pod is None or pvc is None or not self.driver.owns(pod) or not any(
                ref.uid == pvc.metadata.uid for ref in pod.metadata.owner_references or []):
            raise NotFound(f"job definition {definition_id} has no pod on its volume")
        return name

    def remove_holder(self, definition_id: str) -> None:
        name = names.holder_name(definition_id)
        pod = absent_on_404(self.clients.core.read_namespaced_pod, name, self.namespace)
        if pod is not None and self.driver.owns(pod):
            delete_exactly(self.clients.core.delete_namespaced_pod, pod, self.namespace)

    def snapshot(self, definition_id: str, environment: Optional[str], root: str, files: Iterable[str]) -> None:
        """Sends the inputs as the definition's new snapshot (runs already started keep theirs)."""
        pod = self.start_holder(definition_id, environment)
        try:
            self.send_snapshot(pod, root, files)
        finally:
            self.remove_holder(definition_id)

    def send_snapshot(self, pod: str, root: str, files: Iterable[str]) -> None:
        transfer.send_files(self.clients.core, self.namespace, pod, manifests.CONTAINER, executor.snapshot_in(), root, list(files))

    def receive_run(self, definition_id: str, run_name: str, dest: str, size_limit: int):
        """A run's outputs from the volume, through the holder pod; returns (result, written)."""
        return transfer.receive_outputs(self.clients.core, self.namespace, self.holder(definition_id),
                                        manifests.CONTAINER, executor.stage_out(run_name), dest, size_limit)

    def forget_run(self, definition_id: str, run_name: str) -> None:
        transfer.run_command(self.clients.core, self.namespace, self.holder(definition_id), manifests.CONTAINER,
                             executor.forget_run(run_name))


HOLDER_LATE = "the pod on the definition's volume did not start in time"


def holder_state(pod, name: str, volume_uid: str):
    """The holder pod's name once it runs; an error if it never will (or is not the volume's);
    None while it is on its way."""
    if pod is None or pod.metadata.deletion_timestamp is not None:
        return None
    if not any(ref.uid == volume_uid for ref in pod.metadata.owner_references or []):
        return NotFound(f"pod {name} is not the holder of this definition's volume")
    problem = reasons.image_problem(pod) or reasons.terminated_problem(pod)
    if problem:
        return ScheduleError(f"could not start the pod on the definition's volume: {problem}")
    return name if reasons.container_running(pod) else None


def input_files(root: str, package_input_folder: bool, input_file: str) -> List[str]:
    """What a snapshot holds: the notebook, or the whole packaged folder; regular files only."""
    files, skipped = transfer.run_files(root, package_input_folder, input_file)
    if skipped:
        log.warning("not sending links or special files: %s", ", ".join(skipped))
    return files


__all__ = ["Definition", "KubeSchedules", "ScheduleError", "check_timezone", "input_files", "is_finished"]
