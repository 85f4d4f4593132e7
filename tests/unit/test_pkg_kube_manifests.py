"""kube/manifests.py: the builders' serialized output, compared with literal dicts (KubeSpawner's
tests/test_objects.py style), plus a Pod Security "restricted" check of every pod spec."""
import copy
import json

import pytest

from jupyter_scheduler_k8s.kube import manifests, names

from .data_pkg.helpers import serialize

JOB_ID = "5f0c9a52-1e4b-4d8e-9a57-2c1f0b7d3e11"
NAME = "jsk8s-" + JOB_ID
NAMESPACE = "jupyter-jobs"
IMAGE = "registry.example.org/jsk8s-executor:0.1.0"
SPEC = {
    "input": "my notebook.ipynb",
    "outputs": {"ipynb": "my notebook-2026-11-26-01-02-03-AM.ipynb",
                "html": "my notebook-2026-11-26-01-02-03-AM.html"},
    "parameters": {"a": 1, "name": "Zoë"},
    "kernel_name": None,
    "cell_timeout": None,
    "collect_hold_seconds": 600,
}
LABELS = {
    "app.kubernetes.io/managed-by": "jupyter-scheduler-k8s",
    "app.kubernetes.io/component": "notebook-job",
    "scheduler.jupyter.org/job-id": JOB_ID,
    "hub.jupyter.org/username": "alice",
}
ANNOTATIONS = {"hub.jupyter.org/username": "alice", "scheduler.jupyter.org/job-name": "My nightly report"}

POD_SECURITY_CONTEXT = {
    "runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 100, "fsGroup": 100,
    "seccompProfile": {"type": "RuntimeDefault"},
}
CONTAINER_SECURITY_CONTEXT = {
    "allowPrivilegeEscalation": False, "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def typical_job(**overrides):
    kwargs = dict(
        image=IMAGE, pull_policy="IfNotPresent", spec=SPEC,
        container_resources=manifests.resources("500m", "2", "1Gi", "2Gi"),
        timeout_seconds=3600, ttl_seconds=300,
    )
    kwargs.update(overrides)
    return manifests.make_job(NAME, NAMESPACE, LABELS, ANNOTATIONS, **kwargs)


# ---- Job ------------------------------------------------------------------------------------------

def test_make_job_typical():
    job = serialize(typical_job())
    env = job["spec"]["template"]["spec"]["containers"][0]["env"]
    # The spec travels as JSON: compare it parsed, then pin the exact string form too.
    assert json.loads(env[0]["value"]) == SPEC
    assert job == {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": NAME, "namespace": NAMESPACE, "labels": LABELS, "annotations": ANNOTATIONS},
        "spec": {
            "backoffLimit": 0,
            "ttlSecondsAfterFinished": 300,
            "activeDeadlineSeconds": 3660,
            "podReplacementPolicy": "Failed",
            "template": {
                "metadata": {"labels": LABELS, "annotations": ANNOTATIONS},
                "spec": {
                    "restartPolicy": "Never",
                    "activeDeadlineSeconds": 3600,
                    "automountServiceAccountToken": False,
                    "enableServiceLinks": False,
                    "terminationGracePeriodSeconds": 5,
                    "securityContext": POD_SECURITY_CONTEXT,
                    "containers": [{
                        "name": "executor",
                        "image": IMAGE,
                        "imagePullPolicy": "IfNotPresent",
                        "command": ["jsk8s-executor", "run"],
                        "env": [
                            {"name": "JSK8S_SPEC", "value": json.dumps(SPEC, sort_keys=True)},
                            {"name": "PYTHONUNBUFFERED", "value": "1"},
                            {"name": "JSK8S_MEMORY_LIMIT", "valueFrom": {"resourceFieldRef": {
                                "containerName": "executor", "resource": "limits.memory"}}},
                        ],
                        "resources": {"requests": {"cpu": "500m", "memory": "1Gi"},
                                      "limits": {"cpu": "2", "memory": "2Gi"}},
                        "securityContext": CONTAINER_SECURITY_CONTEXT,
                        "readinessProbe": {
                            "exec": {"command": ["test", "-e", "/job/result.json"]},
                            "periodSeconds": 1, "failureThreshold": 1, "successThreshold": 1,
                            "timeoutSeconds": 5,
                        },
                        "volumeMounts": [{"name": "job", "mountPath": "/job"}],
                        "terminationMessagePolicy": "FallbackToLogsOnError",
                    }],
                    "volumes": [{"name": "job", "persistentVolumeClaim": {"claimName": NAME}}],
                },
            },
        },
    }


def test_make_job_without_timeout_has_no_deadline():
    job = serialize(typical_job(timeout_seconds=0, ttl_seconds=None))
    assert "activeDeadlineSeconds" not in job["spec"]
    assert "activeDeadlineSeconds" not in job["spec"]["template"]["spec"]
    assert "ttlSecondsAfterFinished" not in job["spec"]
    assert job["spec"]["backoffLimit"] == 0
    # Nothing optional sneaks in as null/empty.
    pod_spec = job["spec"]["template"]["spec"]
    assert "nodeSelector" not in pod_spec and "tolerations" not in pod_spec


def test_make_job_without_annotations_omits_them():
    job = serialize(manifests.make_job(NAME, NAMESPACE, LABELS, {}, image=IMAGE, pull_policy=None, spec=SPEC,
                                       container_resources=manifests.resources()))
    assert "annotations" not in job["metadata"]
    assert "annotations" not in job["spec"]["template"]["metadata"]
    container = job["spec"]["template"]["spec"]["containers"][0]
    # No pull policy: the API server picks its default; no resources: none requested.
    assert "imagePullPolicy" not in container
    assert container["resources"] == {}


def test_make_job_spec_env_is_json_of_the_given_spec_with_unicode():
    spec = dict(SPEC, outputs={"ipynb": "Résumé ü 2026-11-26-01-02-03-AM.ipynb"})
    env = serialize(typical_job(spec=spec))["spec"]["template"]["spec"]["containers"][0]["env"]
    assert json.loads(env[0]["value"]) == spec


def test_make_job_placement():
    job = serialize(typical_job(
        node_selector={"accelerator": "nvidia"},
        tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
                     {"key": "dedicated", "operator": "Equal", "value": "notebooks", "effect": "NoExecute",
                      "tolerationSeconds": 30}],
    ))
    pod_spec = job["spec"]["template"]["spec"]
    assert pod_spec["nodeSelector"] == {"accelerator": "nvidia"}
    assert pod_spec["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
        {"key": "dedicated", "operator": "Equal", "value": "notebooks", "effect": "NoExecute",
         "tolerationSeconds": 30},
    ]


# ---- resources ------------------------------------------------------------------------------------

def test_resources_gpu_goes_into_limits():
    assert serialize(manifests.resources("1", None, "4Gi", "8Gi", gpu=2)) == {
        "requests": {"cpu": "1", "memory": "4Gi"},
        "limits": {"memory": "8Gi", "nvidia.com/gpu": "2"},
    }
    # A GPU alone: extended resources only need the limit (the request defaults to it).
    assert serialize(manifests.resources(gpu=1)) == {"limits": {"nvidia.com/gpu": "1"}}
    assert serialize(manifests.resources(gpu=0)) == {}


def test_make_job_gpu():
    job = serialize(typical_job(container_resources=manifests.resources("4", None, "16Gi", "16Gi", 1)))
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert "nvidia.com/gpu" not in container["resources"].get("requests", {})


# ---- PVC ------------------------------------------------------------------------------------------

def test_make_pvc_default_storage_class():
    assert serialize(manifests.make_pvc(NAME, NAMESPACE, LABELS, ANNOTATIONS, "1Gi")) == {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": NAME, "namespace": NAMESPACE, "labels": LABELS, "annotations": ANNOTATIONS},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }


@pytest.mark.parametrize("storage_class", [None, ""])
def test_make_pvc_unset_storage_class_is_omitted(storage_class):
    # storageClassName "" would mean "no class" (static PVs only), not the cluster default.
    pvc = serialize(manifests.make_pvc(NAME, NAMESPACE, LABELS, {}, "5Gi", storage_class))
    assert "storageClassName" not in pvc["spec"]
    assert "annotations" not in pvc["metadata"]


def test_make_pvc_with_storage_class():
    assert serialize(manifests.make_pvc(NAME, NAMESPACE, LABELS, ANNOTATIONS, "5Gi", "fast-ssd")) == {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": NAME, "namespace": NAMESPACE, "labels": LABELS, "annotations": ANNOTATIONS},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "fast-ssd",
                 "resources": {"requests": {"storage": "5Gi"}}},
    }


# ---- collector pod ----------------------------------------------------------------------------------

def test_make_collector_pod():
    name = names.collector_name(JOB_ID)
    labels = dict(LABELS, **{"app.kubernetes.io/component": "output-collector"})
    pod = serialize(manifests.make_collector_pod(name, NAMESPACE, labels, ANNOTATIONS, image=IMAGE,
                                                 pull_policy="Never", pvc_name=NAME, hold_seconds=300))
    assert pod == {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": NAMESPACE, "labels": labels, "annotations": ANNOTATIONS},
        "spec": {
            "restartPolicy": "Never",
            "activeDeadlineSeconds": 360,
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "terminationGracePeriodSeconds": 5,
            "securityContext": POD_SECURITY_CONTEXT,
            "containers": [{
                "name": "executor",
                "image": IMAGE,
                "imagePullPolicy": "Never",
                "command": ["jsk8s-executor", "hold", "300"],
                "env": [],
                "resources": {"requests": {"cpu": "10m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
                "securityContext": CONTAINER_SECURITY_CONTEXT,
                "volumeMounts": [{"name": "job", "mountPath": "/job"}],
                "terminationMessagePolicy": "FallbackToLogsOnError",
            }],
            "volumes": [{"name": "job", "persistentVolumeClaim": {"claimName": NAME}}],
        },
    }


# ---- Pod Security "restricted" ------------------------------------------------------------------------
# https://kubernetes.io/docs/concepts/security/pod-security-standards/ (baseline + restricted, latest)

RESTRICTED_VOLUME_TYPES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                           "projected", "secret"}
BASELINE_CAPABILITIES = {"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
                         "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"}
SAFE_SYSCTLS = {"kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
                "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
                "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
                "net.ipv4.tcp_keepalive_probes"}
SELINUX_TYPES = {None, "", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}


def restricted_violations(pod_spec: dict) -> list:
    """Violations of Pod Security "restricted" by a serialized PodSpec (empty list: it passes)."""
    v = []
    psc = pod_spec.get("securityContext") or {}
    containers = [("containers", c) for c in pod_spec.get("containers") or []]
    containers += [("initContainers", c) for c in pod_spec.get("initContainers") or []]
    containers += [("ephemeralContainers", c) for c in pod_spec.get("ephemeralContainers") or []]

    # baseline
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if pod_spec.get(field):
            v.append(f"host namespace: {field}")
    if (psc.get("windowsOptions") or {}).get("hostProcess"):
        v.append("pod hostProcess")
    for sysctl in psc.get("sysctls") or []:
        if sysctl.get("name") not in SAFE_SYSCTLS:
            v.append(f"unsafe sysctl {sysctl.get('name')}")
    for volume in pod_spec.get("volumes") or []:
        kinds = set(volume) - {"name"}
        if "hostPath" in kinds:
            v.append(f"hostPath volume {volume['name']}")
        if not kinds <= RESTRICTED_VOLUME_TYPES:
            v.append(f"volume {volume['name']} of type {sorted(kinds - RESTRICTED_VOLUME_TYPES)}")

    def check_selinux(where, opts):
        opts = opts or {}
        if opts.get("type") not in SELINUX_TYPES or opts.get("user") or opts.get("role"):
            v.append(f"{where}: seLinuxOptions {opts}")

    def check_apparmor(where, profile):
        if profile and profile.get("type") not in ("RuntimeDefault", "Localhost"):
            v.append(f"{where}: appArmorProfile {profile}")

    check_selinux("pod", psc.get("seLinuxOptions"))
    check_apparmor("pod", psc.get("appArmorProfile"))

    # restricted, pod level
    pod_non_root = psc.get("runAsNonRoot") is True
    if psc.get("runAsUser") == 0:
        v.append("pod runAsUser 0")
    pod_seccomp = (psc.get("seccompProfile") or {}).get("type")
    if pod_seccomp not in (None, "RuntimeDefault", "Localhost"):
        v.append(f"pod seccompProfile {pod_seccomp}")

    for kind, c in containers:
        where = f"{kind}[{c.get('name')}]"
        sc = c.get("securityContext") or {}
        if sc.get("privileged"):
            v.append(f"{where}: privileged")
        if (sc.get("windowsOptions") or {}).get("hostProcess"):
            v.append(f"{where}: hostProcess")
        if sc.get("procMount") not in (None, "Default"):
            v.append(f"{where}: procMount {sc.get('procMount')}")
        check_selinux(where, sc.get("seLinuxOptions"))
        check_apparmor(where, sc.get("appArmorProfile"))
        for port in c.get("ports") or []:
            if port.get("hostPort"):
                v.append(f"{where}: hostPort {port['hostPort']}")
        caps = sc.get("capabilities") or {}
        added = set(caps.get("add") or [])
        if not added <= BASELINE_CAPABILITIES:
            v.append(f"{where}: capabilities added beyond baseline {sorted(added - BASELINE_CAPABILITIES)}")
        # restricted
        if sc.get("allowPrivilegeEscalation") is not False:
            v.append(f"{where}: allowPrivilegeEscalation is not false")
        if sc.get("runAsNonRoot") is False or not (pod_non_root or sc.get("runAsNonRoot") is True):
            v.append(f"{where}: not runAsNonRoot")
        if sc.get("runAsUser") == 0:
            v.append(f"{where}: runAsUser 0")
        seccomp = (sc.get("seccompProfile") or {}).get("type")
        if seccomp is not None and seccomp not in ("RuntimeDefault", "Localhost"):
            v.append(f"{where}: seccompProfile {seccomp}")
        if seccomp is None and pod_seccomp is None:
            v.append(f"{where}: no seccompProfile")
        if "ALL" not in (caps.get("drop") or []):
            v.append(f"{where}: capabilities do not drop ALL")
        if not added <= {"NET_BIND_SERVICE"}:
            v.append(f"{where}: capabilities add {sorted(added - {'NET_BIND_SERVICE'})}")
    return v


def _all_pod_specs():
    job = serialize(typical_job(node_selector={"a": "b"}, tolerations=[{"key": "k", "operator": "Exists"}],
                                container_resources=manifests.resources("1", "1", "1Gi", "1Gi", 1)))
    job_no_timeout = serialize(typical_job(timeout_seconds=0))
    collector = serialize(manifests.make_collector_pod("c", NAMESPACE, LABELS, {}, image=IMAGE, pull_policy=None,
                                                       pvc_name=NAME, hold_seconds=60))
    return {
        "job": job["spec"]["template"]["spec"],
        "job-no-timeout": job_no_timeout["spec"]["template"]["spec"],
        "collector": collector["spec"],
    }


@pytest.mark.parametrize("which", ["job", "job-no-timeout", "collector"])
def test_pod_specs_pass_pod_security_restricted(which):
    pod_spec = _all_pod_specs()[which]
    assert restricted_violations(pod_spec) == []
    # And the design's own contract (docs/design.md, "Security context of every pod we create").
    assert pod_spec["automountServiceAccountToken"] is False
    assert pod_spec["enableServiceLinks"] is False
    assert pod_spec["securityContext"] == POD_SECURITY_CONTEXT
    for c in pod_spec["containers"]:
        assert c["securityContext"] == CONTAINER_SECURITY_CONTEXT


def _mutate(pod_spec, path, value):
    spec = copy.deepcopy(pod_spec)
    target = spec
    for key in path[:-1]:
        target = target[key]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return spec


@pytest.mark.parametrize("path,value", [
    (("hostNetwork",), True),
    (("hostPID",), True),
    (("hostIPC",), True),
    (("volumes", 0), {"name": "job", "hostPath": {"path": "/"}}),
    (("volumes", 0), {"name": "job", "nfs": {"server": "nfs", "path": "/"}}),
    (("securityContext", "runAsUser"), 0),
    (("securityContext", "seccompProfile"), {"type": "Unconfined"}),
    (("containers", 0, "securityContext", "privileged"), True),
    (("containers", 0, "securityContext", "allowPrivilegeEscalation"), KeyError),
    (("containers", 0, "securityContext", "allowPrivilegeEscalation"), True),
    (("containers", 0, "securityContext", "runAsNonRoot"), False),
    (("containers", 0, "securityContext", "capabilities"), {"drop": ["NET_RAW"]}),
    (("containers", 0, "securityContext", "capabilities"), {"drop": ["ALL"], "add": ["SYS_ADMIN"]}),
    (("containers", 0, "securityContext", "capabilities"), {"drop": ["ALL"], "add": ["CHOWN"]}),
    (("containers", 0, "securityContext", "seccompProfile"), {"type": "Unconfined"}),
    (("containers", 0, "ports"), [{"containerPort": 80, "hostPort": 80}]),
])
def test_restricted_checker_catches_violations(path, value):
    """The checker itself is not vacuous: each single change of a passing spec is caught."""
    pod_spec = _all_pod_specs()["job"]
    assert restricted_violations(_mutate(pod_spec, path, value))


def test_restricted_checker_allows_net_bind_service_and_localhost_seccomp():
    pod_spec = _all_pod_specs()["job"]
    pod_spec = _mutate(pod_spec, ("containers", 0, "securityContext", "capabilities"),
                       {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]})
    pod_spec = _mutate(pod_spec, ("securityContext", "seccompProfile"),
                       {"type": "Localhost", "localhostProfile": "profiles/jsk8s.json"})
    assert restricted_violations(pod_spec) == []


def test_restricted_checker_requires_non_root_somewhere():
    pod_spec = _mutate(_all_pod_specs()["job"], ("securityContext", "runAsNonRoot"), KeyError)
    pod_spec = _mutate(pod_spec, ("containers", 0, "securityContext", "runAsNonRoot"), KeyError)
    assert any("runAsNonRoot" in x for x in restricted_violations(pod_spec))


# ---- inputs are not mutated, outputs are not aliased -------------------------------------------------

def test_builders_do_not_mutate_or_alias_their_inputs():
    labels, annotations, spec = copy.deepcopy(LABELS), copy.deepcopy(ANNOTATIONS), copy.deepcopy(SPEC)
    node_selector = {"accelerator": "nvidia"}
    tolerations = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    before = copy.deepcopy((labels, annotations, spec, node_selector, tolerations))

    job = manifests.make_job(NAME, NAMESPACE, labels, annotations, image=IMAGE, pull_policy="Always", spec=spec,
                             container_resources=manifests.resources("1", "2", "1Gi", "2Gi", 1),
                             node_selector=node_selector, tolerations=tolerations, timeout_seconds=60,
                             ttl_seconds=30)
    pvc = manifests.make_pvc(NAME, NAMESPACE, labels, annotations, "1Gi", "standard")
    collector = manifests.make_collector_pod("c", NAMESPACE, labels, annotations, image=IMAGE, pull_policy=None,
                                             pvc_name=NAME, hold_seconds=60)
    assert (labels, annotations, spec, node_selector, tolerations) == before

    # Changing the inputs afterwards does not reach into the built objects either.
    serialized = [serialize(job), serialize(pvc), serialize(collector)]
    labels["app.kubernetes.io/component"] = "changed"
    annotations["hub.jupyter.org/username"] = "mallory"
    spec["input"] = "other.ipynb"
    node_selector["accelerator"] = "changed"
    tolerations[0]["key"] = "changed"
    tolerations.append({"key": "extra", "operator": "Exists"})
    assert [serialize(job), serialize(pvc), serialize(collector)] == serialized


def test_job_and_template_metadata_are_independent_copies():
    job = typical_job()
    job.spec.template.metadata.labels["x"] = "y"
    assert "x" not in job.metadata.labels
