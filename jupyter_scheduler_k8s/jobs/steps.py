"""What the lifecycle talks about: the job (NotebookJob), the steps JobRun.decide names, how a
job ends (Outcome, JobFailed), and which errors are worth another try (is_transient)."""
import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import tenacity
import urllib3
import websocket
from kubernetes.client.rest import ApiException

from ..kube import reasons, transfer

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
    # When the user submitted it (seconds since the epoch): the queue's order among their jobs.
    submitted: Optional[float] = None

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
            submitted=(getattr(model, "create_time", None) or 0) / 1000 or None,
        )


# Steps named by JobRun.decide.
@dataclass
class Submit:
    """The Job and its PVC are not created yet (the first try failed), or its inputs are not on
    its volume yet: create what is missing and send them."""


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
