"""Everything a job's lifecycle asks of Kubernetes, in one place, scoped to one owner.

`lifecycle.JobRun` decides; a driver acts. `KubeDriver` acts through the Kubernetes API with the
credentials it is given: in the user's server in direct mode, and in the jobs gateway in hub mode,
one per request, with the authenticated user as the owner. The user server's gateway client offers
the same methods over HTTP, so there is one lifecycle whichever way the requests go.

Every object is found by its name (names.py) and used only if its owner annotation names this
driver's owner: another owner's job reads as absent (a 404 in the gateway). A pod is used only if
it is genuinely the job's: its controller is the job's Job (the executor pod) or PVC (the
collector pod), by uid, which only the API server sets. Labels alone could be forged by anyone
who can create a pod.
"""
import logging
import threading
from typing import Callable, Dict, Iterable, Iterator, Optional, Tuple

from kubernetes.client import V1OwnerReference
from kubernetes.client.rest import ApiException

from ..config import K8sConfig, image_for
from . import executor, manifests, names, queue, reasons, transfer
from .base import Driver, NotFound, OverLimit
from .clients import Clients, absent_on_404, delete_exactly, pull_policy
from .watch import LIST, TICK, WaitTimeout, pod_events

log = logging.getLogger(__name__)


class KubeDriver(Driver):
    """`queued`: Jobs are made suspended and wait for the queue's admitter (kube/queue.py),
    which the gateway runs, and the user's server in direct mode under K8sScheduler."""

    def __init__(self, cfg: K8sConfig, clients: Clients, owner: Optional[str] = None, queued: bool = False):
        self.cfg, self.clients, self.queued = cfg, clients, queued
        self.namespace = cfg.namespace
        self.owner = cfg.username if owner is None else owner
        self._uids: Dict[Tuple[str, str], str] = {}  # (kind, job id) -> uid of the owner's object
        self._genuine_job_pods = set()  # (job id, pod name) checked by check_pod
        self._lock = threading.Lock()

    # ---- names and ownership -----------------------------------------------------------------
    def selector(self, job_id: Optional[str] = None, component: str = names.COMPONENT_JOB) -> str:
        selector = names.job_selector(job_id) if job_id else names.all_jobs_selector()
        selector += f",{names.LABEL_COMPONENT}={component}"
        if self.owner:
            selector += f",{names.LABEL_USERNAME}={names.safe_slug(self.owner)}"
        return selector

    def owns(self, obj) -> bool:
        """The exact user name is in an annotation: label values are slugs, and could collide."""
        annotations = (obj.metadata.annotations or {}) if obj is not None and obj.metadata else {}
        return annotations.get(names.ANNOTATION_USERNAME, "") == (self.owner or "")

    def _owned(self, obj):
        return obj if obj is not None and self.owns(obj) else None

    def _remember(self, kind: str, job_id: str, obj):
        if obj is not None:
            with self._lock:
                self._uids[(kind, job_id)] = obj.metadata.uid
        return obj

    # ---- objects ----------------------------------------------------------------------------
    def build_objects(self, job, profile: dict, timeout_seconds: int):
        """The PVC and the Job for a jobs.steps.NotebookJob, with this driver's owner. The Job is
        marked as staging until its inputs are on the PVC, and, queued, made suspended."""
        name = names.object_name(job.job_id)
        labels = names.labels(job.job_id, names.COMPONENT_JOB, self.owner, job.job_name, self.cfg.extra_labels)
        annotations = names.annotations(self.owner, job.job_name, self.cfg.extra_annotations)
        pvc = manifests.make_pvc(name, self.namespace, labels, annotations, self.cfg.storage_size,
                                 self.cfg.storage_class)
        job_annotations = {**annotations, names.ANNOTATION_STAGING: "inputs"}
        p = profile
        k8s_job = manifests.make_job(
            name, self.namespace, labels, job_annotations, suspend=self.queued,
            image=image_for(self.cfg, job.environment),
            pull_policy=pull_policy(self.cfg.image_pull_policy, self.clients.context_name),
            spec=executor.spec(job.input_file, job.outputs, job.parameters, self.cfg.collect_hold_seconds),
            container_resources=manifests.resources(p["cpu_request"], p["cpu_limit"], p["memory_request"],
                                                    p["memory_limit"], int(p["gpu"] or 0)),
            node_selector=p["node_selector"], tolerations=p["tolerations"],
            timeout_seconds=timeout_seconds, ttl_seconds=self.cfg.job_ttl_seconds)
        return pvc, k8s_job

    def create(self, job, profile: dict, timeout_seconds: int) -> bool:
        """Creates the job's PVC, its Job (staging, suspended if queued) and the pod that holds
        the PVC for stage-in (send_inputs); True while the inputs are still to send. Objects that exist already and are this owner's
        count as made (a retried or restarted submit); another owner's are a NotFound. OverLimit,
        with nothing created, if the owner already has limits.queuedJobsPerUser jobs waiting."""
        self.clients.api_client  # resolves the context, which the pull policy depends on
        pvc, k8s_job = self.build_objects(job, profile, timeout_seconds)
        # The queue's order: when the user submitted it (the server's threads create in any order).
        k8s_job.metadata.annotations[names.ANNOTATION_QUEUED_AT] = queue.stamp(job.submitted)
        if self.queued:
            self._check_queue_limit(k8s_job.metadata.name)
        # If the Job's create fails, the PVC stays for the next try; a job that fails for good
        # has both deleted by name.
        pvc = self._remember("pvc", job.job_id, self.create_owned(
            self.clients.core.create_namespaced_persistent_volume_claim, pvc,
            self.clients.core.read_namespaced_persistent_volume_claim))
        k8s_job = self._remember("job", job.job_id, self.create_owned(
            self.clients.batch.create_namespaced_job, k8s_job, self.clients.batch.read_namespaced_job))
        if not queue.is_staging(k8s_job):
            return False  # a retried submit, after the inputs were sent
        self._hold_volume(job, pvc, self.cfg.scheduling_timeout_seconds + 60)
        return True

    def _check_queue_limit(self, name: str) -> None:
        limit = self.cfg.queued_jobs_per_user
        if not limit:
            return
        jobs = self.clients.batch.list_namespaced_job(self.namespace, label_selector=names.queue_selector(self.owner))
        waiting = [j for j in jobs.items if self.owns(j) and j.metadata.name != name and queue.is_suspended(j)
                   and j.metadata.deletion_timestamp is None]
        if len(waiting) >= limit:
            raise OverLimit(f"You have {len(waiting)} job{'s' if len(waiting) > 1 else ''} waiting to run, the most "
                            f"one user may have queued (limits.queuedJobsPerUser: {limit}). Wait for some to start, "
                            f"or stop some, to submit another.")

    def mark_staged(self, job_id: str) -> None:
        """The job's inputs are on its PVC: its Job may be admitted now."""
        if self.read_job(job_id) is None:
            raise NotFound(f"the Job of job {job_id} is gone")
        self.clients.batch.patch_namespaced_job(names.object_name(job_id), self.namespace, queue.staged_patch())

    def create_owned(self, create, body, read):
        """Creates `body`; if its name is taken by this owner's object (a retried create), that
        object; if by another's, NotFound."""
        try:
            return create(self.namespace, body)
        except ApiException as e:
            if e.status != 409:
                raise
        existing = self._owned(absent_on_404(read, body.metadata.name, self.namespace))
        if existing is None:
            raise NotFound(f"{body.metadata.name} belongs to another job")
        return existing

    def read_job(self, job_id: str):
        """The owner's Job, or None."""
        job = absent_on_404(self.clients.batch.read_namespaced_job, names.object_name(job_id), self.namespace)
        return self._remember("job", job_id, self._owned(job))

    def read_volume(self, job_id: str):
        """The owner's PVC, or None."""
        pvc = absent_on_404(self.clients.core.read_namespaced_persistent_volume_claim,
                            names.object_name(job_id), self.namespace)
        return self._remember("pvc", job_id, self._owned(pvc))

    def volume_exists(self, job_id: str) -> bool:
        """True if the job's PVC exists and is not being deleted."""
        pvc = self.read_volume(job_id)
        return pvc is not None and pvc.metadata.deletion_timestamp is None

    def warning_event(self, job_id: str) -> Optional[str]:
        """The newest warning event about the owner's Job (e.g. a quota refusing its pod), if any."""
        if self.read_job(job_id) is None:
            return None
        events = self.clients.core.list_namespaced_event(
            self.namespace, field_selector=f"involvedObject.name={names.object_name(job_id)},type=Warning")
        newest = sorted(events.items, key=lambda e: e.last_timestamp or e.event_time or e.metadata.creation_timestamp)
        return reasons.short(f"{newest[-1].reason}: {newest[-1].message}") if newest else None

    def stop(self, job_id: str) -> None:
        """Deletes the Job gracefully: its pod gets SIGTERM and terminationGracePeriodSeconds to
        save the notebook as it is (the executor writes its outputs to the PVC), which stays."""
        self._delete_owned("job", job_id, grace_period_seconds=None, propagation_policy="Foreground")

    def delete(self, job_id: str, keep_volume: bool = False, collector: bool = True) -> None:
        """Deletes the job's objects: the Job (its pods go with it), the collector pod (unless the
        caller knows there is none) and, unless keep_volume, the PVC. Safe to call again."""
        with self._lock:
            self._genuine_job_pods = {(j, p) for j, p in self._genuine_job_pods if j != job_id}
        self._delete_owned("job", job_id)
        if collector:
            self.remove_collector(job_id)
        if not keep_volume:
            self._delete_owned("pvc", job_id)

    def _delete_owned(self, kind: str, job_id: str, grace_period_seconds=0, propagation_policy="Background"):
        """Deletes by name, with the uid of the owner's object as a precondition, so that nothing
        else that took the name meanwhile is deleted. Gone already is done."""
        obj = self.read_job(job_id) if kind == "job" else self.read_volume(job_id)
        if obj is None:
            return
        method = (self.clients.batch.delete_namespaced_job if kind == "job"
                  else self.clients.core.delete_namespaced_persistent_volume_claim)
        delete_exactly(method, obj, self.namespace, grace_period_seconds, propagation_policy)

    # ---- the collector pod (outputs read from the PVC when the Job's pod is gone) -------------
    def start_collector(self, job, hold_seconds: int = 300) -> None:
        pvc = self.read_volume(job.job_id)
        if pvc is None:
            raise NotFound(f"the volume of job {job.job_id} is gone")
        self._hold_volume(job, pvc, hold_seconds)

    def _hold_volume(self, job, pvc, hold_seconds: int) -> None:
        """The pod that holds the job's PVC (named and labelled the collector): to stage the inputs
        in before the Job runs, and to read the outputs when the Job's pod ended uncollected."""
        self.create_pod_on_volume(
            names.collector_name(job.job_id), pvc,
            names.labels(job.job_id, names.COMPONENT_COLLECTOR, self.owner, job.job_name, self.cfg.extra_labels),
            names.annotations(self.owner, job.job_name, self.cfg.extra_annotations), job.environment, hold_seconds)

    def create_pod_on_volume(self, name: str, pvc, labels: dict, annotations: dict, environment, hold_seconds: int):
        """A pod that mounts the PVC and holds it (`jsk8s-executor hold`) for exec. Owned by the
        PVC: that uid is how it is told from a forged pod, and it goes when the PVC does."""
        pod = manifests.make_collector_pod(
            name, self.namespace, labels, annotations, image=image_for(self.cfg, environment),
            pull_policy=pull_policy(self.cfg.image_pull_policy, self.clients.context_name),
            pvc_name=pvc.metadata.name, hold_seconds=hold_seconds)
        pod.metadata.owner_references = [V1OwnerReference(
            api_version="v1", kind="PersistentVolumeClaim", name=pvc.metadata.name, uid=pvc.metadata.uid)]
        try:
            self.clients.core.create_namespaced_pod(self.namespace, pod)
        except ApiException as e:
            if e.status != 409:
                raise

    def remove_collector(self, job_id: str) -> None:
        name = names.collector_name(job_id)
        pod = absent_on_404(self.clients.core.read_namespaced_pod, name, self.namespace)
        if pod is not None and self.genuine(pod, job_id):
            delete_exactly(self.clients.core.delete_namespaced_pod, pod, self.namespace)

    # ---- pods --------------------------------------------------------------------------------
    def genuine(self, pod, job_id: Optional[str] = None) -> bool:
        """The pod is the owner's job pod or collector, made by the Job controller or by us."""
        labels = pod.metadata.labels or {}
        pod_job = labels.get(names.LABEL_JOB_ID, "")
        component = labels.get(names.LABEL_COMPONENT)
        if not pod_job or (job_id is not None and pod_job != names.safe_slug(job_id)) or not self.owns(pod):
            return False
        kind = {names.COMPONENT_JOB: "job", names.COMPONENT_COLLECTOR: "pvc"}.get(component)
        if kind is None:
            return False
        controllers = {ref.uid for ref in pod.metadata.owner_references or []
                       if ref.kind == ("Job" if kind == "job" else "PersistentVolumeClaim")}
        if not controllers:
            return False
        job_key = job_id or pod_job  # job ids are UUIDs: their slug is the id itself
        with self._lock:
            known = self._uids.get((kind, job_key))
        if known not in controllers:
            owner = self.read_job(job_key) if kind == "job" else self.read_volume(job_key)
            known = owner.metadata.uid if owner is not None else None
        return known in controllers

    def pod_events(self, job_id: Optional[str] = None, component: str = names.COMPONENT_JOB,
                   tick: float = 5, stopped: Callable[[], bool] = lambda: False) -> Iterator[Tuple[str, object]]:
        """watch.pod_events for the owner's pods (one job's, or all), genuine ones only."""
        for kind, obj in pod_events(self.clients.core, self.namespace, self.selector(job_id, component), tick, stopped):
            if kind == LIST:
                yield kind, [p for p in obj if self._genuine_quietly(p, job_id)]
            elif kind == TICK or self._genuine_quietly(obj, job_id):
                yield kind, obj

    def _genuine_quietly(self, pod, job_id) -> bool:
        try:
            return self.genuine(pod, job_id)
        except ApiException as e:  # the check is asked again at the next event
            log.warning("could not check pod %s: %s", pod.metadata.name, reasons.describe_error(e))
            return False

    def check_pod(self, job_id: str, pod_name: str, component: str = names.COMPONENT_JOB) -> None:
        """NotFound unless the named pod is genuinely the job's. A job pod found genuine is
        remembered (its name has a random suffix and a Job never makes two; the collector's
        name is fixed, and it is checked every time)."""
        with self._lock:
            if (job_id, pod_name) in self._genuine_job_pods:
                return
        pod = absent_on_404(self.clients.core.read_namespaced_pod, pod_name, self.namespace)
        if pod is None or (pod.metadata.labels or {}).get(names.LABEL_COMPONENT) != component \
                or not self.genuine(pod, job_id):
            raise NotFound(f"pod {pod_name} is not a pod of job {job_id}")
        if component == names.COMPONENT_JOB:
            with self._lock:
                self._genuine_job_pods.add((job_id, pod_name))

    # ---- transfer ----------------------------------------------------------------------------
    def send_inputs(self, job_id: str, pod_name: str, root: str, files: Iterable[str]) -> None:
        """The files, onto the job's PVC through the pod that holds it; then the Job may run."""
        self.check_pod(job_id, pod_name, names.COMPONENT_COLLECTOR)
        transfer.send_files(self.clients.core, self.namespace, pod_name, manifests.CONTAINER,
                            executor.stage_in(), root, files)
        self.mark_staged(job_id)

    def receive_outputs(self, job_id: str, pod_name: str, component: str, dest: str, size_limit: int):
        """Streams the outputs into dest (safe_tar); returns (result, written paths)."""
        self.check_pod(job_id, pod_name, component)
        return transfer.receive_outputs(self.clients.core, self.namespace, pod_name, manifests.CONTAINER,
                                        executor.stage_out(), dest, size_limit)

    def release(self, job_id: str, pod_name: str, component: str) -> None:
        """Lets the pod exit now that its outputs are in."""
        self.check_pod(job_id, pod_name, component)
        transfer.run_command(self.clients.core, self.namespace, pod_name, manifests.CONTAINER, executor.release())

    def log_tail(self, job_id: str, pod_name: str, limit: int) -> Optional[Tuple[bytes, int]]:
        """The last `limit` bytes of the executor container's log (from a line start) and how many
        bytes were left out; None if there is no log (the container never started, or the pod is
        gone). The log is streamed: a notebook that printed gigabytes costs 2 x limit of memory."""
        try:
            self.check_pod(job_id, pod_name)
            response = self.clients.core.read_namespaced_pod_log(
                pod_name, self.namespace, container=manifests.CONTAINER, _preload_content=False)
        except NotFound:
            return None
        except ApiException as e:
            if e.status in (400, 404):
                return None
            raise
        try:
            return transfer.log_tail_bytes(response.stream(256 * 1024), limit)
        finally:
            response.release_conn()


__all__ = ["KubeDriver", "WaitTimeout"]
