"""bench/concurrency: N notebook jobs (each sleeps S seconds) in flight at once on the local cluster.

Reports the peak total RSS of the server process and all its children for
  ours:  K8sScheduler, every job followed by one watch and a small thread pool;
  stock: jupyter-scheduler's Scheduler spawning one process per job (K8sExecutionManager in each),
and the Kubernetes API requests per job on the happy path, counted in the client (every request the
backend sends, exec streams included; watch events are not requests and are not counted)."""
import argparse
import collections
import os
import sys
import tempfile
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.e2e.conftest import SchedulerHarness, write_notebook  # noqa: E402

TERMINAL = {"COMPLETED", "FAILED", "STOPPED"}
# The stock model spawns a process per job (about 146 MB each): never more than this many at once
# on a 24 GiB machine without swap.
STOCK_LIMIT = 50
LABEL_JOB_ID = "scheduler.jupyter.org/job-id"


def tree_rss_mb() -> float:
    me = psutil.Process()
    total = me.memory_info().rss
    for child in me.children(recursive=True):
        try:
            total += child.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total / 2 ** 20


def machine_used_mb() -> float:
    vm = psutil.virtual_memory()
    return (vm.total - vm.available) / 2 ** 20


def run_phase(name, harness, jobs, core, namespace, deadline_seconds, notebook="sleep.ipynb"):
    """Submits `jobs` jobs at once and follows them until all end or `deadline_seconds` pass.
    Returns a dict: peak RSS of this process tree and peak memory in use on the machine (MB),
    seconds until every job's pod ran at once (None if never), seconds taken, and the jobs by
    status, where those still in flight at the deadline keep theirs."""
    ids = [harness.submit(notebook, name=f"{name}-{i}") for i in range(jobs)]
    peak, machine_peak, all_running_at, start = 0.0, 0.0, None, time.monotonic()
    while True:
        peak, machine_peak = max(peak, tree_rss_mb()), max(machine_peak, machine_used_mb())
        described = [harness.scheduler.get_job(i, job_files=False) for i in ids]
        # New jobs read STOPPED until the spawned executor starts (jupyter-scheduler #451).
        statuses = [j.status.value if (j.status.value != "STOPPED" or j.start_time) else "STARTING" for j in described]
        mine = set(ids)
        running = sum(p.status.phase == "Running" and (p.metadata.labels or {}).get(LABEL_JOB_ID) in mine
                      for p in core.list_namespaced_pod(namespace).items)
        if all_running_at is None and running >= jobs:
            all_running_at = round(time.monotonic() - start)
        if all(s in TERMINAL for s in statuses) or time.monotonic() - start > deadline_seconds:
            break
        time.sleep(1)
    return {"peak_rss": peak, "machine_peak": machine_peak, "all_running_at": all_running_at,
            "seconds": time.monotonic() - start, "done": collections.Counter(statuses)}


def delete_namespace(core, name):
    from kubernetes import client
    try:
        core.delete_namespace(name)
    except client.ApiException as e:
        if e.status != 404:
            raise
    while any(ns.metadata.name == name for ns in core.list_namespace().items):
        time.sleep(1)


def fresh_namespace(core, name):
    from kubernetes import client
    delete_namespace(core, name)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))


def bench_cluster(namespace):
    """The local cluster as admin, a fresh namespace, and the K8sConfig of both phases (the stock
    phase's spawned processes read the same through K8S_* variables)."""
    from kubernetes import client, config
    from traitlets.config import Config

    from jupyter_scheduler_k8s import __version__

    kubeconfig = os.environ.setdefault("KUBECONFIG", "/var/lib/jupyter-scheduler-k8s/cluster/kubeconfig")
    image = os.environ.setdefault("K8S_IMAGE", f"localhost/jupyter-scheduler-k8s-executor:{__version__}")
    os.environ["K8S_NAMESPACE"] = namespace
    config.load_kube_config(kubeconfig)
    core = client.CoreV1Api()
    fresh_namespace(core, namespace)
    c = Config()
    c.K8sConfig.namespace, c.K8sConfig.image = namespace, image
    return core, c


def count_requests(counter):
    """Counts every request any ApiClient in this process serializes (exec streams use their own)."""
    from kubernetes.client import ApiClient
    original = ApiClient.param_serialize

    def counted(self, method, resource_path, *args, **kwargs):
        counter[(method, resource_path)] += 1
        return original(self, method, resource_path, *args, **kwargs)
    ApiClient.param_serialize = counted


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=50)
    parser.add_argument("--sleep", type=int, default=60)
    parser.add_argument("--namespace", default="jsk8s-bench")
    parser.add_argument("--deadline", type=float, default=900,
                        help="seconds each phase may take; jobs still in flight then are reported as such")
    parser.add_argument("--skip-stock", action="store_true")
    args = parser.parse_args()

    from jupyter_scheduler.scheduler import Scheduler

    from jupyter_scheduler_k8s.executors import K8sExecutionManager
    from jupyter_scheduler_k8s.scheduler import K8sScheduler

    core, c = bench_cluster(args.namespace)
    c.K8sConfig.cpu_request, c.K8sConfig.memory_request = "10m", "64Mi"
    os.environ["K8S_EXECUTOR_CPU_REQUEST"], os.environ["K8S_EXECUTOR_MEMORY_REQUEST"] = "10m", "64Mi"

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ours = SchedulerHarness(tmp, "ours", None, scheduler_class=K8sScheduler, config=c)
        write_notebook(str(ours.root / "sleep.ipynb"), f"import time; time.sleep({args.sleep})")
        write_notebook(str(ours.root / "one.ipynb"), "1 + 1")
        requests = collections.Counter()
        count_requests(requests)

        # API requests of one job on the happy path, with the shared watch already running.
        ours.wait(ours.submit("one.ipynb", name="warm-up"))
        time.sleep(1)
        requests.clear()
        job = ours.wait(ours.submit("one.ipynb", name="count"))
        assert job.status.value == "COMPLETED", job.status_message
        time.sleep(1)
        watch_calls = sum(n for (m, p), n in requests.items() if m == "GET" and p.endswith("/pods") )
        print(f"API requests for one job (happy path): {sum(requests.values())} "
              f"(of which {watch_calls} list/watch calls of the shared pod watch)")
        for (method, path), n in sorted(requests.items()):
            print(f"    {n:3d}  {method:6s} {path}")

        base = tree_rss_mb()
        requests.clear()
        r = run_phase("ours", ours, args.jobs, core, args.namespace, args.deadline)
        per_job = (sum(requests.values()) - sum(n for (m, p), n in requests.items() if m == "GET" and p.endswith("/pods"))) / args.jobs
        print(f"ours : {args.jobs} jobs, all running after {r['all_running_at']}s, all done after {r['seconds']:.0f}s: "
              f"{dict(r['done'])}; peak RSS server+children {r['peak_rss']:.0f} MB (idle server {base:.0f} MB); "
              f"{per_job:.1f} API requests per job besides the shared watch")
        ours.scheduler.shutdown()

        if not args.skip_stock:
            stock = SchedulerHarness(tmp, "stock", K8sExecutionManager, scheduler_class=Scheduler)
            write_notebook(str(stock.root / "sleep.ipynb"), f"import time; time.sleep({args.sleep})")
            r = run_phase("stock", stock, min(args.jobs, STOCK_LIMIT), core, args.namespace, args.deadline)
            print(f"stock: {min(args.jobs, STOCK_LIMIT)} jobs, all running after {r['all_running_at']}s, all done after "
                  f"{r['seconds']:.0f}s: {dict(r['done'])}; peak RSS server+children {r['peak_rss']:.0f} MB")
    delete_namespace(core, args.namespace)


if __name__ == "__main__":
    main()
