"""The life of one notebook job on Kubernetes (docs/design.md): submit and stage in, wait in the
queue, run, collect, clean up.

`JobRun.decide(pod)` is a pure reading of the pod's state that names the next step. What reacts to
pod changes is separate: `JobRun.run()` drives one job synchronously (the execution manager and
the `run` CLI), and the scheduler's monitor drives many from one watch. The steps are
idempotent, so a server that restarts can pick a job up again from whatever state it is in.
"""
import logging
import os
import time
from datetime import datetime, timezone
from typing import Callable, Optional

from kubernetes.client.rest import ApiException

from ..config import K8sConfig, UnknownProfileError, resolve_profile
from ..kube import names, queue, reasons, transfer
from ..kube.base import Driver, NotFound, OverLimit
from ..kube.safe_tar import UnsafeOutputError
from ..kube.watch import WaitTimeout
from .steps import (
    GENERIC_FAILURES, NO_RESULT, Collect, CollectFromVolume, Fail, JobFailed, Locate, NotebookJob, Outcome, Submit,
    retry_transient,
)

log = logging.getLogger(__name__)


# How often a job without a pod asks what became of its Job: soon after it was submitted (is it
# admitted, or queued?), and then, while it waits in the queue, now and then.
LOCATE_SECONDS = 5
QUEUED_LOCATE_SECONDS = 30


def _age_seconds(obj) -> float:
    created = obj.metadata.creation_timestamp if obj is not None else None
    return (datetime.now(timezone.utc) - created).total_seconds() if created else 0.0


def _seconds_since_admission(job) -> float:
    """A Job's startTime is set when it is admitted (reset when a suspended Job resumes)."""
    started = job.status.start_time if job.status is not None else None
    return (datetime.now(timezone.utc) - started).total_seconds() if started else _age_seconds(job)


class JobRun:
    """One job's lifecycle. `driver` does what the steps ask of Kubernetes (kube/base.py): a KubeDriver
    in direct mode, the gateway's client in hub mode."""

    def __init__(self, job: NotebookJob, cfg: K8sConfig, driver: Driver,
                 on_phase: Callable[[str], None] = lambda phase: None,
                 on_queued: Callable[[Optional[str]], None] = lambda message: None):
        """on_queued(message) when the job is found waiting in the queue (and when the message
        changes), on_queued(None) when it was admitted after that."""
        self.job, self.cfg, self.driver, self.on_phase, self.on_queued = job, cfg, driver, on_phase, on_queued
        self.namespace = cfg.namespace
        self.name = names.object_name(job.job_id)
        try:
            self.profile, self.profile_error = resolve_profile(cfg, job.compute_type), None
        except UnknownProfileError as e:
            # A profile renamed or removed since the job was submitted: the job can still be
            # stopped, deleted and cleaned up, but never submitted (recovery fails it).
            self.profile, self.profile_error = resolve_profile(cfg, None), str(e)
        self.timeout_seconds = int(self.profile["timeout_seconds"] or 0)
        self.created = False  # the Job and PVC exist (made by us, or found after a restart)
        self.staged = False  # the inputs are on the PVC
        self.queued = None  # the message while the Job waits in the queue
        self.located_at = time.monotonic()
        self.seen_pod = False
        self.pod_present = False  # at the last decide()
        # Set when the server picks up a job it did not submit itself (after a restart).
        self.recovered = False
        self.pod_name = None
        self.log_text = ""
        self.submitted = time.monotonic()

    # ---- steps (each handles its own statuses) ------------------------------------------------
    def submit(self) -> None:
        """Creates the job's objects and stages its inputs onto its volume: from then on the
        Job needs neither this server nor the gateway, whether it runs at once or waits."""
        if self.profile_error:
            raise JobFailed(self.profile_error)
        self.on_phase("submitting")
        try:
            inputs_wanted = self.driver.create(self.job, self.profile, self.timeout_seconds)
        except NotFound as e:
            raise JobFailed(f"the job's Kubernetes objects belong to someone else ({e})") from None
        except OverLimit as e:
            raise JobFailed(str(e)) from None
        self.created = True
        if inputs_wanted:
            self.stage_in()
        self.staged = True
        self.submitted = self.located_at = time.monotonic()
        self.on_phase("submitted")

    def stage_in(self) -> None:
        """The inputs, onto the job's volume through the pod that create() started on it."""
        self.on_phase("staging")
        files, skipped = transfer.run_files(self.job.staging_dir, self.job.package_input_folder, self.job.input_file)
        if skipped:
            log.warning("job %s: not sending links or special files: %s", self.job.job_id, ", ".join(skipped))
        pod = self._volume_pod("the pod that stages the inputs")
        self.driver.send_inputs(self.job.job_id, pod, self.job.staging_dir, files)
        try:
            self.driver.remove_collector(self.job.job_id)
        except Exception as e:  # noqa: BLE001 - it ends by its deadline, and cleanup deletes it
            log.info("job %s: removing the staging pod: %s", self.name, e)

    def collect(self, pod: str, component: str = names.COMPONENT_JOB):
        """Streams the outputs into the staging dir; returns (result, written paths)."""
        self.on_phase("collecting")
        result, written = self.driver.receive_outputs(self.job.job_id, pod, component, self.job.staging_dir,
                                                      self.cfg.output_size_limit)
        try:
            self.driver.release(self.job.job_id, pod, component)
        except (transfer.TransferError, NotFound) as e:
            # The outputs are in; release only lets the pod exit early. The pod exits as soon as
            # the marker is there, which can kill this very command (exit code 137), and cleanup
            # deletes the pod in any case.
            log.info("job %s: release in pod %s: %s", self.name, pod, e)
        return result, written

    def collect_from_volume(self):
        """Collects through a short-lived pod on the job's PVC (same image, same security)."""
        try:
            self.driver.start_collector(self.job)
        except NotFound:
            raise transfer.CommandFailed("the job's volume is gone") from None
        try:
            return self._collect_through()
        finally:
            self.driver.remove_collector(self.job.job_id)

    def _collect_through(self):
        return self.collect(self._volume_pod("the output collector"), names.COMPONENT_COLLECTOR)

    def _volume_pod(self, what: str) -> str:
        """The name of the pod that holds the job's volume, once it runs; JobFailed if it cannot."""
        def running(p):
            problem = p is not None and (reasons.image_problem(p) or reasons.terminated_problem(p))
            if problem:
                return Fail(f"could not start {what}: {problem}")
            return p.metadata.name if reasons.container_running(p) else None

        try:
            answer = self.driver.wait_for_pod(self.job.job_id, names.COMPONENT_COLLECTOR, running,
                                              self.cfg.scheduling_timeout_seconds)
        except WaitTimeout:
            raise JobFailed(f"{what} did not start in time") from None
        if isinstance(answer, Fail):
            raise JobFailed(answer.message)
        return answer

    def cleanup(self, outcome: Optional[Outcome] = None) -> None:
        """Deletes the Job (and its pods), the pod on the volume if one is left (a stage-in that
        failed) and the PVC, unless the outcome keeps the volume. Safe to call any number of times."""
        self.driver.delete(self.job.job_id, keep_volume=outcome is not None and outcome.keep_volume)

    def stop(self) -> None:
        """Deletes the Job gracefully (see the driver); the PVC stays for the partial outputs."""
        self.driver.stop(self.job.job_id)

    def cleanup_quietly(self, outcome: Optional[Outcome] = None) -> None:
        try:
            self.cleanup(outcome)
        except Exception:  # noqa: BLE001 - never mask the job's own outcome; the TTL is a backstop
            log.exception("cleanup of %s failed", self.name)

    # ---- decisions ----------------------------------------------------------------------------
    def decide(self, pod):
        """The next step for the job's pod as observed now, or None to keep waiting."""
        self.pod_present = pod is not None
        if pod is None:
            if not self.created and not self.recovered:
                return Submit()
            every = QUEUED_LOCATE_SECONDS if self.queued else LOCATE_SECONDS
            if self.seen_pod or self.recovered or time.monotonic() - self.located_at > every:
                return Locate()
            return None
        self.seen_pod = self.created = True
        self._admitted()
        self.pod_name = pod.metadata.name
        problem = reasons.image_problem(pod)
        if problem:
            return Fail(problem)
        why = reasons.unschedulable(pod)
        if why and _age_seconds(pod) > self.cfg.scheduling_timeout_seconds:
            return Fail(f"Unschedulable: {why}")
        cs = reasons.container_status(pod)
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
            return Locate()  # taken up after a restart: are the inputs on the volume?
        return None

    def locate(self):
        """Resolves Locate: the next step from the Job's and the PVC's state (API calls)."""
        self.recovered = False
        self.located_at = time.monotonic()
        job_id = self.job.job_id
        return self.located(self.driver.read_job(job_id), lambda: self.driver.volume_exists(job_id),
                            lambda: self.driver.warning_event(job_id))

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
                if queue.is_staging(job):
                    return Submit()  # the inputs never arrived (the server went away): send them
                self.staged = True
                if queue.is_suspended(job):
                    self._queued(queue.queue_note(job))
                    return None
                self._admitted()
                if self.seen_pod and not self.pod_present:
                    return Fail("the job pod was deleted before it finished")
                # The wait for a pod starts when the queue admitted the Job; one that has a pod
                # (active) is waiting for it to be seen.
                if not self.pod_present and not (job.status and job.status.active) \
                        and _seconds_since_admission(job) > self.cfg.scheduling_timeout_seconds:
                    return Fail(events_problem() or "the Job created no pod in time")
                return None
        # The Job ended, its TTL removed it, or someone deleted it (it may linger while its
        # finalizers run, but it will never run again): the outputs, if any, are on the PVC.
        if pvc_exists():
            return CollectFromVolume()
        return Fail("the Kubernetes Job and its volume no longer exist; the job's outputs are lost")

    def _queued(self, message: str) -> None:
        if message != self.queued:
            self.queued = message
            self.on_queued(message)

    def _admitted(self) -> None:
        if self.queued:
            self.queued = None
            self.on_queued(None)

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
                        if isinstance(e, transfer.PrintedTooMuch):
                            raise  # a pod that floods us is not asked again, nor its volume read
                        # The pod ended under us (deadline, eviction): the PVC still has it all,
                        # and the pod's end is the reason to give if that fails too.
                        log.warning("job %s: collecting from the pod failed (%s); reading its volume", self.name, e)
                        ended = self._terminated_pod(step.pod)
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
            step = self.driver.wait_for_pod(self.job.job_id, names.COMPONENT_JOB, self.decide, timeout)
            if isinstance(step, Locate):
                step = retry_transient(self.locate)
                if isinstance(step, Submit):
                    retry_transient(self.submit)
                elif step is not None:
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
        tail = self.driver.log_tail(self.job.job_id, self.pod_name, self.cfg.run_log_limit) if self.pod_name else None
        if tail is None:
            return None
        data, cut = tail
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
        except (ApiException, OSError, transfer.TransferError, NotFound, JobFailed):  # the gateway's too
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
            cs = reasons.container_status(pod)
            return pod if pod is None or (cs is not None and cs.state.terminated) else None
        try:
            return self.driver.wait_for_pod(self.job.job_id, names.COMPONENT_JOB, ended, wait_seconds)
        except Exception:  # best effort: the result.json message stands on its own
            return None
