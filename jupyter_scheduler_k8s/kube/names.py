"""Names and labels of the Kubernetes objects of a job. Every name is built here, once."""
import hashlib
import re
from typing import Optional

MANAGED_BY = "jupyter-scheduler-k8s"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_JOB_ID = "scheduler.jupyter.org/job-id"
LABEL_JOB_NAME = "scheduler.jupyter.org/job-name"
LABEL_USERNAME = "hub.jupyter.org/username"
LABEL_DEFINITION_ID = "scheduler.jupyter.org/job-definition-id"
ANNOTATION_JOB_NAME = "scheduler.jupyter.org/job-name"
ANNOTATION_USERNAME = "hub.jupyter.org/username"
# The queue (kube/queue.py). A job's Job is made suspended, marked STAGING until its inputs are on
# its volume; QUEUED_AT orders a user's jobs (creationTimestamp has whole seconds); the admitter
# writes WAITING, the user's status message while the Job waits for a slot.
ANNOTATION_STAGING = "scheduler.jupyter.org/staging"
ANNOTATION_QUEUED_AT = "scheduler.jupyter.org/queued-at"
ANNOTATION_WAITING = "scheduler.jupyter.org/waiting"

COMPONENT_JOB = "notebook-job"
COMPONENT_COLLECTOR = "output-collector"
COMPONENT_SCHEDULE = "schedule"  # a job definition's CronJob and its volume
COMPONENT_SCHEDULED_RUN = "scheduled-run"  # the Jobs and pods of its runs
# A CronJob's name is at most 52 characters: its Jobs get an 11-character suffix.
CRONJOB_NAME_LIMIT = 52

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


def definition_name(definition_id: str) -> str:
    """Name of a job definition's CronJob and PVC (and the prefix of its runs' Jobs): 44
    characters for a UUID, within the CronJob's limit of 52."""
    return "jsk8s-d-" + safe_slug(definition_id.lower(), CRONJOB_NAME_LIMIT - 8)


def holder_name(definition_id: str) -> str:
    """A definition's holder pod (its volume's files, read and written by exec). It is named,
    and labelled COMPONENT_COLLECTOR, like a job's collector: both are a pod that holds a volume
    (`jsk8s-executor hold`), and the clusters running this already have such pods."""
    return definition_name(definition_id) + "-collect"


def manual_run_name(definition_id: str, suffix: str) -> str:
    """A "Run now" Job's name: the definition's name, an "m" (the controller's own runs end in
    digits only) and a short random suffix."""
    return f"{definition_name(definition_id)}-m{suffix}"[:63]


def definition_selector(definition_id: str = "", component: str = COMPONENT_SCHEDULE) -> str:
    selector = f"{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_COMPONENT}={component}"
    if definition_id:
        selector += f",{LABEL_DEFINITION_ID}={safe_slug(definition_id)}"
    return selector


def definition_labels(definition_id: str, component: str, username: str = "", job_name: str = "",
                      extra=None) -> dict:
    result = dict(extra or {})
    result.update({LABEL_MANAGED_BY: MANAGED_BY, LABEL_COMPONENT: component,
                   LABEL_DEFINITION_ID: safe_slug(definition_id)})
    if username:
        result[LABEL_USERNAME] = safe_slug(username)
    if job_name:
        result[LABEL_JOB_NAME] = safe_slug(job_name)
    return result


def job_selector(job_id: str) -> str:
    return f"{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_JOB_ID}={safe_slug(job_id)}"


def all_jobs_selector() -> str:
    return f"{LABEL_MANAGED_BY}={MANAGED_BY}"


def queue_selector(username: Optional[str] = None) -> str:
    """The Jobs the queue admits: one-off jobs and scheduled runs, of every user (None) or of one
    (a server without a user name labels none)."""
    selector = f"{LABEL_MANAGED_BY}={MANAGED_BY},{LABEL_COMPONENT} in ({COMPONENT_JOB},{COMPONENT_SCHEDULED_RUN})"
    if username is None:
        return selector
    return selector + (f",{LABEL_USERNAME}={safe_slug(username)}" if username else f",!{LABEL_USERNAME}")


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
