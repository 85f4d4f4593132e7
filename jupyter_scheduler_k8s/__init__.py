"""Kubernetes backend for jupyter-scheduler: each notebook job runs as a Kubernetes Job."""

__version__ = "0.1.0"


def _jupyter_server_extension_points():
    # Only the user server loads it (extension.py); the gateway and the CLI never import it.
    return [{"module": "jupyter_scheduler_k8s.extension"}]
