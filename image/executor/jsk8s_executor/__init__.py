"""Executor for jupyter-scheduler-k8s: runs one notebook job inside its Kubernetes Job pod.

The protocol (files on the job volume, the spec, exit codes) is in docs/design.md.
This package must never import jupyter_scheduler: the image does not ship it.
"""
