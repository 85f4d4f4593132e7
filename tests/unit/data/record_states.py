"""Records real objects from a cluster into tests/unit/data/recorded/, for the unit tests to load.

How they were made (run again after a change to what the package creates):

    KUBECONFIG=/var/lib/jupyter-scheduler-k8s/cluster/kubeconfig \
        PYTHONPATH=. .venv/bin/python tests/unit/data/record_states.py --image localhost/jupyter-scheduler-k8s-executor:<tag>

on the local cluster (`ci/cluster/up`, the executor image loaded), as admin, in a namespace of its
own (`jsk8s-record`, deleted at the end). The objects are made by the package itself
(KubeDriver, KubeSchedules), as user alice:

- a notebook job whose notebook runs (staged by the driver; its second cell sleeps) and whose pod
  is then evicted through the Eviction API, which is what `kubectl drain` does: the pod while it
  runs, just after the eviction (DisruptionTarget, being deleted), once its container has ended,
  and the Job then;
- a job definition: its CronJob, its volume, a run Job made from the CronJob (run now) and the
  pod on its volume (the holder), each as the API server returned it (uids, owner references).

Only `metadata.managedFields` is dropped. The states a single-node test cluster cannot make
safely stay hand-written in data_pkg/helpers.py: the kubelet's own eviction under node pressure
(`reason: Evicted`, which needs the node to run out of memory or disk) and NodeLost (which needs
a node to vanish).
"""
import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import nbformat
from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

from jupyter_scheduler_k8s.kube.clients import Clients
from jupyter_scheduler_k8s.config import K8sConfig, resolve_profile
from jupyter_scheduler_k8s.kube.driver import KubeDriver
from jupyter_scheduler_k8s.jobs.steps import NotebookJob
from jupyter_scheduler_k8s.kube.names import job_selector
from jupyter_scheduler_k8s.kube.schedules import Definition, KubeSchedules

OUT = Path(__file__).parent / "recorded"
NAMESPACE = "jsk8s-record"
JOB_ID = "3f6a1c0e-5b7d-4e29-8c41-9d2e7a6b5f10"
DEFINITION_ID = "8d4b2e6f-1a3c-4f57-9e08-b7c6d5a4e321"


def save(name: str, obj) -> None:
    data = client.ApiClient().sanitize_for_serialization(obj)
    data.get("metadata", {}).pop("managedFields", None)
    # Items of a list come without their kind.
    kind = type(obj).__name__.removeprefix("V1")
    data.setdefault("kind", kind)
    data.setdefault("apiVersion", "batch/v1" if kind in ("Job", "CronJob") else "v1")
    (OUT / f"{name}.json").write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    print("recorded", name)


def until(what: str, check, timeout: float = 180):
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.5)


def namespace(core) -> None:
    labels = {f"pod-security.kubernetes.io/{mode}": "restricted" for mode in ("enforce", "warn", "audit")}
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=NAMESPACE, labels=labels)))


def record_eviction(driver: KubeDriver, core, batch, profile, staging: str) -> None:
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("print('napping', flush=True)"),
                                               nbformat.v4.new_code_cell("import time; time.sleep(600)")])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, os.path.join(staging, "report.ipynb"))
    job = NotebookJob(job_id=JOB_ID, staging_dir=staging, input_file="report.ipynb",
                      outputs={"ipynb": "report-out.ipynb"}, job_name="report")
    driver.create(job, profile, 600)

    def running():
        pods = core.list_namespaced_pod(NAMESPACE, label_selector=job_selector(JOB_ID)).items
        return next((p for p in pods if p.status.phase == "Running"), None)
    pod = until("the job's pod to run", running)
    name = pod.metadata.name
    driver.send_inputs(JOB_ID, name, staging, ["report.ipynb"])
    until("the notebook to run", lambda: "napping" in core.read_namespaced_pod_log(name, NAMESPACE))
    save("evicted-pod-running", core.read_namespaced_pod(name, NAMESPACE))
    core.create_namespaced_pod_eviction(name, NAMESPACE, client.V1Eviction(
        metadata=client.V1ObjectMeta(name=name, namespace=NAMESPACE)))
    save("evicted-pod-terminating", until("the eviction to mark the pod", lambda: (
        lambda p: p if p.metadata.deletion_timestamp else None)(core.read_namespaced_pod(name, NAMESPACE))))
    last = None
    for event in watch.Watch().stream(core.list_namespaced_pod, NAMESPACE, field_selector=f"metadata.name={name}",
                                      timeout_seconds=120):
        statuses = event["object"].status.container_statuses or []
        if statuses and statuses[0].state.terminated is not None:
            last = event["object"]
            break
    if last is None:
        raise SystemExit("the evicted pod's container was never seen to end")
    save("evicted-pod-ended", last)
    save("evicted-job", until("the Job to count the failed pod", lambda: (
        lambda j: j if (j.status.failed or j.status.conditions) else None)(
            batch.read_namespaced_job(driver.build_objects(job, profile, 600)[1].metadata.name, NAMESPACE))))


def record_definition(driver: KubeDriver, batch, core, profile) -> None:
    schedules = KubeSchedules(driver)
    definition = Definition(definition_id=DEFINITION_ID, name="nightly", input_file="report.ipynb",
                            outputs={"ipynb": "report-out.ipynb"}, log_name="report.log", schedule="0 3 * * *",
                            timezone="UTC", active=False)
    schedules.create(definition, profile)
    save("definition-cronjob", schedules.read_cronjob(DEFINITION_ID))
    save("definition-volume", schedules.read_volume(DEFINITION_ID))
    save("definition-run-job", schedules.run_now(DEFINITION_ID))
    name, _ = schedules.create_holder(DEFINITION_ID)
    save("definition-holder-pod", core.read_namespaced_pod(name, NAMESPACE))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", required=True, help="the executor image, loaded into the cluster")
    args = parser.parse_args()
    config.load_kube_config()
    core, batch = client.CoreV1Api(), client.BatchV1Api()
    OUT.mkdir(exist_ok=True)
    namespace(core)
    try:
        cfg = K8sConfig(namespace=NAMESPACE, image=args.image, image_pull_policy="Never", storage_size="64Mi",
                        cpu_request="50m", memory_request="128Mi", memory_limit="256Mi")
        driver = KubeDriver(cfg, Clients(), owner="alice")
        profile = resolve_profile(cfg, None)
        with tempfile.TemporaryDirectory() as staging:
            record_eviction(driver, core, batch, profile, staging)
        record_definition(driver, batch, core, profile)
    finally:
        try:
            core.delete_namespace(NAMESPACE)
        except ApiException:
            pass


if __name__ == "__main__":
    main()
