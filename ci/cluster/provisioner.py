"""A tiny dynamic provisioner for the local cluster (StorageClass provisioner `jsk8s.local/hostpath`).

Kubernetes' built-in host-path provisioner makes root-owned 0750 directories, which a non-root
pod cannot write (hostPath volumes ignore fsGroup). This one makes world-writable directories,
binds a PV to each claim, and deletes the directory when the claim goes away.
"""
import argparse
import logging
import shutil
import threading
import time
from pathlib import Path

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

PROVISIONER = "jsk8s.local/hostpath"
log = logging.getLogger("provisioner")


def wants_us(pvc, classes):
    ann = pvc.metadata.annotations or {}
    if ann.get("volume.kubernetes.io/storage-provisioner") == PROVISIONER:
        return True
    return pvc.spec.storage_class_name in classes


def provision(core, pvc, volumes_dir, node):
    name = f"pvc-{pvc.metadata.uid}"
    path = Path(volumes_dir) / name
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o777)
    pv = client.V1PersistentVolume(
        metadata=client.V1ObjectMeta(name=name, annotations={"pv.kubernetes.io/provisioned-by": PROVISIONER}),
        spec=client.V1PersistentVolumeSpec(
            capacity={"storage": pvc.spec.resources.requests["storage"]},
            access_modes=pvc.spec.access_modes,
            persistent_volume_reclaim_policy="Delete",
            storage_class_name=pvc.spec.storage_class_name,
            claim_ref=client.V1ObjectReference(
                namespace=pvc.metadata.namespace, name=pvc.metadata.name, uid=pvc.metadata.uid),
            host_path=client.V1HostPathVolumeSource(path=str(path), type="Directory"),
            node_affinity=client.V1VolumeNodeAffinity(required=client.V1NodeSelector(node_selector_terms=[
                client.V1NodeSelectorTerm(match_expressions=[client.V1NodeSelectorRequirement(
                    key="kubernetes.io/hostname", operator="In", values=[node])])])),
        ),
    )
    try:
        core.create_persistent_volume(pv)
        log.info("provisioned %s for %s/%s", name, pvc.metadata.namespace, pvc.metadata.name)
    except ApiException as e:
        if e.status != 409:
            raise


def reclaim(core, pv, volumes_dir):
    ann = pv.metadata.annotations or {}
    if ann.get("pv.kubernetes.io/provisioned-by") != PROVISIONER or pv.status.phase != "Released":
        return
    shutil.rmtree(Path(volumes_dir) / pv.metadata.name, ignore_errors=True)
    try:
        core.delete_persistent_volume(pv.metadata.name)
        log.info("deleted %s", pv.metadata.name)
    except ApiException as e:
        if e.status != 404:
            raise


def our_classes(storage):
    return {sc.metadata.name for sc in storage.list_storage_class().items if sc.provisioner == PROVISIONER}


def loop(kind, args):
    core, storage = client.CoreV1Api(), client.StorageV1Api()
    while True:
        try:
            if kind == "pvc":
                lister = core.list_persistent_volume_claim_for_all_namespaces
                resp = lister()
                for pvc in resp.items:
                    if not pvc.spec.volume_name and wants_us(pvc, our_classes(storage)):
                        provision(core, pvc, args.volumes_dir, args.node)
            else:
                lister = core.list_persistent_volume
                resp = lister()
                for pv in resp.items:
                    reclaim(core, pv, args.volumes_dir)
            for ev in watch.Watch().stream(lister, resource_version=resp.metadata.resource_version, timeout_seconds=60):
                obj = ev["object"]
                if kind == "pvc" and ev["type"] in ("ADDED", "MODIFIED") and not obj.spec.volume_name \
                        and obj.status.phase == "Pending" and wants_us(obj, our_classes(storage)):
                    provision(core, obj, args.volumes_dir, args.node)
                elif kind == "pv" and ev["type"] in ("ADDED", "MODIFIED"):
                    reclaim(core, obj, args.volumes_dir)
        except Exception:  # keep serving: the API server may restart under us
            log.exception("%s loop failed; retrying", kind)
            time.sleep(1)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--volumes-dir", required=True)
    p.add_argument("--node", required=True)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    config.load_kube_config()
    threading.Thread(target=loop, args=("pv", args), daemon=True).start()
    loop("pvc", args)


if __name__ == "__main__":
    main()
