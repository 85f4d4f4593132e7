"""kube/watch.py with an API server that keeps failing: a caller's deadline still holds (the
waits of driver.KubeDriver.wait_for_pod)."""
import time

import pytest
import urllib3
from kubernetes.client.rest import ApiException

from jupyter_scheduler_k8s.kube import watch
from jupyter_scheduler_k8s.kube.watch import WaitTimeout, first_answer, pod_events


def wait_for_pod(core, namespace, selector, decide, timeout):
    return first_answer(pod_events(core, namespace, selector, min(5, timeout)), decide, timeout)


class FailingCore:
    def __init__(self, error):
        self.error, self.calls = error, 0

    def list_namespaced_pod(self, namespace, **kwargs):
        self.calls += 1
        raise self.error


@pytest.mark.parametrize("error", [ApiException(status=503), urllib3.exceptions.ProtocolError("reset")])
def test_wait_for_pod_keeps_its_deadline_while_the_api_server_fails(error, monkeypatch):
    monkeypatch.setattr(watch.time, "sleep", lambda seconds: None)  # the backoff's pauses, skipped
    core = FailingCore(error)
    started = time.monotonic()
    with pytest.raises(WaitTimeout):
        wait_for_pod(core, "jobs", "x=y", lambda pod: None, timeout=0.5)
    assert time.monotonic() - started < 30 and core.calls >= 1


def test_a_refusal_is_raised_to_the_caller():
    with pytest.raises(ApiException):
        wait_for_pod(FailingCore(ApiException(status=403)), "jobs", "x=y", lambda pod: None, timeout=5)
