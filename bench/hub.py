"""bench/hub: the submit -> COMPLETED median of a one-cell notebook sent as a user sends it on
JupyterHub (through the hub's proxy to the user's server in its KubeSpawner pod, which hands it to
the jobs gateway, which runs it as a Kubernetes Job), beside jupyter-scheduler's local executor on
this host, interleaved in one run after a warm-up round. Reports both medians and their ratio.
Installs z2jh and this chart into namespace jhub (as the e2e test does) and removes them after."""
import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.overhead import staged  # noqa: E402
from tests.e2e.conftest import SchedulerHarness, write_notebook  # noqa: E402
from tests.e2e.test_z2jh_e2e import notebook  # noqa: E402
from tests.conftest import loaded_images  # noqa: E402
from tests.e2e.z2jh import Z2jhInstall, our_values  # noqa: E402


def completed(user, job_id, timeout=300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = user.job(job_id)
        if job["status"] == "COMPLETED":
            return
        if job["status"] in ("FAILED", "STOPPED"):
            raise RuntimeError(job["status_message"])
        time.sleep(0.05)
    raise RuntimeError(f"job {job_id} not done after {timeout}s")


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()

    from jupyter_scheduler.executors import DefaultExecutionManager
    from kubernetes import client, config

    kubeconfig = os.environ.setdefault("KUBECONFIG", "/var/lib/jupyter-scheduler-k8s/cluster/kubeconfig")
    config.load_kube_config(kubeconfig)
    core = client.CoreV1Api()
    images = loaded_images()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        install = Z2jhInstall(kubeconfig, core, tmp, images)
        try:
            started = time.monotonic()
            install.install(our_values(images["executor"], images["gateway"]))
            user = install.login("bench").start_server()
            print(f"z2jh + jupyter-scheduler-k8s installed and a server started in {time.monotonic() - started:.0f}s")
            user.put_notebook("one.ipynb", notebook("1 + 1"))
            local = SchedulerHarness(tmp, "local", DefaultExecutionManager)
            write_notebook(str(local.root / "one.ipynb"), "1 + 1")
            times = {"local": [], "hub": []}
            for i in range(args.runs + 1):
                t0 = time.monotonic()
                staged(local, local.submit("one.ipynb", name=f"bench-{uuid.uuid4().hex[:6]}"))
                t1 = time.monotonic()
                completed(user, user.create_job("one.ipynb"))
                t2 = time.monotonic()
                if i:
                    times["local"].append(t1 - t0)
                    times["hub"].append(t2 - t1)
            medians = {name: statistics.median(t) for name, t in times.items()}
            print(f"one-cell notebook, submit -> COMPLETED, {args.runs} runs each, interleaved after a warm-up round:")
            for name, t in times.items():
                print(f"  {name:5s}: median {medians[name]:.2f}s  (min {min(t):.2f}s, max {max(t):.2f}s)")
            print(f"  ratio hub-through-proxy / local: {medians['hub'] / medians['local']:.2f}")
        finally:
            install.uninstall()


if __name__ == "__main__":
    main()
