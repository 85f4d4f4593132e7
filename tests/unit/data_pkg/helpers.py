"""Helpers of the test_pkg_* tests: a clean environment, hand-written pod states, a serializer."""
import copy
import json

import pytest
from kubernetes.client import ApiClient

from jupyter_scheduler_k8s import config as k8s_config

# Every environment variable the package reads as a fallback.
ENV_FALLBACKS = (
    "K8S_NAMESPACE", "K8S_IMAGE", "K8S_IMAGE_PULL_POLICY", "K8S_STORAGE_SIZE", "K8S_STORAGE_CLASS",
    "K8S_EXECUTOR_CPU_REQUEST", "K8S_EXECUTOR_CPU_LIMIT", "K8S_EXECUTOR_MEMORY_REQUEST",
    "K8S_EXECUTOR_MEMORY_LIMIT", "JSK8S_USERNAME", "JUPYTERHUB_USER",
)

_API = ApiClient()


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    """No K8S_* fallbacks from the developer's shell, and no in-cluster ServiceAccount namespace."""
    for name in ENV_FALLBACKS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(k8s_config, "SA_NAMESPACE_FILE", str(tmp_path / "no-such-serviceaccount" / "namespace"))
    return monkeypatch


def serialize(obj):
    """What the client would send to the API server."""
    return _API.sanitize_for_serialization(obj)


def deserialize(data: dict, kind: str):
    """A real model object, parsed the way the client parses an API response."""
    return _API.deserialize(json.dumps(data), kind, "application/json")


# ---- hand-written pod states ----------------------------------------------------------------------
# Written by hand in the shape of `kubectl get pod -o json` of a job pod (the fields the package
# reads, and their neighbours, with the values a real kubelet/scheduler writes), for states that
# are cheap to vary. States recorded from a real cluster (an eviction through the Eviction API, a
# definition's objects) are in data/recorded/, loaded by recorded.py. The kubelet's own eviction
# under node pressure (`reason: Evicted`) and NodeLost stay hand-written: a single-node test
# cluster cannot make them without starving or losing the node the tests run on.

IMAGE = "registry.example.org/jsk8s-executor:0.1.0"
CREATED = "2025-06-01T01:02:03Z"


def pod_dict(status: dict, *, image: str = IMAGE, memory_limit: str = "2Gi", name: str = "jsk8s-job-abcde",
             created: str = CREATED) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": "jupyter-jobs",
            "uid": "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0",
            "resourceVersion": "4711",
            "creationTimestamp": created,
            "labels": {
                "app.kubernetes.io/managed-by": "jupyter-scheduler-k8s",
                "app.kubernetes.io/component": "notebook-job",
                "batch.kubernetes.io/job-name": "jsk8s-job",
                "job-name": "jsk8s-job",
            },
        },
        "spec": {
            "restartPolicy": "Never",
            "containers": [{
                "name": "executor",
                "image": image,
                "imagePullPolicy": "IfNotPresent",
                "command": ["jsk8s-executor", "run"],
                "resources": {"limits": {"memory": memory_limit}, "requests": {"memory": "1Gi"}},
                "terminationMessagePolicy": "FallbackToLogsOnError",
                "terminationMessagePath": "/dev/termination-log",
            }],
        },
        "status": status,
    }


def _container(state: dict, *, ready: bool = False, last_state: dict = None, image: str = IMAGE) -> dict:
    return {
        "name": "executor",
        "image": image,
        "imageID": "" if "waiting" in state else "registry.example.org/jsk8s-executor@sha256:" + "a" * 64,
        "ready": ready,
        "restartCount": 0,
        "started": "running" in state,
        "state": state,
        "lastState": last_state or {},
    }


def _scheduled_conditions(ready: bool = False) -> list:
    return [
        {"type": "PodReadyToStartContainers", "status": "True", "lastTransitionTime": CREATED},
        {"type": "Initialized", "status": "True", "lastTransitionTime": CREATED},
        {"type": "Ready", "status": "True" if ready else "False", "lastTransitionTime": CREATED},
        {"type": "ContainersReady", "status": "True" if ready else "False", "lastTransitionTime": CREATED},
        {"type": "PodScheduled", "status": "True", "lastTransitionTime": CREATED},
    ]


UNSCHEDULABLE_MESSAGE = ("0/1 nodes are available: 1 Insufficient nvidia.com/gpu. preemption: 0/1 nodes are "
                         "available: 1 No preemption victims found for incoming pod.")


def unschedulable_status() -> dict:
    return {
        "phase": "Pending",
        "qosClass": "Burstable",
        "conditions": [{
            "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "message": UNSCHEDULABLE_MESSAGE, "lastTransitionTime": CREATED,
        }],
    }


def waiting_status(reason: str, message: str, image: str = IMAGE) -> dict:
    return {
        "phase": "Pending",
        "hostIP": "10.89.0.2",
        "podIP": "10.244.0.17",
        "startTime": CREATED,
        "qosClass": "Burstable",
        "conditions": _scheduled_conditions(),
        "containerStatuses": [_container({"waiting": {"reason": reason, "message": message}}, image=image)],
    }


def running_status(ready: bool = False) -> dict:
    return {
        "phase": "Running",
        "hostIP": "10.89.0.2",
        "podIP": "10.244.0.17",
        "startTime": CREATED,
        "qosClass": "Burstable",
        "conditions": _scheduled_conditions(ready),
        "containerStatuses": [_container({"running": {"startedAt": CREATED}}, ready=ready)],
    }


def terminated_status(exit_code: int, reason: str, *, message: str = None, pod_reason: str = None,
                      pod_message: str = None) -> dict:
    terminated = {"exitCode": exit_code, "reason": reason, "startedAt": CREATED,
                  "finishedAt": "2025-06-01T01:12:03Z",
                  "containerID": "containerd://" + "b" * 64}
    if message is not None:
        terminated["message"] = message
    status = {
        "phase": "Succeeded" if exit_code == 0 and not pod_reason else "Failed",
        "hostIP": "10.89.0.2",
        "startTime": CREATED,
        "qosClass": "Burstable",
        "conditions": _scheduled_conditions(),
        "containerStatuses": [_container({"terminated": terminated})],
    }
    if pod_reason:
        status["reason"] = pod_reason
    if pod_message:
        status["message"] = pod_message
    return status


def pod(status: dict, **kwargs):
    """A kubernetes.client.V1Pod of a hand-written state."""
    return deserialize(pod_dict(copy.deepcopy(status), **kwargs), "V1Pod")


def job(conditions: list, *, status: dict = None, deleting: bool = False, suspend: bool = False,
        annotations: dict = None, name: str = "jsk8s-job", created: str = CREATED, start_time: str = CREATED):
    """A kubernetes.client.V1Job: by default one that failed; `status` replaces its counts."""
    metadata = {"name": name, "namespace": "jupyter-jobs", "creationTimestamp": created,
                "annotations": dict(annotations or {})}
    if deleting:
        metadata.update(deletionTimestamp=CREATED, finalizers=["foregroundDeletion"])
    status = {"conditions": conditions, **({"failed": 1} if status is None else status)}
    if start_time:
        status["startTime"] = start_time
    return deserialize({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata,
        "spec": {"backoffLimit": 0, "suspend": suspend,
                 "template": {"spec": {"containers": [{"name": "executor", "image": IMAGE}], "restartPolicy": "Never"}}},
        "status": status,
    }, "V1Job")
