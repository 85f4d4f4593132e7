"""Fixtures that drive real jupyter-scheduler Schedulers against the local cluster.

The product runs as it does when installed: the chart is installed once per session, with its
jobs gateway Deployment (its image, its ServiceAccount) checking tokens with a real JupyterHub.
In hub mode, user servers hold only their hub token; in direct mode, the code under test gets a
kubeconfig holding a token of the chart's one ServiceAccount, the gateway's, so the chart's Role
and admission policies apply to every request it makes. The admin kubeconfig is for fixtures
and for inspecting the namespace only.
"""
import contextlib
import copy
import fcntl
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat
import pytest
import yaml
from jupyter_scheduler.environments import CondaEnvironmentManager
from jupyter_scheduler.models import CreateJob, Status
from jupyter_scheduler.orm import create_tables
from jupyter_scheduler.scheduler import Scheduler

TERMINAL = {Status.COMPLETED, Status.FAILED, Status.STOPPED}
ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "chart"))
import helmrender  # noqa: E402

from .hub import GATEWAY_SERVICE, Hub, InstalledGateway  # noqa: E402

# The release the product-identity tests use (test_chart_e2e installs and uninstalls its own).
RELEASE, RELEASE_NS = "installed", "jhub-installed"
FULLNAME = f"{RELEASE}-jupyter-scheduler-k8s"
GATEWAY = f"{FULLNAME}-gateway"
JOBS_NS = f"{RELEASE_NS}-jobs"


# The two lanes' processes (tests/conftest.py) share one cluster: every test holds it shared, and a
# test marked alone holds it alone, from the setup of its fixtures to their teardown: it restarts
# the API server or fills the node, or it is the browser's, whose steps a loaded machine makes
# miss. A reader-writer lock made of two flocks: a writer waiting at the turnstile stops new
# readers, so it waits for the other lane's current test, not for the whole lane.
CLUSTER_LOCK = Path(tempfile.gettempdir()) / "jsk8s-cluster-tests.lock"


@contextlib.contextmanager
def cluster_held(exclusive):
    with open(CLUSTER_LOCK.with_suffix(".turnstile"), "a") as turnstile, open(CLUSTER_LOCK, "a") as lock:
        fcntl.flock(turnstile, fcntl.LOCK_EX)
        if not exclusive:
            fcntl.flock(turnstile, fcntl.LOCK_UN)
        fcntl.flock(lock, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield   # both are released when the files close


def pytest_collection_modifyitems(items):
    """The tests that hold the cluster alone come last in their lane, when the other lane (the
    shorter) has most likely ended: then they wait for nobody, and nobody waits for them."""
    items.sort(key=lambda item: item.get_closest_marker("alone") is not None)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    with cluster_held(exclusive=item.get_closest_marker("alone") is not None):
        yield


def helm(*args, kubeconfig):
    helm_bin = helmrender.helm_path()
    assert helm_bin, "helm not built (ci/cluster/build tools)"
    return subprocess.run([helm_bin, "--kubeconfig", kubeconfig, *args], capture_output=True, text=True)


# A schedule that never comes during a run: its runs are asked for ("Run now") or made by hand.
NEVER_SOON = "0 0 1 1 *"

# Low, so that test_fair_share_e2e reaches it; no other test has more definitions of one user.
DEFINITIONS_PER_USER = 2


def chart_values_for(executor_image, gateway_image, hub):
    """The values of an install on this cluster: the locally loaded images, and the test's hub.
    Stalled transfers are cut after 20 s instead of 60 (the flood test waits that long for its
    trickles); every real transfer here moves far more than 64 KiB in 20 s."""
    executor, executor_tag = executor_image.rsplit(":", 1)
    gateway, gateway_tag = gateway_image.rsplit(":", 1)
    return ["--set", f"executor.image.name={executor}", "--set", f"executor.image.tag={executor_tag}",
            "--set", "executor.image.pullPolicy=Never",
            "--set", f"gateway.image.name={gateway}", "--set", f"gateway.image.tag={gateway_tag}",
            "--set", "gateway.image.pullPolicy=Never", "--set", f"gateway.hub.apiUrl={hub.api_url}",
            "--set", "gateway.resources.requests.cpu=50m", "--set", "gateway.idleSeconds=20",
            "--set", f"limits.definitionsPerUser={DEFINITIONS_PER_USER}"]


def hub_secret(core, namespace, hub):
    """What z2jh's chart makes from hub.services.jobs-gateway: the gateway's token in the Secret
    `hub` of the release namespace (with the namespace itself, as installing z2jh would)."""
    from kubernetes import client
    from kubernetes.client.rest import ApiException
    deadline = time.monotonic() + 180
    while True:  # an earlier session's namespace may still be terminating
        try:
            core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
            break
        except ApiException as e:
            if e.status != 409:
                raise
            if core.read_namespace(namespace).metadata.deletion_timestamp is None:
                break
        assert time.monotonic() < deadline, f"namespace {namespace} stayed terminating"
        time.sleep(1)
    core.create_namespaced_secret(namespace, client.V1Secret(
        metadata=client.V1ObjectMeta(name="hub"),
        string_data={f"hub.services.{GATEWAY_SERVICE}.apiToken": hub.gateway_token}))


@pytest.fixture(scope="session")
def hub(tmp_path_factory, api_client):
    """A real JupyterHub on the node's address (the API server's), where pods reach it."""
    from urllib.parse import urlparse
    hub = Hub(tmp_path_factory.mktemp("hub"), ip=urlparse(api_client.configuration.host).hostname).start()
    yield hub
    hub.stop()


@pytest.fixture(scope="session")
def installed_chart(kubeconfig, executor_image, gateway_image, hub, core):
    """The chart, installed as an operator would (release namespace + jobs namespace), beside a
    JupyterHub whose Secret holds the gateway's token. Removed afterwards, also when the install
    failed (a failed release and the Secret would make the next install a 409)."""
    try:
        hub_secret(core, RELEASE_NS, hub)
        result = helm("install", RELEASE, str(helmrender.CHART), "-n", RELEASE_NS, "--wait", "--timeout", "3m",
                      *chart_values_for(executor_image, gateway_image, hub), kubeconfig=kubeconfig)
        assert result.returncode == 0, result.stderr
        yield JOBS_NS
    finally:
        helm("uninstall", RELEASE, "-n", RELEASE_NS, "--wait", kubeconfig=kubeconfig)
        try:
            core.delete_namespace(RELEASE_NS)
        except Exception:  # noqa: BLE001 - best effort; the cluster is torn down after the run
            pass


def service_account_kubeconfig(api_client, core, namespace, service_account, path, seconds=4 * 3600):
    """A kubeconfig holding a token of `service_account` (what `kubectl create token` makes)."""
    from kubernetes import client
    token = core.create_namespaced_service_account_token(service_account, namespace, client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=seconds))).status.token
    cfg = api_client.configuration
    yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "jsk8s-sa",
        "clusters": [{"name": "jsk8s", "cluster": {"server": cfg.host, "certificate-authority": cfg.ssl_ca_cert}}],
        "users": [{"name": service_account, "user": {"token": token}}],
        "contexts": [{"name": "jsk8s-sa", "context": {"cluster": "jsk8s", "user": service_account,
                                                     "namespace": namespace}}],
    }, open(path, "w"))
    os.chmod(path, 0o600)
    return str(path)


@pytest.fixture(scope="session")
def product_kubeconfig(installed_chart, api_client, core, tmp_path_factory):
    """The identity the product has when installed: the chart's one ServiceAccount, the gateway's."""
    path = tmp_path_factory.mktemp("identity") / "kubeconfig"
    return service_account_kubeconfig(api_client, core, RELEASE_NS, GATEWAY, path)


@pytest.fixture(scope="session")
def gateway(installed_chart, core, api_client):
    """The installed chart's jobs gateway Deployment."""
    from kubernetes import client
    return InstalledGateway(core, client.AppsV1Api(api_client), RELEASE_NS, GATEWAY).wait_ready()


def upgrade_chart(kubeconfig, *set_args):
    """helm upgrade of the session's release, keeping its values and setting these."""
    result = helm("upgrade", RELEASE, str(helmrender.CHART), "-n", RELEASE_NS, "--reuse-values", "--wait",
                  "--timeout", "3m", *[a for kv in set_args for a in ("--set", kv)], kubeconfig=kubeconfig)
    assert result.returncode == 0, result.stderr


# Small requests, so that a few jobs at once fit this 2-core machine whatever the defaults.
TEST_RESOURCES = {"cpu_request": "100m", "memory_request": "256Mi", "memory_limit": "1Gi"}


@pytest.fixture(scope="session")
def chart_config(installed_chart, core):
    """The jupyter_server_config.json the chart hands to user servers."""
    cm = core.read_namespaced_config_map(f"{FULLNAME}-config", RELEASE_NS)
    return json.loads(cm.data["jupyter_server_config.json"])


@pytest.fixture
def make_server(tmp_path, chart_config, product_kubeconfig, jobs_namespace):
    """Starts a Jupyter server with K8sScheduler on a state dir (one per name: a restart reuses it),
    configured by the chart's ConfigMap, as the chart's ServiceAccount (or through `kubeconfig`)."""
    from .jupyter_server import JupyterServer
    started = []

    def make(name="server", recovery_interval=2, kubeconfig=None, env=None, username="e2e-user", **k8s):
        config = copy.deepcopy(chart_config)
        config["K8sConfig"].update(TEST_RESOURCES, **k8s)
        config.setdefault("K8sScheduler", {})["recovery_interval_seconds"] = recovery_interval
        server = JupyterServer(tmp_path / name, config, kubeconfig or product_kubeconfig, username=username, env=env)
        started.append(server)
        return server.start()
    yield make
    for server in started:
        server.stop()


NO_CREDENTIALS = "/nonexistent/kubeconfig"  # hub mode must not need any


@pytest.fixture
def user_server(make_server, hub):
    """A user's Jupyter server in hub mode: no Kubernetes credentials, the user's hub token."""
    def make(user, gateway, name=None):
        token = hub.user_token(user)
        server = make_server(name or user, kubeconfig=NO_CREDENTIALS, username=user, gateway_url=gateway.url,
                             env={"JUPYTERHUB_API_TOKEN": token, "JUPYTERHUB_USER": user})
        server.hub_token = token
        return server
    return make


def running_pod(core, namespace, job_id, timeout=120):
    """The job's pod, once it runs."""
    from jupyter_scheduler_k8s.kube import names
    deadline = time.monotonic() + timeout
    while True:
        pods = core.list_namespaced_pod(
            namespace, label_selector=f"{names.job_selector(job_id)},{names.LABEL_COMPONENT}={names.COMPONENT_JOB}").items
        running = [p for p in pods if p.status.phase == "Running"]
        if running:
            return running[0]
        assert time.monotonic() < deadline, f"no running pod for job {job_id}"
        time.sleep(0.5)


@pytest.fixture
def jobs_namespace(installed_chart, core, batch):
    """The installed chart's jobs namespace. Whatever a failed test left there is removed
    afterwards (as admin), so that one failure does not cascade into the next test. (A CronJob's
    Jobs go with it, so a Job listed after it may be gone by its delete.)"""
    from jupyter_scheduler_k8s.kube.clients import absent_on_404
    yield installed_chart
    for cronjob in batch.list_namespaced_cron_job(installed_chart).items:
        absent_on_404(batch.delete_namespaced_cron_job, cronjob.metadata.name, installed_chart,
                      propagation_policy="Background")
    for job in batch.list_namespaced_job(installed_chart).items:
        absent_on_404(batch.delete_namespaced_job, job.metadata.name, installed_chart, propagation_policy="Background")
    core.delete_collection_namespaced_pod(installed_chart, grace_period_seconds=0)
    core.delete_collection_namespaced_persistent_volume_claim(installed_chart)


def finished_runs(batch, namespace, definition_id) -> dict:
    """A job definition's finished run Jobs (not yet imported and deleted): {name: uid}. The uid
    is the job id the user's server gives the run when it imports it."""
    from jupyter_scheduler_k8s.kube import names
    selector = names.definition_selector(definition_id, names.COMPONENT_SCHEDULED_RUN)
    return {j.metadata.name: j.metadata.uid for j in batch.list_namespaced_job(namespace, label_selector=selector).items
            if j.status and (j.status.succeeded or j.status.failed)}


def wait_new_finished_runs(batch, namespace, definition_id, count, timeout=300) -> dict:
    """Waits (as the admin, while no server imports) until `count` more runs than now have
    finished; returns them, {name: uid}."""
    seen, before = {}, finished_runs(batch, namespace, definition_id)
    deadline = time.monotonic() + timeout
    while len(seen.keys() - before.keys()) < count:
        assert time.monotonic() < deadline, f"only {len(seen.keys() - before.keys())} new runs finished in {timeout}s"
        seen.update(finished_runs(batch, namespace, definition_id))
        time.sleep(2)
    return {name: uid for name, uid in seen.items() if name not in before}


def pod_exec(core, namespace, pod, command, timeout=60):
    """As the admin: runs a command in the pod's container; (exit code, stdout + stderr)."""
    from kubernetes.stream import stream
    ws = stream(core.connect_get_namespaced_pod_exec, pod, namespace, command=command, stdin=False,
                stdout=True, stderr=True, tty=False, _preload_content=False)
    ws.run_forever(timeout=timeout)
    return ws.returncode, ws.read_channel(1) + ws.read_channel(2)


def wait_log(core, namespace, pod, text, timeout=120) -> None:
    """As the admin: until the pod's log holds `text` (the executor logs its steps: "[jsk8s] staged",
    "[jsk8s] waiting up to ... for the outputs to be collected", "[jsk8s] collected")."""
    from kubernetes.client.rest import ApiException
    deadline = time.monotonic() + timeout
    while True:
        try:
            if text in core.read_namespaced_pod_log(pod, namespace):
                return
        except ApiException as e:
            if e.status != 400:  # 400: the container has not started yet
                raise
        assert time.monotonic() < deadline, f"{text!r} not in the log of {pod} after {timeout}s"
        time.sleep(0.5)


def write_notebook(path, *sources, kernel="python3", parameters_cell=None):
    nb = nbformat.v4.new_notebook()
    if kernel:
        nb.metadata.kernelspec = {"name": kernel, "display_name": kernel, "language": "python"}
    cells = []
    if parameters_cell is not None:
        cells.append(nbformat.v4.new_code_cell(parameters_cell, metadata={"tags": ["parameters"]}))
    cells += [nbformat.v4.new_code_cell(s) for s in sources]
    nb.cells = cells
    os.makedirs(os.path.dirname(path), exist_ok=True)
    nbformat.write(nb, path)
    return path


class SchedulerHarness:
    """A real jupyter-scheduler Scheduler with its own root dir, staging dir and SQLite DB."""

    def __init__(self, tmp_path, name, execution_manager_class, scheduler_class=Scheduler, config=None):
        self.root = tmp_path / f"{name}-root"
        self.root.mkdir()
        db_url = f"sqlite:///{tmp_path}/{name}.sqlite"
        create_tables(db_url)
        self.scheduler = scheduler_class(
            root_dir=str(self.root), environments_manager=CondaEnvironmentManager(), db_url=db_url,
            config=config, staging_path=str(tmp_path / f"{name}-staging"))
        if execution_manager_class is not None:
            self.scheduler.execution_manager_class = execution_manager_class

    def submit(self, input_uri, **kwargs):
        kwargs.setdefault("runtime_environment_name", "default")
        kwargs.setdefault("name", os.path.splitext(os.path.basename(input_uri))[0])
        kwargs.setdefault("output_formats", ["ipynb"])
        return self.scheduler.create_job(CreateJob(input_uri=input_uri, **kwargs))

    def wait(self, job_id, timeout=240):
        deadline = time.monotonic() + timeout
        while True:
            job = self.scheduler.get_job(job_id, job_files=False)
            # New jobs read STOPPED until the executor's before_start runs (jupyter-scheduler #451).
            if job.status in TERMINAL and (job.status != Status.STOPPED or job.start_time):
                return job
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} still {job.status} after {timeout}s")
            time.sleep(0.5)

    def staging_dir(self, job):
        return os.path.dirname(self.scheduler.get_staging_paths(job)["input"])

    def output(self, job, fmt):
        return self.scheduler.get_staging_paths(job)[fmt]


@pytest.fixture
def k8s_env(monkeypatch, product_kubeconfig, jobs_namespace, executor_image):
    """Environment for the K8sExecutionManager in jupyter-scheduler's spawned child process,
    which sees no traitlets config: the K8S_* fallbacks carry it. Small requests, so that the
    tests fit this machine whatever the defaults."""
    monkeypatch.setenv("KUBECONFIG", product_kubeconfig)
    monkeypatch.setenv("K8S_NAMESPACE", jobs_namespace)
    monkeypatch.setenv("K8S_IMAGE", executor_image)
    monkeypatch.setenv("K8S_IMAGE_PULL_POLICY", "Never")
    monkeypatch.setenv("K8S_EXECUTOR_CPU_REQUEST", "100m")
    monkeypatch.setenv("K8S_EXECUTOR_MEMORY_REQUEST", "256Mi")
    monkeypatch.setenv("K8S_EXECUTOR_MEMORY_LIMIT", "1Gi")
    return jobs_namespace


@pytest.fixture
def k8s_scheduler(tmp_path, k8s_env):
    from jupyter_scheduler_k8s.executors import K8sExecutionManager
    return SchedulerHarness(tmp_path, "k8s", K8sExecutionManager)


@pytest.fixture
def local_scheduler(tmp_path):
    from jupyter_scheduler.executors import DefaultExecutionManager
    return SchedulerHarness(tmp_path, "local", DefaultExecutionManager)


def leftovers(core, batch, namespace):
    """The job objects still in the namespace (after giving garbage collection, and a pod's
    graceful end on a busy node, a moment)."""
    deadline = time.monotonic() + 60
    while True:
        left = ([p.metadata.name for p in core.list_namespaced_pod(namespace).items]
                + [c.metadata.name for c in core.list_namespaced_persistent_volume_claim(namespace).items]
                + [j.metadata.name for j in batch.list_namespaced_job(namespace).items]
                + [c.metadata.name for c in batch.list_namespaced_cron_job(namespace).items])
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.5)


@pytest.fixture(scope="session")
def jupyterhub(kubeconfig, core, executor_image, gateway_image, z2jh_images, tmp_path_factory):
    """JupyterHub's own chart with ours beside it, as the README installs them (z2jh.py), shared by
    the z2jh tests and the browser's."""
    from .z2jh import Z2jhInstall, our_values
    install = Z2jhInstall(kubeconfig, core, tmp_path_factory.mktemp("z2jh"), z2jh_images)
    try:
        install.install(our_values(executor_image, gateway_image))
        yield install
    finally:
        install.uninstall()
