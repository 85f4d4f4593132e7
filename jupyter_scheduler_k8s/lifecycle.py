"""The life of one notebook job on Kubernetes (docs/design.md): submit, stage in, collect, clean up.

`JobRun.decide(pod)` is a pure reading of the pod's state that names the next step. The driver
that reacts to pod changes is separate: `JobRun.run()` drives one job synchronously (the execution
manager and the `run` CLI), and the scheduler's monitor drives many from one watch. The steps are
idempotent, so a server that restarts can pick a job up again from whatever state it is in.
"""
import logging
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable, Dict, Iterable, List, Optional, Tuple

import tenacity
import urllib3
import websocket
from kubernetes.client.rest import ApiException

from . import manifests, names, reasons, transfer
from .clients import Clients, pull_policy
from .config import K8sConfig, UnknownProfileError, image_for, resolve_profile
from .safe_tar import UnsafeOutputError
from .watch import WaitTimeout, wait_for_pod

log = logging.getLogger(__name__)
EXECUTOR = ["jsk8s-executor"]
LOG_FORMAT = "log"
NO_RESULT = "the executor ended without a result"
GENERIC_FAILURES = {NO_RESULT}
# How often a step that fails for a transient reason is tried before the job ends.
STEP_ATTEMPTS = 8


@dataclass
class NotebookJob:
    """What to run: everything comes from jupyter-scheduler's job model and staging paths."""
    job_id: str
    staging_dir: str
    input_file: str
    outputs: Dict[str, str]
    parameters: Dict = field(default_factory=dict)
    package_input_folder: bool = False
    job_name: str = ""
    compute_type: Optional[str] = None
    environment: Optional[str] = None
    # Where the run log goes: K8sScheduler adds a "log" output format so the UI lists it.
    log_file: Optional[str] = None

    @classmethod
    def from_staging_paths(cls, job_id: str, staging_paths: Dict[str, str], model=None) -> "NotebookJob":
        """Output names are taken as given: the server computed them in its own time zone."""
        outputs = {fmt: os.path.basename(p) for fmt, p in staging_paths.items() if fmt not in ("input", LOG_FORMAT)}
        return cls(
            job_id=job_id, staging_dir=os.path.dirname(staging_paths["input"]),
            input_file=os.path.basename(staging_paths["input"]), outputs=outputs,
            parameters=dict(getattr(model, "parameters", None) or {}),
            package_input_folder=bool(getattr(model, "package_input_folder", False)),
            job_name=getattr(model, "name", "") or "", compute_type=getattr(model, "compute_type", None),
            environment=getattr(model, "runtime_environment_name", None),
            log_file=os.path.basename(staging_paths[LOG_FORMAT]) if LOG_FORMAT in staging_paths else None,
        )


# Steps named by JobRun.decide.
@dataclass
class Submit:
    """The Job and its PVC are not created yet (the first try failed): create them."""


@dataclass
class StageIn:
    pod: str


@dataclass
class Collect:
    pod: str


@dataclass
class CollectFromVolume:
    """The Job's pod ended before we collected: read the PVC through a collector pod."""
    pod: object = None  # the ended pod, whose reason (deadline, eviction) outranks result.json


@dataclass
class Fail:
    message: str


@dataclass
class Locate:
    """No pod to look at (it vanished, never came, or the server restarted): ask the API what
    became of the Job and its PVC."""


@dataclass
class Outcome:
    status: str  # "completed" | "failed"
    message: str = ""
    outputs: List[str] = field(default_factory=list)
    side_effects: List[str] = field(default_factory=list)
    # Collection failed but the outputs may be on the PVC: cleanup keeps it (the message says where).
    keep_volume: bool = False


class JobFailed(Exception):
    """A job ended unsuccessfully; str() is the user's status_message."""

    def __init__(self, message: str, outcome: Optional[Outcome] = None):
        super().__init__(reasons.short(message))
        self.outcome = outcome


def _age_seconds(obj) -> float:
    created = obj.metadata.creation_timestamp if obj is not None else None
    return (datetime.now(timezone.utc) - created).total_seconds() if created else 0.0


def log_tail_bytes(chunks: Iterable[bytes], limit: int) -> Tuple[bytes, int]:
    """The last `limit` bytes of a stream, starting at a line, and how many bytes were left out."""
    kept, cut = bytearray(), 0
    for chunk in chunks:
        kept += chunk
        if len(kept) > 2 * limit:  # trim now and then, not on every chunk
            cut += len(kept) - limit
            del kept[:len(kept) - limit]
    if len(kept) > limit:
        cut += len(kept) - limit
        del kept[:len(kept) - limit]
    if cut:
        newline = kept.find(b"\n")
        if 0 <= newline < len(kept) - 1:
            cut += newline + 1
            del kept[:newline + 1]
    return bytes(kept), cut


def is_transient(error: BaseException) -> bool:
    """Errors that may pass: broken transfers, connections and timeouts, and the API server's 5xx,
    429 and 408 answers (which the client has already retried a few times). 401 and 403 too: an
    API server that has just restarted refuses requests until its RBAC caches are filled, and a
    quota that is full now may not be later; if they stay, the job still ends, a few minutes on."""
    if isinstance(error, transfer.CommandFailed):
        return False
    if isinstance(error, ApiException):
        return error.status in (0, 401, 403, 408, 429) or (error.status or 0) >= 500
    return isinstance(error, (transfer.TransferError, urllib3.exceptions.HTTPError, OSError,
                              websocket.WebSocketException))


def retry_transient(fn, *args):
    """fn(*args), tried again over about three minutes while it fails with transient errors (the
    synchronous driver's counterpart of the monitor trying a step again on a later tick)."""
    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception(is_transient), reraise=True,
        stop=tenacity.stop_after_attempt(STEP_ATTEMPTS),
        wait=tenacity.wait_exponential(multiplier=2, max=30) + tenacity.wait_random(0, 1))
    return retrying(fn, *args)


def _delete(method, name: str, namespace: str, propagation_policy="Background", grace_period_seconds=0) -> None:
    """Deletes one object by name; 404 means it is already gone."""
    try:
        method(name, namespace, propagation_policy=propagation_policy, grace_period_seconds=grace_period_seconds)
    except ApiException as e:
        if e.status != 404:
            raise


def delete_objects(clients: Clients, namespace: str, job_id: str, collector: bool = True) -> None:
    """Deletes every object the backend creates for a job: the Job (its pods go with it), the
    collector pod (unless the caller knows there is none) and the PVC. By name: the names are the
    backend's own (names.py), the chart's Role grants delete and no deletecollection, and the
    admission policy checks every name."""
    name = names.object_name(job_id)
    _delete(clients.batch.delete_namespaced_job, name, namespace)
    if collector:
        _delete(clients.core.delete_namespaced_pod, names.collector_name(job_id), namespace)
    _delete(clients.core.delete_namespaced_persistent_volume_claim, name, namespace)


class JobRun:
    def __init__(self, job: NotebookJob, cfg: K8sConfig, clients: Clients,
                 on_phase: Callable[[str], None] = lambda phase: None):
        self.job, self.cfg, self.clients, self.on_phase = job, cfg, clients, on_phase
        self.namespace = cfg.namespace
        self.name = names.object_name(job.job_id)
        self.selector = names.job_selector(job.job_id) + f",{names.LABEL_COMPONENT}={names.COMPONENT_JOB}"
        try:
            self.profile, self.profile_error = resolve_profile(cfg, job.compute_type), None
        except UnknownProfileError as e:
            # A profile renamed or removed since the job was submitted: the job can still be
            # stopped, deleted and cleaned up, but never submitted (recovery fails it).
            self.profile, self.profile_error = resolve_profile(cfg, None), str(e)
        self.timeout_seconds = int(self.profile["timeout_seconds"] or 0)
        self.created = False  # the Job and PVC exist (made by us, or found after a restart)
        self.staged = False
        self.seen_pod = False
        # Set when the server picks up a job it did not submit itself (after a restart).
        self.recovered = False
        self.pod_name = None
        self.log_text = ""
        self.submitted = time.monotonic()

    # ---- objects ---------------------------------------------------------------------------
    def _labels(self, component):
        return names.labels(self.job.job_id, component, self.cfg.username, self.job.job_name, self.cfg.extra_labels)

    def _annotations(self):
        return names.annotations(self.cfg.username, self.job.job_name, self.cfg.extra_annotations)

    def executor_spec(self) -> dict:
        return {"input": self.job.input_file, "outputs": dict(self.job.outputs),
                "parameters": dict(self.job.parameters), "kernel_name": None, "cell_timeout": None,
                "collect_hold_seconds": self.cfg.collect_hold_seconds}

    def build_objects(self):
        p = self.profile
        pvc = manifests.make_pvc(self.name, self.namespace, self._labels(names.COMPONENT_JOB), self._annotations(),
                                 self.cfg.storage_size, self.cfg.storage_class)
        job = manifests.make_job(
            self.name, self.namespace, self._labels(names.COMPONENT_JOB), self._annotations(),
            image=image_for(self.cfg, self.job.environment),
            pull_policy=pull_policy(self.cfg.image_pull_policy, self.clients.context_name),
            spec=self.executor_spec(),
            container_resources=manifests.resources(p["cpu_request"], p["cpu_limit"], p["memory_request"],
                                                    p["memory_limit"], int(p["gpu"] or 0)),
            node_selector=p["node_selector"], tolerations=p["tolerations"],
            timeout_seconds=self.timeout_seconds, ttl_seconds=self.cfg.job_ttl_seconds)
        return pvc, job

    # ---- requests (each handles its own statuses) --------------------------------------------
    def submit(self) -> None:
        if self.profile_error:
            raise JobFailed(self.profile_error)
        self.clients.api_client  # resolves the context, which the pull policy depends on
        pvc, job = self.build_objects()
        self.on_phase("submitting")
        # If the Job's create fails, the PVC stays for the next try (409 then means done); a job
        # that fails for good has both deleted by name.
        self._create(self.clients.core.create_namespaced_persistent_volume_claim, pvc)
        self._create(self.clients.batch.create_namespaced_job, job)
        self.created = True
        self.submitted = time.monotonic()

    def stage_in(self, pod: str) -> None:
        self.on_phase("staging")
        root = self.job.staging_dir
        if self.job.package_input_folder:
            files = sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)
        else:
            files = [self.job.input_file]
        # Only regular files go: a link in the user's folder could point at any server file.
        skipped = [f for f in files if os.path.islink(os.path.join(root, f)) or not os.path.isfile(os.path.join(root, f))]
        if skipped:
            log.warning("job %s: not sending links or special files: %s", self.job.job_id, ", ".join(skipped))
        files = [f for f in files if f not in skipped]
        transfer.send_files(self.clients.core, self.namespace, pod, manifests.CONTAINER,
                            EXECUTOR + ["stage-in"], root, files)
        self.staged = True
        self.on_phase("running")

    def collect(self, pod: str):
        """Streams the outputs into the staging dir; returns (result, written paths)."""
        self.on_phase("collecting")
        result, written = transfer.receive_outputs(
            self.clients.core, self.namespace, pod, manifests.CONTAINER, EXECUTOR + ["stage-out"],
            self.job.staging_dir, self.cfg.output_size_limit)
        try:
            transfer.run_command(self.clients.core, self.namespace, pod, manifests.CONTAINER, EXECUTOR + ["release"])
        except transfer.TransferError as e:
            # The outputs are in; release only lets the pod exit early. The pod exits as soon as
            # the marker is there, which can kill this very command (exit code 137), and cleanup
            # deletes the pod in any case.
            log.info("job %s: release in pod %s: %s", self.name, pod, e)
        return result, written

    def collect_from_volume(self):
        """Collects through a short-lived pod on the job's PVC (same image, same security)."""
        name = names.collector_name(self.job.job_id)
        pod = manifests.make_collector_pod(
            name, self.namespace, self._labels(names.COMPONENT_COLLECTOR), self._annotations(),
            image=image_for(self.cfg, self.job.environment),
            pull_policy=pull_policy(self.cfg.image_pull_policy, self.clients.context_name),
            pvc_name=self.name, hold_seconds=300)
        self._create(self.clients.core.create_namespaced_pod, pod)
        try:
            return self._collect_through(name)
        finally:
            self._delete(self.clients.core.delete_namespaced_pod, name)

    def _collect_through(self, name: str):
        selector = names.job_selector(self.job.job_id) + f",{names.LABEL_COMPONENT}={names.COMPONENT_COLLECTOR}"

        def running(p):
            problem = p is not None and (reasons.image_problem(p) or reasons.terminated_problem(p))
            if problem:
                return Fail(f"could not start the output collector: {problem}")
            cs = (p.status.container_statuses or [None])[0] if p is not None and p.status else None
            return True if cs is not None and cs.state.running else None

        try:
            answer = wait_for_pod(self.clients.core, self.namespace, selector, running,
                                  self.cfg.scheduling_timeout_seconds)
        except WaitTimeout:
            raise JobFailed("the output collector pod did not start in time") from None
        if isinstance(answer, Fail):
            raise JobFailed(answer.message)
        return self.collect(name)

    def cleanup(self, outcome: Optional[Outcome] = None) -> None:
        """Deletes the Job (and its pods) and the PVC, unless the outcome keeps the volume. Safe to
        call any number of times. A collector pod is deleted where it was made (collect_from_volume)."""
        if outcome is not None and outcome.keep_volume:
            self._delete(self.clients.batch.delete_namespaced_job, self.name)
        else:
            delete_objects(self.clients, self.namespace, self.job.job_id, collector=False)

    def stop(self) -> None:
        """Deletes the Job gracefully: its pod gets SIGTERM and terminationGracePeriodSeconds to
        save the notebook as it is (the executor writes its outputs to the PVC), which stays."""
        self._delete(self.clients.batch.delete_namespaced_job, self.name, grace_period_seconds=None,
                     propagation_policy="Foreground")

    def _create(self, method, body):
        """409 means a restarted server already made it: that is success."""
        try:
            method(self.namespace, body)
        except ApiException as e:
            if e.status != 409:
                raise

    def _delete(self, method, name, **options):
        _delete(method, name, self.namespace, **options)

    def cleanup_quietly(self, outcome: Optional[Outcome] = None) -> None:
        try:
            self.cleanup(outcome)
        except Exception:  # noqa: BLE001 - never mask the job's own outcome; the TTL is a backstop
            log.exception("cleanup of %s failed", self.name)

    def job_events_problem(self) -> Optional[str]:
        """The newest warning event about the Job (e.g. a quota refusing its pod), if any."""
        events = self.clients.core.list_namespaced_event(
            self.namespace, field_selector=f"involvedObject.name={self.name},type=Warning")
        newest = sorted(events.items, key=lambda e: e.last_timestamp or e.event_time or e.metadata.creation_timestamp)
        return reasons.short(f"{newest[-1].reason}: {newest[-1].message}") if newest else None

    # ---- decisions ----------------------------------------------------------------------------
    def decide(self, pod):
        """The next step for the job's pod as observed now, or None to keep waiting."""
        if pod is None:
            if not self.created and not self.recovered:
                return Submit()
            if self.seen_pod or self.recovered or time.monotonic() - self.submitted > self.cfg.scheduling_timeout_seconds:
                return Locate()
            return None
        self.seen_pod = self.created = True
        self.pod_name = pod.metadata.name
        problem = reasons.image_problem(pod)
        if problem:
            return Fail(problem)
        why = reasons.unschedulable(pod)
        if why and _age_seconds(pod) > self.cfg.scheduling_timeout_seconds:
            return Fail(f"Unschedulable: {why}")
        cs = (pod.status.container_statuses or [None])[0] if pod.status else None
        state = cs.state if cs is not None else None
        term = state.terminated if state is not None else None
        if term is not None or (pod.status and pod.status.phase in ("Failed", "Succeeded")):
            # Exit codes 0 and 1 come after result.json was written (docs/design.md): the outputs
            # are on the PVC even though the pod is gone.
            if term is not None and term.exit_code in (0, 1):
                return CollectFromVolume(pod)
            return Fail(reasons.terminated_problem(pod, self.timeout_seconds)
                        or f"the job pod ended ({pod.status.reason or pod.status.phase}) before its outputs were collected")
        if cs is not None and cs.ready:
            return Collect(pod.metadata.name)
        if state is not None and state.running and not self.staged:
            return StageIn(pod.metadata.name)
        return None

    def locate(self):
        """Resolves Locate: the next step from the Job's and the PVC's state (API calls)."""
        self.recovered = False
        try:
            job = self.clients.batch.read_namespaced_job(self.name, self.namespace)
        except ApiException as e:
            if e.status != 404:
                raise
            job = None
        return self.located(job, self._pvc_exists, self.job_events_problem)

    def located(self, job, pvc_exists: Callable[[], bool], events_problem: Callable[[], Optional[str]]):
        """The next step for a Job as read from the API (None if absent), or None to keep waiting.
        The callables are asked only when the answer depends on them."""
        if job is not None:
            self.created = True
        if job is not None and job.metadata.deletion_timestamp is None:
            problem = reasons.job_problem(job, self.timeout_seconds)
            if problem:
                return Fail(problem)
            if not (job.status and (job.status.succeeded or job.status.failed)):
                if self.seen_pod:
                    return Fail("the job pod was deleted before it finished")
                if time.monotonic() - self.submitted > self.cfg.scheduling_timeout_seconds:
                    return Fail(events_problem() or "the Job created no pod in time")
                return None
        # The Job ended, its TTL removed it, or someone deleted it (it may linger while its
        # finalizers run, but it will never run again): the outputs, if any, are on the PVC.
        if pvc_exists():
            return CollectFromVolume()
        return Fail("the Kubernetes Job and its volume no longer exist; the job's outputs are lost")

    def _pvc_exists(self) -> bool:
        """True if the job's PVC exists and is not being deleted."""
        try:
            pvc = self.clients.core.read_namespaced_persistent_volume_claim(self.name, self.namespace)
            return pvc.metadata.deletion_timestamp is None
        except ApiException as e:
            if e.status == 404:
                return False
            raise

    # ---- the end of a job -------------------------------------------------------------------
    def finish(self, step) -> Outcome:
        """Turns a final step into the job's outcome: collects what there is into the staging dir
        and saves the run log. Deletes nothing: the caller records the outcome first and then
        calls cleanup(outcome), so a server that dies in between finds the job again."""
        ended = step.pod if isinstance(step, CollectFromVolume) else None
        if isinstance(step, Fail):
            outcome = Outcome("failed", step.message)
        else:
            try:
                if isinstance(step, Collect):
                    try:
                        result, written = self.collect(step.pod)
                    except transfer.TransferError as e:
                        # The pod ended under us (deadline, eviction): the PVC still has it all.
                        log.warning("job %s: collecting from the pod failed (%s); reading its volume", self.name, e)
                        result, written = self.collect_from_volume()
                    outcome = self.outcome(result, written, pod_name=step.pod)
                else:
                    result, written = self.collect_from_volume()
                    outcome = self.outcome(result, written, ended_pod=ended)
            except (transfer.CommandFailed, UnsafeOutputError) as e:
                # The pod said there is nothing to collect, or sent what we refuse: keeping the
                # volume would not bring anything back.
                outcome = self._not_collected(ended, str(e), keep_volume=False)
            except JobFailed as e:  # the collector pod cannot start: the outputs are still there
                outcome = self._not_collected(ended, str(e), keep_volume=True)
            # Anything else (a broken connection, the API server away) is raised: the step is
            # tried again, and the volume is kept if it keeps failing.
        log_file = self._save_run_log_quietly()
        if log_file:
            outcome.side_effects.append(log_file)
        if outcome.status == "failed" and outcome.message in GENERIC_FAILURES and self.log_text:
            outcome.message = reasons.short(f"{outcome.message}; last log lines: {self.log_tail(5)}")
        return outcome

    def _not_collected(self, ended_pod, error: str, keep_volume: bool) -> Outcome:
        """The outcome of a job whose outputs could not be brought back. What Kubernetes saw end
        the pod (deadline, eviction, OOM) is the reason the user needs first."""
        problem = reasons.terminated_problem(ended_pod, self.timeout_seconds)
        message = f"{problem}; its outputs could not be collected: {error}" if problem \
            else f"collecting the outputs failed: {error}"
        if keep_volume:
            message += f" (they are kept on volume {self.name} in namespace {self.namespace} until the job is deleted)"
        return Outcome("failed", message, keep_volume=keep_volume)

    # ---- the synchronous driver -------------------------------------------------------------
    def next_step(self, timeout: float = 10 ** 9):
        """Waits for the next final step, staging the inputs on the way."""
        while True:
            step = wait_for_pod(self.clients.core, self.namespace, self.selector, self.decide, timeout)
            if isinstance(step, StageIn):
                self.stage_in(step.pod)
            elif isinstance(step, Locate):
                step = retry_transient(self.locate)
                if step is not None:
                    return step
            else:
                return step

    def run(self) -> Outcome:
        """Runs the job to its end. Raises JobFailed (with the partial outcome) on failure. The
        caller records the outcome and then calls cleanup(outcome)."""
        try:
            retry_transient(self.submit)
            self.on_phase("scheduled")
            step = self.next_step()
        except BaseException:
            self.cleanup_quietly()
            raise
        try:
            outcome = retry_transient(self.finish, step)
        except Exception as e:  # noqa: BLE001 - tried long enough: the outputs stay on the volume
            log.exception("job %s: collecting the outputs failed", self.name)
            outcome = self._not_collected(None, reasons.describe_error(e), keep_volume=True)
        if outcome.status != "completed":
            raise JobFailed(outcome.message, outcome)
        return outcome

    def run_log_name(self) -> str:
        """`<output base>.log`, beside the outputs and named like them."""
        if self.job.log_file:
            return self.job.log_file
        base = next(iter(self.job.outputs.values()), self.job.input_file)
        return os.path.splitext(base)[0] + ".log"

    def save_run_log(self) -> Optional[str]:
        """Saves the executor pod's log (the notebook's printed output) into the staging dir.

        Only the last `run_log_limit` bytes are kept: a failure's traceback is at the end."""
        if not self.pod_name:
            return None
        try:
            response = self.clients.core.read_namespaced_pod_log(
                self.pod_name, self.namespace, container=manifests.CONTAINER, _preload_content=False)
        except ApiException as e:
            if e.status in (400, 404):  # container never started, or pod already gone
                return None
            raise
        try:
            data, cut = log_tail_bytes(response.stream(256 * 1024), self.cfg.run_log_limit)
        finally:
            response.release_conn()
        self.log_text = data.decode("utf-8", "replace")
        if cut:
            self.log_text = f"[jsk8s] the first {cut} bytes of this log were left out\n" + self.log_text
        name = self.run_log_name()
        with open(os.path.join(self.job.staging_dir, name), "w", encoding="utf-8") as f:
            f.write(self.log_text)
        return name

    def _save_run_log_quietly(self) -> Optional[str]:
        try:
            return self.save_run_log()
        except (ApiException, OSError):
            log.exception("could not save the run log of %s", self.name)
            return None

    def log_tail(self, lines: int = 10) -> str:
        return "\n".join(self.log_text.strip().splitlines()[-lines:])

    def outcome(self, result, written, pod_name=None, ended_pod=None) -> Outcome:
        if result is None:
            return Outcome("failed", NO_RESULT)
        outputs = [o for o in result.get("outputs", []) if o in written]
        side_effects = [s for s in result.get("side_effects", []) if s in written]
        if result.get("status") == "completed":
            return Outcome("completed", "", outputs, side_effects)
        pod = ended_pod or (self._terminated_pod(pod_name) if pod_name else None)
        # Kubernetes' reason (deadline, eviction) says more than the executor, which only saw SIGTERM.
        message = reasons.terminated_problem(pod, self.timeout_seconds) \
            or reasons.result_problem(result, pod) or "the notebook failed"
        return Outcome("failed", message, outputs, side_effects)

    def _terminated_pod(self, pod_name, wait_seconds: float = 15):
        """After release, the pod exits; its termination reason (OOMKilled) sharpens the message."""
        def ended(pod):
            cs = (pod.status.container_statuses or [None])[0] if pod is not None and pod.status else None
            return pod if pod is None or (cs is not None and cs.state.terminated) else None
        try:
            return wait_for_pod(self.clients.core, self.namespace, self.selector, ended, wait_seconds)
        except Exception:  # best effort: the result.json message stands on its own
            return None
