"""bench/burst: 100 one-cell jobs submitted at once to K8sScheduler, then, in the same run, the
stock one-process-per-job model (jupyter-scheduler's Scheduler spawning K8sExecutionManager)
with at most 50 (each process costs about 146 MB).

Executor pods get the product's default requests and limits (250m CPU, 1Gi memory), so a burst
waits in Pending for room on the node instead of starving every kernel of CPU. Each phase has a
deadline; jobs still in flight then are reported as such. Reports per phase: COMPLETED / FAILED /
in flight, time until all ended, jobs per minute, peak RSS of the server process tree and peak
memory in use on the machine."""
import argparse
import sys
import tempfile
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


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=100)
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
