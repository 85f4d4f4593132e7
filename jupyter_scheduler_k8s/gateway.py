"""The jobs gateway (hub mode): the one holder of Kubernetes rights in the jobs namespace.

User servers hold no Kubernetes credentials. Their scheduler calls this HTTP API with the
JupyterHub API token each server already has; JupyterHub's own HubAuth resolves the token to a user
(through the hub's /hub/api/user, cached briefly), and every request then runs a
driver.KubeDriver whose owner is that user. The lifecycle stays in the user's server (decisions,
its DB, its staging dir); the gateway only acts, and keeps no state of its own: the Kubernetes
objects, with their owner annotation, are the record. Inputs and outputs pass through as streams,
with size caps, never whole in memory.

Run it as `jupyter-scheduler-k8s gateway` (the chart's Deployment does). docs/design.md has the
API; GET {prefix}api/v1/openapi.json describes it.
"""
import asyncio
import contextlib
import json
import logging
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Dict, Optional, Set

import urllib3
from jupyterhub.services.auth import HubAuth, HubAuthenticated, UserNotAllowed
from kubernetes.client.rest import ApiException
from tornado import httpclient, web
from tornado.httpserver import HTTPServer
from tornado.ioloop import IOLoop
from traitlets import Int, Unicode, default
from traitlets.config import LoggingConfigurable

from . import manifests, names, transfer, wire
from .clients import Clients
from .config import K8sConfig, UnknownProfileError, resolve_profile
from .reasons import describe_error
from .driver import EXECUTOR, KubeDriver, NotFound
from .lifecycle import NotebookJob
from .schedules import ScheduleError

log = logging.getLogger(__name__)
_CHUNK = 256 * 1024
# A tar stream is its files plus headers and padding (at least 10 KiB, about 1.5 KiB a file):
# limits on files' bytes allow this much more on the stream that carries them.
_TAR_HEADERS = 16 * 1024 * 1024
# The longest an upload may take in all (its pace is checked on its own: transfer.Progress).
UPLOAD_SECONDS = 3600


class GatewayConfig(LoggingConfigurable):
    """The gateway's own settings; what jobs look like comes from K8sConfig, as in direct mode."""

    service_prefix = Unicode(config=True, help="""
        The URL path the gateway serves under. The hub's proxy passes /services/<name>/… on
        unchanged, so this is that prefix. Default: $JUPYTERHUB_SERVICE_PREFIX, else
        /services/jobs-gateway/.""")

    @default("service_prefix")
    def _prefix_default(self):
        return os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/services/jobs-gateway/")

    ip = Unicode("0.0.0.0", config=True, help="Address to listen on.")
    port = Int(8000, config=True, help="Port to listen on.")

    input_size_limit = Int(1024 ** 3, config=True, help="""
        Largest upload (a job's input notebook, or its whole input folder as a tar) accepted, in
        bytes. Larger ones get 413 and the job fails with that reason.""")

    streams_per_user = Int(8, config=True, help="""
        Transfers and pod watches one user may have open at once; more get 429. (One user
        server holds one watch and up to its worker_threads transfers.)""")

    streams_total = Int(200, config=True, help="Transfers and pod watches open at once over all users; more get 429.")

    watch_seconds = Int(300, config=True, help="""
        How long one pod-watch response lasts before the client reconnects (which it does at
        once), so that replicas share the watches and none is held forever.""")

    hub_timeout_seconds = Int(10, config=True, help="Timeout of one request to the hub's API (token checks).")

    threads = Int(32, config=True, help="""
        Threads for Kubernetes calls (transfers and watches have their own, one each). When all
        are busy, api/v1/ready answers 503, so that a second replica takes the traffic.""")

    calls_per_user = Int(8, config=True, help="""
        Kubernetes calls one user may have in progress at once, so that no user holds all the
        threads; more wait their turn without a thread, and beyond four times this many, 429.""")

    holders_per_user = Int(2, config=True, help="""
        Pods on job definitions' volumes (for a snapshot or an import) one user may be starting
        at once; more get 429.""")

    body_limit = Int(1024 ** 2, config=True, help="""
        Largest body of a request other than an upload (a job or a definition as JSON), in bytes.
        Larger ones get 413. Bodies are read only after the token is checked.""")

    body_timeout_seconds = Int(30, config=True, help="""
        Time a client has to send a request's headers, and a request's body other than an
        upload's; a connection idle between requests is closed after it as well.""")

    idle_seconds = Int(60, config=True, help="""
        An upload or download through the gateway that moves under 64 KiB in this many seconds
        of waiting is cut off, so that a trickling client or pod holds no thread for long.""")


class Refusal(web.HTTPError):
    """An answer other than success, with a message for the user (in the JSON body; the status
    line keeps the standard reason phrase, which must be plain ASCII)."""

    def __init__(self, status: int, message: str, error: Optional[str] = None):
        super().__init__(status)
        self.message = " ".join(message.split())[:1000]
        self.error = error  # a finer kind, for the client (wire.py)


class _Limits:
    """Open streams per user and in total."""

    def __init__(self, per_user: int, total: int):
        self.per_user, self.total = per_user, total
        self.open: Dict[str, int] = {}
        self.lock = threading.Lock()

    def acquire(self, user: str) -> bool:
        with self.lock:
            if sum(self.open.values()) >= self.total or self.open.get(user, 0) >= self.per_user:
                return False
            self.open[user] = self.open.get(user, 0) + 1
            return True

    def release(self, user: str) -> None:
        with self.lock:
            self.open[user] -= 1
            if not self.open[user]:
                del self.open[user]


class _Calls:
    """Kubernetes calls in progress, per user. Each user has at most `per_user` of the gateway's
    threads at once; more calls wait their turn on the event loop (holding no thread), and a user
    with too many waiting gets 429. Used from the event loop only."""

    def __init__(self, per_user: int, threads: int):
        self.per_user, self.threads = per_user, threads
        self.turns: Dict[str, asyncio.Semaphore] = {}
        self.waiting: Dict[str, int] = {}
        self.in_flight = 0

    def saturated(self) -> bool:
        return self.in_flight >= self.threads

    @contextlib.asynccontextmanager
    async def turn(self, user: str):
        if self.waiting.get(user, 0) >= 4 * self.per_user:
            raise Refusal(429, "too many of your requests are in progress; try again shortly")
        turn = self.turns.setdefault(user, asyncio.Semaphore(self.per_user))
        self.waiting[user] = self.waiting.get(user, 0) + 1
        try:
            await turn.acquire()
        finally:
            self.waiting[user] -= 1
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1
            turn.release()
            if not self.waiting[user] and turn._value == self.per_user:  # idle: forget the user
                del self.waiting[user], self.turns[user]


@web.stream_request_body
class BaseHandler(HubAuthenticated, web.RequestHandler):
    """Authenticates with HubAuth (a token only: no cookies, no redirects to a login page) and
    turns the lifecycle's errors into status codes (wire.py). Never shows a traceback.

    Every handler streams its request body, so that prepare() checks the token before any of it
    is read: a stranger's body is never read at all, and a user's is kept up to body_limit
    (uploads: Input)."""

    public = False
    _body = None

    @property
    def hub_auth(self):
        return self.settings["hub_auth"]

    @property
    def gateway(self) -> "Gateway":
        return self.settings["gateway"]

    async def prepare(self):
        self.gateway.requests.add(self)
        if self.gateway.draining:
            # This pod is stopping: the client's next request opens a connection to another.
            self.set_header("Connection", "close")
        if self.public:
            return
        try:
            model = await self.hub_auth.get_user(self, sync=False)
        except web.HTTPError:
            # HubAuth could not reach the hub (or the hub failed): say so, with no detail.
            raise Refusal(503, "JupyterHub's API cannot be reached to check the token") from None
        if not model:
            raise Refusal(401, "a valid JupyterHub token is required")
        try:
            model = self.check_hub_user(model)
        except UserNotAllowed:
            raise Refusal(403, "this token lacks the scope the jobs gateway requires") from None
        if model.get("kind", "user") != "user":
            raise Refusal(403, "jobs belong to users: use a user's token")
        self.current_user = model["name"]
        self.accept_body()

    def on_finish(self):
        self.gateway.requests.discard(self)

    def on_connection_close(self):
        self.gateway.requests.discard(self)
        super().on_connection_close()

    def accept_body(self) -> None:
        """Called once the token is good: the body may now be read, up to body_limit."""
        self._body = bytearray()
        if _content_length(self) > self.gateway.options.body_limit:
            raise self._body_too_large()

    def _body_too_large(self) -> Refusal:
        return Refusal(413, f"the request's body exceeds {self.gateway.options.body_limit} bytes")

    def data_received(self, chunk):
        if self._body is None or self._finished:
            return  # not authenticated, or already answered: tornado reads no more of it
        self._body += chunk
        if len(self._body) > self.gateway.options.body_limit:
            self._body = None
            # Answered now, the rest of the body is never read: the connection closes after it.
            self._handle_request_exception(self._body_too_large())

    def json_body(self, default=None):
        """The body as JSON (`default` if there is none), or a 400."""
        if not self._body:
            return default
        try:
            return json.loads(bytes(self._body))
        except ValueError:
            raise Refusal(400, "the body is not JSON") from None

    def driver(self) -> KubeDriver:
        return KubeDriver(self.gateway.k8s, self.gateway.clients, owner=self.current_user)

    def job_id(self, job_id: str) -> str:
        if not wire.JOB_ID.match(job_id):
            raise Refusal(404, "no such job")
        return job_id

    def pod_name(self, pod: str) -> str:
        if not wire.POD_NAME.match(pod):
            raise Refusal(404, "no such pod")
        return pod

    async def blocking(self, fn, *args):
        """Runs a Kubernetes call on the gateway's threads, in the user's turn (_Calls); the event
        loop never waits on it."""
        async with self.gateway.calls.turn(self.current_user or ""):
            return await IOLoop.current().run_in_executor(self.gateway.pool, fn, *args)

    async def streaming(self, fn, *args):
        """Runs a step of a transfer on a thread of the streams' own (their number is capped
        per user and in all: _Limits), never one of the calls'."""
        return await IOLoop.current().run_in_executor(self.gateway.stream_pool, fn, *args)

    def send_json(self, data, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(data))

    def write_error(self, status_code, **kwargs):
        if status_code == 429:
            self.set_header("Retry-After", "5")
        self.set_header("Content-Type", "application/json")
        body = {"status": status_code, "message": kwargs.get("message") or self._reason}
        if kwargs.get("error"):
            body["error"] = kwargs["error"]
        self.finish(json.dumps(body))

    def _handle_request_exception(self, e):
        if isinstance(e, web.Finish):
            return super()._handle_request_exception(e)
        refusal = _refusal(e)
        if refusal.status_code >= 500 and not isinstance(e, (web.HTTPError, ApiException, transfer.TransferError,
                                                              urllib3.exceptions.HTTPError, OSError)):
            log.error("%s %s failed", self.request.method, self.request.path, exc_info=e)
        else:
            log.info("%s %s: %d %s", self.request.method, self.request.path, refusal.status_code, refusal.message)
        if self._finished:
            return
        if self._headers_written:
            # A stream broke off after it began: cut the connection, so that the client sees an
            # incomplete response rather than a short one that looks whole.
            self.request.connection.stream.close()
            return
        self.send_error(refusal.status_code, message=refusal.message, error=refusal.error)


def _content_length(handler) -> int:
    try:
        return max(int(handler.request.headers.get("Content-Length") or 0), 0)
    except ValueError:
        raise Refusal(400, "invalid Content-Length") from None


def _refusal(e: BaseException) -> Refusal:
    """The status code for one of the lifecycle's errors (wire.py), and the user's message."""
    if isinstance(e, Refusal):
        return e
    if isinstance(e, web.HTTPError):
        return Refusal(e.status_code, e.reason or "")
    if isinstance(e, NotFound):
        return Refusal(404, str(e))
    if isinstance(e, transfer.PrintedTooMuch):
        return Refusal(wire.COMMAND_FAILED, str(e), wire.PRINTED_TOO_MUCH)
    if isinstance(e, transfer.CommandFailed):
        return Refusal(wire.COMMAND_FAILED, str(e))
    if isinstance(e, (UnknownProfileError, ScheduleError)):
        return Refusal(400, str(e))
    if isinstance(e, ApiException):
        if e.status == 404:
            return Refusal(404, "no such job")
        if e.status in (400, 409, 422):  # e.g. an admission policy's refusal: the message says why
            return Refusal(400, describe_error(e))
        if e.status in (401, 403):
            return Refusal(500, "the jobs gateway lacks a Kubernetes permission; ask the operator to run "
                                "`jupyter-scheduler-k8s doctor` in the gateway")
        return Refusal(503, "the Kubernetes API server is busy or away; try again")
    if isinstance(e, (transfer.TransferError, urllib3.exceptions.HTTPError, OSError)):
        return Refusal(502, "the transfer to or from the job's pod broke off; try again")
    return Refusal(500, "internal error in the jobs gateway (see its log)")


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


def file_name(value, what: str) -> str:
    """A plain file name from a request (no directory part), or a 400."""
    if not isinstance(value, str) or not value or "/" in value or value in (".", "..") or len(value) > 255:
        raise Refusal(400, f"invalid {what}")
    return value


PARAMETERS_LIMIT = 128 * 1024


def plain_parameters(parameters, what: str = "job") -> None:
    """Parameters from a request map names to plain values, at most 128 KiB of them, or a 4xx."""
    if not isinstance(parameters, dict) or any(
            not isinstance(key, str) or not isinstance(value, (str, int, float, bool, type(None)))
            for key, value in parameters.items()):
        raise Refusal(400, "parameters must map names to plain values")
    if len(json.dumps(parameters)) > PARAMETERS_LIMIT:
        raise Refusal(413, f"the {what}'s parameters exceed {PARAMETERS_LIMIT // 1024} KiB")


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
    return NotebookJob(
        job_id=job_id, staging_dir="", input_file=file_name(job.get("input_file"), "input_file"),
        outputs={file_name(fmt, "output format"): file_name(file, "output name") for fmt, file in outputs.items()},
        parameters=dict(parameters), job_name=(job.get("job_name") or "")[:255],
        compute_type=job.get("compute_type"), environment=job.get("environment"))


class Job(BaseHandler):
    async def put(self, job_id):
        job = _job_from_request(self.job_id(job_id), self.json_body())
        profile = resolve_profile(self.gateway.k8s, job.compute_type)
        timeout = int(profile["timeout_seconds"] or 0)
        await self.blocking(self.driver().create, job, profile, timeout)
        self.send_json({"created": True}, status=201)

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
        component = _component(self)
        await self.blocking(self.driver().release, self.job_id(job_id), self.pod_name(pod), component)
        self.send_json({"released": True})


def _number(handler, name: str, default, kind=float):
    """A finite number from the query, or a 400."""
    raw = handler.get_argument(name, None)
    if raw is None:
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise Refusal(400, f"invalid {name}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise Refusal(400, f"invalid {name}")
    return value


def _component(handler) -> str:
    component = handler.get_argument("component", names.COMPONENT_JOB)
    if component not in (names.COMPONENT_JOB, names.COMPONENT_COLLECTOR):
        raise Refusal(400, "invalid component")
    return component


class _Stream(BaseHandler):
    """A handler that holds one of the user's stream slots while it runs."""

    slot = None

    async def prepare(self):
        await super().prepare()
        if not self.gateway.limits.acquire(self.current_user):
            raise Refusal(429, "too many transfers or watches open; try again shortly")
        self.slot = self.current_user

    def on_finish(self):
        self._free()
        super().on_finish()

    def on_connection_close(self):
        self._free()
        super().on_connection_close()

    def _free(self):
        if self.slot is not None:
            self.gateway.limits.release(self.slot)
            self.slot = None

    async def send_chunk(self, data) -> None:
        """Writes data and waits until the client has taken it, for at most idle_seconds."""
        self.write(data)
        try:
            await asyncio.wait_for(self.flush(), self.gateway.options.idle_seconds)
        except asyncio.TimeoutError:
            raise transfer.TransferError("the client stopped reading") from None


class Log(_Stream):
    """GET the end of the job pod's log: at most the gateway's own run_log_limit, however much is
    asked for (reading it holds a thread, and one of the user's stream slots)."""

    async def get(self, job_id, pod):
        most = self.gateway.k8s.run_log_limit
        limit = min(max(_number(self, "limit", most, int), 1), most)
        tail = await self.streaming(self.driver().log_tail, self.job_id(job_id), self.pod_name(pod), limit)
        if tail is None:
            raise Refusal(404, "the pod has no log")
        data, cut = tail
        self.set_header("Content-Type", "application/octet-stream")
        self.set_header("X-Jsk8s-Cut", str(cut))
        self.finish(data)



class Input(_Stream):
    """PUT a tar stream: it goes into the job pod's `stage-in` as it arrives. Its body is read
    only once the token is good and the pod is found; a stalled upload is cut (Progress)."""

    def accept_body(self):
        self.request.connection.set_max_body_size(2 ** 62)  # counted here instead, for a 413
        self.request.connection.set_body_timeout(UPLOAD_SECONDS)
        self.limit = limit = self.gateway.options.input_size_limit
        # The client says how many bytes its files hold: too many is refused before any is read.
        try:
            declared = int(self.request.headers.get(wire.INPUT_BYTES_HEADER) or 0)
        except ValueError:
            raise Refusal(400, f"invalid {wire.INPUT_BYTES_HEADER}") from None
        if declared > limit or _content_length(self) > limit + _TAR_HEADERS:
            raise self._too_large()

    async def prepare(self):
        await super().prepare()
        self.received, self.body_done, self.too_large, self.gone = 0, False, False, threading.Event()
        self.chunks: asyncio.Queue = asyncio.Queue(maxsize=8)
        self.loop = asyncio.get_running_loop()
        driver = self.driver()
        pod, command = await self.target(driver)
        log.info("%s: upload begins", self.request.path)
        self.sending = self.loop.run_in_executor(self.gateway.stream_pool, self._send, driver, pod, command)
        self.sending.add_done_callback(self._sent)

    async def target(self, driver: KubeDriver):
        """The checked pod the stream goes to, and the command that reads it there."""
        job_id, pod = self.job_id(self.path_args[0]), self.pod_name(self.path_args[1])
        await self.blocking(driver.check_pod, job_id, pod)
        return pod, EXECUTOR + ["stage-in"]

    def _too_large(self) -> Refusal:
        return Refusal(413, f"the job's inputs exceed the limit of {self.limit} bytes (the jobs gateway's "
                            "input_size_limit)")

    async def data_received(self, chunk):
        if self._finished:
            return  # answered already: the connection closes after the answer
        self.received += len(chunk)
        stream_limit = self.limit + _TAR_HEADERS
        if self.received > stream_limit:
            self.too_large = True
            self.gone.set()  # the pod's stage-in gets a cut stream and fails
            if self.received > 2 * stream_limit:
                self._handle_request_exception(self._too_large())  # reading on would only waste bandwidth
            return  # read the rest, so that the client gets its 413 after sending
        if not self.sending.done():  # else the pod's side ended: _sent answers
            await self.chunks.put(chunk)

    def _sent(self, future) -> None:
        """The pod's side ended. Before the whole body came, that is a failure: answer it now,
        and read no more of the body."""
        while not self.chunks.empty():  # a data_received waiting for room goes on, and drops the rest
            self.chunks.get_nowait()
        if future.cancelled() or self.body_done or self._finished or self.too_large:
            return  # put() answers
        self._handle_request_exception(future.exception() or transfer.TransferError("stage-in ended early"))

    def _send(self, driver: KubeDriver, pod: str, command) -> None:
        progress = transfer.Progress("the upload", self.gateway.options.idle_seconds)
        with transfer.input_stream(driver.clients.core, driver.namespace, pod, manifests.CONTAINER, command) as stdin:
            while True:
                got, since = asyncio.run_coroutine_threadsafe(self.chunks.get(), self.loop), time.monotonic()
                while True:
                    try:
                        chunk = got.result(timeout=1)
                        break
                    except FutureTimeout:
                        if self.gone.is_set():
                            got.cancel()
                            raise transfer.TransferError("the client went away during the upload") from None
                        try:
                            progress.add(0, time.monotonic() - since)
                        except transfer.TransferError:
                            got.cancel()
                            raise
                        since = time.monotonic()
                if chunk is None:
                    break
                progress.add(len(chunk), time.monotonic() - since)
                stdin.write(chunk)

    async def put(self, *_path):
        self.body_done = True
        if self.too_large:
            raise self._too_large()
        if not self.sending.done():
            await self.chunks.put(None)
        await self.sending
        log.info("%s: upload done (%d bytes)", self.request.path, self.received)
        self.send_json({"staged": True})

    def on_connection_close(self):
        if hasattr(self, "gone"):
            self.gone.set()
        super().on_connection_close()


class Output(_Stream):
    """GET the job pod's (or collector's) `stage-out` tar stream, as the pod sends it. It is
    untrusted: the user's server extracts it with safe_tar. Only its size is capped here."""

    async def source(self, driver: KubeDriver):
        """The checked pod the stream comes from, and the command that writes it there."""
        job_id, pod, component = self.job_id(self.path_args[0]), self.pod_name(self.path_args[1]), _component(self)
        await self.blocking(driver.check_pod, job_id, pod, component)
        return pod, EXECUTOR + ["stage-out"]

    async def get(self, *_path):
        driver = self.driver()
        pod, command = await self.source(driver)
        opened = transfer.output_stream(driver.clients.core, driver.namespace, pod, manifests.CONTAINER, command)
        stdout = await self.streaming(opened.__enter__)
        limit, sent = self.gateway.k8s.output_size_limit + _TAR_HEADERS, 0
        try:
            first = await self.streaming(stdout.read, _CHUNK)
            if not first:  # nothing at all: the command's own status says why (e.g. no result.json)
                await self.streaming(opened.__exit__, None, None, None)
                raise transfer.TransferError("stage-out sent nothing")
            self.set_header("Content-Type", "application/x-tar")
            chunk = first
            while chunk:
                sent += len(chunk)
                if sent > limit:
                    raise transfer.TransferError("the outputs exceed the size limit")
                await self.send_chunk(chunk)
                chunk = await self.streaming(stdout.read, _CHUNK)
            await self.streaming(opened.__exit__, None, None, None)
        except BaseException as e:
            await self.streaming(_close_quietly, opened, e)
            raise
        self.finish()


def _close_quietly(opened, error) -> None:
    try:
        opened.__exit__(type(error), error, error.__traceback__)
    except BaseException:  # noqa: BLE001 - the first error is the one that counts
        pass


class _ClientGone(Exception):
    pass


class Pods(_Stream):
    """GET the owner's pod events (one job's, or all of them) as JSON lines: {"type": "LIST",
    "pods": [...]}, {"type": "ADDED"|"MODIFIED"|"DELETED", "pod": {...}}, {"type": "TICK"}.
    Only genuine pods (driver.KubeDriver.genuine) are sent. The response ends after
    watch_seconds; the client reconnects."""

    stopped = None

    async def get(self):
        if self.gateway.draining:
            raise Refusal(503, "this jobs gateway pod is stopping; try again")
        job_id = self.get_argument("job_id", None)
        if job_id is not None:
            self.job_id(job_id)
        component = _component(self)
        tick = min(max(_number(self, "tick", 5.0), 1.0), 30.0)
        loop, queue = asyncio.get_running_loop(), asyncio.Queue(maxsize=64)
        self.stopped = threading.Event()
        ends = time.monotonic() + self.gateway.options.watch_seconds
        driver = self.driver()

        def hand(line):
            """Queues a line for the handler; gives up once the client has gone."""
            future = asyncio.run_coroutine_threadsafe(queue.put(line), loop)
            while True:
                try:
                    return future.result(timeout=1)
                except FutureTimeout:
                    if self.stopped.is_set():
                        future.cancel()
                        raise _ClientGone() from None

        def watch():
            try:
                for kind, obj in driver.pod_events(job_id, component, tick,
                                                   lambda: self.stopped.is_set() or time.monotonic() > ends):
                    if kind == "LIST":
                        line = {"type": kind, "pods": [wire.to_json(p) for p in obj]}
                    elif kind == "TICK":
                        line = {"type": kind}
                    else:
                        line = {"type": kind, "pod": wire.to_json(obj)}
                    hand(line)
                hand(None)
            except _ClientGone:
                pass
            except BaseException as e:  # noqa: BLE001 - handed to the handler
                try:
                    hand(e)
                except _ClientGone:
                    pass

        threading.Thread(target=watch, name=f"jsk8s-gateway-watch-{self.current_user}", daemon=True).start()
        self.set_header("Content-Type", "application/x-ndjson")
        try:
            while True:
                line = await queue.get()
                if line is None:
                    break
                if isinstance(line, BaseException):
                    raise line
                await self.send_chunk(json.dumps(line) + "\n")
        finally:
            self.stopped.set()
        self.finish()

    def on_connection_close(self):
        if self.stopped is not None:
            self.stopped.set()
        super().on_connection_close()


def openapi(prefix: str) -> dict:
    """The OpenAPI 3 description of the API, served at {prefix}api/v1/openapi.json."""
    job = {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string", "format": "uuid"}}
    pod = {"name": "pod", "in": "path", "required": True, "schema": {"type": "string"}}
    component = {"name": "component", "in": "query", "schema": {"type": "string", "enum": [
        names.COMPONENT_JOB, names.COMPONENT_COLLECTOR], "default": names.COMPONENT_JOB}}
    errors = {str(code): {"description": text} for code, text in (
        (401, "no valid JupyterHub token"), (403, "the token lacks the gateway's scope"),
        (404, "no such job or pod for this user"), (429, "too many open streams; see Retry-After"),
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
            base + "health": {"get": {**op("liveness: the gateway answers"), "security": []}},
            base + "ready": {"get": {**op("readiness: 503 while all its threads for Kubernetes calls are busy",
                                          extra={"503": {"description": "busy"}}), "security": []}},
            base + "openapi.json": {"get": {**op("this document"), "security": []}},
            base + "whoami": {"get": op("the user the token belongs to")},
            base + "pods": {"get": op("the user's pod events, as JSON lines", params=[
                {"name": "job_id", "in": "query", "schema": {"type": "string"}}, component,
                {"name": "tick", "in": "query", "schema": {"type": "number"}}])},
            base + "jobs/{job_id}": {
                "put": op("create the job's PVC and Job", "201", {"400": {"description": "invalid job or profile"},
                                                                  "409": {"description": "taken"}}, [job]),
                "get": op("the job's Kubernetes Job (null if none)", params=[job]),
                "delete": op("delete the job's objects", "204", params=[job, {
                    "name": "keep_volume", "in": "query", "schema": {"type": "string", "enum": ["0", "1"]}}])},
            base + "jobs/{job_id}/volume": {"get": op("whether the job's PVC exists", params=[job])},
            base + "jobs/{job_id}/warning": {"get": op("the newest warning event about the Job", params=[job])},
            base + "jobs/{job_id}/stop": {"post": op("delete the Job gracefully, keeping its PVC", params=[job])},
            base + "jobs/{job_id}/collector": {"post": op("start a collector pod on the PVC", "201", params=[job]),
                                               "delete": op("remove the collector pod", "204", params=[job])},
            base + "jobs/{job_id}/pods/{pod}/input": {"put": op(
                "stream a tar of the inputs into the pod", extra={"413": {"description": "too large"},
                                                                  "422": {"description": "stage-in failed"}},
                params=[job, pod])},
            base + "jobs/{job_id}/pods/{pod}/output": {"get": op(
                "the pod's stage-out tar stream", extra={"422": {"description": "stage-out failed"}},
                params=[job, pod, component])},
            base + "jobs/{job_id}/pods/{pod}/release": {"post": op("let the pod exit", params=[job, pod, component])},
            base + "jobs/{job_id}/pods/{pod}/log": {"get": op("the end of the pod's log", params=[job, pod, {
                "name": "limit", "in": "query", "schema": {"type": "integer"}}])},
            **schedule_paths(base, op),
        },
    }


def schedule_paths(base: str, op) -> dict:
    """Job definitions (gateway_schedules.py): a CronJob and its volume per definition."""
    d = {"name": "definition_id", "in": "path", "required": True, "schema": {"type": "string", "format": "uuid"}}
    run = {"name": "run", "in": "path", "required": True, "schema": {"type": "string"}}
    refused = {"400": {"description": "invalid definition, schedule, time zone or profile"}}
    return {
        base + "runs": {"get": op("the user's runs of job definitions (Jobs)", params=[
            {"name": "definition_id", "in": "query", "schema": {"type": "string"}}])},
        base + "definitions/{definition_id}": {
            "put": op("create the definition's volume and CronJob (suspended)", "201", refused, [d]),
            "patch": op("update the CronJob (schedule, time zone, pause, template)", extra=refused, params=[d]),
            "delete": op("delete the CronJob, its runs and its volume", "204", params=[d])},
        base + "definitions/{definition_id}/runs": {"post": op("run now: a Job from the CronJob's template", "201",
                                                               params=[d])},
        base + "definitions/{definition_id}/runs/{run}": {"delete": op("delete the run's Job", "204", params=[d, run])},
        base + "definitions/{definition_id}/runs/{run}/pod": {"get": op("the run's pod (null if gone)", params=[d, run])},
        base + "definitions/{definition_id}/runs/{run}/forget": {"post": op("remove an imported run's files",
                                                                            params=[d, run])},
        base + "definitions/{definition_id}/runs/{run}/output": {"get": op(
            "the run's stage-out tar stream", extra={"422": {"description": "stage-out failed"}}, params=[d, run])},
        base + "definitions/{definition_id}/holder": {
            "post": op("start the pod on the definition's volume", "201", params=[d]),
            "delete": op("remove it", "204", params=[d])},
        base + "definitions/{definition_id}/snapshot": {"put": op(
            "stream a tar of the inputs as the new snapshot (the holder must run)",
            extra={"413": {"description": "too large"}}, params=[d])},
    }


class Gateway:
    DROP_SECONDS = 5  # for the endpoints' change to reach every node's proxy

    def __init__(self, k8s: K8sConfig, settings: GatewayConfig, clients: Optional[Clients] = None,
                 hub_auth: Optional[HubAuth] = None):
        self.k8s, self.options = k8s, settings
        self.config_prefix = "/" + settings.service_prefix.strip("/") + "/"
        self.clients = clients or Clients(k8s.kubeconfig, k8s.context)
        self.pool = ThreadPoolExecutor(settings.threads, thread_name_prefix="jsk8s-gateway")
        self.calls = _Calls(settings.calls_per_user, settings.threads)
        self.limits = _Limits(settings.streams_per_user, settings.streams_total)
        self.stream_pool = ThreadPoolExecutor(settings.streams_total, thread_name_prefix="jsk8s-gateway-stream")
        self.holders = _Limits(settings.holders_per_user, settings.streams_total)
        self.requests: Set[BaseHandler] = set()  # in progress, for drain()
        self.draining = False
        self._permissions = None
        # HubAuth reads JUPYTERHUB_API_URL, JUPYTERHUB_API_TOKEN and, for the scope it requires,
        # JUPYTERHUB_SERVICE_NAME or JUPYTERHUB_OAUTH_ACCESS_SCOPES from the environment.
        self.hub_auth = hub_auth or HubAuth(cache_max_age=60)
        httpclient.AsyncHTTPClient.configure(None, defaults={
            "connect_timeout": settings.hub_timeout_seconds, "request_timeout": settings.hub_timeout_seconds})

    def missing_permissions(self):
        """doctor's permission check, as the gateway's own identity, at most once a minute."""
        from .doctor import Doctor
        now = time.monotonic()
        if self._permissions is None or now - self._permissions[0] > 60:
            self._permissions = (now, Doctor(self.k8s, self.clients, echo=lambda line: None).missing_permissions())
        return self._permissions[1]

    def app(self) -> web.Application:
        p = self.config_prefix + wire.API_PREFIX
        job, pod = r"([^/]+)", r"([^/]+)"
        routes = [
            (p + "health", Health), (p + "ready", Ready), (p + "openapi.json", OpenAPI), (p + "whoami", WhoAmI), (p + "pods", Pods),
            (p + f"jobs/{job}", Job), (p + f"jobs/{job}/volume", Volume), (p + f"jobs/{job}/warning", Warning),
            (p + f"jobs/{job}/stop", Stop), (p + f"jobs/{job}/collector", Collector),
            (p + f"jobs/{job}/pods/{pod}/input", Input), (p + f"jobs/{job}/pods/{pod}/output", Output),
            (p + f"jobs/{job}/pods/{pod}/release", Release), (p + f"jobs/{job}/pods/{pod}/log", Log),
        ] + gateway_schedules.routes(p)  # noqa: F821 - imported below: it builds on this module
        return web.Application(routes, gateway=self, hub_auth=self.hub_auth)

    def http_server(self) -> HTTPServer:
        options = self.options
        # Uploads raise their own limits once their token is checked (Input.accept_body).
        return HTTPServer(self.app(), idle_connection_timeout=options.body_timeout_seconds,
                          body_timeout=options.body_timeout_seconds, max_body_size=2 * options.body_limit)

    def serve(self) -> None:
        server = self.http_server()
        server.listen(self.options.port, self.options.ip)
        log.info("jobs gateway on %s:%d%s, jobs namespace %s", self.options.ip, self.options.port,
                 self.config_prefix, self.k8s.namespace)
        loop = IOLoop.current()
        loop.asyncio_loop.add_signal_handler(signal.SIGTERM, lambda: asyncio.ensure_future(self.drain(server)))
        loop.start()

    async def drain(self, server: HTTPServer) -> None:
        """On SIGTERM (a rollout, an eviction, a drained node): take no new work and let what runs
        finish, so that a routine stop cuts no transfer. Until the Service has dropped this pod
        (DROP_SECONDS), new requests are still served, with `Connection: close` so that clients
        come back to another pod; pod watches end at once (their clients reconnect). The kubelet
        kills what is still running after terminationGracePeriodSeconds, and clients retry."""
        if self.draining:
            return
        self.draining = True
        log.info("stopping: %d requests in progress; taking no new ones", len(self.requests))
        for request in list(self.requests):
            if getattr(request, "stopped", None) is not None:
                request.stopped.set()
        await asyncio.sleep(self.DROP_SECONDS)
        server.stop()
        while self.requests:
            await asyncio.sleep(0.2)
        log.info("stopped: every request has ended")
        IOLoop.current().stop()


from . import gateway_schedules  # noqa: E402 - its handlers build on this module's
