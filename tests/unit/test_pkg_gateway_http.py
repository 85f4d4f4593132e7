"""The gateway's HTTP layer on a real tornado server on loopback, before any Kubernetes call: the
token is checked before a byte of the body is read, bodies are bounded, and bad input is a 4xx
with a JSON message. The hub is a stand-in that knows one token (JupyterHub itself, and the
gateway's Kubernetes side: tests/e2e/test_gateway_e2e.py)."""
import asyncio
import json
import socket
import threading
import time

import pytest
from tornado.ioloop import IOLoop
from tornado.netutil import bind_sockets

from jupyter_scheduler_k8s.config import K8sConfig
from jupyter_scheduler_k8s.gateway.app import Gateway, GatewayConfig

from .data_pkg.helpers import clean_env  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("clean_env")
JOB_ID = "5f0c9a52-1e4b-4d8e-9a57-2c1f0b7d3e11"
PREFIX = "/services/jobs-gateway/api/v1/"


class StandInHub:
    """HubAuth's interface, as the handlers use it: one good token, for user alice."""

    access_scopes = None

    def __init__(self):
        self.asked = 0

    async def get_user(self, handler, sync=False):
        self.asked += 1
        if handler.request.headers.get("Authorization") == "token good":
            return {"name": "alice", "kind": "user"}
        return None


class NoKubernetes:
    """The gateway's clients: any use fails the test (these requests must end before it)."""

    def __getattr__(self, name):
        raise AssertionError(f"a request reached Kubernetes ({name})")


def serve(gateway):
    """The gateway's own HTTP server on a loopback port, on a thread: (port, its loop, the thread)."""
    started, holder = threading.Event(), {}

    def run():
        asyncio.set_event_loop(asyncio.new_event_loop())
        http = gateway.http_server()
        sockets = bind_sockets(0, "127.0.0.1")
        http.add_sockets(sockets)
        holder.update(port=sockets[0].getsockname()[1], loop=IOLoop.current(), http=http)
        started.set()
        IOLoop.current().start()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    started.wait(10)
    return holder, thread


def make_gateway():
    return Gateway(K8sConfig(namespace="jobs"), GatewayConfig(service_prefix="/services/jobs-gateway/",
                                                              body_limit=256 * 1024, body_timeout_seconds=5),
                   clients=NoKubernetes(), hub_auth=StandInHub())


@pytest.fixture(scope="module")
def server():
    gateway = make_gateway()
    holder, _ = serve(gateway)
    yield gateway, holder["port"]
    holder["loop"].add_callback(holder["loop"].stop)


def request_head(port, method, path, headers=(), body=b"", timeout=5):
    """Sends the request line, headers and `body` (only that much of it), and reads the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        lines = [f"{method} {PREFIX}{path} HTTP/1.1", "Host: gateway", *headers, "", ""]
        s.sendall("\r\n".join(lines).encode() + body)
        answer = b""
        while b"\r\n\r\n" not in answer:
            got = s.recv(65536)
            if not got:
                break
            answer += got
        head, _, rest = answer.partition(b"\r\n\r\n")
        status = int(head.split()[1])
        length = int(next((line.split(b":")[1] for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length")), b"0"))
        while len(rest) < length:
            got = s.recv(65536)
            if not got:
                break
            rest += got
        return status, json.loads(rest) if rest else None


def test_a_stranger_is_refused_before_any_of_the_body_is_read(server):
    """Only the headers of a 100 MiB PUT are sent: the 401 comes without the body."""
    _, port = server
    for path in (f"jobs/{JOB_ID}", f"jobs/{JOB_ID}/pods/jsk8s-job-x/input", f"definitions/{JOB_ID}"):
        status, body = request_head(port, "PUT", path, ["Content-Length: 104857600"])
        assert (status, body["status"]) == (401, 401)


def test_a_users_oversize_body_is_a_413_before_it_is_read(server):
    _, port = server
    status, body = request_head(port, "PUT", f"jobs/{JOB_ID}", ["Authorization: token good",
                                                                "Content-Length: 104857600"])
    assert status == 413 and "exceeds 262144 bytes" in body["message"]


def test_a_users_oversize_chunked_body_is_a_413_once_it_passes_the_limit(server):
    _, port = server
    chunk = b"x" * 16384
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(20))  # 320 KiB, no end
    status, answer = request_head(port, "PUT", f"jobs/{JOB_ID}", ["Authorization: token good",
                                                                  "Transfer-Encoding: chunked"], body)
    assert status == 413


def test_a_body_that_does_not_come_is_given_up(server):
    """Headers that promise a body which never arrives: the connection is closed after
    body_timeout_seconds (here 5 s), not held."""
    _, port = server
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(f"PUT {PREFIX}jobs/{JOB_ID} HTTP/1.1\r\nHost: g\r\nAuthorization: token good\r\n"
                  f"Content-Length: 100\r\n\r\n".encode())
        assert s.recv(65536) == b""  # closed, nothing answered


@pytest.mark.parametrize("method,path,body", [
    ("PUT", f"jobs/{JOB_ID}", b"{not json"),
    ("PUT", f"jobs/{JOB_ID}", b'{"job": {"input_file": "a.ipynb", "parameters": {"p": "' + b"x" * 200000 + b'"}}}'),
    ("POST", f"jobs/{JOB_ID}/collector", b"[1, 2]"),
    ("POST", f"jobs/{JOB_ID}/collector", b"{not json"),
    ("GET", f"jobs/{JOB_ID}/pods/jsk8s-job-x/log?limit=abc", b""),
    ("GET", "pods?tick=nan", b""),
    ("GET", "pods?tick=inf", b""),
    ("POST", f"definitions/{JOB_ID}/runs", b"{not json"),
    ("POST", f"definitions/{JOB_ID}/runs", b'{"parameters": {"p": "' + b"x" * 200000 + b'"}}'),
    ("POST", f"definitions/{JOB_ID}/holder", b"{not json"),
])
def test_bad_input_is_a_4xx_with_a_message(server, method, path, body):
    _, port = server
    status, answer = request_head(port, method, path, ["Authorization: token good",
                                                       f"Content-Length: {len(body)}"], body)
    assert 400 <= status < 500 and answer["message"], (status, answer)


def test_a_stopping_gateway_finishes_what_it_serves_and_takes_no_new_work():
    """SIGTERM's drain(): /ready says "stopping" and answers close their connection; once the
    Service has had time to drop the pod, new connections are refused; a request in progress
    is served to its end, and only then does the server stop."""
    gateway = make_gateway()
    gateway.DROP_SECONDS = 1
    holder, thread = serve(gateway)
    port, body = holder["port"], b"{not json at all}"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as slow:
        slow.sendall(f"PUT {PREFIX}jobs/{JOB_ID} HTTP/1.1\r\nHost: g\r\nAuthorization: token good\r\n"
                     f"Content-Length: {len(body)}\r\n\r\n".encode() + body[:5])
        for _ in range(200):
            if gateway.requests:  # the handler runs, its body half sent
                break
            time.sleep(0.05)
        assert gateway.requests, "the request in progress is not counted"
        holder["loop"].add_callback(lambda: asyncio.ensure_future(gateway.drain(holder["http"])))
        for _ in range(200):
            if gateway.draining:
                break
            time.sleep(0.05)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(f"GET {PREFIX}ready HTTP/1.1\r\nHost: g\r\n\r\n".encode())
            answer = s.recv(65536)
        assert answer.startswith(b"HTTP/1.1 503") and b"stopping" in answer, answer
        assert b"\r\nConnection: close\r\n" in answer, answer
        refused = False
        for _ in range(100):  # until DROP_SECONDS have passed
            try:
                socket.create_connection(("127.0.0.1", port), timeout=5).close()
                time.sleep(0.1)
            except ConnectionRefusedError:
                refused = True
                break
        assert refused, "a stopping gateway still takes new connections"
        assert thread.is_alive(), "the gateway stopped with a request in progress"
        slow.sendall(body[5:])
        answer = slow.recv(65536)
    assert answer.startswith(b"HTTP/1.1 400") and b"not JSON" in answer, answer
    thread.join(10)
    assert not thread.is_alive(), "the gateway did not stop once its last request had ended"
    assert not gateway.requests
