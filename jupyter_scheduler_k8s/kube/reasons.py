"""Turns pod and Job state into what the user sees: a short, specific `status_message`.

Pure functions over V1Pod / V1Job objects, so recorded states can be unit-tested.
"""
import json
from typing import Optional

from kubernetes.client.rest import ApiException

MAX_MESSAGE = 1024
FATAL_WAITING = {"ImagePullBackOff", "ErrImageNeverPull", "InvalidImageName", "CreateContainerConfigError",
                 "CreateContainerError", "RunContainerError"}


def short(message: str, limit: int = MAX_MESSAGE) -> str:
    message = " ".join(str(message).split())
    return message if len(message) <= limit else message[: limit - 1] + "…"


def timed_out(timeout_seconds: int) -> str:
    return f"timed out after {timeout_seconds} s" if timeout_seconds else "timed out (activeDeadlineSeconds)"


def container_status(pod):
    """The status of the pod's container (every pod the package makes has one), or None."""
    statuses = (pod.status.container_statuses or []) if pod and pod.status else []
    return statuses[0] if statuses else None


def container_running(pod) -> bool:
    cs = container_status(pod)
    return cs is not None and cs.state is not None and cs.state.running is not None


def image_problem(pod) -> Optional[str]:
    """A message if the pod cannot start its container (bad image, bad config), else None."""
    cs = container_status(pod)
    waiting = cs.state.waiting if cs and cs.state else None
    if not waiting or waiting.reason not in FATAL_WAITING:
        return None
    image = pod.spec.containers[0].image
    if waiting.reason in ("ImagePullBackOff", "ErrImageNeverPull", "InvalidImageName"):
        hint = " (pull policy Never: load the image into the cluster's nodes)" if waiting.reason == "ErrImageNeverPull" else ""
        return short(f"{waiting.reason}: image '{image}' could not be pulled{hint}. {waiting.message or ''}")
    return short(f"{waiting.reason}: {waiting.message or 'the executor container could not be created'}")


def unschedulable(pod) -> Optional[str]:
    """The scheduler's reason if the pod is (still) unschedulable, else None."""
    for cond in (pod.status.conditions or []) if pod and pod.status else []:
        if cond.type == "PodScheduled" and cond.status == "False" and cond.reason == "Unschedulable":
            return cond.message or "no node can run this job"
    return None


# The reasons of a pod's DisruptionTarget condition (Kubernetes >= 1.26), in the user's terms.
DISRUPTIONS = {
    "EvictionByEvictionAPI": "evicted (a node drain, or another user of the Eviction API)",
    "PreemptionByScheduler": "preempted by a pod of higher priority",
    "DeletionByTaintManager": "deleted because its node was tainted NoExecute",
    "DeletionByPodGC": "deleted by the pod garbage collector (its node is gone)",
    "TerminationByKubelet": "stopped by its node's kubelet (node pressure or shutdown)",
}


def disruption(pod) -> Optional[str]:
    """Why Kubernetes took the pod away (a disruption, not the notebook's doing), or None."""
    for cond in (pod.status.conditions or []) if pod and pod.status else []:
        if cond.type == "DisruptionTarget" and cond.status == "True":
            what = DISRUPTIONS.get(cond.reason, f"disrupted ({cond.reason})")
            return short(f"the job's pod was {what}" + (f": {cond.message}" if cond.message else ""))
    return None


def memory_limit(pod) -> str:
    limits = pod.spec.containers[0].resources.limits if pod and pod.spec.containers[0].resources else None
    return (limits or {}).get("memory", "")


def terminated_problem(pod, timeout_seconds: int = 0) -> Optional[str]:
    """Why a pod ended without (trustworthy) results, or None if nothing says so."""
    if pod is None or pod.status is None:
        return None
    if pod.status.reason == "DeadlineExceeded":
        return timed_out(timeout_seconds)
    if pod.status.reason == "Evicted":
        return short(f"Evicted: {pod.status.message or 'the node ran out of resources'}")
    disrupted = disruption(pod)
    if disrupted:
        return disrupted
    cs = container_status(pod)
    term = cs.state.terminated if cs and cs.state else None
    if term is None and cs is not None and cs.last_state is not None:
        term = cs.last_state.terminated
    if term is None:
        return None
    if term.reason == "OOMKilled":
        limit = memory_limit(pod)
        return f"OOMKilled: the notebook exceeded its memory limit{' of ' + limit if limit else ''}"
    if term.exit_code not in (0, 1):
        detail = (term.message or "").strip().splitlines()[-5:]
        return short(f"the executor exited with code {term.exit_code} ({term.reason or 'Error'})"
                     + (": " + " | ".join(detail) if detail else ""))
    return None


def job_problem(job, timeout_seconds: int = 0) -> Optional[str]:
    """Failure reasons recorded on the Job itself (deadline, pod failure policy)."""
    for cond in (job.status.conditions or []) if job and job.status else []:
        if cond.type == "Failed" and cond.status == "True":
            if cond.reason == "DeadlineExceeded":
                return timed_out(timeout_seconds)
            return short(f"{cond.reason}: {cond.message}") if cond.reason != "BackoffLimitExceeded" else None
    return None


def result_problem(result: Optional[dict], pod=None) -> Optional[str]:
    """The failure the executor recorded in result.json, sharpened by what Kubernetes saw."""
    if not result or result.get("status") == "completed":
        return None
    error = result.get("error") or {}
    message = error.get("message") or f"{error.get('ename', 'Error')}: {error.get('evalue', '')}"
    cs = container_status(pod)
    term = cs.state.terminated if cs and cs.state else None
    if term is not None and term.reason == "OOMKilled":
        limit = memory_limit(pod)
        return f"OOMKilled: the notebook exceeded its memory limit{' of ' + limit if limit else ''}"
    return short(message)


def describe_error(e: Exception) -> str:
    """One line for an unexpected error: the API server's own message rather than headers and body."""
    if isinstance(e, ApiException):
        try:
            detail = json.loads(e.body)["message"]
        except (TypeError, ValueError, KeyError):
            detail = e.reason
        return short(f"Kubernetes API error {e.status}: {detail}")
    return short(f"{type(e).__name__}: {e}")
