"""Names and labels of the Kubernetes objects of a job. Every name is built here, once."""
import hashlib
import re

MANAGED_BY = "jupyter-scheduler-k8s"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_JOB_ID = "scheduler.jupyter.org/job-id"
LABEL_JOB_NAME = "scheduler.jupyter.org/job-name"
LABEL_USERNAME = "hub.jupyter.org/username"
ANNOTATION_JOB_NAME = "scheduler.jupyter.org/job-name"
ANNOTATION_USERNAME = "hub.jupyter.org/username"

COMPONENT_JOB = "notebook-job"
COMPONENT_COLLECTOR = "output-collector"

_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def safe_slug(value: str, max_length: int = 63) -> str:
    """A valid label value for `value`: unchanged if it already is one, else stripped of invalid
    characters and suffixed with a short hash of the original, so distinct inputs stay distinct."""
    if len(value) <= max_length and _LABEL_VALUE.match(value):
        return value
    digest = hashlib.sha256(value.encode("utf-8")).hexdigest()[:8]
    stripped = re.sub(r"[^A-Za-z0-9_.-]+", "-", value).strip("-_.")
    stripped = stripped[: max_length - len(digest) - 1].rstrip("-_.")
    return f"{stripped}-{digest}" if stripped else digest


def object_name(job_id: str) -> str:
    """Name of a job's Job and PVC. Job ids are UUIDs, so this is DNS-safe and unique."""
    return "jsk8s-" + safe_slug(job_id.lower(), 57)


def collector_name(job_id: str) -> str:
    return object_name(job_id)[:53] + "-collect"


def job_selector(job_id: str) -> str:
    return f"{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_JOB_ID}={safe_slug(job_id)}"


def all_jobs_selector() -> str:
    return f"{LABEL_MANAGED_BY}={MANAGED_BY}"


def labels(job_id: str, component: str, username: str = "", job_name: str = "", extra=None) -> dict:
    result = dict(extra or {})
    result.update({
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_COMPONENT: component,
        LABEL_JOB_ID: safe_slug(job_id),
    })
    if username:
        result[LABEL_USERNAME] = safe_slug(username)
    if job_name:
        result[LABEL_JOB_NAME] = safe_slug(job_name)
    return result


def annotations(username: str = "", job_name: str = "", extra=None) -> dict:
    """Raw values, which labels cannot always hold."""
    result = dict(extra or {})
    if username:
        result[ANNOTATION_USERNAME] = username
    if job_name:
        result[ANNOTATION_JOB_NAME] = job_name
    return result
