"""Pure builders of the Kubernetes objects of a job. No API calls here: callers gather the inputs.

API reference: https://kubernetes.io/docs/reference/kubernetes-api/
"""
import copy
import json
from typing import Dict, List, Optional

from kubernetes.client import (
    V1Capabilities, V1Container, V1CronJob, V1CronJobSpec, V1EnvVar, V1EnvVarSource, V1ExecAction, V1Job,
    V1JobSpec, V1JobTemplateSpec, V1ObjectFieldSelector, V1ObjectMeta, V1OwnerReference, V1PersistentVolumeClaim, V1PersistentVolumeClaimSpec,
    V1PersistentVolumeClaimVolumeSource, V1Pod, V1PodSecurityContext, V1PodSpec, V1PodTemplateSpec,
    V1Probe, V1ResourceFieldSelector, V1ResourceRequirements, V1SeccompProfile, V1SecurityContext,
    V1Toleration, V1Volume, V1VolumeMount, V1VolumeResourceRequirements,
)

from . import executor

CONTAINER = "executor"
VOLUME = "job"
# The image's user; group 100 ("users") as in the Jupyter docker stacks.
RUN_AS_USER = 1000
RUN_AS_GROUP = 100
GPU_RESOURCE = "nvidia.com/gpu"


def pod_security_context() -> V1PodSecurityContext:
    """Pod-level settings required by Pod Security "restricted"."""
    return V1PodSecurityContext(
        run_as_non_root=True, run_as_user=RUN_AS_USER, run_as_group=RUN_AS_GROUP, fs_group=RUN_AS_GROUP,
        seccomp_profile=V1SeccompProfile(type="RuntimeDefault"),
    )


def container_security_context() -> V1SecurityContext:
    return V1SecurityContext(
        allow_privilege_escalation=False, run_as_non_root=True,
        capabilities=V1Capabilities(drop=["ALL"]),
        seccomp_profile=V1SeccompProfile(type="RuntimeDefault"),
    )


def resources(cpu_request=None, cpu_limit=None, memory_request=None, memory_limit=None,
              gpu: int = 0) -> V1ResourceRequirements:
    requests = {k: v for k, v in (("cpu", cpu_request), ("memory", memory_request)) if v}
    limits = {k: v for k, v in (("cpu", cpu_limit), ("memory", memory_limit)) if v}
    if gpu:
        # Extended resources are requested through limits (requests default to them).
        limits[GPU_RESOURCE] = str(gpu)
    return V1ResourceRequirements(requests=requests or None, limits=limits or None)


def make_pvc(name: str, namespace: str, labels: Dict[str, str], annotations: Dict[str, str],
             size: str, storage_class: Optional[str] = None) -> V1PersistentVolumeClaim:
    return V1PersistentVolumeClaim(
        api_version="v1", kind="PersistentVolumeClaim",
        metadata=V1ObjectMeta(name=name, namespace=namespace, labels=dict(labels),
                              annotations=dict(annotations) or None),
        spec=V1PersistentVolumeClaimSpec(
            access_modes=["ReadWriteOnce"], storage_class_name=storage_class or None,
            resources=V1VolumeResourceRequirements(requests={"storage": size}),
        ),
    )


def _pod_spec(*, image: str, pull_policy: Optional[str], command: List[str], env: List[V1EnvVar],
              pvc_name: str, container_resources: V1ResourceRequirements,
              node_selector: Optional[Dict[str, str]] = None, tolerations: Optional[List[dict]] = None,
              readiness_probe: Optional[V1Probe] = None, active_deadline_seconds: Optional[int] = None,
              termination_grace_period_seconds: int = 5) -> V1PodSpec:
    container = V1Container(
        name=CONTAINER, image=image, image_pull_policy=pull_policy, command=list(command),
        # No workingDir: runc would create a missing /job/work as root, unwritable for uid 1000.
        # The executor changes into it once stage-in has made it.
        env=list(env), resources=container_resources,
        security_context=container_security_context(), readiness_probe=readiness_probe,
        volume_mounts=[V1VolumeMount(name=VOLUME, mount_path=executor.JOB_DIR)],
        termination_message_policy="FallbackToLogsOnError",
    )
    return V1PodSpec(
        restart_policy="Never", containers=[container],
        security_context=pod_security_context(),
        # Job pods never talk to the API server: no token, no service environment variables.
        automount_service_account_token=False, enable_service_links=False,
        node_selector=dict(node_selector or {}) or None,
        tolerations=[V1Toleration(**copy.deepcopy(t)) for t in (tolerations or [])] or None,
        volumes=[V1Volume(name=VOLUME, persistent_volume_claim=V1PersistentVolumeClaimVolumeSource(claim_name=pvc_name))],
        active_deadline_seconds=active_deadline_seconds,
        termination_grace_period_seconds=termination_grace_period_seconds,
    )


def make_job(name: str, namespace: str, labels: Dict[str, str], annotations: Dict[str, str], *,
             image: str, pull_policy: Optional[str], spec: dict, container_resources: V1ResourceRequirements,
             node_selector: Optional[Dict[str, str]] = None, tolerations: Optional[List[dict]] = None,
             timeout_seconds: int = 0, ttl_seconds: Optional[int] = None, suspend: bool = False) -> V1Job:
    """The Job that runs one notebook. `spec` is the executor spec (docs/design.md). A suspended
    Job makes no pod until the queue admits it (kube/queue.py)."""
    # The pod turns Ready once result.json exists: the server's watch learns that outputs are
    # waiting without polling the pod.
    probe = V1Probe(_exec=V1ExecAction(command=["test", "-e", executor.RESULT_FILE]),
                    period_seconds=1, failure_threshold=1, success_threshold=1, timeout_seconds=5)
    pod_spec = _pod_spec(
        image=image, pull_policy=pull_policy, command=executor.run(), env=_executor_env(spec),
        pvc_name=name, container_resources=container_resources, node_selector=node_selector,
        tolerations=tolerations, readiness_probe=probe, active_deadline_seconds=timeout_seconds or None,
    )
    return V1Job(
        api_version="batch/v1", kind="Job",
        metadata=V1ObjectMeta(name=name, namespace=namespace, labels=dict(labels),
                              annotations=dict(annotations) or None),
        spec=_job_spec(labels, annotations, pod_spec, timeout_seconds, ttl_seconds, suspend),
    )


def _executor_env(spec: dict) -> List[V1EnvVar]:
    return [
        V1EnvVar(name=executor.SPEC_ENV, value=json.dumps(spec, sort_keys=True)),
        V1EnvVar(name="PYTHONUNBUFFERED", value="1"),
        # Lets the executor say "probably out of memory (limit 512Mi)" when its kernel dies.
        V1EnvVar(name=executor.MEMORY_LIMIT_ENV, value_from=V1EnvVarSource(
            resource_field_ref=V1ResourceFieldSelector(container_name=CONTAINER, resource="limits.memory"))),
    ]


def _job_spec(labels, annotations, pod_spec: V1PodSpec, timeout_seconds: int, ttl_seconds: Optional[int],
              suspend: bool = False) -> V1JobSpec:
    return V1JobSpec(
        suspend=suspend or None, backoff_limit=0, ttl_seconds_after_finished=ttl_seconds,
        # The pod's own deadline fires first and says DeadlineExceeded on the pod; this one is
        # a backstop for a pod stuck before it starts.
        active_deadline_seconds=(timeout_seconds + 60) if timeout_seconds else None,
        # A notebook is not idempotent: a lost pod is a failed job, never a silent rerun.
        pod_replacement_policy="Failed",
        template=V1PodTemplateSpec(
            metadata=V1ObjectMeta(labels=dict(labels), annotations=dict(annotations) or None),
            spec=pod_spec,
        ),
    )


# The label the Job controller puts on its pods: a scheduled run's directory on the volume.
JOB_NAME_LABEL = "batch.kubernetes.io/job-name"


def make_cronjob(name: str, namespace: str, labels: Dict[str, str], annotations: Dict[str, str], *,
                 run_labels: Dict[str, str], schedule: str, time_zone: Optional[str], suspend: bool,
                 concurrency_policy: str, starting_deadline_seconds: int, history_limit: int,
                 image: str, pull_policy: Optional[str], spec: dict, retention: dict,
                 container_resources: V1ResourceRequirements, node_selector: Optional[Dict[str, str]] = None,
                 tolerations: Optional[List[dict]] = None, timeout_seconds: int = 0,
                 ttl_seconds: Optional[int] = None, suspend_runs: bool = False) -> V1CronJob:
    """A job definition's CronJob. Its pods mount the definition's volume (named like the CronJob)
    and run `jsk8s-executor scheduled-run`, which stages from the volume's snapshot: no server is
    needed. `retention` is the executor's JSK8S_SCHEDULE (docs/design.md, "Schedules"). With
    `suspend_runs` its runs are made suspended and wait for the queue like any job."""
    env = _executor_env(spec) + [
        V1EnvVar(name=executor.SCHEDULE_ENV, value=json.dumps(retention, sort_keys=True)),
        V1EnvVar(name=executor.RUN_NAME_ENV, value_from=V1EnvVarSource(
            field_ref=V1ObjectFieldSelector(field_path=f"metadata.labels['{JOB_NAME_LABEL}']"))),
    ]
    pod_spec = _pod_spec(
        image=image, pull_policy=pull_policy, command=executor.scheduled_run(), env=env,
        pvc_name=name, container_resources=container_resources, node_selector=node_selector,
        tolerations=tolerations, active_deadline_seconds=timeout_seconds or None,
    )
    return V1CronJob(
        api_version="batch/v1", kind="CronJob",
        metadata=V1ObjectMeta(name=name, namespace=namespace, labels=dict(labels),
                              annotations=dict(annotations) or None),
        spec=V1CronJobSpec(
            schedule=schedule, time_zone=time_zone or None, suspend=suspend,
            concurrency_policy=concurrency_policy,
            # Without a deadline, a controller that missed more than 100 start times (a long
            # suspension, a controller outage) stops scheduling the CronJob for good.
            starting_deadline_seconds=starting_deadline_seconds,
            successful_jobs_history_limit=history_limit, failed_jobs_history_limit=history_limit,
            job_template=V1JobTemplateSpec(
                metadata=V1ObjectMeta(labels=dict(run_labels), annotations=dict(annotations) or None),
                spec=_job_spec(run_labels, annotations, pod_spec, timeout_seconds, ttl_seconds, suspend_runs),
            ),
        ),
    )


def job_from_cronjob(cronjob: V1CronJob, name: str) -> V1Job:
    """A Job made from a CronJob's template, as `kubectl create job --from=cronjob/...` makes it:
    owned by the CronJob, so that it goes when the CronJob does."""
    template = copy.deepcopy(cronjob.spec.job_template)
    return V1Job(
        api_version="batch/v1", kind="Job",
        metadata=V1ObjectMeta(
            name=name, namespace=cronjob.metadata.namespace, labels=dict(template.metadata.labels or {}),
            annotations={**(template.metadata.annotations or {}), "cronjob.kubernetes.io/instantiate": "manual"},
            owner_references=[V1OwnerReference(api_version="batch/v1", kind="CronJob", name=cronjob.metadata.name,
                                               uid=cronjob.metadata.uid, controller=True)]),
        spec=template.spec,
    )


def set_spec_parameters(job: V1Job, parameters: dict) -> None:
    """Replaces the parameters in a Job's executor spec (a "Run now" with other parameters)."""
    for env in job.spec.template.spec.containers[0].env:
        if env.name == executor.SPEC_ENV:
            env.value = json.dumps({**json.loads(env.value), "parameters": dict(parameters)}, sort_keys=True)


def make_collector_pod(name: str, namespace: str, labels: Dict[str, str], annotations: Dict[str, str], *,
                       image: str, pull_policy: Optional[str], pvc_name: str, hold_seconds: int) -> V1Pod:
    """A short-lived pod on a job's PVC, used only when the Job's own pod is gone before its
    outputs were collected (for example after the server was down)."""
    pod_spec = _pod_spec(
        image=image, pull_policy=pull_policy, command=executor.hold(hold_seconds), env=[],
        pvc_name=pvc_name, container_resources=resources("10m", None, "64Mi", "256Mi"),
        active_deadline_seconds=hold_seconds + 60,
    )
    return V1Pod(
        api_version="v1", kind="Pod",
        metadata=V1ObjectMeta(name=name, namespace=namespace, labels=dict(labels),
                              annotations=dict(annotations) or None),
        spec=pod_spec,
    )
