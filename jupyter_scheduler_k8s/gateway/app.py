"""The jobs gateway (hub mode): the one holder of Kubernetes rights in the jobs namespace.

User servers hold no Kubernetes credentials. Their scheduler calls this HTTP API with the
JupyterHub API token each server already has; JupyterHub's own HubAuth resolves the token to a user
(through the hub's /hub/api/user, cached briefly), and every request then runs a
driver.KubeDriver whose owner is that user. The lifecycle stays in the user's server (decisions,
its DB, its staging dir); the gateway only acts, and keeps no state of its own: the Kubernetes
objects, with their owner annotation, are the record. Inputs and outputs pass through as streams,
with size caps, never whole in memory.

Run it as `jupyter-scheduler-k8s gateway` (the chart's Deployment does). docs/design.md has the
API; GET {prefix}api/v1/openapi.json describes it."""

import asyncio
import logging
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Optional, Set

from jupyterhub.services.auth import HubAuth
from tornado import httpclient, web
from tornado.httpserver import HTTPServer
from tornado.ioloop import IOLoop
from traitlets import Int, Unicode, default
from traitlets.config import LoggingConfigurable

from ..config import K8sConfig
from ..doctor import Doctor
from ..kube.clients import Clients
from ..kube.queue import Admitter
from . import jobs, schedules, wire
from .base import BaseHandler, _Calls, _Limits

log = logging.getLogger(__name__)


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
        now = time.monotonic()
        if self._permissions is None or now - self._permissions[0] > 60:
            self._permissions = (now, Doctor(self.k8s, self.clients, echo=lambda line: None).missing_permissions())
        return self._permissions[1]

    def app(self) -> web.Application:
        prefix = self.config_prefix + wire.API_PREFIX
        routes = [(prefix + wire.route(path), handler) for path, handler in {**jobs.ROUTES, **schedules.ROUTES}.items()]
        return web.Application(routes, gateway=self, hub_auth=self.hub_auth)

    def http_server(self) -> HTTPServer:
        options = self.options
        # Uploads raise their own limits once their token is checked (Input.accept_body).
        return HTTPServer(self.app(), idle_connection_timeout=options.body_timeout_seconds,
                          body_timeout=options.body_timeout_seconds, max_body_size=2 * options.body_limit)

    def serve(self) -> None:
        server = self.http_server()
        server.listen(self.options.port, self.options.ip)
        # Every replica stands for the queue's Lease; the one that holds it admits (kube/queue.py).
        self.admitter = Admitter(self.clients, self.k8s.namespace, lambda: self.k8s.running_jobs_per_user).start()
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
        if getattr(self, "admitter", None) is not None:
            self.admitter.stop()
        IOLoop.current().stop()
