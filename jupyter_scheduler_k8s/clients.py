"""Kubernetes API clients, built lazily from config (never at import time or in a pickled object)."""
import os
import re
from typing import Optional, Tuple

from kubernetes import client, config

LOCAL_CONTEXT = re.compile(r"^(kind-|k3d-|minikube$|docker-desktop$|docker-for-desktop$|jsk8s-local$)")
IN_CLUSTER = "in-cluster"


def load_api_client(kubeconfig: Optional[str] = None, context: Optional[str] = None) -> Tuple[client.ApiClient, str]:
    """An ApiClient and the name of the context it uses.

    Order: an explicit kubeconfig path; else the pod's ServiceAccount when running in a cluster;
    else $KUBECONFIG or ~/.kube/config.
    """
    configuration = client.Configuration()
    if kubeconfig:
        config.load_kube_config(config_file=kubeconfig, context=context, client_configuration=configuration)
        return client.ApiClient(configuration), context or _current_context(kubeconfig)
    if os.environ.get("KUBERNETES_SERVICE_HOST") and os.path.exists(config.incluster_config.SERVICE_TOKEN_FILENAME):
        config.load_incluster_config(client_configuration=configuration)
        return client.ApiClient(configuration), IN_CLUSTER
    config.load_kube_config(context=context, client_configuration=configuration)
    return client.ApiClient(configuration), context or _current_context(None)


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
