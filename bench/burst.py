"""bench/burst: 100 one-cell jobs submitted at once to K8sScheduler, then, in the same run, the
stock one-process-per-job model (jupyter-scheduler's Scheduler spawning K8sExecutionManager)
with at most 50 (each process costs about 146 MB).

Executor pods get the product's default requests and limits (250m CPU, 1Gi memory), so a burst
waits in Pending for room on the node instead of starving every kernel of CPU. Jobs beyond the
per-user cap (limits.runningJobsPerUser, default 5) wait in the queue. Each phase has a deadline;
jobs still in flight then are reported as such. Reports per phase: COMPLETED / FAILED / in
flight, time until all ended, jobs per minute, peak RSS of the server process tree and peak
memory in use on the machine.

--fairness: user A submits 60 jobs, then user B one (each user's own K8sScheduler, as in direct
mode); reports B's submit-to-COMPLETED time beside the same job alone on the idle node, and the
ratio."""
import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.concurrency import (  # noqa: E402
    STOCK_LIMIT, bench_cluster, delete_namespace, machine_used_mb, run_phase, tree_rss_mb,
)
from tests.e2e.conftest import SchedulerHarness, write_notebook  # noqa: E402


def report(name, jobs, r, idle_rss):
    done = dict(r["done"])
    completed = done.get("COMPLETED", 0)
    in_flight = jobs - sum(n for s, n in done.items() if s in ("COMPLETED", "FAILED", "STOPPED"))
    print(f"{name}: {jobs} jobs: {completed} COMPLETED, {done.get('FAILED', 0)} FAILED, {in_flight} in flight "
          f"after {r['seconds']:.0f}s ({done}); {60 * completed / r['seconds']:.1f} jobs/min; "
          f"peak RSS server+children {r['peak_rss']:.0f} MB (idle {idle_rss:.0f} MB); "
          f"peak memory in use on the machine {r['machine_peak'] / 1024:.1f} GiB", flush=True)


def fairness(tmp: Path, c, burst: int) -> None:
    from jupyter_scheduler_k8s.scheduler import K8sScheduler

    def user(name):
        config = copy.deepcopy(c)
        config.K8sConfig.username = name
        harness = SchedulerHarness(tmp, name, None, scheduler_class=K8sScheduler, config=config)
        write_notebook(str(harness.root / "one.ipynb"), "print(sum(range(10)))")
        return harness

    def timed(harness, name):
        start = time.monotonic()
        job = harness.wait(harness.submit("one.ipynb", name=name), timeout=1200)
        return time.monotonic() - start, job.status.value

    a, b = user("alice"), user("bob")
    alone, status = timed(b, "alone")
    print(f"B alone on the idle node: {alone:.1f}s ({status})", flush=True)
    ids = [a.submit("one.ipynb", name=f"a-{i}") for i in range(burst)]
    behind, status = timed(b, "behind")
    print(f"B behind A's {burst}: {behind:.1f}s ({status}); ratio {behind / alone:.1f}x", flush=True)
    start = time.monotonic()
    ended = [a.wait(i, timeout=1800).status.value for i in ids]
    print(f"A's {burst}: {ended.count('COMPLETED')} COMPLETED, {time.monotonic() - start:.0f}s after B's ended",
          flush=True)
    a.scheduler.shutdown()
    b.scheduler.shutdown()


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--fairness", type=int, nargs="?", const=60, default=0, metavar="BURST",
                        help="A submits BURST jobs (60), then B one; B's time against B alone")
    parser.add_argument("--stock-jobs", type=int, default=STOCK_LIMIT, help=f"at most {STOCK_LIMIT}")
    parser.add_argument("--namespace", default="jsk8s-bench")
    parser.add_argument("--deadline", type=float, default=1200, help="seconds each phase may take")
    parser.add_argument("--skip-stock", action="store_true")
    args = parser.parse_args()
    if args.stock_jobs > STOCK_LIMIT:
        parser.error(f"--stock-jobs: at most {STOCK_LIMIT} processes at once on this machine")

    from jupyter_scheduler.scheduler import Scheduler

    from jupyter_scheduler_k8s.executors import K8sExecutionManager
    from jupyter_scheduler_k8s.scheduler import K8sScheduler

    core, c = bench_cluster(args.namespace)
    print(f"machine memory in use before: {machine_used_mb() / 1024:.1f} GiB", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.fairness:
            fairness(tmp, c, args.fairness)
            delete_namespace(core, args.namespace)
            return
        ours = SchedulerHarness(tmp, "ours", None, scheduler_class=K8sScheduler, config=c)
        write_notebook(str(ours.root / "one.ipynb"), "print(sum(range(10)))")
        idle = tree_rss_mb()
        report("ours ", args.jobs, run_phase("ours", ours, args.jobs, core, args.namespace, args.deadline,
                                              notebook="one.ipynb"), idle)
        ours.scheduler.shutdown()

        if not args.skip_stock:
            stock = SchedulerHarness(tmp, "stock", K8sExecutionManager, scheduler_class=Scheduler)
            write_notebook(str(stock.root / "one.ipynb"), "print(sum(range(10)))")
            idle = tree_rss_mb()
            report("stock", args.stock_jobs, run_phase("stock", stock, args.stock_jobs, core, args.namespace,
                                                       args.deadline, notebook="one.ipynb"), idle)
    delete_namespace(core, args.namespace)


if __name__ == "__main__":
    main()
