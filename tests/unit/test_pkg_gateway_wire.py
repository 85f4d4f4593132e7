"""gateway/wire.py: Kubernetes objects survive the trip through the gateway's JSON unchanged."""
from jupyter_scheduler_k8s.gateway import wire

from .data_pkg import helpers as h


def test_a_pod_round_trips():
    for status in (h.running_status(ready=True), h.terminated_status(137, "OOMKilled"), h.unschedulable_status()):
        pod = h.pod(status)
        assert wire.from_json(wire.to_json(pod), "V1Pod") == pod


def test_a_job_round_trips():
    job = h.job([{"type": "Failed", "status": "True", "reason": "DeadlineExceeded"}])
    assert wire.from_json(wire.to_json(job), "V1Job") == job


def test_nothing_is_none():
    assert wire.to_json(None) is None and wire.from_json(None, "V1Pod") is None


def test_job_ids_are_uuids_only():
    assert wire.JOB_ID.match("5f0c9a52-1e4b-4d8e-9a57-2c1f0b7d3e11")
    for bad in ("", "..", "5f0c9a52-1e4b-4d8e-9a57-2c1f0b7d3e11/x", "jsk8s-job", "5F0C9A52-1E4B-4D8E-9A57-2C1F0B7D3E11"):
        assert not wire.JOB_ID.match(bad)
