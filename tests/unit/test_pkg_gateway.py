"""The gateway's pure parts: what a create request may carry, which status each of the lifecycle's
errors becomes, the stream caps, and an OpenAPI document that lists every route. (The gateway
itself, with a real JupyterHub and cluster: tests/e2e/test_gateway_e2e.py.)"""
import ast
import asyncio
from pathlib import Path

import pytest
from kubernetes.client.rest import ApiException
from tornado import web
from traitlets.config import Config

from jupyter_scheduler_k8s.kube import transfer
from jupyter_scheduler_k8s.gateway import client as client_module
from jupyter_scheduler_k8s.gateway import jobs as jobs_module
from jupyter_scheduler_k8s.gateway import schedules as schedules_module
from jupyter_scheduler_k8s.gateway import wire
from jupyter_scheduler_k8s.config import K8sConfig, UnknownProfileError
from jupyter_scheduler_k8s.kube.base import NotFound, OverLimit
from jupyter_scheduler_k8s.gateway.app import Gateway, GatewayConfig
from jupyter_scheduler_k8s.gateway.base import _Limits, _refusal
from jupyter_scheduler_k8s.gateway.jobs import _job_from_request
from jupyter_scheduler_k8s.gateway.openapi import openapi
from jupyter_scheduler_k8s.jobs.steps import JobFailed

from .data_pkg.helpers import clean_env  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("clean_env")
JOB_ID = "5f0c9a52-1e4b-4d8e-9a57-2c1f0b7d3e11"
GOOD = {"input_file": "report.ipynb", "outputs": {"ipynb": "report-2026.ipynb", "html": "report-2026.html"},
        "parameters": {"n": "3", "flag": True}, "job_name": "Nightly", "compute_type": "small", "environment": None}


def test_a_create_request_becomes_a_notebook_job():
    job = _job_from_request(JOB_ID, {"job": GOOD})
    assert (job.job_id, job.input_file, job.outputs, job.parameters, job.job_name, job.compute_type) == (
        JOB_ID, "report.ipynb", GOOD["outputs"], GOOD["parameters"], "Nightly", "small")
    assert not job.package_input_folder and job.staging_dir == ""
    assert job.submitted is None
    assert _job_from_request(JOB_ID, {"job": dict(GOOD, submitted=1764118923.5)}).submitted == 1764118923.5


@pytest.mark.parametrize("change", [
    {"input_file": "../etc/passwd"}, {"input_file": "a/b.ipynb"}, {"input_file": ""}, {"input_file": None},
    {"outputs": {"html": "../../x.html"}}, {"outputs": ["x"]}, {"parameters": {"n": {"nested": 1}}},
    {"parameters": "n=3"}, {"compute_type": 3}, {"environment": ["x"]},
    {"submitted": "yesterday"}, {"submitted": True}, {"submitted": float("nan")}, {"submitted": float("inf")},
])
def test_a_create_request_with_anything_else_is_a_400(change):
    with pytest.raises(web.HTTPError) as raised:
        _job_from_request(JOB_ID, {"job": dict(GOOD, **change)})
    assert raised.value.status_code == 400


@pytest.mark.parametrize("body", [None, [], {"job": "x"}, {"nojob": {}}])
def test_a_create_request_without_a_job_is_a_400(body):
    with pytest.raises(web.HTTPError):
        _job_from_request(JOB_ID, body)


@pytest.mark.parametrize("error,status", [
    (NotFound("no such job"), 404),
    (transfer.CommandFailed("stage-out failed (exit code 1): no result.json"), 422),
    (UnknownProfileError("Unknown compute type 'huge'; valid: small"), 400),
    (ApiException(status=404), 404),
    (ApiException(status=422), 400),  # an admission policy's refusal
    (ApiException(status=403), 500),  # the gateway's own rights: the operator's to fix
    (ApiException(status=503), 503), (ApiException(status=429), 503), (ApiException(status=0), 503),
    (transfer.TransferError("broke off"), 502), (ConnectionResetError(), 502),
    (KeyError("bug"), 500),
])
def test_each_error_has_its_status(error, status):
    assert _refusal(error).status_code == status


def test_a_pod_that_printed_too_much_reads_back_as_such():
    """The lifecycle reads no volume of a pod that flooded us: the finer kind crosses the wire."""
    from jupyter_scheduler_k8s.gateway.client import _error
    refusal = _refusal(transfer.PrintedTooMuch("stage-out in pod p printed more than 1 MiB"))
    assert (refusal.status_code, refusal.error) == (422, wire.PRINTED_TOO_MUCH)
    assert type(_error(refusal.status_code, refusal.message, refusal.error)) is transfer.PrintedTooMuch
    assert type(_error(422, "stage-out failed (exit code 1)")) is transfer.CommandFailed


def test_statuses_read_back_as_the_lifecycles_errors():
    """The client turns them back: the same message, and the same retry decision as direct mode."""
    from jupyter_scheduler_k8s.gateway.client import _error
    from jupyter_scheduler_k8s.jobs.steps import is_transient
    assert isinstance(_error(404, "x"), NotFound)
    assert isinstance(_error(422, "x"), transfer.CommandFailed) and not is_transient(_error(422, "x"))
    for status in wire.REFUSED:
        assert isinstance(_error(status, "x"), JobFailed) and not is_transient(_error(status, "x"))
    for status in wire.TRANSIENT:
        assert is_transient(_error(status, "x"))


def test_a_per_user_limit_is_a_429_that_is_not_tried_again():
    """Waiting lifts no limit: the client reads the refusal back as OverLimit, with the message
    that names the limit, and tries a 429 again only when it says when (Retry-After)."""
    from jupyter_scheduler_k8s.gateway.client import GatewayDriver, _error
    refusal = _refusal(OverLimit("You have 2 job definitions (limits.definitionsPerUser: 2)"))
    assert (refusal.status_code, refusal.error) == (429, wire.OVER_LIMIT)
    error = _error(refusal.status_code, refusal.message, refusal.error)
    assert type(error) is OverLimit and "limits.definitionsPerUser: 2" in str(error)
    assert not isinstance(_error(429, "busy"), OverLimit)  # the gateway's or the API server's own
    retries = GatewayDriver("http://127.0.0.1:9", "token").http.connection_pool_kw["retries"]
    assert not retries.is_retry("PUT", 429, has_retry_after=False)
    assert retries.is_retry("PUT", 429, has_retry_after=True) and retries.is_retry("PUT", 503)


def test_a_refusal_never_shows_a_traceback_or_internals():
    message = _refusal(KeyError("secret detail")).message
    assert "secret" not in message and "Traceback" not in message


def test_stream_caps_per_user_and_in_total():
    limits = _Limits(per_user=2, total=3)
    assert limits.acquire("alice") and limits.acquire("alice") and not limits.acquire("alice")
    assert limits.acquire("bob") and not limits.acquire("carol")
    limits.release("alice")
    assert limits.acquire("carol") and not limits.acquire("bob")


def _client_calls() -> set:
    """(method, path template) of every request gateway/client.py makes: `_json`/`_request` with a
    method and `wire.X` or `wire.path(wire.X, ...)`; `_upload` is a PUT and `_download` a GET."""
    source = Path(client_module.__file__).read_text()
    calls, literal_paths = set(), []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and "/" in node.value \
                and node.value.split("/")[0] in {"jobs", "definitions"}:
            literal_paths.append(node.value)
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        name, args = node.func.attr, node.args
        if name in ("_json", "_request") and isinstance(args[0], ast.Constant):
            method, where = args[0].value, args[1]
        elif name in ("_upload", "_download"):
            method, where = ("PUT" if name == "_upload" else "GET"), args[0]
        else:
            continue
        if isinstance(where, ast.Call):  # wire.path(wire.X, ...)
            where = where.args[0]
        if isinstance(where, ast.Attribute):
            calls.add((method, getattr(wire, where.attr)))
    assert literal_paths == [], "the client writes a path of its own"
    return calls


def test_routes_are_written_once_and_agree():
    """The gateway's routes, the OpenAPI document and the client's requests all come from the
    paths in wire.py: the document lists exactly the routes, with exactly the methods each
    handler has, and every request the client makes is one of them."""
    cfg = K8sConfig(config=Config({"K8sConfig": {"namespace": "jobs"}}))
    gateway = Gateway(cfg, GatewayConfig(service_prefix="/services/jobs-gateway/"), hub_auth=object())
    prefix = "/services/jobs-gateway/" + wire.API_PREFIX
    handlers = {rule.matcher.regex.pattern.rstrip("$"): rule.target
                for rule in gateway.app().default_router.rules[0].target.rules}
    routed = {**jobs_module.ROUTES, **schedules_module.ROUTES}
    assert set(handlers) == {prefix + wire.route(path) for path in routed}
    document = openapi("/services/jobs-gateway/")["paths"]
    assert set(document) == {"/" + wire.API_PREFIX + path for path in routed}
    operations = set()
    for path, handler in routed.items():
        documented = set(document["/" + wire.API_PREFIX + path])
        implemented = {m.lower() for m in handler.SUPPORTED_METHODS
                       if getattr(handler, m.lower()) is not getattr(web.RequestHandler, m.lower())}
        assert documented == implemented, (path, handler.__name__)
        operations |= {(method.upper(), path) for method in documented}
    calls = _client_calls()
    assert len(calls) > 20 and calls - operations == set()


def test_each_user_has_a_share_of_the_threads_and_waits_without_one():
    """Alice's flood holds at most her share of the threads; Bob's call goes through at once; her
    extra calls wait on the event loop, and beyond four shares waiting, she gets 429."""
    from jupyter_scheduler_k8s.gateway.base import _Calls

    async def scenario():
        calls, release = _Calls(per_user=2, threads=4), asyncio.Event()
        inside = {"alice": 0, "bob": 0}

        async def call(user):
            async with calls.turn(user):
                inside[user] += 1
                await release.wait()

        alice = [asyncio.ensure_future(call("alice")) for _ in range(10)]
        await asyncio.sleep(0.05)
        assert inside["alice"] == 2 and calls.in_flight == 2 and not calls.saturated()
        bob = asyncio.ensure_future(call("bob"))
        await asyncio.sleep(0.05)
        assert inside["bob"] == 1 and calls.in_flight == 3
        with pytest.raises(web.HTTPError) as refused:  # 8 of hers wait: four shares
            await call("alice")
        assert refused.value.status_code == 429
        release.set()
        await asyncio.gather(*alice, bob)
        assert inside == {"alice": 10, "bob": 1} and calls.in_flight == 0
        assert calls.turns == {} and calls.waiting == {}  # idle users are forgotten

    asyncio.run(scenario())


def test_the_gateway_is_not_ready_while_every_thread_is_busy():
    from jupyter_scheduler_k8s.gateway.base import _Calls

    async def scenario():
        calls, release = _Calls(per_user=2, threads=4), asyncio.Event()

        async def call(user):
            async with calls.turn(user):
                await release.wait()

        tasks = [asyncio.ensure_future(call(user)) for user in ("a", "a", "b", "b")]
        await asyncio.sleep(0.05)
        assert calls.saturated()
        release.set()
        await asyncio.gather(*tasks)
        assert not calls.saturated()

    asyncio.run(scenario())
