"""The jobs gateway's endpoints for job definitions (the package's schedules.py, docs/design.md "Schedules").

The user's server describes a definition by names and values only; the gateway builds the
CronJob and the volume from its own configuration, with the authenticated user as owner, so the
admission policy and the Role apply exactly as to jobs. Another user's definition or run reads as
absent: 404.
"""

import asyncio
import time

from ..config import resolve_profile
from ..kube import executor
from ..kube.schedules import HOLDER_LATE, Definition, KubeSchedules, ScheduleError, holder_state
from . import wire
from .base import BaseHandler, Refusal, file_name, plain_parameters
from .streams import Input, Output

_TEXT_LIMIT = 256


def _text(value, what, optional=False, limit=_TEXT_LIMIT):
    if value is None and optional:
        return None
    if not isinstance(value, str) or len(value) > limit or (not optional and not value):
        raise Refusal(400, f"invalid {what}")
    return value


def definition_from_request(definition_id: str, body) -> Definition:
    d = body.get("definition") if isinstance(body, dict) else None
    if not isinstance(d, dict):
        raise Refusal(400, "expected {\"definition\": {...}}")
    outputs, parameters = d.get("outputs") or {}, d.get("parameters") or {}
    if not isinstance(outputs, dict) or not isinstance(parameters, dict):
        raise Refusal(400, "outputs and parameters must be objects")
    plain_parameters(parameters, "definition")
    if not isinstance(d.get("active", True), bool):
        raise Refusal(400, "invalid active")
    return Definition(
        definition_id=definition_id, name=(_text(d.get("name"), "name", optional=True) or ""),
        input_file=file_name(d.get("input_file"), "input_file"),
        outputs={file_name(fmt, "output format"): file_name(name, "output name") for fmt, name in outputs.items()},
        log_name=file_name(d.get("log_name"), "log_name"), schedule=_text(d.get("schedule"), "schedule"),
        timezone=_text(d.get("timezone"), "timezone", optional=True), active=d.get("active", True),
        parameters=dict(parameters), compute_type=_text(d.get("compute_type"), "compute_type", optional=True),
        environment=_text(d.get("environment"), "environment", optional=True))


class _DefinitionHandler(BaseHandler):
    def schedules(self) -> KubeSchedules:
        return KubeSchedules(self.driver(), queue_runs=True)

    def definition_id(self, value: str) -> str:
        if not wire.JOB_ID.match(value):
            raise Refusal(404, "no such job definition")
        return value

    def run_name(self, value: str) -> str:
        if not wire.POD_NAME.match(value) or len(value) > 63:
            raise Refusal(404, "no such run")
        return value

    @staticmethod
    def known(schedules: KubeSchedules, definition_id: str) -> None:
        """A 404 unless the user has the definition's CronJob or its volume (on a thread)."""
        if schedules.read_cronjob(definition_id) is None and schedules.read_volume(definition_id) is None:
            raise Refusal(404, "no such job definition")

    async def existing(self, schedules: KubeSchedules, definition_id: str):
        if await self.blocking(schedules.read_cronjob, definition_id) is None:
            raise Refusal(404, "no such job definition")


class DefinitionHandler(_DefinitionHandler):
    async def put(self, definition_id):
        definition = definition_from_request(self.definition_id(definition_id), self.json_body())
        profile = resolve_profile(self.gateway.k8s, definition.compute_type)
        await self.blocking(self.schedules().create, definition, profile)
        self.send_json({"created": True}, status=201)

    async def patch(self, definition_id):
        definition = definition_from_request(self.definition_id(definition_id), self.json_body())
        profile = resolve_profile(self.gateway.k8s, definition.compute_type)
        await self.blocking(self.schedules().update, definition, profile)
        self.send_json({"updated": True})

    async def delete(self, definition_id):
        definition_id, schedules = self.definition_id(definition_id), self.schedules()

        def delete():
            self.known(schedules, definition_id)
            schedules.delete(definition_id)
        await self.blocking(delete)
        self.set_status(204)
        self.finish()


class Runs(_DefinitionHandler):
    async def get(self):
        definition_id = self.get_argument("definition_id", "")
        if definition_id:
            self.definition_id(definition_id)
        jobs = await self.blocking(self.schedules().list_runs, definition_id)
        self.send_json({"jobs": [wire.to_json(job) for job in jobs]})


class RunNow(_DefinitionHandler):
    async def post(self, definition_id):
        definition_id, body = self.definition_id(definition_id), self.json_body({})
        parameters = body.get("parameters") if isinstance(body, dict) else None
        if parameters is not None:
            plain_parameters(parameters, "run")
        job = await self.blocking(self.schedules().run_now, definition_id, parameters)
        self.send_json({"job": wire.to_json(job)}, status=201)


class Run(_DefinitionHandler):
    async def delete(self, definition_id, run):
        definition_id, run, schedules = self.definition_id(definition_id), self.run_name(run), self.schedules()
        if await self.blocking(schedules.read_run, definition_id, run) is None:
            raise Refusal(404, "no such run")
        await self.blocking(schedules.delete_run, definition_id, run)
        self.set_status(204)
        self.finish()


class RunPod(_DefinitionHandler):
    async def get(self, definition_id, run):
        definition_id, run, schedules = self.definition_id(definition_id), self.run_name(run), self.schedules()
        if await self.blocking(schedules.read_run, definition_id, run) is None:
            raise Refusal(404, "no such run")
        pod = await self.blocking(schedules.run_pod, definition_id, run)
        self.send_json({"pod": wire.to_json(pod)})


class ForgetRun(_DefinitionHandler):
    async def post(self, definition_id, run):
        await self.blocking(self.schedules().forget_run, self.definition_id(definition_id), self.run_name(run))
        self.send_json({"forgotten": True})


class Holder(_DefinitionHandler):
    async def post(self, definition_id):
        """Starts the pod and answers once it runs. The wait holds no thread: the pod is read
        now and then, each read a short call in the user's turn."""
        definition_id, body = self.definition_id(definition_id), self.json_body({})
        environment = _text(body.get("environment") if isinstance(body, dict) else None, "environment", optional=True)
        schedules, holders, user = self.schedules(), self.gateway.holders, self.current_user
        await self.existing(schedules, definition_id)
        if not holders.acquire(user):
            raise Refusal(429, "too many pods on definitions' volumes are starting for you; try again shortly")
        try:
            name, volume_uid = await self.blocking(schedules.create_holder, definition_id, environment)
            deadline = time.monotonic() + self.gateway.k8s.scheduling_timeout_seconds
            while True:
                answer = holder_state(await self.blocking(schedules.read_pod, name), name, volume_uid)
                if isinstance(answer, Exception):
                    raise answer
                if answer is not None:
                    break
                if time.monotonic() > deadline:
                    raise ScheduleError(HOLDER_LATE)
                await asyncio.sleep(1)
        finally:
            holders.release(user)
        self.send_json({"pod": name}, status=201)

    async def delete(self, definition_id):
        definition_id, schedules = self.definition_id(definition_id), self.schedules()

        def remove():
            self.known(schedules, definition_id)
            schedules.remove_holder(definition_id)
        await self.blocking(remove)
        self.set_status(204)
        self.finish()


class Snapshot(Input):
    """PUT a tar stream: it becomes the definition's new input snapshot, through the pod on its
    volume, which the client starts first (Holder)."""

    async def target(self, driver):
        definition_id = self.path_args[0]
        if not wire.JOB_ID.match(definition_id):
            raise Refusal(404, "no such job definition")
        pod = await self.blocking(KubeSchedules(driver).holder, definition_id)
        return pod, executor.snapshot_in()

    async def staged(self):
        """A snapshot has no Job to mark: runs are made from the CronJob."""


class RunOutput(Output):
    """GET a run's stage-out stream from the definition's volume, through its holder pod."""

    async def source(self, driver):
        definition_id, run = self.path_args
        if not wire.JOB_ID.match(definition_id) or not wire.POD_NAME.match(run) or len(run) > 63:
            raise Refusal(404, "no such run")
        pod = await self.blocking(KubeSchedules(driver).holder, definition_id)
        return pod, executor.stage_out(run)


ROUTES = {
    wire.RUNS: Runs, wire.DEFINITION: DefinitionHandler, wire.RUN_NOW: RunNow, wire.RUN: Run,
    wire.RUN_POD: RunPod, wire.RUN_FORGET: ForgetRun, wire.RUN_OUTPUT: RunOutput, wire.HOLDER: Holder,
    wire.SNAPSHOT: Snapshot,
}
