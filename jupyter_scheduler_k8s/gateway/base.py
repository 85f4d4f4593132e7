"""What every endpoint of the jobs gateway shares: HubAuth before any byte of a body, the
per-user limits on calls and streams, and the map from the lifecycle's errors to HTTP answers."""

import asyncio
import contextlib
import json
import logging
import threading
from typing import Dict, Optional

import urllib3
from jupyterhub.services.auth import HubAuthenticated, UserNotAllowed
from kubernetes.client.rest import ApiException
from tornado import web
from tornado.ioloop import IOLoop

from ..config import UnknownProfileError
from ..kube import names, transfer
from ..kube.base import NotFound, OverLimit
from ..kube.driver import KubeDriver
from ..kube.reasons import describe_error
from ..kube.schedules import ScheduleError
from . import wire

log = logging.getLogger(__name__)


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
    def gateway(self):
        """The app.Gateway that serves this request: its pools, limits and configuration."""
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
        if content_length(self) > self.gateway.options.body_limit:
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
        return KubeDriver(self.gateway.k8s, self.gateway.clients, owner=self.current_user, queued=True)

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
        if status_code == 429 and kwargs.get("error") != wire.OVER_LIMIT:  # waiting lifts no limit
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


def content_length(handler) -> int:
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
    if isinstance(e, OverLimit):
        return Refusal(wire.OVER_LIMIT_STATUS, str(e), wire.OVER_LIMIT)
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


def query_number(handler, name: str, default, kind=float):
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


def query_component(handler) -> str:
    component = handler.get_argument("component", names.COMPONENT_JOB)
    if component not in (names.COMPONENT_JOB, names.COMPONENT_COLLECTOR):
        raise Refusal(400, "invalid component")
    return component
