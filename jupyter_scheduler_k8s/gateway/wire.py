"""What the jobs gateway and its client agree on: the API's version prefix, how Kubernetes
objects travel as JSON, and which HTTP status stands for which of the lifecycle's errors, so that
a failure reads the same to the lifecycle in hub mode as in direct mode."""

import inspect
import json
import re
from typing import Optional

from kubernetes.client import ApiClient

API_PREFIX = "api/v1/"
# jupyter-scheduler's job ids are UUIDs; nothing else names a job at the gateway.
JOB_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
POD_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,251}[a-z0-9])?$")

# The size of the files in an upload, sent ahead so that the gateway can refuse it at once.
INPUT_BYTES_HEADER = "X-Jsk8s-Input-Bytes"

# Status codes, by error. 422: the command in the pod ran and failed (transfer.CommandFailed);
# with "error": PRINTED_TOO_MUCH in the body, it printed more than it may (transfer.PrintedTooMuch).
NOT_FOUND, COMMAND_FAILED = 404, 422
PRINTED_TOO_MUCH = "printed-too-much"
# Refusals the lifecycle must not try again: the job ends with the message.
REFUSED = (400, 401, 403, 409, 413)
# Worth trying again: the gateway, the hub or the API server is busy or away.
TRANSIENT = (429, 500, 502, 503, 504)

_API = ApiClient()


class _Response:
    def __init__(self, data: str):
        self.data = data


def to_json(obj) -> Optional[dict]:
    """A kubernetes.client model as the API server would write it (camelCase keys)."""
    return None if obj is None else _API.sanitize_for_serialization(obj)


# kubernetes 37 takes the text and its content type; earlier versions a response object.
_TEXT_DESERIALIZE = "content_type" in inspect.signature(ApiClient.deserialize).parameters


def from_json(data: Optional[dict], kind: str):
    """The kubernetes.client model (e.g. "V1Pod") for JSON that to_json wrote."""
    if data is None:
        return None
    if _TEXT_DESERIALIZE:
        return _API.deserialize(json.dumps(data), kind, "application/json")
    return _API.deserialize(_Response(json.dumps(data)), kind)
