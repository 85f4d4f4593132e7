"""The jobs gateway's endpoints for one-off jobs and the gateway itself (health, readiness,
its OpenAPI document, whoami); the streams into and out of pods are in streams.py."""

import math

from ..config import resolve_profile
from ..jobs.steps import NotebookJob
from . import wire
from .base import BaseHandler, Refusal, file_name, plain_parameters, query_component
from .openapi import openapi
from .streams import Input, Log, Output, Pods


class Health(BaseHandler):
    """Liveness: the event loop answers."""
    public = True

    def get(self):
        self.send_json({"status": "ok"})


class Ready(BaseHandler):
    """Readiness: 503 while every thread for Kubernetes calls is busy (another replica takes the
    new requests meanwhile), and while the pod is stopping."""
    public = True

    def get(self):
        calls = self.gateway.calls
        if self.gateway.draining:
            self.send_json({"status": "stopping"}, status=503)
        elif calls.saturated():
            self.send_json({"status": "busy", "calls_in_progress": calls.in_flight}, status=503)
        else:
            self.send_json({"status": "ready", "calls_in_progress": calls.in_flight})


class OpenAPI(BaseHandler):
    public = True

    def get(self):
        self.send_json(openapi(self.gateway.config_prefix))


class WhoAmI(BaseHandler):
    """The token's user, and what `doctor` in their server reports about the jobs namespace."""

    async def get(self):
        missing = await self.blocking(self.gateway.missing_permissions)
        self.send_json({"name": self.current_user, "namespace": self.gateway.k8s.namespace,
                        "missing_permissions": missing})


def _job_from_request(job_id: str, body: dict) -> NotebookJob:
    """The job as the user's server describes it. Only names and values go in; the gateway
    builds the objects, with the authenticated user as owner, from its own configuration."""
    job = body.get("job") if isinstance(body, dict) else None
    if not isinstance(job, dict):
        raise Refusal(400, "expected {\"job\": {...}}")
    outputs = job.get("outputs") or {}
    parameters = job.get("parameters") or {}
    if not isinstance(outputs, dict) or not isinstance(parameters, dict):
        raise Refusal(400, "outputs and parameters must be objects")
    plain_parameters(parameters)
    for optional in ("compute_type", "environment", "job_name"):
        if job.get(optional) is not None and not isinstance(job.get(optional), str):
            raise Refusal(400, f"invalid {optional}")
    submitted = job.get("submitted")
    if submitted is not None and (isinstance(submitted, bool) or not isinstance(submitted, (int, float))
                                  or not math.isfinite(submitted)):
        raise Refusal(400, "invalid submitted")
    return NotebookJob(
        job_id=job_id, staging_dir="", input_file=file_name(job.get("input_file"), "input_file"),
        outputs={file_name(fmt, "output format"): file_name(file, "output name") for fmt, file in outputs.items()},
        parameters=dict(parameters), job_name=(job.get("job_name") or "")[:255],
        compute_type=job.get("compute_type"), environment=job.get("environment"), submitted=submitted)


class Job(BaseHandler):
    async def put(self, job_id):
        job = _job_from_request(self.job_id(job_id), self.json_body())
        profile = resolve_profile(self.gateway.k8s, job.compute_type)
        timeout = int(profile["timeout_seconds"] or 0)
        inputs_wanted = await self.blocking(self.driver().create, job, profile, timeout)
        self.send_json({"created": True, "inputs_wanted": inputs_wanted}, status=201)

    async def get(self, job_id):
        job = await self.blocking(self.driver().read_job, self.job_id(job_id))
        if job is None:
            raise Refusal(404, "no such job")
        self.send_json({"job": wire.to_json(job)})

    async def delete(self, job_id):
        job_id = self.job_id(job_id)
        keep = self.get_argument("keep_volume", "0") == "1"
        collector = self.get_argument("collector", "1") == "1"
        driver = self.driver()

        def delete():
            if driver.read_job(job_id) is None and driver.read_volume(job_id) is None:
                raise Refusal(404, "no such job")
            driver.delete(job_id, keep_volume=keep, collector=collector)
        await self.blocking(delete)
        self.set_status(204)
        self.finish()


class Volume(BaseHandler):
    async def get(self, job_id):
        pvc = await self.blocking(self.driver().read_volume, self.job_id(job_id))
        if pvc is None:
            raise Refusal(404, "no such job")
        self.send_json({"exists": pvc.metadata.deletion_timestamp is None})


class Warning(BaseHandler):
    async def get(self, job_id):
        job_id, driver = self.job_id(job_id), self.driver()
        if await self.blocking(driver.read_job, job_id) is None:
            raise Refusal(404, "no such job")
        self.send_json({"warning": await self.blocking(driver.warning_event, job_id)})


class Stop(BaseHandler):
    async def post(self, job_id):
        job_id, driver = self.job_id(job_id), self.driver()
        if await self.blocking(driver.read_job, job_id) is None:
            raise Refusal(404, "no such job")
        await self.blocking(driver.stop, job_id)
        self.send_json({"stopped": True})


class Collector(BaseHandler):
    async def post(self, job_id):
        body = self.json_body({})
        if not isinstance(body, dict):
            raise Refusal(400, "expected a JSON object")
        environment, job_name = body.get("environment"), body.get("job_name") or ""
        if (environment is not None and not isinstance(environment, str)) or not isinstance(job_name, str):
            raise Refusal(400, "invalid environment or job_name")
        job = NotebookJob(job_id=self.job_id(job_id), staging_dir="", input_file="", outputs={},
                          job_name=job_name[:255], environment=environment)
        await self.blocking(self.driver().start_collector, job)
        self.send_json({"started": True}, status=201)

    async def delete(self, job_id):
        job_id, driver = self.job_id(job_id), self.driver()

        def remove():
            if driver.read_volume(job_id) is None and driver.read_job(job_id) is None:
                raise Refusal(404, "no such job")
            driver.remove_collector(job_id)
        await self.blocking(remove)
        self.set_status(204)
        self.finish()


class Release(BaseHandler):
    async def post(self, job_id, pod):
        component = query_component(self)
        await self.blocking(self.driver().release, self.job_id(job_id), self.pod_name(pod), component)
        self.send_json({"released": True})


ROUTES = {
    wire.HEALTH: Health, wire.READY: Ready, wire.OPENAPI: OpenAPI, wire.WHOAMI: WhoAmI, wire.PODS: Pods,
    wire.JOB: Job, wire.JOB_VOLUME: Volume, wire.JOB_WARNING: Warning, wire.JOB_STOP: Stop,
    wire.JOB_COLLECTOR: Collector, wire.POD_INPUT: Input, wire.POD_OUTPUT: Output, wire.POD_RELEASE: Release,
    wire.POD_LOG: Log,
}
