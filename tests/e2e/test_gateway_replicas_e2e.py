"""The jobs gateway's replicas, as the chart installs them (two, with a PodDisruptionBudget): a
replica lost in the middle of an upload costs no job, since the user's server sends it again
through the Service to another; a node drain's evictions take one replica at a time, and an
evicted replica finishes its work and exits by itself."""
import hashlib
import os
import time

import pytest
from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from .conftest import leftovers, write_notebook

pytestmark = pytest.mark.e2e
MiB = 1024 ** 2
SIZE = 200 * MiB


def _logs(gateway) -> dict:
    """Each gateway pod's log, by pod name."""
    logs = {}
    for pod in gateway.pods():
        try:
            logs[pod.metadata.name] = gateway.core.read_namespaced_pod_log(pod.metadata.name, gateway.namespace)
        except ApiException:
            logs[pod.metadata.name] = ""  # not started yet
    return logs


def _upload_lines(text: str, job_id: str) -> list:
    """The gateway's log lines about the job's uploads ("... upload begins", "... upload done")."""
    return [line for line in text.splitlines() if f"jobs/{job_id}/pods/" in line and ": upload " in line]


def _uploading(gateway, job_id, timeout=180) -> str:
    """The gateway pod that is receiving the job's upload (it logged the start, not the end)."""
    deadline = time.monotonic() + timeout
    while True:
        for name, text in _logs(gateway).items():
            lines = _upload_lines(text, job_id)
            if any("upload begins" in line for line in lines) and not any("upload done" in line for line in lines):
                return name
        assert time.monotonic() < deadline, f"no gateway pod logged the start of job {job_id}'s upload"
        time.sleep(0.2)


def test_a_replica_lost_during_a_200_mb_stage_in_costs_no_job(gateway, user_server, core, batch, jobs_namespace):
    """The gateway pod that receives a 200 MB input folder is deleted without grace while it does:
    the upload is sent again, through the Service, to another pod, and the job completes with
    every byte of its input."""
    assert len(gateway.pods()) == 2, "the chart's default is two replicas"
    server = user_server("alice", gateway)
    (server.root / "data").mkdir()
    data = os.urandom(SIZE)
    (server.root / "data" / "big.bin").write_bytes(data)
    expected = hashlib.sha256(data).hexdigest()
    del data
    write_notebook(str(server.root / "digest.ipynb"),
                   "import hashlib\nh = hashlib.sha256()\nwith open('data/big.bin', 'rb') as f:\n"
                   "    for block in iter(lambda: f.read(1 << 20), b''):\n        h.update(block)\n"
                   "print('sha256', h.hexdigest())")
    job_id = server.create_job("digest.ipynb", output_formats=["ipynb", "html"], package_input_folder=True)
    receiving = _uploading(gateway, job_id)
    core.delete_namespaced_pod(receiving, gateway.namespace, grace_period_seconds=0)

    job = server.wait(job_id, timeout=600)
    assert job["status"] == "COMPLETED", (job["status_message"], gateway.log_tail())
    assert f"sha256 {expected}" in server.output(job, "html").read_text()
    # The upload that staged the job was finished by another pod (the first one's log is gone
    # with it: had it finished there, no other pod would have seen an upload for this job).
    done = [name for name, text in _logs(gateway).items()
            if any("upload done" in line for line in _upload_lines(text, job_id))]
    assert done and receiving not in done, (receiving, done)
    server.delete_job(job_id)
    assert leftovers(core, batch, jobs_namespace) == []
    gateway.wait_ready()


def _budget(gateway):
    return client.PolicyV1Api(gateway.core.api_client).read_namespaced_pod_disruption_budget(
        gateway.name, gateway.namespace)


def _evict(gateway, name):
    gateway.core.create_namespaced_pod_eviction(name, gateway.namespace, client.V1Eviction(
        metadata=client.V1ObjectMeta(name=name, namespace=gateway.namespace)))


def test_a_drain_takes_one_replica_at_a_time_and_each_leaves_cleanly(gateway):
    """What `kubectl drain` does: evictions through the Eviction API. The first gateway pod goes;
    the second is refused while the first is not replaced (the budget allows one at a time). The
    evicted pod drains on SIGTERM and exits 0 by itself (killed at the end of its grace period,
    it would exit 137)."""
    gateway.wait_ready()
    deadline = time.monotonic() + 120
    while True:  # the disruption controller has counted the pods
        budget = _budget(gateway)
        if budget.status and budget.status.observed_generation == budget.metadata.generation \
                and budget.status.disruptions_allowed == 1:
            break
        assert time.monotonic() < deadline, budget.status
        time.sleep(1)
    first, second = (pod.metadata.name for pod in gateway.pods())
    pod_watch = watch.Watch()
    events = pod_watch.stream(gateway.core.list_namespaced_pod, gateway.namespace,
                              field_selector=f"metadata.name={first}", timeout_seconds=180)
    _evict(gateway, first)
    with pytest.raises(ApiException) as refused:
        _evict(gateway, second)
    assert refused.value.status == 429 and "disruption budget" in refused.value.body, refused.value.body

    ended = None
    for event in events:
        for status in event["object"].status.container_statuses or []:
            if status.state.terminated is not None:
                ended = status.state.terminated
        if event["type"] == "DELETED":
            break
    pod_watch.stop()
    assert ended is not None, "the evicted gateway pod was never seen to end"
    assert ended.exit_code == 0, (ended.exit_code, ended.reason)
    gateway.wait_ready()
