"""The jobs gateway's streams: inputs into a pod, outputs and logs out of it, and a user's pod
events; each counted against the user's open streams, bounded in size and pace."""

import asyncio
import json
import logging
import threading
import time
from concurrent.futures import TimeoutError as FutureTimeout

from ..kube import executor, manifests, names, transfer
from ..kube.driver import KubeDriver
from . import wire
from .base import BaseHandler, Refusal, content_length, query_component, query_number

log = logging.getLogger(__name__)


_CHUNK = 256 * 1024
# A tar stream is its files plus headers and padding (at least 10 KiB, about 1.5 KiB a file):
# limits on files' bytes allow this much more on the stream that carries them.
_TAR_HEADERS = 16 * 1024 * 1024
# The longest an upload may take in all (its pace is checked on its own: transfer.Progress).
UPLOAD_SECONDS = 3600


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
        limit = min(max(query_number(self, "limit", most, int), 1), most)
        tail = await self.streaming(self.driver().log_tail, self.job_id(job_id), self.pod_name(pod), limit)
        if tail is None:
            raise Refusal(404, "the pod has no log")
        data, cut = tail
        self.set_header("Content-Type", "application/octet-stream")
        self.set_header("X-Jsk8s-Cut", str(cut))
        self.finish(data)


class Input(_Stream):
    """PUT a tar stream: it goes into `stage-in` in the pod that holds the job's volume as it
    arrives, and then the Job is marked staged (the queue may admit it). Its body is read only
    once the token is good and the pod is found; a stalled upload is cut (Progress)."""

    def accept_body(self):
        self.request.connection.set_max_body_size(2 ** 62)  # counted here instead, for a 413
        self.request.connection.set_body_timeout(UPLOAD_SECONDS)
        self.limit = limit = self.gateway.options.input_size_limit
        # The client says how many bytes its files hold: too many is refused before any is read.
        try:
            declared = int(self.request.headers.get(wire.INPUT_BYTES_HEADER) or 0)
        except ValueError:
            raise Refusal(400, f"invalid {wire.INPUT_BYTES_HEADER}") from None
        if declared > limit or content_length(self) > limit + _TAR_HEADERS:
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
        await self.blocking(driver.check_pod, job_id, pod, names.COMPONENT_COLLECTOR)
        return pod, executor.stage_in()

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
        await self.staged()
        log.info("%s: upload done (%d bytes)", self.request.path, self.received)
        self.send_json({"staged": True})

    async def staged(self):
        await self.blocking(self.driver().mark_staged, self.job_id(self.path_args[0]))

    def on_connection_close(self):
        if hasattr(self, "gone"):
            self.gone.set()
        super().on_connection_close()


class Output(_Stream):
    """GET the job pod's (or collector's) `stage-out` tar stream, as the pod sends it. It is
    untrusted: the user's server extracts it with safe_tar. Only its size is capped here."""

    async def source(self, driver: KubeDriver):
        """The checked pod the stream comes from, and the command that writes it there."""
        job_id, pod, component = self.job_id(self.path_args[0]), self.pod_name(self.path_args[1]), query_component(self)
        await self.blocking(driver.check_pod, job_id, pod, component)
        return pod, executor.stage_out()

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
        component = query_component(self)
        tick = min(max(query_number(self, "tick", 5.0), 1.0), 30.0)
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
