"""The chart's admission policies, RBAC and Pod Security labels, evaluated by a real kube-apiserver.

A throwaway etcd and kube-apiserver (the binaries `ci/cluster/build` makes; no kubelet, no
network) run on free loopback ports. The chart is installed with helm, and the backend's own
objects, built by jupyter_scheduler_k8s.kube.manifests, are created with `--dry-run=server` while
impersonating the gateway's ServiceAccount: authorization, Pod Security and the
ValidatingAdmissionPolicies all run, nothing is stored. Variants of those objects must be
rejected with the policy's message.
"""
import copy
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from kubernetes.client import ApiClient

import helmrender
from jupyter_scheduler_k8s.kube import manifests, names

NS = "jhub"
JOBS_NS = "jhub-jobs"
RELEASE = "hub"
SA = f"{RELEASE}-jupyter-scheduler-k8s-gateway"
AS_SA = f"system:serviceaccount:{NS}:{SA}"
JOB_ID = "0f6d9a2e-5b8c-4c1e-9e63-2a4b7d1c9f00"


def _binaries():
    bin_dir = subprocess.run(["bash", "-c", '. ci/cluster/env.sh && printf %s "$BIN_DIR"'],
                             cwd=helmrender.ROOT, check=True, capture_output=True, text=True).stdout
    paths = {name: Path(bin_dir) / name
             for name in ("etcd", "kube-apiserver", "kube-controller-manager", "kubectl")}
    missing = [name for name, path in paths.items() if not os.access(path, os.X_OK)]
    return paths, missing


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """kubectl against the throwaway API server."""

    def __init__(self, kubectl, kubeconfig):
        self.kubectl, self.kubeconfig = kubectl, kubeconfig

    def run(self, *args, stdin=None, as_sa=False, as_user=None, check=False):
        cmd = [str(self.kubectl), "--kubeconfig", str(self.kubeconfig)]
        if as_sa or as_user:
            cmd += ["--as", as_user or AS_SA]
        proc = subprocess.run(cmd + list(args), input=stdin, capture_output=True, text=True, timeout=60)
        if check and proc.returncode:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {proc.stderr}")
        return proc

    def dry_run(self, obj, as_sa=True):
        """(admitted, kubectl output) for creating obj, with every admission check and no storage."""
        proc = self.run("create", "--dry-run=server", "-o", "name", "-f", "-", stdin=json.dumps(obj), as_sa=as_sa)
        return proc.returncode == 0, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def cluster():
    paths, missing = _binaries()
    if missing:
        message = (f"{', '.join(missing)} not built: run `ci/cluster/build` (the binaries go to the cache "
                   "named by ci/cluster/env.sh)")
        if os.environ.get("CI"):
            pytest.fail(message + " (CI is set, so this fails instead of skipping)")
        pytest.skip(message)
    tmp = Path(tempfile.mkdtemp(prefix="jsk8s-chart-apiserver-"))
    procs = []
    try:
        subprocess.run(["openssl", "genrsa", "-out", str(tmp / "sa.key"), "2048"], check=True, capture_output=True)
        subprocess.run(["openssl", "rsa", "-in", str(tmp / "sa.key"), "-pubout", "-out", str(tmp / "sa.pub")],
                       check=True, capture_output=True)
        (tmp / "tokens.csv").write_text("admintoken,admin,admin,system:masters\n")
        etcd_port, peer_port, api_port = _free_port(), _free_port(), _free_port()
        with open(tmp / "etcd.log", "w") as log:
            procs.append(subprocess.Popen([
                str(paths["etcd"]), "--name", "chart-test", "--data-dir", str(tmp / "etcd"),
                "--listen-client-urls", f"http://127.0.0.1:{etcd_port}",
                "--advertise-client-urls", f"http://127.0.0.1:{etcd_port}",
                "--listen-peer-urls", f"http://127.0.0.1:{peer_port}",
                "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer_port}",
                "--initial-cluster", f"chart-test=http://127.0.0.1:{peer_port}",
            ], stdout=log, stderr=subprocess.STDOUT))
        with open(tmp / "apiserver.log", "w") as log:
            procs.append(subprocess.Popen([
                str(paths["kube-apiserver"]), f"--etcd-servers=http://127.0.0.1:{etcd_port}",
                f"--secure-port={api_port}", "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
                f"--cert-dir={tmp / 'certs'}", f"--token-auth-file={tmp / 'tokens.csv'}",
                "--authorization-mode=RBAC", "--service-account-issuer=https://kubernetes.default.svc",
                f"--service-account-key-file={tmp / 'sa.pub'}",
                f"--service-account-signing-key-file={tmp / 'sa.key'}",
                "--service-cluster-ip-range=10.97.0.0/16", "--allow-privileged=true",
            ], stdout=log, stderr=subprocess.STDOUT))
        kubeconfig = tmp / "kubeconfig"
        kubeconfig.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "t",
            "clusters": [{"name": "t", "cluster": {"server": f"https://127.0.0.1:{api_port}",
                                                   "insecure-skip-tls-verify": True}}],
            "users": [{"name": "admin", "user": {"token": "admintoken"}}],
            "contexts": [{"name": "t", "context": {"cluster": "t", "user": "admin"}}],
        }))
        c = Cluster(paths["kubectl"], kubeconfig)
        deadline = time.monotonic() + 90
        while c.run("get", "--raw", "/readyz").returncode:
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                pytest.fail("the test API server did not start:\n" + (tmp / "apiserver.log").read_text()[-3000:])
            time.sleep(0.5)
        # Only the controller that type-checks admission policies against the matched kinds'
        # schemas and reports warnings in their status.
        with open(tmp / "controller-manager.log", "w") as log:
            procs.append(subprocess.Popen([
                str(paths["kube-controller-manager"]), f"--kubeconfig={kubeconfig}",
                "--controllers=validatingadmissionpolicy-status-controller", "--leader-elect=false",
                "--secure-port=0", "--use-service-account-credentials=false",
            ], stdout=log, stderr=subprocess.STDOUT))
        c.run("create", "namespace", NS, check=True)
        env = dict(os.environ, KUBECONFIG=str(kubeconfig))
        proc = subprocess.run([helmrender.helm_path(), "install", RELEASE, str(helmrender.CHART), "-n", NS],
                              capture_output=True, text=True, env=env, timeout=120)
        assert proc.returncode == 0, proc.stderr
        # No controller-manager here: make the jobs namespace's default ServiceAccount by hand, and
        # a `hub` one, as in JupyterHub's namespace, for pods that try to use it.
        c.run("create", "serviceaccount", "default", "-n", JOBS_NS, check=True)
        c.run("create", "serviceaccount", "hub", "-n", JOBS_NS, check=True)
        # The API server picks up new policies and bindings asynchronously: wait until both act.
        probes = [_variant(_add_volume({"hostPath": {"path": "/"}})), backend_pvc("probe")]
        deadline = time.monotonic() + 60
        while not all("denied request" in c.dry_run(probe)[1] for probe in probes):
            if time.monotonic() > deadline:
                pytest.fail("the admission policies never took effect")
            time.sleep(0.5)
        yield c
    finally:
        # Throwaway state: no graceful shutdown (the API server's takes many seconds).
        for p in reversed(procs):
            p.kill()
            p.wait(timeout=30)
        shutil.rmtree(tmp, ignore_errors=True)


def _serialize(obj):
    return ApiClient().sanitize_for_serialization(obj)


def backend_job():
    name = names.object_name(JOB_ID)
    return _serialize(manifests.make_job(
        name, JOBS_NS, names.labels(JOB_ID, names.COMPONENT_JOB, username="alice"), names.annotations("alice"),
        image="jupyter-scheduler-k8s-executor:0.1.0", pull_policy="IfNotPresent", spec={"input": "a.ipynb"},
        container_resources=manifests.resources("1", None, "1Gi", "2Gi", gpu=1), ttl_seconds=300,
        tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        node_selector={"accelerator": "nvidia"}, timeout_seconds=600))


def backend_cronjob():
    name = names.definition_name(JOB_ID)
    labels = names.definition_labels(JOB_ID, names.COMPONENT_SCHEDULE, username="alice")
    return _serialize(manifests.make_cronjob(
        name, JOBS_NS, labels, names.annotations("alice"),
        run_labels=names.definition_labels(JOB_ID, names.COMPONENT_SCHEDULED_RUN, username="alice"),
        schedule="*/5 * * * *", time_zone="Europe/Paris", suspend=False, concurrency_policy="Forbid",
        starting_deadline_seconds=300, history_limit=20, image="jupyter-scheduler-k8s-executor:0.1.0",
        pull_policy="IfNotPresent", spec={"input": "a.ipynb"}, retention={"runs_kept": 20},
        container_resources=manifests.resources("1", None, "1Gi", "2Gi"), timeout_seconds=600, ttl_seconds=3600))


def backend_collector_pod():
    return _serialize(manifests.make_collector_pod(
        names.collector_name(JOB_ID), JOBS_NS, names.labels(JOB_ID, names.COMPONENT_COLLECTOR), {},
        image="jupyter-scheduler-k8s-executor:0.1.0", pull_policy="IfNotPresent",
        pvc_name=names.object_name(JOB_ID), hold_seconds=60))


def backend_pvc(name=None):
    return _serialize(manifests.make_pvc(name or names.object_name(JOB_ID), JOBS_NS,
                                         names.labels(JOB_ID, names.COMPONENT_JOB), {}, "1Gi"))


def as_cronjob(job):
    return {"apiVersion": "batch/v1", "kind": "CronJob",
            "metadata": {**job["metadata"], "name": job["metadata"]["name"][:40]},
            "spec": {"schedule": "0 * * * *", "jobTemplate": {"spec": job["spec"]}}}


def pod_spec(obj):
    if obj["kind"] == "Pod":
        return obj["spec"]
    if obj["kind"] == "Job":
        return obj["spec"]["template"]["spec"]
    return obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]


def container(obj):
    return pod_spec(obj)["containers"][0]


def _variant(change, base=backend_job):
    obj = copy.deepcopy(base())
    change(obj)
    return obj


def _add_volume(volume):
    return lambda o: pod_spec(o)["volumes"].append({"name": "extra", **volume})


def _set(key, value, where=pod_spec):
    return lambda o: where(o).__setitem__(key, value)


def _set_security(key, value):
    return lambda o: container(o)["securityContext"].__setitem__(key, value)


def _drop_template_label(o):
    del o["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/managed-by"]


def _privileged(o):
    container(o)["securityContext"].update(privileged=True, allowPrivilegeEscalation=True)


def _privileged_init(o):
    init = copy.deepcopy(container(o))
    init.pop("readinessProbe")
    init["name"] = "init"
    init["securityContext"].update(privileged=True, allowPrivilegeEscalation=True)
    pod_spec(o)["initContainers"] = [init]


def _root_pod(o):
    pod_spec(o)["securityContext"]["runAsNonRoot"] = False
    del container(o)["securityContext"]["runAsNonRoot"]


REJECTED = {
    "hostPath volume": (_add_volume({"hostPath": {"path": "/"}}), "hostPath volumes are not allowed"),
    "Secret volume": (_add_volume({"secret": {"secretName": "hub"}}), "Secret volumes are not allowed"),
    "projected token": (_add_volume({"projected": {"sources": [{"serviceAccountToken": {"path": "t"}}]}}),
                        "Projected volumes with a Secret or ServiceAccount token"),
    "projected Secret": (_add_volume({"projected": {"sources": [{"secret": {"name": "hub"}}]}}),
                         "Projected volumes with a Secret or ServiceAccount token"),
    "nfs volume": (_add_volume({"nfs": {"server": "10.0.0.1", "path": "/"}}), "may only use these volume types"),
    "someone else's PVC": (_add_volume({"persistentVolumeClaim": {"claimName": "claim-bob"}}),
                           "may only mount their own PersistentVolumeClaims"),
    "other ServiceAccount": (_set("serviceAccountName", "hub"), "default ServiceAccount"),
    "token automount unset": (lambda o: pod_spec(o).pop("automountServiceAccountToken"),
                              "automountServiceAccountToken to false"),
    "token automount true": (_set("automountServiceAccountToken", True), "automountServiceAccountToken to false"),
    "hostNetwork": (_set("hostNetwork", True), "hostNetwork, hostPID and hostIPC are not allowed"),
    "hostPID": (_set("hostPID", True), "hostNetwork, hostPID and hostIPC are not allowed"),
    "hostIPC": (_set("hostIPC", True), "hostNetwork, hostPID and hostIPC are not allowed"),
    "hostPort": (lambda o: container(o).__setitem__("ports", [{"containerPort": 80, "hostPort": 80}]),
                 "hostPort is not allowed"),
    "privileged": (_privileged, "Privileged containers are not allowed"),
    "privileged init container": (_privileged_init, "Privileged containers are not allowed"),
    "privilege escalation": (_set_security("allowPrivilegeEscalation", True), "allowPrivilegeEscalation to false"),
    "added capability": (_set_security("capabilities", {"add": ["SYS_ADMIN"]}), "may not add Linux capabilities"),
    "container runs as root": (_set_security("runAsUser", 0), "must run as non-root"),
    "pod runs as root": (_root_pod, "must run as non-root"),
    "Secret env var": (lambda o: container(o)["env"].append(
        {"name": "T", "valueFrom": {"secretKeyRef": {"name": "hub", "key": "x"}}}),
        "may not read Secrets through environment variables"),
    "Secret envFrom": (lambda o: container(o).__setitem__("envFrom", [{"secretRef": {"name": "hub"}}]),
                       "may not read Secrets through environment variables"),
    "no managed-by label": (_drop_template_label, "app.kubernetes.io/managed-by=jupyter-scheduler-k8s"),
}


def test_the_backends_own_objects_are_admitted(cluster):
    for obj in (backend_pvc(), backend_job(), backend_collector_pod()):
        admitted, output = cluster.dry_run(obj)
        assert admitted, output
        assert "Warning" not in output, f"Pod Security or a policy warned: {output}"


@pytest.mark.parametrize("case", list(REJECTED))
def test_job_is_rejected(cluster, case):
    change, message = REJECTED[case]
    admitted, output = cluster.dry_run(_variant(change))
    assert not admitted
    assert "ValidatingAdmissionPolicy" in output and message in output, output


# Pod Security "restricted" already stops hostPath, privileged or root pods before the policy sees
# them; these are the pod cases it lets through.
@pytest.mark.parametrize("case", ["Secret volume", "other ServiceAccount", "Secret env var", "token automount true",
                                  "someone else's PVC", "projected Secret"])
def test_pod_is_rejected(cluster, case):
    change, message = REJECTED[case]
    pod = _variant(change, base=backend_collector_pod)
    admitted, output = cluster.dry_run(pod)
    assert not admitted and message in output, output


def test_pod_without_label_is_rejected(cluster):
    pod = backend_collector_pod()
    del pod["metadata"]["labels"]["app.kubernetes.io/managed-by"]
    admitted, output = cluster.dry_run(pod)
    assert not admitted and "app.kubernetes.io/managed-by=jupyter-scheduler-k8s" in output, output


def test_cronjob_pod_template_is_checked(cluster):
    """A job definition's CronJob, as the backend builds it, is admitted; its pod template is held
    to the same rules as a Job's."""
    admitted, output = cluster.dry_run(backend_cronjob())
    assert admitted, output
    admitted, output = cluster.dry_run(as_cronjob(backend_job()))
    assert admitted, output
    change, message = REJECTED["hostPath volume"]
    admitted, output = cluster.dry_run(_variant(change, base=lambda: as_cronjob(backend_job())))
    assert not admitted and message in output, output


def test_other_users_are_not_limited_by_the_policy(cluster):
    """The policy matches only the gateway's ServiceAccount, not an administrator."""
    admitted, output = cluster.dry_run(_variant(_add_volume({"secret": {"secretName": "x"}})), as_sa=False)
    assert admitted, output


def test_pod_security_restricted_is_enforced_in_the_jobs_namespace(cluster):
    """Even for an administrator, whom the admission policy does not cover."""
    pod = _variant(_set_security("allowPrivilegeEscalation", True), base=backend_collector_pod)
    admitted, output = cluster.dry_run(pod, as_sa=False)
    assert not admitted and 'violates PodSecurity "restricted:latest"' in output, output


def test_the_gateway_pod_passes_pod_security_restricted(cluster):
    """The chart's gateway pod, as a Pod in the jobs namespace (which enforces "restricted"):
    admitted. Namespaces only warn about a Deployment's template, so the pod itself is checked."""
    deployment = helmrender.one(helmrender.render(), "Deployment")
    template = copy.deepcopy(deployment["spec"]["template"])
    template["spec"]["serviceAccountName"] = "default"  # the gateway's own lives in the release namespace
    pod = {"apiVersion": "v1", "kind": "Pod", "spec": template["spec"],
           "metadata": {"name": "gateway-probe", "namespace": JOBS_NS, "labels": template["metadata"]["labels"]}}
    admitted, output = cluster.dry_run(pod, as_sa=False)
    assert admitted and "Warning" not in output, output
    del pod["spec"]["containers"][0]["securityContext"]["capabilities"]
    admitted, output = cluster.dry_run(pod, as_sa=False)
    assert not admitted and 'violates PodSecurity "restricted:latest"' in output, output


def test_names_outside_the_backend_prefix_are_refused(cluster):
    admitted, output = cluster.dry_run(backend_pvc("claim-bob"))
    assert not admitted
    assert "may only create, delete or exec into objects whose names start with jsk8s-" in output, output
    pod = backend_collector_pod()
    pod["metadata"]["name"] = "not-ours"
    admitted, output = cluster.dry_run(pod)
    assert not admitted and "start with jsk8s-, not pods not-ours" in output, output


def test_delete_and_exec_only_on_backend_objects(cluster):
    ours = backend_collector_pod()
    theirs = copy.deepcopy(ours)
    theirs["metadata"]["name"] = "not-ours"
    for pod in (ours, theirs):
        cluster.run("create", "-f", "-", stdin=json.dumps(pod), check=True)
    try:
        proc = cluster.run("delete", "pod", "not-ours", "-n", JOBS_NS, "--dry-run=server", as_sa=True)
        assert proc.returncode and "start with jsk8s-, not pods not-ours" in proc.stderr, proc.stderr
        proc = cluster.run("delete", "pod", ours["metadata"]["name"], "-n", JOBS_NS, "--dry-run=server", as_sa=True)
        assert proc.returncode == 0, proc.stderr
        proc = cluster.run("exec", "-n", JOBS_NS, "not-ours", "--", "true", as_sa=True)
        assert proc.returncode and "start with jsk8s-, not pods not-ours" in proc.stderr, proc.stderr
        # Ours passes authorization and admission; it then fails only because no node runs it.
        proc = cluster.run("exec", "-n", JOBS_NS, ours["metadata"]["name"], "--", "true", as_sa=True)
        assert proc.returncode and "does not have a host assigned" in proc.stderr, proc.stderr
    finally:
        cluster.run("delete", "pod", "not-ours", ours["metadata"]["name"], "-n", JOBS_NS, "--wait=false")


@pytest.mark.parametrize("verb,resource,namespace,allowed", [
    ("create", "jobs.batch", JOBS_NS, True),
    ("create", "pods/exec", JOBS_NS, True),
    ("get", "pods/exec", JOBS_NS, True),
    ("delete", "persistentvolumeclaims", JOBS_NS, True),
    ("create", "pods", JOBS_NS, True),
    ("get", "pods/log", JOBS_NS, True),
    ("list", "events", JOBS_NS, True),
    ("watch", "events", JOBS_NS, False),
    ("deletecollection", "jobs.batch", JOBS_NS, False),
    ("deletecollection", "pods", JOBS_NS, False),
    ("list", "jobs.batch", JOBS_NS, True),
    ("patch", "cronjobs.batch", JOBS_NS, True),
    ("list", "cronjobs.batch", JOBS_NS, True),
    ("watch", "cronjobs.batch", JOBS_NS, False),
    ("update", "cronjobs.batch", JOBS_NS, False),
    ("deletecollection", "cronjobs.batch", JOBS_NS, False),
    ("list", "storageclasses.storage.k8s.io", "", True),
    ("get", "secrets", JOBS_NS, False),
    ("list", "secrets", NS, False),
    ("create", "pods", NS, False),
    ("create", "pods/exec", NS, False),
    ("get", "pods", NS, False),
    ("create", "jobs.batch", NS, False),
    ("update", "jobs.batch", JOBS_NS, False),
    ("patch", "pods", JOBS_NS, False),
    ("update", "pods/ephemeralcontainers", JOBS_NS, False),
    ("create", "pods/attach", JOBS_NS, False),
    ("create", "pods/portforward", JOBS_NS, False),
    ("create", "cronjobs.batch", JOBS_NS, True),
    ("create", "cronjobs.batch", NS, False),
    ("create", "rolebindings.rbac.authorization.k8s.io", JOBS_NS, False),
])
def test_service_account_rights(cluster, verb, resource, namespace, allowed):
    # `can-i VERB pods/exec` would mean a pod named "exec": subresources need --subresource.
    resource, _, subresource = resource.partition("/")
    args = ["auth", "can-i", verb, resource, "--as", AS_SA] + (["-n", namespace] if namespace else [])
    args += [f"--subresource={subresource}"] if subresource else []
    answer = cluster.run(*args).stdout.strip()
    assert answer == ("yes" if allowed else "no"), f"can-i {verb} {resource} in {namespace or 'cluster'}: {answer}"


def test_policies_type_check_without_warnings(cluster):
    """The API server refuses a policy whose CEL does not compile (install would have failed).
    The controller-manager then type-checks each expression against the schema of every matched
    kind (Pod, Job, CronJob) and reports problems as warnings in the policy's status."""
    names_ = {f"{RELEASE}-jupyter-scheduler-k8s-{NS}-pods", f"{RELEASE}-jupyter-scheduler-k8s-{NS}-names"}
    deadline = time.monotonic() + 60
    while True:
        out = json.loads(cluster.run("get", "validatingadmissionpolicies", "-o", "json", check=True).stdout)
        policies = {p["metadata"]["name"]: p for p in out["items"] if p["metadata"]["name"] in names_}
        checked = [p for p in policies.values()
                   if p.get("status", {}).get("observedGeneration") == p["metadata"]["generation"]]
        if len(checked) == len(names_):
            break
        assert time.monotonic() < deadline, f"policies never type-checked: {policies}"
        time.sleep(0.5)
    for name, policy in policies.items():
        warnings = policy["status"].get("typeChecking", {}).get("expressionWarnings")
        assert not warnings, f"{name}: {json.dumps(warnings, indent=1)}"


SOLO_NS = "solo"
AS_SOLO = f"system:serviceaccount:{SOLO_NS}:{SOLO_NS}-jupyter-scheduler-k8s-gateway"


@pytest.fixture(scope="module")
def same_namespace_release(cluster):
    """A second release whose jobs run in its own (JupyterHub's) namespace, with a stand-in hub pod."""
    cluster.run("create", "namespace", SOLO_NS, check=True)
    env = dict(os.environ, KUBECONFIG=str(cluster.kubeconfig))
    proc = subprocess.run([helmrender.helm_path(), "install", SOLO_NS, str(helmrender.CHART), "-n", SOLO_NS,
                           "--set", f"jobs.namespace={SOLO_NS}", "--set", "jobs.allowReleaseNamespace=true"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    cluster.run("create", "serviceaccount", "default", "-n", SOLO_NS, check=True)
    hub = backend_collector_pod()
    hub["metadata"] = {"name": "hub-5d8f", "namespace": SOLO_NS, "labels": {"component": "hub"}}
    cluster.run("create", "-f", "-", stdin=json.dumps(hub), check=True)
    probe = backend_pvc("probe")
    probe["metadata"]["namespace"] = SOLO_NS
    deadline = time.monotonic() + 60
    while "denied request" not in cluster.run("create", "--dry-run=server", "-f", "-", as_user=AS_SOLO,
                                              stdin=json.dumps(probe)).stderr:
        if time.monotonic() > deadline:
            pytest.fail("the second release's admission policies never took effect")
        time.sleep(0.5)
    return proc.stdout


def test_same_namespace_install_warns(same_namespace_release):
    assert "WARNING: notebook jobs run in the JupyterHub namespace (solo)" in same_namespace_release


def test_same_namespace_keeps_user_servers_away_from_the_hub(cluster, same_namespace_release):
    proc = cluster.run("exec", "-n", SOLO_NS, "hub-5d8f", "--", "cat", "/etc/hostname", as_user=AS_SOLO)
    assert proc.returncode and "start with jsk8s-, not pods hub-5d8f" in proc.stderr, proc.stderr
    proc = cluster.run("delete", "pod", "hub-5d8f", "-n", SOLO_NS, "--dry-run=server", as_user=AS_SOLO)
    assert proc.returncode and "denied request" in proc.stderr, proc.stderr
    # No Pod Security label on JupyterHub's namespace here: the policy alone stops a root pod.
    job = _variant(_set_security("runAsUser", 0))
    job["metadata"]["namespace"] = SOLO_NS
    proc = cluster.run("create", "--dry-run=server", "-f", "-", as_user=AS_SOLO, stdin=json.dumps(job))
    assert proc.returncode and "must run as non-root" in proc.stderr, proc.stderr
    job = _variant(_add_volume({"secret": {"secretName": "hub"}}))
    job["metadata"]["namespace"] = SOLO_NS
    proc = cluster.run("create", "--dry-run=server", "-f", "-", as_user=AS_SOLO, stdin=json.dumps(job))
    assert proc.returncode and "Secret volumes are not allowed" in proc.stderr, proc.stderr
