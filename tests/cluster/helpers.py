"""Small helpers for tests against the live cluster."""
import time

from kubernetes import client

RESTRICTED_POD = client.V1PodSecurityContext(
    run_as_non_root=True, run_as_user=1000, run_as_group=100, fs_group=100,
    seccomp_profile=client.V1SeccompProfile(type="RuntimeDefault"))
RESTRICTED_CONTAINER = client.V1SecurityContext(
    allow_privilege_escalation=False, capabilities=client.V1Capabilities(drop=["ALL"]))


def pod(name, image, command, volumes=None, mounts=None, limits=None, sa=None, automount=False, labels=None):
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=name, labels=labels),
        spec=client.V1PodSpec(
            restart_policy="Never", security_context=RESTRICTED_POD,
            service_account_name=sa, automount_service_account_token=automount,
            containers=[client.V1Container(
                name="c", image=image, image_pull_policy="Never", command=command,
                security_context=RESTRICTED_CONTAINER, volume_mounts=mounts,
                resources=client.V1ResourceRequirements(limits=limits) if limits else None)],
            volumes=volumes))


def wait_pod(core, namespace, name, until, timeout=90):
    deadline = time.monotonic() + timeout
    while True:
        p = core.read_namespaced_pod(name, namespace)
        if until(p):
            return p
        if time.monotonic() > deadline:
            raise AssertionError(f"pod {name} did not reach the expected state: {p.status}")
        time.sleep(0.5)


def phase_in(*phases):
    return lambda p: p.status.phase in phases


def running(p):
    return p.status.phase == "Running"
