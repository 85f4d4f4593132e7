"""An API server in trouble, between K8sScheduler (in a real Jupyter server, as the chart's
ServiceAccount) and the real API server: a proxy on loopback that the test owns (faultproxy.py)
answers 500, 503 and 429, resets, delays and cuts connections, or black-holes them. No job is
lost, nothing is left behind, and the Jupyter server keeps answering. The API server is also
killed and started again, and so is the Jupyter server, in the middle of transfers."""
import os
import subprocess
import threading
import time
import urllib.error
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

from jupyter_scheduler_k8s.kube import names

from .conftest import ROOT, leftovers, pod_exec, write_notebook
from .faultproxy import BLACKHOLE, FAULTS, FAULTY, PASS, FaultProxy

pytestmark = pytest.mark.e2e

FAULTY_JOBS = 30


@pytest.fixture
def proxy(api_client, kubeconfig):
    """Listens on 127.0.0.1 with the API server's own serving certificate (the test runs as root
    on the machine that runs the cluster, as the fixtures that start it do)."""
    cfg = api_client.configuration
    upstream = urlparse(cfg.host)
    pki = Path(kubeconfig).parent / "pki"
    proxy = FaultProxy(upstream.hostname, upstream.port, str(pki / "apiserver.crt"), str(pki / "apiserver.key"),
                       cfg.ssl_ca_cert).start()
    yield proxy
    proxy.close()


@pytest.fixture
def proxied_kubeconfig(product_kubeconfig, proxy, tmp_path):
    """The chart's ServiceAccount, reaching the API server through the proxy."""
    data = yaml.safe_load(open(product_kubeconfig))
    data["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{proxy.port}"
    path = tmp_path / "proxied-kubeconfig"
    path.write_text(yaml.safe_dump(data))
    os.chmod(path, 0o600)
    return str(path)


def _wait_empty(core, batch, namespace, timeout=180):
    deadline = time.monotonic() + timeout
    while leftovers(core, batch, namespace) and time.monotonic() < deadline:
        time.sleep(1)
    return leftovers(core, batch, namespace)


@pytest.mark.alone  # its 30 jobs fill the node: the other lane's pods would wait
def test_api_faults_lose_no_job(make_server, proxy, proxied_kubeconfig, core, batch, jobs_namespace):
    """Faults on about one connection in three, for the whole life of 30 jobs: submit, the watch,
    stage-in, collection and cleanup all meet them. Every job completes with all its files."""
    server = make_server(kubeconfig=proxied_kubeconfig)
    write_notebook(str(server.root / "faulty.ipynb"),
                   "import os\nos.makedirs('out', exist_ok=True)\n"
                   "open('out/side.txt', 'w').write('side effect')\nprint('done')")
    proxy.mode = FAULTY
    ids = [server.create_job("faulty.ipynb", output_formats=["ipynb", "html"]) for _ in range(FAULTY_JOBS)]
    jobs = [server.wait(job_id, timeout=1200) for job_id in ids]
    proxy.mode = PASS
    print(f"faults injected: {dict(proxy.counts)}")
    assert {j["job_id"]: j["status_message"] for j in jobs if j["status"] != "COMPLETED"} == {}
    for job in jobs:
        staging = server.staging_dir(job["job_id"])
        assert {".ipynb", ".html", ".log"} <= {p.suffix for p in staging.iterdir()}, job["job_id"]
        assert (staging / "out" / "side.txt").read_text() == "side effect"
        assert "done" in server.output(job, "log").read_text()
    assert set(proxy.counts) == set(FAULTS) and sum(proxy.counts.values()) >= 20
    assert _wait_empty(core, batch, jobs_namespace) == []


def test_black_holed_api_server_does_not_freeze_the_jupyter_server(make_server, proxy, proxied_kubeconfig, core,
                                                                   batch, jobs_namespace):
    """The API server stops answering while a job runs and the user stops it: the Jupyter server
    still answers at once. When the API server is back, the stop goes through."""
    server = make_server(kubeconfig=proxied_kubeconfig)
    write_notebook(str(server.root / "sleepy.ipynb"), "import time; time.sleep(600)")
    job_id = server.create_job("sleepy.ipynb")
    server.wait(job_id, until=("IN_PROGRESS",))
    deadline = time.monotonic() + 120
    while not [p for p in core.list_namespaced_pod(jobs_namespace, label_selector=f"{names.LABEL_COMPONENT}="
                                                   f"{names.COMPONENT_JOB}").items if p.status.phase == "Running"]:
        assert time.monotonic() < deadline, "the job's pod never ran"
        time.sleep(0.5)
    proxy.mode = BLACKHOLE
    stop_errors = []

    def stop():
        try:
            server.stop_job(job_id)
        except (urllib.error.URLError, TimeoutError) as e:  # the stop itself may take long: fine
            stop_errors.append(e)
    stopper = threading.Thread(target=stop)
    stopper.start()
    deadline = time.monotonic() + 60
    while server.job(job_id)["status"] != "STOPPING":  # the stop has begun: next, Kubernetes
        assert time.monotonic() < deadline, "the stop never began"
        time.sleep(0.1)
    # The server answers while the stop is held (each request would time out otherwise).
    for path in ("/api/status", "/scheduler/jobs", f"/scheduler/jobs/{job_id}"):
        server.request("GET", path)
    assert stopper.is_alive(), "the stop did not wait on the black hole: nothing was shown"
    proxy.mode = PASS
    stopper.join(180)
    assert server.wait(job_id, timeout=180)["status"] == "STOPPED"
    assert _wait_empty(core, batch, jobs_namespace) == []


# ---- restarts: the API server, and the Jupyter server itself ----------------------------------------------

BIG_MB = 120  # enough that a transfer takes a few seconds on this machine, so a restart lands inside it
BIG_OUTPUT = (f"import os\nos.makedirs('out', exist_ok=True)\n"
              f"open('out/big.bin', 'wb').write(os.urandom({BIG_MB} << 20))\nprint('wrote')")


def _restart_api_server():
    result = subprocess.run([str(ROOT / "ci" / "cluster" / "restart-apiserver")], capture_output=True, text=True,
                            timeout=180)
    assert result.returncode == 0, result.stderr


def _when_pod(core, namespace, ready, timeout=180, component=names.COMPONENT_JOB):
    """Waits until the job's pod (or with `component`, the pod that holds its volume) is running
    (ready=False) or ready (ready=True), as admin."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            pods = core.list_namespaced_pod(namespace, label_selector=f"{names.LABEL_COMPONENT}={component}").items
        except Exception:  # noqa: BLE001 - the API server may be coming back from a restart
            pods = []
        for pod in pods:
            statuses = pod.status.container_statuses or []
            if statuses and statuses[0].state.running and (statuses[0].ready or not ready):
                return pod
        time.sleep(0.1)
    raise AssertionError(f"no job pod {'ready' if ready else 'running'} after {timeout}s")


def _assert_big_outputs(server, job):
    assert job["status"] == "COMPLETED", job["status_message"]
    staging = server.staging_dir(job["job_id"])
    assert (staging / "out" / "big.bin").stat().st_size == BIG_MB << 20
    assert "wrote" in server.output(job, "log").read_text()


@pytest.mark.alone  # restarts kube-apiserver
def test_api_server_restarts_mid_job_and_mid_collection(make_server, core, batch, jobs_namespace):
    """kube-apiserver is killed (SIGKILL) and started again while the notebook runs, and again
    while the outputs stream back. The job completes with all of them."""
    server = make_server()
    write_notebook(str(server.root / "big.ipynb"), "import time; time.sleep(8)", BIG_OUTPUT)
    job_id = server.create_job("big.ipynb")
    _when_pod(core, jobs_namespace, ready=False)
    _restart_api_server()  # mid-job
    _when_pod(core, jobs_namespace, ready=True)
    _restart_api_server()  # mid-collection
    _assert_big_outputs(server, server.wait(job_id, timeout=600))
    assert _wait_empty(core, batch, jobs_namespace) == []


def test_server_killed_during_stage_in_and_again_during_collection(make_server, core, batch, jobs_namespace):
    """The Jupyter server is SIGKILLed while it sends a large input folder (into the pod that holds
    the job's volume, before the Job may run), and the next one while it collects large outputs:
    each time the server that starts again on the same state picks the job up, and it completes."""
    server = make_server()
    (server.root / "data").mkdir()
    (server.root / "data" / "input.bin").write_bytes(os.urandom(BIG_MB << 20))
    write_notebook(str(server.root / "big.ipynb"),
                   f"import os; assert os.path.getsize('data/input.bin') == {BIG_MB << 20}", BIG_OUTPUT)
    job_id = server.create_job("big.ipynb", package_input_folder=True)
    holder = _when_pod(core, jobs_namespace, ready=False, component=names.COMPONENT_COLLECTOR).metadata.name
    deadline = time.monotonic() + 120
    while pod_exec(core, jobs_namespace, holder, ["test", "-s", "/job/work/data/input.bin"])[0] != 0:
        assert time.monotonic() < deadline, "stage-in never began"
    server.kill()  # stage-in has begun; it had not ended:
    assert pod_exec(core, jobs_namespace, holder, ["test", "-e", "/job/.staged"])[0] != 0
    (job,) = batch.list_namespaced_job(jobs_namespace, label_selector=names.job_selector(job_id)).items
    assert job.spec.suspend and names.ANNOTATION_STAGING in job.metadata.annotations  # it may not run yet
    restarted = make_server()
    pod = _when_pod(core, jobs_namespace, ready=True).metadata.name
    collected = restarted.staging_dir(job_id) / "out" / "big.bin"
    deadline = time.monotonic() + 120
    while not (collected.exists() and collected.stat().st_size):
        assert time.monotonic() < deadline, "the collection never began"
        time.sleep(0.05)
    restarted.kill()  # the collection has begun; it had not ended (the pod was not released):
    assert pod_exec(core, jobs_namespace, pod, ["test", "-e", "/job/.collected"])[0] != 0
    again = make_server()
    _assert_big_outputs(again, again.wait(job_id, timeout=600))
    assert _wait_empty(core, batch, jobs_namespace) == []
