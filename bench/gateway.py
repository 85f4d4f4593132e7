"""bench/gateway: hub mode (K8sScheduler -> jobs gateway -> Kubernetes, the token checked by a
real JupyterHub) beside direct mode (K8sScheduler -> Kubernetes) and jupyter-scheduler's local
executor, in one run on the local cluster. Reports
  - the submit -> COMPLETED median of a one-cell notebook, interleaved: hub / direct (goal <= 1.10)
    and hub / local (goal <= 0.85);
  - the gateway's RSS with U users x J sleeping jobs in flight (goal <= 250 MB);
  - an input folder of M MB staged through the gateway: MB/s (goal >= 50) and the gateway's RSS
    growth (goal <= 50 MB).
With --flood, instead: Bob's one-cell job, submit -> outputs staged, alone and while Alice floods
the gateway (40 holder starts, 10 trickled uploads and 20 log reads at once, a fresh burst for
each of Bob's runs), interleaved: flooded / alone (goal <= 1.5).
The gateway runs as a process with the admin kubeconfig (a benchmark, not a test of rights: the
e2e tests run it as the chart installs it), so that its RSS can be read."""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.concurrency import bench_cluster, delete_namespace  # noqa: E402
from bench.overhead import interleaved_medians  # noqa: E402
from tests.e2e.conftest import SchedulerHarness, write_notebook  # noqa: E402
from bench.overhead import staged  # noqa: E402
from tests.e2e.hub import GATEWAY_SERVICE, Hub, call, trickle_upload, wait_http  # noqa: E402
from tests.e2e.processes import ManagedProcess, free_port  # noqa: E402

RESOURCES = {"cpu_request": "50m", "memory_request": "128Mi", "memory_limit": "512Mi"}


class GatewayProcess(ManagedProcess):
    """`jupyter-scheduler-k8s gateway`, with the chart's server config and a kubeconfig."""
    stop_seconds = 10

    def __init__(self, state: Path, config: dict, kubeconfig: str, hub_api_url: str, service_token: str):
        super().__init__()
        self.state = Path(state)
        self.log_path = self.state / "gateway.log"
        self.state.mkdir(parents=True, exist_ok=True)
        self.config, self.kubeconfig = config, kubeconfig
        self.hub_api_url, self.service_token = hub_api_url, service_token
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/services/{GATEWAY_SERVICE}/"
        self.api = self.url + "api/v1/"

    def start(self) -> "GatewayProcess":
        config_dir = self.state / "config"
        config_dir.mkdir(exist_ok=True)
        (config_dir / "jupyter_server_config.json").write_text(json.dumps(self.config, indent=1))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("K8S_", "JSK8S_", "JUPYTER"))}
        env.update(JUPYTER_CONFIG_DIR=str(config_dir), KUBECONFIG=self.kubeconfig,
                   JUPYTERHUB_API_URL=self.hub_api_url, JUPYTERHUB_API_TOKEN=self.service_token,
                   JUPYTERHUB_SERVICE_NAME=GATEWAY_SERVICE, JUPYTERHUB_SERVICE_PREFIX=f"/services/{GATEWAY_SERVICE}/")
        log = self.log_path
        self.process = subprocess.Popen(
            [sys.executable, "-m", "jupyter_scheduler_k8s.cli", "gateway", "--ip", "127.0.0.1", "--port", str(self.port)],
            env=env, stdout=open(log, "ab"), stderr=subprocess.STDOUT)
        wait_http(self.api + "health", self.process, log)
        return self


def rss_mb(process) -> float:
    return psutil.Process(process.pid).memory_info().rss / 2 ** 20


def flood_bench(core, args, gateway, hub, hub_harness):
    """Bob's one-cell job alone and under a fresh burst of Alice's flood, interleaved."""
    import statistics
    import uuid

    from jupyter_scheduler_k8s.kube import names

    alice, bob = hub_harness("alice"), hub_harness("bob")
    token = hub.user_token("alice")
    definition = str(uuid.uuid4())
    status, answer, _ = call(f"{gateway.api}definitions/{definition}", "PUT", token, {"definition": {
        "input_file": "nap.ipynb", "outputs": {"ipynb": "nap.ipynb"}, "log_name": "nap.log",
        "schedule": "0 0 1 1 *", "timezone": "UTC", "active": False}})
    assert status == 201, answer
    write_notebook(str(alice.root / "nap.ipynb"), "import time; time.sleep(3600)")
    napping = alice.submit("nap.ipynb")
    deadline = time.monotonic() + 180
    while True:
        pods = [p for p in core.list_namespaced_pod(args.namespace, label_selector=names.job_selector(napping)).items
                if p.status.phase == "Running"]
        if pods:
            pod = pods[0].metadata.name
            break
        assert time.monotonic() < deadline, "Alice's job did not start"
        time.sleep(0.5)

    def burst():
        threads = [threading.Thread(target=call, args=(f"{gateway.api}definitions/{definition}/holder", "POST",
                                                       token, {}), kwargs={"timeout": 300}) for _ in range(40)]
        threads += [threading.Thread(target=trickle_upload, args=(f"{gateway.api}jobs/{napping}/pods/{pod}/input", token,
                                                            [])) for _ in range(10)]
        threads += [threading.Thread(target=call, args=(f"{gateway.api}jobs/{napping}/pods/{pod}/log",), kwargs={
            "token": token, "timeout": 300}) for _ in range(20)]
        for thread in threads:
            thread.start()
        return threads

    write_notebook(str(bob.root / "one.ipynb"), "1 + 1")
    times = {"alone": [], "flooded": []}
    for i in range(args.runs + 1):
        for name in times:
            flood = burst() if name == "flooded" else []
            start = time.monotonic()
            staged(bob, bob.submit("one.ipynb"))
            if i:
                times[name].append(time.monotonic() - start)
            for thread in flood:  # the next run gets a fresh burst (trickles are cut after idle_seconds)
                thread.join(600)
    medians = {name: statistics.median(t) for name, t in times.items()}
    print(f"Bob's one-cell notebook, submit -> outputs staged, {args.runs} runs each, interleaved after a warm-up:")
    for name, t in times.items():
        print(f"  {name:8s}: median {medians[name]:.2f}s  (min {min(t):.2f}s, max {max(t):.2f}s)")
    print(f"  ratio flooded/alone: {medians['flooded'] / medians['alone']:.2f}  (goal <= 1.5)")
    alice.scheduler.stop_job(napping)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--users", type=int, default=10)
    parser.add_argument("--jobs-per-user", type=int, default=5)
    parser.add_argument("--input-mb", type=int, default=500)
    parser.add_argument("--namespace", default="jsk8s-bench")
    parser.add_argument("--flood", action="store_true", help="Bob's job time with and without Alice's flood")
    args = parser.parse_args()

    from jupyter_scheduler.executors import DefaultExecutionManager
    from traitlets.config import Config

    from jupyter_scheduler_k8s.scheduler import K8sScheduler

    core, direct_config = bench_cluster(args.namespace)
    direct_config.K8sConfig.update(RESOURCES)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        hub = Hub(tmp / "hub").start()
        server_config = {"K8sConfig": dict(direct_config.K8sConfig, storage_size="2Gi",
                                           output_size_limit=2 * 1024 ** 3),
                         "GatewayConfig": {} if args.flood else {"input_size_limit": 2 * 1024 ** 3,
                                                                  "streams_per_user": 16}}
        gateway = GatewayProcess(tmp / "gateway", server_config, os.environ["KUBECONFIG"], hub.api_url,
                                 hub.gateway_token).start()
        schedulers = []
        try:
            def hub_harness(user):
                c = Config()
                c.K8sConfig.update(RESOURCES, namespace=args.namespace, image=direct_config.K8sConfig.image,
                                   gateway_url=gateway.url, gateway_token=hub.user_token(user))
                h = SchedulerHarness(tmp, f"hub-{user}", None, scheduler_class=K8sScheduler, config=c)
                schedulers.append(h.scheduler)
                return h

            if args.flood:
                flood_bench(core, args, gateway, hub, hub_harness)
                return
            harnesses = {"local": SchedulerHarness(tmp, "local", DefaultExecutionManager),
                         "direct": SchedulerHarness(tmp, "direct", None, scheduler_class=K8sScheduler,
                                                    config=direct_config),
                         "hub": hub_harness("user0")}
            schedulers.append(harnesses["direct"].scheduler)
            medians = interleaved_medians(harnesses, args.runs)
            print(f"  ratio hub/direct: {medians['hub'] / medians['direct']:.2f}  (goal <= 1.10)")
            print(f"  ratio hub/local:  {medians['hub'] / medians['local']:.2f}  (goal <= 0.85)")

            # Many users at once: one watch per user server, a few transfers each.
            users = [harnesses["hub"]] + [hub_harness(f"user{n}") for n in range(1, args.users)]
            peak, before = 0.0, rss_mb(gateway.process)
            jobs = []
            for h in users:
                write_notebook(str(h.root / "nap.ipynb"), "import time; time.sleep(20)")
                jobs += [(h, h.submit("nap.ipynb")) for _ in range(args.jobs_per_user)]
            deadline = time.monotonic() + 600
            done = set()
            while len(done) < len(jobs) and time.monotonic() < deadline:
                peak = max(peak, rss_mb(gateway.process))
                for h, job_id in jobs:
                    if job_id not in done and h.scheduler.get_job(job_id, job_files=False).status.value in (
                            "COMPLETED", "FAILED", "STOPPED"):
                        done.add(job_id)
                time.sleep(0.5)
            states = [h.scheduler.get_job(j, job_files=False).status.value for h, j in jobs]
            print(f"{args.users} users x {args.jobs_per_user} jobs: {states.count('COMPLETED')} COMPLETED, "
                  f"{states.count('FAILED')} FAILED, {len(jobs) - len(done)} in flight at the deadline; "
                  f"gateway RSS {before:.0f} MB before, peak {peak:.0f} MB  (goal <= 250 MB)")

            # A large input folder through the gateway.
            h = harnesses["hub"]
            folder = h.root / "big"
            folder.mkdir()
            write_notebook(str(folder / "read.ipynb"), "import os; print(sum(os.path.getsize(f) for f in os.listdir('.')))")
            chunk = os.urandom(2 ** 20)
            for n in range(args.input_mb // 50):
                with open(folder / f"part{n}.bin", "wb") as f:
                    for _ in range(50):
                        f.write(chunk)
            before, peak, stop = rss_mb(gateway.process), [0.0], threading.Event()

            def sample():
                while not stop.is_set():
                    peak[0] = max(peak[0], rss_mb(gateway.process))
                    time.sleep(0.1)
            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            log = []
            run = h.scheduler._run_for  # time the stage-in step itself, not the pod's start

            def timed_run_for(model, staging_paths):
                job_run = run(model, staging_paths)
                original = job_run.stage_in

                def stage_in(pod):
                    started = time.monotonic()
                    original(pod)
                    log.append(time.monotonic() - started)
                job_run.stage_in = stage_in
                return job_run
            h.scheduler._run_for = timed_run_for
            job_id = h.submit("big/read.ipynb", package_input_folder=True)
            job = h.wait(job_id, timeout=900)
            stop.set()
            sampler.join()
            size_mb = sum(p.stat().st_size for p in folder.iterdir()) / 2 ** 20
            print(f"{size_mb:.0f} MB input folder: {job.status.value}; stage-in {log[0]:.1f}s = "
                  f"{size_mb / log[0]:.0f} MB/s  (goal >= 50); gateway RSS {before:.0f} MB before, "
                  f"peak {peak[0]:.0f} MB, growth {peak[0] - before:.0f} MB  (goal <= 50 MB)")
        finally:
            for s in schedulers:
                s.shutdown()
            gateway.stop()
            hub.stop()
    delete_namespace(core, args.namespace)


if __name__ == "__main__":
    main()
