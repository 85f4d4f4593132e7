"""kube/clients.py against a small HTTP server on loopback that stands in for an API server in trouble:
429 and 5xx answers are retried (Retry-After honoured), a server that never answers times out."""
import http.server
import json
import threading
import time

import pytest
import yaml

from jupyter_scheduler_k8s.kube import clients as clients_module
from jupyter_scheduler_k8s.kube.clients import Clients

POD_LIST = json.dumps({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": []}).encode()


class Troubled(http.server.ThreadingHTTPServer):
    """Answers each request with the next of `answers` ((status, headers) or "hang"), then 200."""

    def __init__(self, answers):
        self.answers, self.seen = list(answers), []
        self.release = threading.Event()
        super().__init__(("127.0.0.1", 0), Handler)


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        server = self.server
        server.seen.append(time.monotonic())
        answer = server.answers.pop(0) if server.answers else (200, {})
        if answer == "hang":
            server.release.wait(30)
            return
        status, headers = answer
        body = POD_LIST if status == 200 else b'{"kind":"Status","message":"busy"}'
        self.send_response(status)
        for key, value in {"Content-Type": "application/json", **headers}.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def api(tmp_path):
    servers = []

    def start(*answers):
        server = Troubled(answers)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "troubled",
            "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{server.server_address[1]}"}}],
            "users": [{"name": "u", "user": {"token": "t"}}],
            "contexts": [{"name": "troubled", "context": {"cluster": "c", "user": "u"}}]}))
        return server, Clients(str(kubeconfig)).core
    yield start
    for server in servers:
        server.release.set()
        server.shutdown()


def test_5xx_answers_are_retried_with_backoff(api):
    """Three 5xx answers, then the list: each retry waits at least the product's backoff (urllib3's
    formula: none before the first retry, then backoff_factor x 2, x 4, ...)."""
    factor = clients_module.api_retries().backoff_factor
    server, core = api((503, {}), (500, {}), (502, {}))
    assert core.list_namespaced_pod("jobs").items == []
    assert len(server.seen) == 4
    gaps = [b - a for a, b in zip(server.seen, server.seen[1:])]
    assert factor >= 0.1
    assert [gap >= factor * 2 ** n for n, gap in enumerate(gaps[1:], start=1)] == [True, True], (factor, gaps)


def test_429_waits_as_long_as_retry_after_says(api):
    server, core = api((429, {"Retry-After": "2"}))
    assert core.list_namespaced_pod("jobs").items == []
    assert server.seen[1] - server.seen[0] >= 1.9


def test_retries_run_out_with_the_servers_status(api, monkeypatch):
    product = clients_module.api_retries()
    # The product's retry budget, with the waits shortened so that the test takes a second.
    monkeypatch.setattr(clients_module, "api_retries",
                        lambda: product.new(backoff_factor=0.01, backoff_max=0.05, backoff_jitter=0))
    server, core = api(*[(503, {})] * 20)
    with pytest.raises(clients_module.client.ApiException) as raised:
        core.list_namespaced_pod("jobs")
    assert raised.value.status == 503
    assert len(server.seen) == product.status + 1


def test_the_retry_policy():
    """Every method (creates come back 409 and deletes 404 if a retried one had succeeded),
    bounded, with jitter, Retry-After honoured, the last answer given back rather than raised."""
    retry = clients_module.api_retries()
    assert retry.allowed_methods is None and retry.respect_retry_after_header
    assert set(retry.status_forcelist) == {429, 500, 502, 503, 504}
    assert retry.total == 7 and retry.backoff_jitter > 0 and retry.backoff_max <= 16
    assert not retry.raise_on_status


def test_a_server_that_never_answers_times_out(api, monkeypatch):
    monkeypatch.setattr(clients_module, "REQUEST_TIMEOUT", (1, 1))
    monkeypatch.setattr(clients_module, "api_retries", lambda: clients_module.Retry(total=0, read=0))
    server, core = api("hang")
    started = time.monotonic()
    with pytest.raises(Exception) as raised:
        core.list_namespaced_pod("jobs")
    assert time.monotonic() - started < 10
    assert "timed out" in str(raised.value).lower()
