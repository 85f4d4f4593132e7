"""Objects recorded from a real cluster (tests/unit/data/recorded/, made by
tests/unit/data/record_states.py, which says how), and a stand-in for the clients' reads that
answers with them: the package's ownership checks run on the API server's own shapes (uids,
owner references, annotations), not on ones written by hand."""
import copy
import json
from pathlib import Path

from kubernetes.client.rest import ApiException

from .helpers import deserialize

RECORDED = Path(__file__).parent.parent / "data" / "recorded"
NAMESPACE = "jsk8s-record"  # where they were made
JOB_ID = "3f6a1c0e-5b7d-4e29-8c41-9d2e7a6b5f10"
DEFINITION_ID = "8d4b2e6f-1a3c-4f57-9e08-b7c6d5a4e321"
_KINDS = {"Pod": "V1Pod", "Job": "V1Job", "CronJob": "V1CronJob", "PersistentVolumeClaim": "V1PersistentVolumeClaim"}


def recorded_dict(name: str) -> dict:
    return json.loads((RECORDED / f"{name}.json").read_text())


def recorded(file: str, **metadata):
    """A recorded object as the client parses it; `metadata` fields replaced (a forged copy)."""
    data = copy.deepcopy(recorded_dict(file))
    data["metadata"].update(metadata)
    return deserialize(data, _KINDS[data["kind"]])


class _Reads:
    def __init__(self, objects):
        self.objects = objects

    def _read(self, kind, name, namespace):
        for obj in self.objects:
            if obj.kind == kind and obj.metadata.name == name and obj.metadata.namespace == namespace:
                return obj
        raise ApiException(status=404, reason="Not Found")

    def _list(self, kind, namespace, label_selector=""):
        wanted = dict(term.split("=", 1) for term in label_selector.split(",") if term)
        items = [o for o in self.objects if o.kind == kind and o.metadata.namespace == namespace
                 and wanted.items() <= (o.metadata.labels or {}).items()]
        return type("List", (), {"items": items})()

    def read_namespaced_job(self, name, namespace):
        return self._read("Job", name, namespace)

    def read_namespaced_cron_job(self, name, namespace):
        return self._read("CronJob", name, namespace)

    def read_namespaced_pod(self, name, namespace):
        return self._read("Pod", name, namespace)

    def read_namespaced_persistent_volume_claim(self, name, namespace):
        return self._read("PersistentVolumeClaim", name, namespace)

    def list_namespaced_job(self, namespace, label_selector=""):
        return self._list("Job", namespace, label_selector)


class RecordedCluster:
    """Clients whose reads (read_*, list_namespaced_job) answer from recorded objects; any other
    call fails the test."""

    context_name = "recorded"

    def __init__(self, *objects):
        self.core = self.batch = _Reads(list(objects))
