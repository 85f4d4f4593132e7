"""driver.KubeDriver's ownership rules, on objects written by hand in the API's shapes: a pod is the job's only if its
controller is the owner's Job (or, for the collector, PVC) by uid; another owner's objects read as
absent; deletes carry the uid of what was checked. (On Kubernetes: tests/e2e.)"""
import copy
import types

import pytest
from kubernetes.client.rest import ApiException
from traitlets.config import Config

from jupyter_scheduler_k8s.kube import names
from jupyter_scheduler_k8s.config import K8sConfig
from jupyter_scheduler_k8s.kube.base import NotFound
from jupyter_scheduler_k8s.kube.driver import KubeDriver

from .data_pkg import helpers as h
from .data_pkg.helpers import clean_env  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("clean_env")

JOB_ID = "5f0c9a52-1e4b-4d8e-9a57-2c1f0b7d3e11"
JOB_UID = "11111111-2222-3333-4444-555555555555"
PVC_UID = "66666666-7777-8888-9999-000000000000"
NAME = names.object_name(JOB_ID)


def _meta(owner, uid, name=NAME):
    return {"name": name, "namespace": "jupyter-jobs", "uid": uid,
            "annotations": {names.ANNOTATION_USERNAME: owner} if owner else {}}


def k8s_job(owner="alice", uid=JOB_UID):
    job = h.job([], status={"active": 1})
    return h.deserialize({**h.serialize(job), "metadata": _meta(owner, uid)}, "V1Job")


def pvc(owner="alice", uid=PVC_UID):
    return h.deserialize({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": _meta(owner, uid),
                          "spec": {"accessModes": ["ReadWriteOnce"]}}, "V1PersistentVolumeClaim")


def pod(owner="alice", component=names.COMPONENT_JOB, controller=("Job", JOB_UID), job_id=JOB_ID):
    data = h.pod_dict(h.running_status())
    meta = data["metadata"]
    meta["labels"].update({names.LABEL_COMPONENT: component, names.LABEL_JOB_ID: job_id,
                           names.LABEL_USERNAME: names.safe_slug(owner)})
    meta["annotations"] = {names.ANNOTATION_USERNAME: owner}
    if controller:
        kind, uid = controller
        meta["ownerReferences"] = [{"apiVersion": "batch/v1" if kind == "Job" else "v1", "kind": kind,
                                    "name": NAME, "uid": uid, "controller": kind == "Job"}]
    return h.deserialize(data, "V1Pod")


class Api:
    """The objects an API server holds, by name, and the deletes asked of it."""

    def __init__(self, jobs=(), pvcs=(), pods=()):
        self.objects = {("job", o.metadata.name): o for o in jobs}
        self.objects.update({("pvc", o.metadata.name): o for o in pvcs})
        self.objects.update({("pod", o.metadata.name): o for o in pods})
        self.deleted, self.reads = [], 0
        self.context_name = "kind-jsk8s"
        self.batch = types.SimpleNamespace(read_namespaced_job=self.read("job"),
                                           delete_namespaced_job=self.delete("job"))
        self.core = types.SimpleNamespace(read_namespaced_persistent_volume_claim=self.read("pvc"),
                                          delete_namespaced_persistent_volume_claim=self.delete("pvc"),
                                          read_namespaced_pod=self.read("pod"),
                                          delete_namespaced_pod=self.delete("pod"))

    def read(self, kind):
        def read(name, namespace):
            self.reads += 1
            if (kind, name) not in self.objects:
                raise ApiException(status=404)
            return copy.deepcopy(self.objects[(kind, name)])
        return read

    def delete(self, kind):
        def delete(name, namespace, body=None, **kwargs):
            assert not kwargs, "with a body, the API server ignores the query's delete options"
            self.deleted.append((kind, name, body.preconditions.uid))
            assert body.propagation_policy in ("Background", "Foreground")
        return delete


def driver(api, owner="alice"):
    return KubeDriver(K8sConfig(config=Config({"K8sConfig": {"namespace": "jupyter-jobs"}})), api, owner=owner)


def test_the_job_pod_of_the_owners_job_is_genuine():
    assert driver(Api(jobs=[k8s_job()])).genuine(pod(), JOB_ID)


@pytest.mark.parametrize("forged", [
    pod(controller=None),                           # the right labels, made by hand
    pod(controller=("Job", "not-the-jobs-uid")),    # claims another Job
    pod(controller=("PersistentVolumeClaim", PVC_UID)),  # a job pod must come from the Job
    pod(owner="mallory"),                           # another owner's
    pod(job_id="another-job"),                      # another job's
    pod(component="something-else"),
])
def test_forged_pods_are_not_the_jobs(forged):
    assert not driver(Api(jobs=[k8s_job()], pvcs=[pvc()])).genuine(forged, JOB_ID)


def test_the_collector_is_genuine_only_when_owned_by_the_jobs_volume():
    api = Api(jobs=[k8s_job()], pvcs=[pvc()])
    assert driver(api).genuine(pod(component=names.COMPONENT_COLLECTOR,
                                   controller=("PersistentVolumeClaim", PVC_UID)), JOB_ID)
    assert not driver(api).genuine(pod(component=names.COMPONENT_COLLECTOR, controller=("Job", JOB_UID)), JOB_ID)


def test_a_known_uid_is_not_read_again():
    api = Api(jobs=[k8s_job()])
    d = driver(api)
    assert d.genuine(pod(), JOB_ID) and d.genuine(pod(), JOB_ID)
    assert api.reads == 1


def test_another_owners_objects_read_as_absent():
    api = Api(jobs=[k8s_job(owner="bob")], pvcs=[pvc(owner="bob")])
    d = driver(api)
    assert d.read_job(JOB_ID) is None and not d.volume_exists(JOB_ID)
    d.delete(JOB_ID)
    d.stop(JOB_ID)
    assert api.deleted == []
    with pytest.raises(NotFound):
        d.check_pod(JOB_ID, "jsk8s-job-abcde")


def test_names_that_slug_alike_are_still_different_owners():
    """Label values are slugs; the exact name is compared, from the annotation."""
    api = Api(jobs=[k8s_job(owner="a.b")])
    assert names.safe_slug("a.b") == "a.b"
    assert driver(api, owner="a.b").read_job(JOB_ID) is not None
    assert driver(api, owner="a_b").read_job(JOB_ID) is None


def test_deletes_name_the_uid_that_was_checked():
    api = Api(jobs=[k8s_job()], pvcs=[pvc()])
    driver(api).delete(JOB_ID, collector=False)
    assert api.deleted == [("job", NAME, JOB_UID), ("pvc", NAME, PVC_UID)]


def test_a_kept_volume_is_not_deleted():
    api = Api(jobs=[k8s_job()], pvcs=[pvc()])
    driver(api).delete(JOB_ID, keep_volume=True, collector=False)
    assert api.deleted == [("job", NAME, JOB_UID)]


def test_direct_mode_without_a_user_owns_what_has_no_owner():
    api = Api(jobs=[k8s_job(owner="")])
    assert driver(api, owner="").read_job(JOB_ID) is not None
    assert driver(api, owner="alice").read_job(JOB_ID) is None


def test_a_job_pod_is_checked_once_and_forgotten_with_its_job():
    real = pod()
    api = Api(jobs=[k8s_job()], pods=[real])
    d = driver(api)
    d.check_pod(JOB_ID, real.metadata.name)
    reads = api.reads
    d.check_pod(JOB_ID, real.metadata.name)
    assert api.reads == reads
    d.delete(JOB_ID, collector=False)
    api.objects[("job", NAME)] = k8s_job()
    d.check_pod(JOB_ID, real.metadata.name)
    assert api.reads > reads + 1
