"""Smoke tests of the local cluster itself (ci/cluster): the Kubernetes behaviour the product
relies on, proven on a real API server, kubelet and container runtime."""
import io
import os
import tarfile
import time

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException
from kubernetes.stream import stream

from .helpers import phase_in, pod, running, wait_pod

pytestmark = pytest.mark.e2e


def test_node_ready(core):
    nodes = core.list_node().items
    assert len(nodes) == 1
    ready = {c.type: c.status for c in nodes[0].status.conditions}["Ready"]
    assert ready == "True"


def test_pod_runs_and_logs_are_readable(core, namespace, busybox_image):
    core.create_namespaced_pod(namespace, pod("hello", busybox_image, ["sh", "-c", "echo hello from $(id -u)"]))
    wait_pod(core, namespace, "hello", phase_in("Succeeded"))
    assert core.read_namespaced_pod_log("hello", namespace) == "hello from 1000\n"


def _exec(core, namespace, name, command, stdin: bytes = b""):
    ws = stream(core.connect_get_namespaced_pod_exec, name, namespace, command=command, stdin=True,
                stdout=True, stderr=True, tty=False, _preload_content=False, binary=True)
    assert ws.subprotocol == "v5.channel.k8s.io"
    for i in range(0, len(stdin), 65536):
        ws.write_stdin(stdin[i:i + 65536])
    ws.close_channel(0)  # half-close: the command sees end of input
    out = b""
    while ws.is_open():
        ws.update(timeout=5)
        out += ws.read_channel(1)
    out += ws.read_channel(1)
    assert ws.returncode == 0, ws.read_channel(2)
    return out


def test_exec_stdin_tar_round_trip_is_byte_exact(core, namespace, busybox_image):
    core.create_namespaced_pod(namespace, pod("box", busybox_image, ["sleep", "3600"]))
    wait_pod(core, namespace, "box", running)
    files = {"a.bin": os.urandom(3 * 1024 * 1024 + 17), "dir/ü ñ.txt": "héllo\n".encode(), "empty": b""}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    _exec(core, namespace, "box", ["sh", "-c", "mkdir -p /tmp/in && tar -x -C /tmp/in"], buf.getvalue())
    out = _exec(core, namespace, "box", ["tar", "-c", "-C", "/tmp/in", "."])
    got = {}
    with tarfile.open(fileobj=io.BytesIO(out)) as tar:
        for m in tar:
            if m.isfile():
                got[os.path.normpath(m.name)] = tar.extractfile(m).read()
    assert got == files


def test_pvc_binds_and_non_root_can_write(core, namespace, busybox_image):
    core.create_namespaced_persistent_volume_claim(namespace, client.V1PersistentVolumeClaim(
        metadata=client.V1ObjectMeta(name="data"),
        spec=client.V1PersistentVolumeClaimSpec(
            access_modes=["ReadWriteOnce"], resources=client.V1VolumeResourceRequirements(requests={"storage": "10Mi"}))))
    core.create_namespaced_pod(namespace, pod(
        "writer", busybox_image, ["sh", "-c", "echo ok > /data/f && cat /data/f && id -u"],
        volumes=[client.V1Volume(name="d", persistent_volume_claim=client.V1PersistentVolumeClaimVolumeSource(claim_name="data"))],
        mounts=[client.V1VolumeMount(name="d", mount_path="/data")]))
    wait_pod(core, namespace, "writer", phase_in("Succeeded", "Failed"))
    assert core.read_namespaced_persistent_volume_claim("data", namespace).status.phase == "Bound"
    assert core.read_namespaced_pod_log("writer", namespace) == "ok\n1000\n"


def test_job_completes(batch, namespace, busybox_image):
    template = pod("x", busybox_image, ["sh", "-c", "echo done"])
    batch.create_namespaced_job(namespace, client.V1Job(
        metadata=client.V1ObjectMeta(name="j"),
        spec=client.V1JobSpec(backoff_limit=0, template=client.V1PodTemplateSpec(spec=template.spec))))
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        status = batch.read_namespaced_job("j", namespace).status
        if status.succeeded:
            return
        assert not status.failed
        time.sleep(0.5)
    pytest.fail("the Job did not complete")


def _token_client(api_client, token):
    cfg = client.Configuration()
    cfg.host = api_client.configuration.host
    cfg.ssl_ca_cert = api_client.configuration.ssl_ca_cert
    cfg.api_key = {"authorization": f"Bearer {token}"}
    return client.CoreV1Api(client.ApiClient(cfg))


def test_service_account_token_is_bound_by_rbac(api_client, core, rbac, namespace):
    core.create_namespaced_service_account(namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="reader")))
    rbac.create_namespaced_role(namespace, client.V1Role(
        metadata=client.V1ObjectMeta(name="pod-reader"),
        rules=[client.V1PolicyRule(api_groups=[""], resources=["pods"], verbs=["get", "list"])]))
    rbac.create_namespaced_role_binding(namespace, client.V1RoleBinding(
        metadata=client.V1ObjectMeta(name="pod-reader"),
        role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="Role", name="pod-reader"),
        subjects=[client.RbacV1Subject(kind="ServiceAccount", name="reader", namespace=namespace)]))
    token = core.create_namespaced_service_account_token("reader", namespace, client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=600))).status.token
    as_sa = _token_client(api_client, token)
    as_sa.list_namespaced_pod(namespace)  # allowed by the Role
    for forbidden in (lambda: as_sa.list_namespaced_secret(namespace), lambda: as_sa.list_namespaced_pod("default")):
        with pytest.raises(ApiException) as e:
            forbidden()
        assert e.value.status == 403


IN_CLUSTER_PROBE = """
import json, ssl, urllib.request, os
sa = "/var/run/secrets/kubernetes.io/serviceaccount"
ns = open(sa + "/namespace").read()
ctx = ssl.create_default_context(cafile=sa + "/ca.crt")
def get(path):
    req = urllib.request.Request("https://%s:%s%s" % (os.environ["KUBERNETES_SERVICE_HOST"],
        os.environ["KUBERNETES_SERVICE_PORT"], path), headers={"Authorization": "Bearer " + open(sa + "/token").read()})
    try:
        return urllib.request.urlopen(req, context=ctx, timeout=10).status
    except urllib.error.HTTPError as e:
        return e.code
print(get("/api/v1/namespaces/%s/pods" % ns), get("/api/v1/namespaces/%s/secrets" % ns))
"""


def test_in_cluster_client_reaches_the_api_server_through_the_kubernetes_service(
        core, rbac, namespace, executor_image):
    core.create_namespaced_service_account(namespace, client.V1ServiceAccount(metadata=client.V1ObjectMeta(name="incluster")))
    rbac.create_namespaced_role(namespace, client.V1Role(
        metadata=client.V1ObjectMeta(name="pods"),
        rules=[client.V1PolicyRule(api_groups=[""], resources=["pods"], verbs=["list"])]))
    rbac.create_namespaced_role_binding(namespace, client.V1RoleBinding(
        metadata=client.V1ObjectMeta(name="pods"),
        role_ref=client.V1RoleRef(api_group="rbac.authorization.k8s.io", kind="Role", name="pods"),
        subjects=[client.RbacV1Subject(kind="ServiceAccount", name="incluster", namespace=namespace)]))
    core.create_namespaced_pod(namespace, pod("probe", executor_image, ["python3", "-c", IN_CLUSTER_PROBE],
                                              sa="incluster", automount=True))
    wait_pod(core, namespace, "probe", phase_in("Succeeded", "Failed"), timeout=120)
    assert core.read_namespaced_pod_log("probe", namespace).split() == ["200", "403"]


def test_cluster_ip_service_reaches_a_pod(core, namespace, busybox_image):
    core.create_namespaced_pod(namespace, pod("web", busybox_image, ["sh", "-c", "mkdir -p /tmp/w && echo pong > /tmp/w/ping && httpd -f -p 8080 -h /tmp/w"],
                                              labels={"app": "web"}))
    svc = core.create_namespaced_service(namespace, client.V1Service(
        metadata=client.V1ObjectMeta(name="web"),
        spec=client.V1ServiceSpec(selector={"app": "web"}, ports=[client.V1ServicePort(port=80, target_port=8080)])))
    wait_pod(core, namespace, "web", running)
    ip = svc.spec.cluster_ip
    core.create_namespaced_pod(namespace, pod("client", busybox_image, ["sh", "-c", 
        # nc, not wget: Debian's static busybox crashes in wget's service-name lookup.
        f"for i in 1 2 3 4 5 6 7 8 9 10; do printf 'GET /ping HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {ip} 80 | tail -1 | grep . && exit 0; sleep 1; done; exit 1"]))
    wait_pod(core, namespace, "client", phase_in("Succeeded", "Failed"))
    assert core.read_namespaced_pod_log("client", namespace).strip() == "pong"


def test_extended_gpu_resource_schedules_and_overcommit_is_unschedulable(core, namespace, busybox_image):
    core.create_namespaced_pod(namespace, pod("gpu1", busybox_image, ["sh", "-c", "echo ok"], limits={"nvidia.com/gpu": "1"}))
    core.create_namespaced_pod(namespace, pod("gpu2", busybox_image, ["sh", "-c", "echo ok"], limits={"nvidia.com/gpu": "2"}))
    wait_pod(core, namespace, "gpu1", phase_in("Succeeded"))

    def unschedulable(p):
        return any(c.type == "PodScheduled" and c.status == "False" and c.reason == "Unschedulable"
                   for c in p.status.conditions or [])
    p = wait_pod(core, namespace, "gpu2", unschedulable, timeout=60)
    assert p.status.phase == "Pending"
    assert "nvidia.com/gpu" in [c.message for c in p.status.conditions if c.type == "PodScheduled"][0]


def test_cluster_dns_resolves_service_names(core, namespace, busybox_image, executor_image):
    """CoreDNS (a cluster process on the node address) answers cluster names: a Service's full
    name, and its short name through the pod's search path (glibc's resolver, in the executor
    image), as charts that name each other's Services (z2jh's hub, proxy-api) need. Names outside
    the cluster get no answer."""
    svc = core.create_namespaced_service(namespace, client.V1Service(
        metadata=client.V1ObjectMeta(name="named"),
        spec=client.V1ServiceSpec(selector={"app": "none"}, ports=[client.V1ServicePort(port=80)])))
    core.create_namespaced_pod(namespace, pod("lookup", executor_image, ["python3", "-c", (
        "import socket\n"
        f"for name in ('named', 'named.{namespace}', 'named.{namespace}.svc.cluster.local', 'kubernetes.default'):\n"
        "    print(name, socket.gethostbyname(name))\n"
        "try:\n"
        "    print('outside', socket.gethostbyname('example.org'))\n"
        "except OSError:\n"
        "    print('outside', 'unresolved')\n")]))
    wait_pod(core, namespace, "lookup", phase_in("Succeeded", "Failed"), timeout=120)
    answers = dict(line.split() for line in core.read_namespaced_pod_log("lookup", namespace).splitlines())
    kubernetes_ip = core.read_namespaced_service("kubernetes", "default").spec.cluster_ip
    assert answers == {"named": svc.spec.cluster_ip, f"named.{namespace}": svc.spec.cluster_ip,
                       f"named.{namespace}.svc.cluster.local": svc.spec.cluster_ip,
                       "kubernetes.default": kubernetes_ip, "outside": "unresolved"}, answers
