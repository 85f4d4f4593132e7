"""The user server's side of hub mode: a driver that asks the jobs gateway (app.py) instead
of Kubernetes. It has driver.KubeDriver's methods and raises the same errors, so JobRun, the
monitor and K8sScheduler do not know which one they drive.

Requests carry the server's JupyterHub API token. Transient failures (connection errors, 429
with Retry-After, 5xx) are retried by urllib3 as the Kubernetes client's are; a stream that
breaks off raises transfer.TransferError, which the lifecycle tries again later.
"""

import json
import logging
import os
import queue
import threading
import time
from typing import Callable, Iterable, Iterator, Optional, Tuple
from urllib.parse import urlencode

import urllib3

from ..jobs.steps import JobFailed
from ..kube import names, transfer
from ..kube.clients import REQUEST_TIMEOUT, api_retries
from ..kube.base import Driver, NotFound, OverLimit, Schedules
from ..kube.watch import LIST, TICK, WaitTimeout
from . import wire

log = logging.getLogger(__name__)
_CHUNK = 256 * 1024


class GatewayDriver(Driver):
    def __init__(self, url: str, token: str, ca_file: Optional[str] = None):
        self.base = url.rstrip("/") + "/" + wire.API_PREFIX
        self.headers = {"Authorization": f"token {token}"}
        # A 429 is tried again only when it says when (Retry-After): one without is a limit (wire.py).
        self.http = urllib3.PoolManager(
            maxsize=8, retries=api_retries().new(status_forcelist=(500, 502, 503, 504)), ca_certs=ca_file,
            timeout=urllib3.Timeout(connect=REQUEST_TIMEOUT[0], read=REQUEST_TIMEOUT[1]))

    # ---- requests ----------------------------------------------------------------------------
    def _url(self, path: str, **query) -> str:
        query = {k: v for k, v in query.items() if v is not None}
        return self.base + path + ("?" + urlencode(query) if query else "")

    def _request(self, method: str, path: str, body=None, query=None, stream=False, retries=None, timeout=None,
                 headers=None):
        headers = {**self.headers, **(headers or {})}
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        kwargs = {} if retries is None else {"retries": retries}
        if timeout is not None:
            kwargs["timeout"] = timeout
        try:
            response = self.http.request(method, self._url(path, **(query or {})), body=body, headers=headers,
                                         preload_content=not stream, chunked=not isinstance(body, (bytes, type(None))),
                                         **kwargs)
        except urllib3.exceptions.HTTPError as e:
            raise transfer.TransferError(f"the jobs gateway cannot be reached: {e}") from None
        if response.status >= 300:
            raise _error(response.status, *_message(response))
        return response

    def _json(self, method: str, path: str, **kwargs):
        response = self._request(method, path, **kwargs)
        return json.loads(response.data or b"null") if response.status != 204 else None

    def whoami(self) -> dict:
        return self._json("GET", wire.WHOAMI)

    # ---- objects -----------------------------------------------------------------------------
    def create(self, job, profile: dict, timeout_seconds: int) -> bool:
        """The gateway resolves the profile by name, from its own configuration."""
        answer = self._json("PUT", wire.path(wire.JOB, job_id=job.job_id), body={"job": {
            "input_file": job.input_file, "outputs": dict(job.outputs), "parameters": dict(job.parameters),
            "job_name": job.job_name, "compute_type": job.compute_type, "environment": job.environment,
            "submitted": job.submitted}})
        return bool(answer.get("inputs_wanted", True))

    # A job the gateway does not know (gone, or never this user's) is a 404: absent, for these.
    def read_job(self, job_id: str):
        return _absent(lambda: wire.from_json(self._json("GET", wire.path(wire.JOB, job_id=job_id))["job"], "V1Job"))

    def volume_exists(self, job_id: str) -> bool:
        return bool(_absent(lambda: self._json("GET", wire.path(wire.JOB_VOLUME, job_id=job_id))["exists"]))

    def warning_event(self, job_id: str) -> Optional[str]:
        return _absent(lambda: self._json("GET", wire.path(wire.JOB_WARNING, job_id=job_id))["warning"])

    def stop(self, job_id: str) -> None:
        _absent(lambda: self._json("POST", wire.path(wire.JOB_STOP, job_id=job_id)))

    def delete(self, job_id: str, keep_volume: bool = False, collector: bool = True) -> None:
        _absent(lambda: self._json("DELETE", wire.path(wire.JOB, job_id=job_id), query={
            "keep_volume": "1" if keep_volume else "0", "collector": "1" if collector else "0"}))

    def start_collector(self, job, hold_seconds: int = 300) -> None:
        self._json("POST", wire.path(wire.JOB_COLLECTOR, job_id=job.job_id),
                   body={"environment": job.environment, "job_name": job.job_name})

    def remove_collector(self, job_id: str) -> None:
        _absent(lambda: self._json("DELETE", wire.path(wire.JOB_COLLECTOR, job_id=job_id)))

    # ---- pods --------------------------------------------------------------------------------
    def pod_events(self, job_id: Optional[str] = None, component: str = names.COMPONENT_JOB,
                   tick: float = 5, stopped: Callable[[], bool] = lambda: False) -> Iterator[Tuple[str, object]]:
        """watch.pod_events through the gateway: a JSON-lines stream that the gateway ends now and
        then, and that is opened again at once; after a failure, a TICK and a growing pause."""
        backoff = 0.5
        while not stopped():
            try:
                response = self._request("GET", wire.PODS, query={"job_id": job_id, "component": component,
                                                                "tick": str(tick)},
                                         stream=True, timeout=urllib3.Timeout(connect=REQUEST_TIMEOUT[0],
                                                                              read=max(60, 3 * tick)))
                try:
                    for line in _lines(response):
                        event = json.loads(line)
                        kind = event.get("type")
                        if kind == LIST:
                            yield LIST, [wire.from_json(p, "V1Pod") for p in event.get("pods") or []]
                        elif kind == TICK:
                            yield TICK, None
                        elif kind in ("ADDED", "MODIFIED", "DELETED"):
                            yield kind, wire.from_json(event.get("pod"), "V1Pod")
                        if stopped():
                            return
                finally:
                    response.release_conn()
                backoff = 0.5
            except (transfer.TransferError, urllib3.exceptions.HTTPError, ValueError, OSError) as e:
                log.warning("pod events from the jobs gateway failed (%s); again in %.1fs", e, backoff)
                time.sleep(backoff)
                backoff = min(backoff * 2, 10)
                yield TICK, None  # callers' deadlines hold while the gateway is away

    # ---- transfer ----------------------------------------------------------------------------
    def send_inputs(self, job_id: str, pod_name: str, root: str, files: Iterable[str]) -> None:
        self._upload(wire.path(wire.POD_INPUT, job_id=job_id, pod=pod_name), root, files)

    def _upload(self, path: str, root: str, files: Iterable[str]) -> None:
        """A tar of the files, made as it is sent (a thread writes it into a bounded queue)."""
        files = list(files)
        size = sum(os.path.getsize(os.path.join(root, f)) for f in files)
        chunks = _TarChunks(root, files)
        try:
            # A stream cannot be sent twice: a failure is the lifecycle's to try again.
            self._request("PUT", path, body=chunks, retries=False, headers={wire.INPUT_BYTES_HEADER: str(size)},
                          timeout=urllib3.Timeout(connect=REQUEST_TIMEOUT[0], read=600))
        finally:
            chunks.close()

    def receive_outputs(self, job_id: str, pod_name: str, component: str, dest: str, size_limit: int):
        return self._download(wire.path(wire.POD_OUTPUT, job_id=job_id, pod=pod_name), {"component": component}, dest,
                              size_limit, f"pod {pod_name}")

    def _download(self, path: str, query: dict, dest: str, size_limit: int, what: str):
        response = self._request("GET", path, query=query, stream=True,
                                 timeout=urllib3.Timeout(connect=REQUEST_TIMEOUT[0], read=600))
        try:
            return transfer.extract_stage_out(_Reader(response), dest, size_limit, f"stage-out from {what}",
                                              lambda: None)
        finally:
            response.release_conn()

    def release(self, job_id: str, pod_name: str, component: str) -> None:
        self._json("POST", wire.path(wire.POD_RELEASE, job_id=job_id, pod=pod_name), query={"component": component})

    def log_tail(self, job_id: str, pod_name: str, limit: int) -> Optional[Tuple[bytes, int]]:
        try:
            response = self._request("GET", wire.path(wire.POD_LOG, job_id=job_id, pod=pod_name),
                                     query={"limit": str(limit)})
        except NotFound:
            return None
        return response.data, int(response.headers.get("X-Jsk8s-Cut") or 0)


class GatewaySchedules(Schedules):
    """schedules.KubeSchedules's methods, asked of the jobs gateway (gateway/schedules.py)."""

    def __init__(self, driver: GatewayDriver):
        self.gateway = driver

    def _json(self, method: str, path: str, **kwargs):
        return self.gateway._json(method, path, **kwargs)

    @staticmethod
    def _body(definition) -> dict:
        return {"definition": {
            "name": definition.name, "input_file": definition.input_file, "outputs": dict(definition.outputs),
            "log_name": definition.log_name, "schedule": definition.schedule, "timezone": definition.timezone,
            "active": definition.active, "parameters": dict(definition.parameters),
            "compute_type": definition.compute_type, "environment": definition.environment}}

    def create(self, definition, profile: dict) -> None:
        """The gateway resolves the profile by name, from its own configuration."""
        self._json("PUT", wire.path(wire.DEFINITION, definition_id=definition.definition_id), body=self._body(definition))

    def update(self, definition, profile: dict) -> None:
        self._json("PATCH", wire.path(wire.DEFINITION, definition_id=definition.definition_id), body=self._body(definition))

    def delete(self, definition_id: str) -> None:
        _absent(lambda: self._json("DELETE", wire.path(wire.DEFINITION, definition_id=definition_id)))

    def run_now(self, definition_id: str, parameters: Optional[dict] = None):
        answer = self._json("POST", wire.path(wire.RUN_NOW, definition_id=definition_id), body={"parameters": parameters})
        return wire.from_json(answer["job"], "V1Job")

    def list_runs(self, definition_id: str = "") -> list:
        answer = self._json("GET", wire.RUNS, query={"definition_id": definition_id or None})
        return [wire.from_json(job, "V1Job") for job in answer["jobs"]]

    def run_pod(self, definition_id: str, run_name: str):
        answer = self._json("GET", wire.path(wire.RUN_POD, definition_id=definition_id, run=run_name))
        return wire.from_json(answer["pod"], "V1Pod")

    def delete_run(self, definition_id: str, run_name: str) -> None:
        _absent(lambda: self._json("DELETE", wire.path(wire.RUN, definition_id=definition_id, run=run_name)))

    def start_holder(self, definition_id: str, environment: Optional[str] = None) -> str:
        answer = self._json("POST", wire.path(wire.HOLDER, definition_id=definition_id), body={"environment": environment})
        return answer["pod"]

    def remove_holder(self, definition_id: str) -> None:
        _absent(lambda: self._json("DELETE", wire.path(wire.HOLDER, definition_id=definition_id)))

    def snapshot(self, definition_id: str, environment: Optional[str], root: str, files: Iterable[str]) -> None:
        self.start_holder(definition_id, environment)
        try:
            self.gateway._upload(wire.path(wire.SNAPSHOT, definition_id=definition_id), root, files)
        finally:
            self.remove_holder(definition_id)

    def receive_run(self, definition_id: str, run_name: str, dest: str, size_limit: int):
        return self.gateway._download(wire.path(wire.RUN_OUTPUT, definition_id=definition_id, run=run_name), {}, dest,
                                      size_limit, f"run {run_name}")

    def forget_run(self, definition_id: str, run_name: str) -> None:
        self._json("POST", wire.path(wire.RUN_FORGET, definition_id=definition_id, run=run_name))


def _absent(call):
    try:
        return call()
    except NotFound:
        return None


def _message(response) -> Tuple[str, Optional[str]]:
    """The message of an error answer, and its finer kind if it has one."""
    try:
        body = json.loads(response.data)
        return str(body["message"]), body.get("error")
    except (ValueError, KeyError, TypeError, AttributeError):
        return f"HTTP {response.status}", None


def _error(status: int, message: str, kind: Optional[str] = None) -> Exception:
    """The lifecycle's own error for a gateway answer (wire.py)."""
    if status == wire.NOT_FOUND:
        return NotFound(message)
    if status == wire.OVER_LIMIT_STATUS and kind == wire.OVER_LIMIT:
        return OverLimit(message)
    if status == wire.COMMAND_FAILED:
        return (transfer.PrintedTooMuch if kind == wire.PRINTED_TOO_MUCH else transfer.CommandFailed)(message)
    if status in (401, 403):
        return JobFailed(f"the jobs gateway refused this server's JupyterHub token: {message}")
    if status in wire.REFUSED:
        return JobFailed(message)
    return transfer.TransferError(f"the jobs gateway answered {status}: {message}")


def _lines(response) -> Iterator[bytes]:
    pending = b""
    for chunk in response.stream(64 * 1024, decode_content=True):
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            if line.strip():
                yield line


class _Reader:
    """A file-like view of a streamed response for tarfile; a cut connection is a TransferError."""

    def __init__(self, response):
        self.response = response

    def read(self, size=-1):
        try:
            return self.response.read(size if size >= 0 else None)
        except (urllib3.exceptions.HTTPError, OSError) as e:
            raise transfer.TransferError(f"the output stream from the jobs gateway broke off: {e}") from None


class _TarChunks:
    """An iterator of tar bytes written by a thread into a bounded queue: memory stays at a few
    chunks whatever the inputs' size."""

    _END = object()

    def __init__(self, root: str, files):
        self.queue: "queue.Queue" = queue.Queue(maxsize=8)
        self.closed = threading.Event()
        self.error = None
        self.thread = threading.Thread(target=self._write, args=(root, files), daemon=True, name="jsk8s-tar")
        self.thread.start()

    def write(self, data) -> int:
        view = memoryview(data)
        for i in range(0, len(view), _CHUNK):
            self._put(bytes(view[i:i + _CHUNK]))
        return len(data)

    def _put(self, item) -> None:
        while not self.closed.is_set():
            try:
                self.queue.put(item, timeout=1)
                return
            except queue.Full:
                continue
        raise transfer.TransferError("the upload was abandoned")

    def _write(self, root, files) -> None:
        try:
            transfer.write_tar(self, root, files)
        except BaseException as e:  # noqa: BLE001 - raised in the reader
            self.error = e
        finally:
            try:
                self._put(self._END)
            except transfer.TransferError:
                pass

    def __iter__(self):
        while True:
            item = self.queue.get()
            if item is self._END:
                if self.error is not None:
                    raise self.error
                return
            yield item

    def close(self) -> None:
        self.closed.set()


__all__ = ["GatewayDriver", "GatewaySchedules", "WaitTimeout"]
