"""Kubernetes API clients, built lazily from config (never at import time or in a pickled object).

Every request has a timeout, and transient failures (connection resets, timeouts, 429 and 5xx
answers) are retried with exponential backoff and jitter by urllib3's own Retry, which also
honours Retry-After. A retried create that had in fact succeeded gets 409 and a retried delete
404; the callers take both as done.
"""
import os
import re
from typing import Optional, Tuple

import websocket
from kubernetes import client, config
from kubernetes.client import V1DeleteOptions, V1Preconditions
from kubernetes.client.rest import ApiException
from urllib3.util.retry import Retry

LOCAL_CONTEXT = re.compile(r"^(kind-|k3d-|minikube$|docker-desktop$|docker-for-desktop$|jsk8s-local$)")
IN_CLUSTER = "in-cluster"


# (connect, read) seconds. Watches ask the server to end them sooner (timeout_seconds).
REQUEST_TIMEOUT = (10, 60)
# Exec connections (websocket-client) take their timeout from the library's default.
EXEC_TIMEOUT = 60


def absent_on_404(call, *args, **kwargs):
    """The call's answer, or None if the object is not there (never was, or gone)."""
    try:
        return call(*args, **kwargs)
    except ApiException as e:
        if e.status == 404:
            return None
        raise


def delete_exactly(delete, obj, namespace: str, grace_period_seconds: Optional[int] = 0,
                   propagation_policy: str = "Background") -> None:
    """Deletes `obj` by name with its uid as a precondition, so that nothing else that took the
    name meanwhile is deleted; gone already is done. The options are all in the body: with a
    body, the API server ignores the query's, and a Job deleted without a propagation policy
    orphans its pods."""
    absent_on_404(delete, obj.metadata.name, namespace, body=V1DeleteOptions(
        preconditions=V1Preconditions(uid=obj.metadata.uid), grace_period_seconds=grace_period_seconds,
        propagation_policy=propagation_policy))


def api_retries() -> Retry:
    """About a minute of retrying (at once, then after 1, 2, 4, 8, 16 and 16 s, each plus up to
    0.5 s of jitter: urllib3's backoff_factor x 2^(n-1)) before a call fails.
    Reads that time out are tried twice more only: each already waited REQUEST_TIMEOUT. "Other"
    errors are TLS handshakes broken off by a reset."""
    return Retry(total=7, connect=7, read=2, status=7, other=3,
                 backoff_factor=0.5, backoff_max=16, backoff_jitter=0.5,
                 status_forcelist=(429, 500, 502, 503, 504), allowed_methods=None,
                 respect_retry_after_header=True, raise_on_status=False, raise_on_redirect=False)


class TimedApiClient(client.ApiClient):
    """An ApiClient whose requests time out unless the caller gives a timeout of its own."""

    def call_api(self, method, url, header_params=None, body=None, post_params=None, _request_timeout=None):
        return super().call_api(method, url, header_params, body, post_params, _request_timeout or REQUEST_TIMEOUT)


def _api_client(configuration: client.Configuration) -> client.ApiClient:
    configuration.retries = api_retries()
    if websocket.getdefaulttimeout() is None:
        # kubernetes' exec connects without a timeout; a black-holed API server would hold it forever.
        websocket.setdefaulttimeout(EXEC_TIMEOUT)
    return TimedApiClient(configuration)


def load_api_client(kubeconfig: Optional[str] = None, context: Optional[str] = None) -> Tuple[client.ApiClient, str]:
    """An ApiClient and the name of the context it uses.

    Order: an explicit kubeconfig path; else the pod's ServiceAccount when running in a cluster;
    else $KUBECONFIG or ~/.kube/config.
    """
    configuration = client.Configuration()
    if kubeconfig:
        config.load_kube_config(config_file=kubeconfig, context=context, client_configuration=configuration)
        return _api_client(configuration), context or _current_context(kubeconfig)
    if os.environ.get("KUBERNETES_SERVICE_HOST") and os.path.exists(config.incluster_config.SERVICE_TOKEN_FILENAME):
        config.load_incluster_config(client_configuration=configuration)
        return _api_client(configuration), IN_CLUSTER
    config.load_kube_config(context=context, client_configuration=configuration)
    return _api_client(configuration), context or _current_context(None)


def _current_context(path: Optional[str]) -> str:
    _, active = config.list_kube_config_contexts(config_file=path)
    return active["name"] if active else ""


def is_local_context(context: str) -> bool:
    """kind, k3d, minikube, docker-desktop and this project's ci/cluster load images by hand."""
    return bool(LOCAL_CONTEXT.match(context or ""))


def pull_policy(configured: Optional[str], context: str) -> str:
    if configured:
        return configured
    return "Never" if is_local_context(context) else "IfNotPresent"


class Clients:
    """The API objects of one backend instance, created on first use."""

    def __init__(self, kubeconfig: Optional[str] = None, context: Optional[str] = None):
        self._kubeconfig, self._context = kubeconfig, context
        self._api_client = None
        self.context_name = ""

    @property
    def api_client(self) -> client.ApiClient:
        if self._api_client is None:
            self._api_client, self.context_name = load_api_client(self._kubeconfig, self._context)
        return self._api_client

    @property
    def core(self) -> client.CoreV1Api:
        return client.CoreV1Api(self.api_client)

    @property
    def batch(self) -> client.BatchV1Api:
        return client.BatchV1Api(self.api_client)
