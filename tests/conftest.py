"""Fixtures shared by the test tiers. Cluster access is set up inside fixtures, never at import
time, so the unit tier collects and runs on a machine with no cluster."""
import os
import uuid
from pathlib import Path

import pytest

DEFAULT_KUBECONFIG = "/var/lib/jupyter-scheduler-k8s/cluster/kubeconfig"

# ci/test-all runs the cluster tiers in two lanes at once (pytest-xdist, `-n 2`): the files that
# install releases of their own (namespaces, a hub: the z2jh install, and the chart installed and
# uninstalled), beside all the others, which share the session's installed chart. Both lanes
# mostly wait on the cluster, so together they take about as long as the longer one (the shared
# install's). Tests that disturb the whole cluster hold it alone (tests/e2e/conftest.py).
OWN_LANE = {"test_z2jh_e2e.py", "test_z2jh_browser_e2e.py", "test_chart_e2e.py"}


def pytest_xdist_make_scheduler(config, log):
    """Each lane is one unit of work, so it runs whole on one worker, in order; other tiers run
    with -n by module. (Not `--dist loadgroup` with marks: with pytest 9.2 it silently stops
    grouping, pytest-xdist#1386.)"""
    from xdist.scheduler import LoadScopeScheduling

    class Lanes(LoadScopeScheduling):
        def _split_scope(self, nodeid):
            path = Path(nodeid.split("::")[0])
            if path.parent.name not in ("cluster", "e2e"):
                return super()._split_scope(nodeid)   # the tiers without a cluster: by module
            return "own releases" if path.name in OWN_LANE else "shared install"
    return Lanes(config, log)


def _missing(what: str):
    # In CI a missing cluster is a failure: a skipped e2e test is not a passed one.
    if os.environ.get("CI"):
        pytest.fail(f"{what} (CI is set, so this fails instead of skipping)")
    pytest.skip(what)


@pytest.fixture(scope="session")
def kubeconfig():
    path = os.environ.get("JSK8S_KUBECONFIG", DEFAULT_KUBECONFIG)
    if not os.path.exists(path):
        _missing(f"no local cluster: {path} does not exist (run ci/cluster/up)")
    return path


@pytest.fixture(scope="session")
def api_client(kubeconfig):
    from kubernetes import client, config

    configuration = client.Configuration()
    config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    api = client.ApiClient(configuration)
    try:
        client.VersionApi(api).get_code()
    except Exception as e:  # noqa: BLE001 - any failure here means "no cluster"
        _missing(f"the local cluster's API server is not reachable: {e}")
    return api


@pytest.fixture(scope="session")
def core(api_client):
    from kubernetes import client
    return client.CoreV1Api(api_client)


@pytest.fixture(scope="session")
def batch(api_client):
    from kubernetes import client
    return client.BatchV1Api(api_client)


@pytest.fixture(scope="session")
def rbac(api_client):
    from kubernetes import client
    return client.RbacAuthorizationV1Api(api_client)


@pytest.fixture
def namespace(core):
    """A fresh namespace, labelled Pod Security "restricted"; deleted afterwards unless
    JSK8S_KEEP_NAMESPACES is set (for debugging)."""
    from kubernetes import client
    name = f"t-{uuid.uuid4().hex[:10]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(
        name=name, labels={"pod-security.kubernetes.io/enforce": "restricted"})))
    # The default ServiceAccount appears asynchronously; pods cannot be created before it.
    import time
    for _ in range(100):
        if core.list_namespaced_service_account(name).items:
            break
        time.sleep(0.1)
    yield name
    if not os.environ.get("JSK8S_KEEP_NAMESPACES"):
        core.delete_namespace(name, grace_period_seconds=0)


@pytest.fixture(scope="session")
def busybox_image():
    return os.environ.get("JSK8S_BUSYBOX_IMAGE", "localhost/jsk8s-busybox:1.35")


def loaded_images() -> dict:
    """The images ci/test-all and `make load-image` load into the cluster, by target
    ($JSK8S_<TARGET>_IMAGE, else the names and tags ci/image/build gives them)."""
    from jupyter_scheduler_k8s import __version__
    defaults = {"executor": f"localhost/jupyter-scheduler-k8s-executor:{__version__}",
                "gateway": f"localhost/jupyter-scheduler-k8s-gateway:{__version__}",
                "user": f"localhost/jupyter-scheduler-k8s-user:{__version__}",
                "hub": "localhost/jsk8s-z2jh-hub:4.4.0",
                "proxy": "localhost/jsk8s-z2jh-proxy:5.2.0"}
    return {target: os.environ.get(f"JSK8S_{target.upper()}_IMAGE", name) for target, name in defaults.items()}


@pytest.fixture(scope="session")
def executor_image():
    return loaded_images()["executor"]


@pytest.fixture(scope="session")
def gateway_image():
    return loaded_images()["gateway"]


@pytest.fixture(scope="session")
def z2jh_images():
    """The images of the JupyterHub install: user server, hub, proxy."""
    return {target: name for target, name in loaded_images().items() if target in ("user", "hub", "proxy")}
