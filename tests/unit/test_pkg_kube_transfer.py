"""kube/transfer.py: which exec failures open the connection again (nothing ran in the pod yet), and
the stdout reader that tarfile reads the outputs through."""
import os

import pytest
import yaml
from kubernetes.client.rest import ApiException
from websocket import WebSocketBadStatusException, WebSocketConnectionClosedException

from jupyter_scheduler_k8s.kube.transfer import (
    _MIN_PROGRESS, PRINT_LIMIT, CommandFailed, Progress, TransferError, _Channels, _exit_code, _handshake_failed,
    _StdoutReader,
)


@pytest.mark.parametrize("error,again", [
    (ApiException(status=0, reason="Handshake status 503 Service Unavailable"), True),
    (ApiException(status=429), True),
    (ApiException(status=500), True),
    (ApiException(status=403, reason="Forbidden"), False),
    (ApiException(status=404), False),
    (WebSocketBadStatusException("Handshake status %d %s", 502, "Bad Gateway"), True),
    (WebSocketConnectionClosedException("Connection to remote host was lost."), True),
    (ConnectionResetError(), True),
    (TransferError("the API server does not support exec protocol v5.channel.k8s.io"), False),
    (CommandFailed("stage-in failed (exit code 1)"), False),
])
def test_handshake_failed(error, again):
    assert _handshake_failed(error) is again


class ChunkedWs:
    """Stands in for the exec websocket: stdout arrives in large chunks, then the command ends."""

    def __init__(self, chunks):
        self.chunks = list(chunks)

    def is_open(self):
        return bool(self.chunks)

    def update(self, timeout=0):
        pass

    def read_channel(self, channel):
        return self.chunks.pop(0) if self.chunks else b""


def test_stdout_reader_gives_back_exactly_the_stream_in_small_reads():
    data = os.urandom(24 << 20)
    chunks = [data[i:i + (3 << 20) + 7] for i in range(0, len(data), (3 << 20) + 7)]
    reader = _StdoutReader(ChunkedWs(chunks))
    pieces = []
    while True:
        piece = reader.read(10240)
        if not piece:
            break
        pieces.append(piece)
    assert b"".join(pieces) == data
    assert len(reader.buffer) <= 2 * (3 << 20) + 16  # what was read is let go


def test_stdout_reader_read_all():
    reader = _StdoutReader(ChunkedWs([b"abc", b"def"]))
    assert reader.read(2) == b"ab"
    assert reader.read() == b"cdef"
    assert reader.read() == b""


def test_channels_append_in_place():
    """What the client does with each frame (`channels[c] += data`) extends one buffer."""
    channels = _Channels()
    channels[1] = b"ab"
    first = channels[1]
    channels[1] += b"cd"
    assert channels[1] is first and channels[1] == b"abcd"


def feed(channels, channel, data, frame=32 * 1024):
    """As the exec client stores frames: the first one set, the rest appended with `+=`."""
    for i in range(0, len(data), frame):
        if channel in channels:
            channels[channel] += data[i:i + frame]
        else:
            channels[channel] = data[i:i + frame]


def test_stderr_keeps_only_its_end():
    channels = _Channels("stage-out in pod p")
    feed(channels, 2, b"x" * 300_000 + b"the end\n")
    assert len(channels[2]) <= 8 * 1024 and channels[2].endswith(b"the end\n")


def test_a_command_that_prints_too_much_is_cut_off_with_the_end_of_what_it_printed():
    channels = _Channels("release in pod p")
    with pytest.raises(CommandFailed) as raised:
        feed(channels, 2, b"noise " * (PRINT_LIMIT // 6) + b"last words" * 100)
    message = str(raised.value)
    assert message.startswith("release in pod p printed more than 1 MiB") and len(message) < 500
    assert channels.printed <= PRINT_LIMIT + 32 * 1024  # cut at the first frame past the limit


def test_stdout_counts_as_printed_unless_it_is_the_data_stream():
    streamed = _Channels()
    streamed.streaming = True
    for _ in range(64):  # 64 MiB of data, read as it comes
        feed(streamed, 1, b"d" * 1024 ** 2)
        streamed.pop(1)
    assert streamed.printed == 0
    streamed.streaming = False  # the stream is over: what comes now is noise
    with pytest.raises(CommandFailed):
        feed(streamed, 1, b"d" * (PRINT_LIMIT + 1))
    with pytest.raises(CommandFailed):
        feed(_Channels(), 1, b"d" * (PRINT_LIMIT + 1))  # stage-in, release: stdout is never data


def test_a_trickle_is_a_stall_and_a_slow_reader_is_not():
    progress = Progress("upload", idle=60)
    for _ in range(59):
        progress.add(100, 1.0)  # 100 bytes a second: under 64 KiB a minute
    with pytest.raises(TransferError, match="upload stalled"):
        progress.add(100, 2.0)
    progress = Progress("upload", idle=60)
    for _ in range(100):  # slow but steady: 64 KiB in each 59.5 s of waiting
        progress.add(_MIN_PROGRESS // 2, 59.0)
        progress.add(_MIN_PROGRESS // 2, 0.5)
    progress = Progress("download", idle=60)
    progress.add(10, 0.0)
    progress.add(10, 0.0)  # however long the reader itself took between reads: no waiting counted


def test_the_status_channel_stays_bytes_for_the_clients_yaml_parser():
    channels = _Channels()
    channels[3] = b'{"status": "Success"}'
    assert type(channels[3]) is bytes and yaml.safe_load(channels[3]) == {"status": "Success"}


# Status channel messages as the API server sends them (metav1.Status).
SUCCESS = b'{"metadata":{},"status":"Success"}'
EXIT_1 = (b'{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit code: error executing '
          b'command [jsk8s-executor stage-out], exit code 1","reason":"NonZeroExitCode","details":{"causes":'
          b'[{"reason":"ExitCode","message":"1"}]}}')
NOT_FOUND = (b'{"metadata":{},"status":"Failure","message":"unable to upgrade connection: container not found '
             b'(\\"executor\\")","details":{"causes":[{"message":"unable to upgrade connection: container not found '
             b'(\\"executor\\")"}]}}')


def test_exit_code_from_the_status_channel():
    assert _exit_code(SUCCESS, "stage-out") == 0
    assert _exit_code(EXIT_1, "stage-out") == 1


@pytest.mark.parametrize("status,message", [
    (NOT_FOUND, 'stage-out could not run: unable to upgrade connection: container not found ("executor")'),
    (b"", "stage-out ended without an exit status"),
    (b"{not yaml: [", "stage-out ended without an exit status"),
])
def test_no_exit_code_is_a_transfer_error_tried_again(status, message):
    with pytest.raises(TransferError) as raised:
        _exit_code(status, "stage-out")
    assert not isinstance(raised.value, CommandFailed)
    assert str(raised.value).startswith(message)
