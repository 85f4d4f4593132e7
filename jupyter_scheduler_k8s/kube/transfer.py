"""Files in and out of a pod as a tar stream over the exec API, like `kubectl cp`, without kubectl.

Uses the official client's websocket exec in binary mode. Stdin is half-closed with the
v5.channel.k8s.io CLOSE signal so the command in the pod sees end of input; older protocols
cannot do that, so v5 is required.
"""
import os
import tarfile
import time
from contextlib import contextmanager
from typing import Callable, Iterable, List, Tuple

import tenacity
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException
from kubernetes.stream import stream
from kubernetes.stream.ws_client import ERROR_CHANNEL, STDERR_CHANNEL, STDOUT_CHANNEL, V5_CHANNEL_PROTOCOL
from websocket import WebSocketException

from .safe_tar import extract_outputs

_CHUNK = 256 * 1024


class TransferError(Exception):
    """The transfer broke off: a connection, protocol or timeout problem. The files are still
    where they were, so the same transfer can be tried again."""


class CommandFailed(TransferError):
    """The command in the pod ran and failed (e.g. stage-out found no result.json): trying again
    would fail the same way."""


class PrintedTooMuch(CommandFailed):
    """A command in the pod printed more than PRINT_LIMIT: the pod is broken or hostile. What it
    sends is refused; the job fails, and its outputs are not read another way either."""


def _handshake_failed(error: BaseException) -> bool:
    """The exec connection was refused or broke before the command started (nothing ran yet, so
    opening it again is safe): a 5xx or 429 answer to the upgrade, a reset, a timeout."""
    if isinstance(error, ApiException):
        return error.status == 0 or error.status == 429 or (error.status or 0) >= 500
    return isinstance(error, (WebSocketException, OSError))


# What a command in a pod may print (stderr, and stdout where it is not the data stream) before it is
# cut off: a pod is untrusted, and whoever reads its streams (the jobs gateway, shared by every
# user) must not hold more than this of it. The end of what it printed is kept for the message.
PRINT_LIMIT = 1024 ** 2
_TAIL = 8 * 1024
# A stream makes progress or is cut: at least _MIN_PROGRESS bytes each IDLE_SECONDS, in either
# direction (a pod or a client that trickles a byte now and then holds a thread as surely as one
# that sends nothing).
IDLE_SECONDS = 60
_MIN_PROGRESS = 64 * 1024
# Unread stdout at which the reader stops taking frames off the socket (TCP then slows the pod).
_HIGH_WATER = 4 * _CHUNK


@tenacity.retry(retry=tenacity.retry_if_exception(_handshake_failed), reraise=True, stop=tenacity.stop_after_attempt(5),
                wait=tenacity.wait_exponential(multiplier=0.5, max=8) + tenacity.wait_random(0, 0.5))
def _open_exec(core, namespace: str, pod: str, container: str, command: List[str]):
    # stream() swaps the ApiClient's call_api for a websocket one while it runs: on a shared client,
    # another thread's plain request (the pod watch) would go out as a websocket handshake. Each
    # exec therefore gets its own ApiClient on the same configuration.
    own = client.CoreV1Api(client.ApiClient(core.api_client.configuration))
    ws = stream(own.connect_get_namespaced_pod_exec, pod, namespace, container=container, command=command,
                stdin=True, stdout=True, stderr=True, tty=False, _preload_content=False, binary=True)
    if ws.subprotocol != V5_CHANNEL_PROTOCOL:
        ws.close()
        raise TransferError("the API server does not support exec protocol v5.channel.k8s.io (Kubernetes >= 1.30)")
    # The client copies all stdout into an in-memory buffer for read_all(), which we never call;
    # drop it so a large transfer streams instead of accumulating.
    ws._all = _Discard()
    ws._channels = channels = _Channels(f"{command[-1]} in pod {pod}")
    # One update() takes every frame that is already waiting, for as long as more keep coming:
    # stop taking them while the reader has not caught up, so that a fast pod waits in TCP instead
    # of in our memory.
    waiting = ws._frames_immediately_available
    ws._frames_immediately_available = lambda: channels.unread_stdout() < _HIGH_WATER and waiting()
    # A pod that stops reading its stdin blocks a send for at most this long (then it is cut).
    ws.sock.settimeout(IDLE_SECONDS)
    return ws


class _Channels(dict):
    """Where the exec client keeps each channel's unread data, bounded.

    The client appends every frame with `channels[c] += data`. Stdout is the data stream while a
    reader takes it (`streaming`); after that, and on every other command, it counts as printed,
    like stderr. Stderr keeps only its end, for the message; a command that prints more than
    PRINT_LIMIT in all is cut off (PrintedTooMuch). bytearrays append in place (bytes' `+=`
    copies all that is unread each time: quadratic). The status channel stays bytes, which the
    client's yaml parser takes."""

    def __init__(self, what: str = "the command"):
        super().__init__()
        self.what, self.streaming, self.printed = what, False, 0
        self._seen = {}  # channel -> (buffer, its length when last seen)

    def __setitem__(self, key, value):
        if key in (STDOUT_CHANNEL, STDERR_CHANNEL):
            if isinstance(value, bytes):
                value = bytearray(value)
            buffer, seen = self._seen.get(key, (None, 0))
            added = len(value) - (seen if value is buffer else 0)
            if key == STDERR_CHANNEL or not self.streaming:
                self.printed += added
                if self.printed > PRINT_LIMIT:
                    tail = bytes(value[-_TAIL:]).decode("utf-8", "replace")
                    raise PrintedTooMuch(f"{self.what} printed more than {PRINT_LIMIT // 1024 ** 2} MiB and was "
                                        f"cut off; it ended: {tail[-300:].strip()}")
                if len(value) > _TAIL:  # only the end is ever shown
                    del value[:len(value) - _TAIL]
            self._seen[key] = (value, len(value))
        super().__setitem__(key, value)

    def unread_stdout(self) -> int:
        return len(self.get(STDOUT_CHANNEL, b""))


class _Discard:
    def write(self, _data):
        pass

    def getvalue(self):
        return b""


class Progress:
    """Cuts a stream that moves fewer than _MIN_PROGRESS bytes in `idle` seconds of waiting for
    it. Only the time spent waiting on the other side counts: a reader that is itself slow to
    ask for more is not the stream's fault."""

    def __init__(self, what: str, idle: float = IDLE_SECONDS):
        self.what, self.idle = what, idle
        self.moved, self.waited = 0, 0.0

    def add(self, count: int, waited: float) -> None:
        self.moved += count
        self.waited += waited
        if self.moved >= _MIN_PROGRESS:
            self.moved, self.waited = 0, 0.0
        elif self.waited > self.idle:
            raise TransferError(f"{self.what} stalled (under {_MIN_PROGRESS // 1024} KiB in {self.idle:.0f}s)")


def _finish(ws, what: str, timeout: float = IDLE_SECONDS):
    """Waits for the command's end (its data stream is over: what it sends now counts as
    printed) and raises unless it exited 0."""
    if isinstance(getattr(ws, "_channels", None), _Channels):
        ws._channels.streaming = False
    ws.run_forever(timeout=timeout)
    stderr = ws.read_channel(STDERR_CHANNEL)
    if ws.is_open():
        ws.close()
        raise TransferError(f"{what} did not finish within {timeout:.0f}s")
    code = _exit_code(ws.read_channel(ERROR_CHANNEL), what)
    if code != 0:
        detail = stderr.decode("utf-8", "replace").strip()[-500:] if stderr else ""
        raise CommandFailed(f"{what} failed (exit code {code}){': ' + detail if detail else ''}")


def _exit_code(status: bytes, what: str) -> int:
    """The command's exit code from the exec status channel. (The client's own `returncode` fails
    with a ValueError when the status is not an exit code, e.g. "container not found".) No exit
    code means the command did not run to its end in the pod: a TransferError, tried again."""
    try:
        parsed = yaml.safe_load(status) if status else None
    except yaml.YAMLError:
        parsed = None
    if not isinstance(parsed, dict):
        raise TransferError(f"{what} ended without an exit status (the connection was lost)")
    if parsed.get("status") == "Success":
        return 0
    for cause in (parsed.get("details") or {}).get("causes") or []:
        if cause.get("reason") == "ExitCode":
            try:
                return int(cause.get("message"))
            except (TypeError, ValueError):
                break
    raise TransferError(f"{what} could not run: {parsed.get('message') or parsed}")


class _StdinWriter:
    """File-like object that sends whatever tarfile writes to the command's stdin."""

    def __init__(self, ws):
        self.ws = ws

    def write(self, data):
        view = memoryview(data)
        for i in range(0, len(view), _CHUNK):
            try:
                self.ws.write_stdin(bytes(view[i:i + _CHUNK]))
            except (WebSocketException, OSError) as e:  # e.g. the socket's timeout: the pod stopped reading
                raise TransferError(f"the pod stopped taking its input ({type(e).__name__})") from None
            # Drain stdout/stderr now and then so neither side stalls on a full buffer.
            self.ws.update(timeout=0)
        return len(data)


class _StdoutReader:
    """File-like object over the command's stdout, for tarfile's stream mode.

    tarfile reads in small pieces while the pod sends megabytes at a time: the data waits in one
    buffer with a read position, so each byte is copied a bounded number of times. A pod that
    sends too little for too long is cut off (Progress)."""

    def __init__(self, ws, idle: float = IDLE_SECONDS):
        self.ws, self.progress = ws, Progress("the stream from the pod", idle)
        self.buffer, self.pos = bytearray(), 0

    def _available(self) -> int:
        return len(self.buffer) - self.pos

    def read(self, size=-1):
        while (size < 0 or self._available() < size) and self.ws.is_open():
            started = time.monotonic()
            self.ws.update(timeout=1)
            chunk = self.ws.read_channel(STDOUT_CHANNEL)
            if chunk:
                self.buffer += chunk
            self.progress.add(len(chunk), time.monotonic() - started)
        if not self.ws.is_open():
            self.buffer += self.ws.read_channel(STDOUT_CHANNEL) or b""
        end = len(self.buffer) if size < 0 else min(len(self.buffer), self.pos + size)
        data = bytes(self.buffer[self.pos:end])
        self.pos = end
        if self.pos >= _CHUNK and self.pos * 2 >= len(self.buffer):  # drop what was read, now and then
            del self.buffer[:self.pos]
            self.pos = 0
        return data


def send_files(core, namespace: str, pod: str, container: str, command: List[str],
               root: str, relpaths: Iterable[str]) -> None:
    """Streams root/relpath for each relpath into `command`'s stdin as an uncompressed tar."""
    with input_stream(core, namespace, pod, container, command) as stdin:
        write_tar(stdin, root, relpaths)


def write_tar(fileobj, root: str, relpaths: Iterable[str]) -> None:
    """Writes root/relpath for each relpath to fileobj as an uncompressed tar stream."""
    with tarfile.open(fileobj=fileobj, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for rel in relpaths:
            # The staging dir is the server's; never follow a link out of it.
            tar.add(os.path.join(root, rel), arcname=rel, recursive=False)


@contextmanager
def input_stream(core, namespace: str, pod: str, container: str, command: List[str]):
    """A writable file-like object on `command`'s stdin. When the block ends, stdin is closed
    and the command's exit status checked (CommandFailed if it failed). The jobs gateway passes a
    user's upload through this without reading it."""
    ws = _open_exec(core, namespace, pod, container, command)
    try:
        yield _StdinWriter(ws)
        ws.close_channel(0)
        _finish(ws, f"stage-in to pod {pod}")
    finally:
        if ws.is_open():
            ws.close()


@contextmanager
def output_stream(core, namespace: str, pod: str, container: str, command: List[str]):
    """A readable file-like object on `command`'s stdout (its stdin closed at once). When the
    block ends, the command's exit status is checked."""
    ws = _open_exec(core, namespace, pod, container, command)
    try:
        ws.close_channel(0)
        ws._channels.streaming = True
        yield _StdoutReader(ws)
        _finish(ws, f"stage-out from pod {pod}")
    finally:
        if ws.is_open():
            ws.close()


def receive_outputs(core, namespace: str, pod: str, container: str, command: List[str],
                    dest: str, size_limit: int):
    """Runs `command` (which writes a stage-out tar on stdout) and safely extracts it into dest."""
    with output_stream(core, namespace, pod, container, command) as stdout:
        return extract_stage_out(stdout, dest, size_limit, f"stage-out from pod {pod}",
                                 lambda: _finish(stdout.ws, f"stage-out from pod {pod}", 10))


def extract_stage_out(stdout, dest: str, size_limit: int, what: str, command_status: Callable[[], None]):
    """safe_tar.extract_outputs on a stage-out stream. A stream that is not a tar usually means the
    command failed before writing anything: command_status() raises its own reason then."""
    try:
        return extract_outputs(stdout, dest, size_limit)
    except tarfile.TarError as e:
        try:
            command_status()
        except CommandFailed:
            raise
        except TransferError:
            pass
        raise TransferError(f"{what} sent no valid tar stream ({e})") from None


def run_command(core, namespace: str, pod: str, container: str, command: List[str], timeout: float = 60) -> None:
    ws = _open_exec(core, namespace, pod, container, command)
    try:
        ws.close_channel(0)
        _finish(ws, f"{command[-1]} in pod {pod}", timeout)
    finally:
        if ws.is_open():
            ws.close()


def log_tail_bytes(chunks: Iterable[bytes], limit: int) -> Tuple[bytes, int]:
    """The last `limit` bytes of a stream, starting at a line, and how many bytes were left out."""
    kept, cut = bytearray(), 0
    for chunk in chunks:
        kept += chunk
        if len(kept) > 2 * limit:  # trim now and then, not on every chunk
            cut += len(kept) - limit
            del kept[:len(kept) - limit]
    if len(kept) > limit:
        cut += len(kept) - limit
        del kept[:len(kept) - limit]
    if cut:
        newline = kept.find(b"\n")
        if 0 <= newline < len(kept) - 1:
            cut += newline + 1
            del kept[:newline + 1]
    return bytes(kept), cut


def run_files(root: str, package_input_folder: bool, input_file: str) -> Tuple[List[str], List[str]]:
    """The files stage-in sends from the staging dir, and those it skips: only regular files go,
    since a link in the user's folder could point at any server file."""
    if package_input_folder:
        files = sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)
    else:
        files = [input_file]
    skipped = [f for f in files if os.path.islink(os.path.join(root, f)) or not os.path.isfile(os.path.join(root, f))]
    return [f for f in files if f not in skipped], skipped
