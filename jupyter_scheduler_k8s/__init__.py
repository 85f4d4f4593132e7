"""Kubernetes backend for jupyter-scheduler: each notebook job runs as a Kubernetes Job."""

__version__ = "0.1.0"
