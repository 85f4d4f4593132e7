"""The Helm chart installed on the local cluster, used the way a JupyterHub user server uses it in
hub mode: no ServiceAccount token, the chart's ConfigMap, its hub token, and the chart's jobs
gateway Deployment, which checks that token with a real JupyterHub and alone holds rights in the
jobs namespace."""
import json
import os
import sys
import time
from pathlib import Path

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException
from kubernetes.stream import stream

from .conftest import ROOT, chart_values_for, helm, helmrender, hub_secret, leftovers
from .hub import InstalledGateway

pytestmark = pytest.mark.e2e
RELEASE, NS = "jsk8s", "jhub-e2e"
JOBS_NS = f"{NS}-jobs"
FULLNAME = f"{RELEASE}-jupyter-scheduler-k8s"
GATEWAY = f"{FULLNAME}-gateway"
USER = "e2e-user"
SERVER_POD = "fake-user-server"
CONFIG_DIR = "/usr/local/etc/jupyter-scheduler-k8s"


def python_home():
    """The host's interpreter and venv, mounted into the stand-in server pod: the executor image
    has no jupyter-scheduler, and no registry could supply a JupyterLab image here."""
    venv = Path(sys.prefix)
    base = Path(os.path.realpath(sys.executable)).parents[1]
    return venv, base


def server_pod(image, gateway_url, hub_token):
    venv, base = python_home()
    mounts, volumes = [], []
    for i, path in enumerate(dict.fromkeys([str(ROOT), str(venv), str(base)])):
        volumes.append(client.V1Volume(name=f"host{i}", host_path=client.V1HostPathVolumeSource(path=path)))
        mounts.append(client.V1VolumeMount(name=f"host{i}", mount_path=path, read_only=True))
    volumes.append(client.V1Volume(name="config", config_map=client.V1ConfigMapVolumeSource(name=f"{FULLNAME}-config")))
    mounts.append(client.V1VolumeMount(name="config", mount_path=CONFIG_DIR, read_only=True))
    # What the NOTES' singleuser values give a user server, plus the token the hub gives it.
    # (The gateway's URL is its Service's address: this cluster has no DNS and no hub proxy.)
    env = [client.V1EnvVar(name="JUPYTER_CONFIG_PATH", value=CONFIG_DIR),
           client.V1EnvVar(name="JSK8S_GATEWAY_URL", value=gateway_url),
           client.V1EnvVar(name="JUPYTERHUB_API_TOKEN", value=hub_token),
           client.V1EnvVar(name="HOME", value="/tmp")]
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=SERVER_POD, labels={"hub.jupyter.org/username": USER}),
        spec=client.V1PodSpec(
            automount_service_account_token=False, restart_policy="Never",
            containers=[client.V1Container(
                name="server", image=image, image_pull_policy="Never", command=["sleep", "3600"],
                env=env, volume_mounts=mounts,
                security_context=client.V1SecurityContext(run_as_user=0, run_as_non_root=False))],
            volumes=volumes))


def exec_in(core, command, timeout=300, pod=SERVER_POD):
    ws = stream(core.connect_get_namespaced_pod_exec, pod, NS, command=command, stdin=False,
                stdout=True, stderr=True, tty=False, _preload_content=False)
    ws.run_forever(timeout=timeout)
    out = ws.read_channel(1) + ws.read_channel(2)
    return ws.returncode, out


@pytest.fixture(scope="module")
def chart(kubeconfig, executor_image, gateway_image, hub, core):
    hub_secret(core, NS, hub)
    result = helm("install", RELEASE, str(helmrender.CHART), "-n", NS, "--wait", "--timeout", "3m",
                  *chart_values_for(executor_image, gateway_image, hub), kubeconfig=kubeconfig)
    assert result.returncode == 0, result.stderr
    yield result.stdout
    helm("uninstall", RELEASE, "-n", NS, "--wait", kubeconfig=kubeconfig)
    try:
        core.delete_namespace(NS)
    except ApiException:
        pass


def installed_gateway(core):
    return InstalledGateway(core, client.AppsV1Api(core.api_client), NS, GATEWAY)


def gateway_pod(core):
    return next(p.metadata.name for p in installed_gateway(core).pods() if not p.metadata.deletion_timestamp)


@pytest.fixture(scope="module")
def server(chart, core, executor_image, hub):
    for _ in range(50):  # the default ServiceAccount and the admission controller's cache settle
        try:
            core.create_namespaced_pod(NS, server_pod(executor_image, installed_gateway(core).url, hub.user_token(USER)))
            break
        except ApiException as e:
            if e.status != 403:
                raise
            time.sleep(0.2)
    deadline = time.monotonic() + 120
    while core.read_namespaced_pod(SERVER_POD, NS).status.phase != "Running":
        assert time.monotonic() < deadline, "stand-in server pod did not start"
        time.sleep(0.5)
    return SERVER_POD


def sa_api(core, api_client):
    """A client with a token of the chart's only ServiceAccount, the gateway's."""
    token = core.create_namespaced_service_account_token(GATEWAY, NS, client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=600))).status.token
    cfg = client.Configuration()
    cfg.host, cfg.ssl_ca_cert = api_client.configuration.host, api_client.configuration.ssl_ca_cert
    cfg.api_key = {"authorization": f"Bearer {token}"}
    return client.ApiClient(cfg)


def test_install_prints_the_z2jh_values(chart):
    for line in ("hub:", f"url: http://{GATEWAY}.{NS}:8000", '- "access:services!service=jobs-gateway"',
                 "JSK8S_GATEWAY_URL: http://proxy-public/services/jobs-gateway/"):
        assert line in chart, line
    assert "serviceAccountName" not in chart


def test_notebook_runs_from_a_server_pod_through_the_gateway(server, core, batch):
    # The user server holds no Kubernetes credentials: no token is mounted.
    code, _ = exec_in(core, ["test", "-e", "/var/run/secrets/kubernetes.io/serviceaccount/token"])
    assert code != 0
    venv, _ = python_home()
    code, out = exec_in(core, [f"{venv}/bin/jupyter-scheduler-k8s", "run", f"{ROOT}/examples/demo/demo.ipynb",
                               "--input-folder", "-p", "scale=3", "-f", "html", "-o", "/tmp/out"])
    assert code == 0, out
    assert "report/summary.csv" in out and "done" in out
    code, out = exec_in(core, ["cat", "/tmp/out/report/summary.csv"])
    assert out.strip().splitlines()[-1] == "demo,21.0"
    assert leftovers(core, batch, JOBS_NS) == []  # pods, volumes, Jobs, CronJobs


def test_doctor_passes_then_the_gateways_fails_without_the_rolebinding(server, core, api_client):
    venv, _ = python_home()
    code, out = exec_in(core, [f"{venv}/bin/jupyter-scheduler-k8s", "doctor"])
    assert code == 0, out
    assert f"as user {USER}" in out and f"jobs namespace {JOBS_NS} ready" in out, out
    # In the gateway's pod, `doctor` checks the gateway's own identity (as its error messages say).
    code, out = exec_in(core, ["jupyter-scheduler-k8s", "doctor"], pod=gateway_pod(core))
    assert code == 0, out
    assert f"namespace={JOBS_NS}" in out and "API server" in out
    rbac = client.RbacAuthorizationV1Api(api_client)
    binding = rbac.read_namespaced_role_binding(FULLNAME, JOBS_NS)
    rbac.delete_namespaced_role_binding(FULLNAME, JOBS_NS)
    try:
        deadline = time.monotonic() + 60
        while True:  # until the API server's authorizer has seen the binding go
            code, out = exec_in(core, ["jupyter-scheduler-k8s", "doctor"], pod=gateway_pod(core))
            if code != 0 or time.monotonic() > deadline:
                break
        assert code != 0, out
        assert "missing permissions" in out and "create persistentvolumeclaims" in out
    finally:
        binding.metadata = client.V1ObjectMeta(name=FULLNAME, labels=binding.metadata.labels,
                                               annotations=binding.metadata.annotations)
        rbac.create_namespaced_role_binding(JOBS_NS, binding)


def _job(mutate):
    from jupyter_scheduler_k8s.kube import manifests, names
    name = "jsk8s-admission-probe"
    job = manifests.make_job(name, JOBS_NS, names.labels("probe", names.COMPONENT_JOB), {},
                             image="localhost/x:1", pull_policy="Never", spec={"input": "a.ipynb"},
                             container_resources=manifests.resources())
    mutate(job.spec.template.spec)
    return job


@pytest.mark.parametrize("mutate, expected", [
    (lambda s: s.volumes.append(client.V1Volume(name="h", host_path=client.V1HostPathVolumeSource(path="/etc"))), "hostPath"),
    (lambda s: s.volumes.append(client.V1Volume(name="s", secret=client.V1SecretVolumeSource(secret_name="hub"))), "ecret"),
    (lambda s: setattr(s, "service_account_name", "hub"), "ServiceAccount"),
], ids=["hostPath", "secret", "other-serviceaccount"])
def test_admission_policy_rejects_dangerous_jobs(chart, core, api_client, mutate, expected):
    batch_as_sa = client.BatchV1Api(sa_api(core, api_client))
    with pytest.raises(ApiException) as e:
        batch_as_sa.create_namespaced_job(JOBS_NS, _job(mutate), dry_run="All")
    assert e.value.status in (403, 422)
    assert expected in json.loads(e.value.body)["message"]


def test_the_gateways_account_cannot_read_secrets_or_create_pods_in_the_hub_namespace(chart, core, api_client):
    core_as_sa = client.CoreV1Api(sa_api(core, api_client))
    for forbidden in (lambda: core_as_sa.list_namespaced_secret(JOBS_NS),
                      lambda: core_as_sa.list_namespaced_secret(NS),
                      lambda: core_as_sa.create_namespaced_pod(NS, client.V1Pod(
                          metadata=client.V1ObjectMeta(name="jsk8s-sneaky"),
                          spec=client.V1PodSpec(containers=[client.V1Container(name="c", image="x")])), dry_run="All")):
        with pytest.raises(ApiException) as e:
            forbidden()
        assert e.value.status == 403


def test_uninstall_leaves_nothing_behind(chart, kubeconfig, core, api_client):
    try:
        core.delete_namespaced_pod(SERVER_POD, NS, grace_period_seconds=0)
    except ApiException:
        pass
    result = helm("uninstall", RELEASE, "-n", NS, "--wait", kubeconfig=kubeconfig)
    assert result.returncode == 0, result.stderr
    selector = f"app.kubernetes.io/instance={RELEASE}"
    admission = client.AdmissionregistrationV1Api(api_client)
    rbac = client.RbacAuthorizationV1Api(api_client)
    deadline = time.monotonic() + 60
    while True:
        left = ([p.metadata.name for p in admission.list_validating_admission_policy(label_selector=selector).items]
                + [b.metadata.name for b in admission.list_validating_admission_policy_binding(label_selector=selector).items]
                + [r.metadata.name for r in rbac.list_cluster_role(label_selector=selector).items]
                + [r.metadata.name for r in rbac.list_cluster_role_binding(label_selector=selector).items]
                + [n.metadata.name for n in core.list_namespace().items if n.metadata.name == JOBS_NS]
                + [c.metadata.name for c in core.list_namespaced_config_map(NS, label_selector=selector).items]
                + [s.metadata.name for s in core.list_namespaced_service_account(NS, label_selector=selector).items]
                + [s.metadata.name for s in core.list_namespaced_service(NS, label_selector=selector).items]
                + [p.metadata.name for p in core.list_namespaced_pod(NS, label_selector=selector).items]
                + [d.metadata.name for d in client.AppsV1Api(api_client).list_namespaced_deployment(
                    NS, label_selector=selector).items]
                + [n.metadata.name for n in client.NetworkingV1Api(api_client).list_namespaced_network_policy(
                    NS, label_selector=selector).items]
                + [b.metadata.name for b in client.PolicyV1Api(api_client).list_namespaced_pod_disruption_budget(
                    NS, label_selector=selector).items])
        if not left or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert left == []
