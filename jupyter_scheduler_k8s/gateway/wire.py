"""What the jobs gateway and its client agree on: the API's version prefix, how Kubernetes
objects travel as JSON, and which HTTP status stands for which of the lifecycle's errors, so that
a failure reads the same to the lifecycle in hub mode as in direct mode."""

import inspect
import json
import re
from typing import Optional
from urllib.parse import quote

from kubernetes.client import ApiClient

API_PREFIX = "api/v1/"

# The API's paths under API_PREFIX, parameters in braces (OpenAPI's form), written once: the
# gateway routes them (jobs.py, schedules.py), its client asks for them (client.py) and openapi.py
# describes them; tests/unit/test_pkg_gateway.py checks that the three agree.
HEALTH, READY, OPENAPI, WHOAMI, PODS = "health", "ready", "openapi.json", "whoami", "pods"
JOB = "jobs/{job_id}"
JOB_VOLUME, JOB_WARNING, JOB_STOP, JOB_COLLECTOR = (JOB + "/volume", JOB + "/warning", JOB + "/stop",
                                                    JOB + "/collector")
POD = JOB + "/pods/{pod}"
POD_INPUT, POD_OUTPUT, POD_RELEASE, POD_LOG = POD + "/input", POD + "/output", POD + "/release", POD + "/log"
RUNS = "runs"
DEFINITION = "definitions/{definition_id}"
RUN_NOW, HOLDER, SNAPSHOT = DEFINITION + "/runs", DEFINITION + "/holder", DEFINITION + "/snapshot"
RUN = DEFINITION + "/runs/{run}"
RUN_POD, RUN_FORGET, RUN_OUTPUT = RUN + "/pod", RUN + "/forget", RUN + "/output"
_PARAMETER = re.compile(r"\{[a-z_]+\}")


def path(template: str, **values) -> str:
    """A path the client asks for: the template with its values, each quoted as one segment."""
    return template.format(**{name: quote(str(value), safe="") for name, value in values.items()})


def route(template: str) -> str:
    """The gateway's route for a template: each parameter one path segment, handed to the handler."""
    return _PARAMETER.sub("([^/]+)", template)
# jupyter-scheduler's job ids are UUIDs; nothing else names a job at the gateway.
JOB_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
POD_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,251}[a-z0-9])?$")

# The size of the files in an upload, sent ahead so that the gateway can refuse it at once.
INPUT_BYTES_HEADER = "X-Jsk8s-Input-Bytes"

# Status codes, by error. 422: the command in the pod ran and failed (transfer.CommandFailed);
# with "error": PRINTED_TOO_MUCH in the body, it printed more than it may (transfer.PrintedTooMuch).
NOT_FOUND, COMMAND_FAILED = 404, 422
PRINTED_TOO_MUCH = "printed-too-much"
# 429 with "error": OVER_LIMIT and no Retry-After: a per-user limit (kube.base.OverLimit), which
# waiting does not lift. A 429 with Retry-After (the gateway or the API server is busy) is tried again.
OVER_LIMIT_STATUS, OVER_LIMIT = 429, "over-limit"
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
