"""The OpenAPI 3 description of the jobs gateway's API."""

from ..kube import names
from . import wire


def openapi(prefix: str) -> dict:
    """The OpenAPI 3 description of the API, served at {prefix}api/v1/openapi.json."""
    job = {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string", "format": "uuid"}}
    pod = {"name": "pod", "in": "path", "required": True, "schema": {"type": "string"}}
    component = {"name": "component", "in": "query", "schema": {"type": "string", "enum": [
        names.COMPONENT_JOB, names.COMPONENT_COLLECTOR], "default": names.COMPONENT_JOB}}
    errors = {str(code): {"description": text} for code, text in (
        (401, "no valid JupyterHub token"), (403, "the token lacks the gateway's scope"),
        (404, "no such job or pod for this user"),
        (429, "too many requests or streams at once (see Retry-After); without Retry-After, a per-user "
              "limit (limits.*) that the message names"),
        (503, "JupyterHub's or Kubernetes' API is away; try again"))}

    def op(summary, ok="200", extra=None, params=()):
        responses = {ok: {"description": "done"}, **errors, **(extra or {})}
        return {"summary": summary, "parameters": list(params), "responses": responses}
    base = "/" + wire.API_PREFIX
    return {
        "openapi": "3.0.3",
        "info": {"title": "jupyter-scheduler-k8s jobs gateway", "version": "1"},
        "servers": [{"url": prefix.rstrip("/")}],
        "components": {"securitySchemes": {"hubToken": {
            "type": "apiKey", "in": "header", "name": "Authorization",
            "description": "`token <JupyterHub API token>` (a user server's JUPYTERHUB_API_TOKEN)"}}},
        "security": [{"hubToken": []}],
        "paths": {
            base + wire.HEALTH: {"get": {**op("liveness: the gateway answers"), "security": []}},
            base + wire.READY: {"get": {**op("readiness: 503 while all its threads for Kubernetes calls are busy",
                                             extra={"503": {"description": "busy"}}), "security": []}},
            base + wire.OPENAPI: {"get": {**op("this document"), "security": []}},
            base + wire.WHOAMI: {"get": op("the user the token belongs to")},
            base + wire.PODS: {"get": op("the user's pod events, as JSON lines", params=[
                {"name": "job_id", "in": "query", "schema": {"type": "string"}}, component,
                {"name": "tick", "in": "query", "schema": {"type": "number"}}])},
            base + wire.JOB: {
                "put": op("create the job's PVC and Job", "201", {"400": {"description": "invalid job or profile"},
                                                                  "409": {"description": "taken"}}, [job]),
                "get": op("the job's Kubernetes Job (null if none)", params=[job]),
                "delete": op("delete the job's objects", "204", params=[job, {
                    "name": "keep_volume", "in": "query", "schema": {"type": "string", "enum": ["0", "1"]}}])},
            base + wire.JOB_VOLUME: {"get": op("whether the job's PVC exists", params=[job])},
            base + wire.JOB_WARNING: {"get": op("the newest warning event about the Job", params=[job])},
            base + wire.JOB_STOP: {"post": op("delete the Job gracefully, keeping its PVC", params=[job])},
            base + wire.JOB_COLLECTOR: {"post": op("start a collector pod on the PVC", "201", params=[job]),
                                        "delete": op("remove the collector pod", "204", params=[job])},
            base + wire.POD_INPUT: {"put": op(
                "stream a tar of the inputs into the pod", extra={"413": {"description": "too large"},
                                                                  "422": {"description": "stage-in failed"}},
                params=[job, pod])},
            base + wire.POD_OUTPUT: {"get": op(
                "the pod's stage-out tar stream", extra={"422": {"description": "stage-out failed"}},
                params=[job, pod, component])},
            base + wire.POD_RELEASE: {"post": op("let the pod exit", params=[job, pod, component])},
            base + wire.POD_LOG: {"get": op("the end of the pod's log", params=[job, pod, {
                "name": "limit", "in": "query", "schema": {"type": "integer"}}])},
            **schedule_paths(base, op),
        },
    }


def schedule_paths(base: str, op) -> dict:
    """Job definitions (schedules.py): a CronJob and its volume per definition."""
    d = {"name": "definition_id", "in": "path", "required": True, "schema": {"type": "string", "format": "uuid"}}
    run = {"name": "run", "in": "path", "required": True, "schema": {"type": "string"}}
    refused = {"400": {"description": "invalid definition, schedule, time zone or profile"}}
    return {
        base + wire.RUNS: {"get": op("the user's runs of job definitions (Jobs)", params=[
            {"name": "definition_id", "in": "query", "schema": {"type": "string"}}])},
        base + wire.DEFINITION: {
            "put": op("create the definition's volume and CronJob (suspended)", "201", refused, [d]),
            "patch": op("update the CronJob (schedule, time zone, pause, template)", extra=refused, params=[d]),
            "delete": op("delete the CronJob, its runs and its volume", "204", params=[d])},
        base + wire.RUN_NOW: {"post": op("run now: a Job from the CronJob's template", "201", params=[d])},
        base + wire.RUN: {"delete": op("delete the run's Job", "204", params=[d, run])},
        base + wire.RUN_POD: {"get": op("the run's pod (null if gone)", params=[d, run])},
        base + wire.RUN_FORGET: {"post": op("remove an imported run's files", params=[d, run])},
        base + wire.RUN_OUTPUT: {"get": op(
            "the run's stage-out tar stream", extra={"422": {"description": "stage-out failed"}}, params=[d, run])},
        base + wire.HOLDER: {
            "post": op("start the pod on the definition's volume", "201", params=[d]),
            "delete": op("remove it", "204", params=[d])},
        base + wire.SNAPSHOT: {"put": op(
            "stream a tar of the inputs as the new snapshot (the holder must run)",
            extra={"413": {"description": "too large"}}, params=[d])},
    }
