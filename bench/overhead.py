"""bench/overhead: the same 1-cell notebook through jupyter-scheduler's local executor and through
K8sExecutionManager, interleaved in one run on the local cluster. Reports the median
submit -> outputs-staged time of each and their ratio (goal: K8s / local <= 1.25)."""
import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.concurrency import delete_namespace, fresh_namespace  # noqa: E402
from tests.e2e.conftest import SchedulerHarness, write_notebook  # noqa: E402


def staged(harness, job_id, fmt="ipynb", timeout=300):
    """Returns once the job is COMPLETED with its output in the staging dir."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = harness.scheduler.get_job(job_id, job_files=False)
        if job.status.value == "COMPLETED" and os.path.exists(harness.output(job, fmt)):
            return
        if job.status.value == "FAILED":
            raise RuntimeError(job.status_message)
        time.sleep(0.02)
    raise RuntimeError(f"job {job_id} not done after {timeout}s")


def interleaved_medians(harnesses, runs):
    """Submit -> outputs-staged time of a one-cell notebook through each harness, interleaved,
    after one warm-up round that is not counted. Prints each and returns the medians by name."""
    for h in harnesses.values():
        write_notebook(str(h.root / "one.ipynb"), "1 + 1")
    times = {name: [] for name in harnesses}
    for i in range(runs + 1):
        for name, h in harnesses.items():
            start = time.monotonic()
            staged(h, h.submit("one.ipynb", name=f"bench-{uuid.uuid4().hex[:6]}"))
            if i:
                times[name].append(time.monotonic() - start)
    medians = {name: statistics.median(t) for name, t in times.items()}
    print(f"one-cell notebook, submit -> outputs staged, {runs} runs each, interleaved after a warm-up round:")
    for name, t in times.items():
        print(f"  {name:9s}: median {medians[name]:.2f}s  (min {min(t):.2f}s, max {max(t):.2f}s)")
    return medians


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--namespace", default="jsk8s-bench")
    args = parser.parse_args()

    from jupyter_scheduler.executors import DefaultExecutionManager
    from kubernetes import client, config

    from jupyter_scheduler_k8s import __version__
    from jupyter_scheduler_k8s.executors import K8sExecutionManager
    from jupyter_scheduler_k8s.scheduler import K8sScheduler
    from traitlets.config import Config

    kubeconfig = os.environ.setdefault("KUBECONFIG", "/var/lib/jupyter-scheduler-k8s/cluster/kubeconfig")
    config.load_kube_config(kubeconfig)
    core = client.CoreV1Api()
    fresh_namespace(core, args.namespace)
    os.environ["K8S_NAMESPACE"] = args.namespace
    os.environ.setdefault("K8S_IMAGE", f"localhost/jupyter-scheduler-k8s-executor:{__version__}")

    with tempfile.TemporaryDirectory() as tmp:
        c = Config()
        c.K8sConfig.namespace = args.namespace
        c.K8sConfig.image = os.environ["K8S_IMAGE"]
        # local: jupyter-scheduler's stock Scheduler + DefaultExecutionManager (one process per job).
        # k8s: what the chart installs, K8sScheduler (jobs followed in the server).
        # k8s-spawn: the stock Scheduler spawning a process per job that runs K8sExecutionManager.
        harnesses = {"local": SchedulerHarness(Path(tmp), "local", DefaultExecutionManager),
                     "k8s": SchedulerHarness(Path(tmp), "k8s", None, scheduler_class=K8sScheduler, config=c),
                     "k8s-spawn": SchedulerHarness(Path(tmp), "k8s-spawn", K8sExecutionManager)}
        medians = interleaved_medians(harnesses, args.runs)
        print(f"ratio k8s/local: {medians['k8s'] / medians['local']:.2f}  (goal <= 1.25)")
        print(f"ratio k8s-spawn/local: {medians['k8s-spawn'] / medians['local']:.2f}")
        harnesses["k8s"].scheduler.shutdown()
    delete_namespace(core, args.namespace)


if __name__ == "__main__":
    main()
