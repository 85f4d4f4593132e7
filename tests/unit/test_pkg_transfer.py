"""transfer.py: which exec failures open the connection again (nothing ran in the pod yet)."""
import pytest
from kubernetes.client.rest import ApiException
from websocket import WebSocketBadStatusException, WebSocketConnectionClosedException

from jupyter_scheduler_k8s.transfer import CommandFailed, TransferError, _handshake_failed


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
