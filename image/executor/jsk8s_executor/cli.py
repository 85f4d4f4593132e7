"""Command line: `jsk8s-executor [--job-dir DIR] run | stage-in | stage-out | release | hold SECONDS`,
and for a job definition's volume `snapshot-in | scheduled-run | forget-run RUN`."""

import argparse
import os
import sys

from .jobdir import JobDir, touch, wait_for


def parser() -> argparse.ArgumentParser:
    """The commands the server runs (jupyter_scheduler_k8s/kube/executor.py is its side)."""
    parser = argparse.ArgumentParser(
        prog="jsk8s-executor",
        description="Run one jupyter-scheduler notebook job on a Kubernetes job volume "
        "(env JSK8S_JOB_DIR, default /job).",
    )
    parser.add_argument("--job-dir", help="the job volume (default: env JSK8S_JOB_DIR or /job); on a "
                        "definition's volume, runs/RUN names one run")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="wait for inputs, execute the notebook (spec in env JSK8S_SPEC), hold")
    sub.add_parser("stage-in", help="extract a tar stream from stdin into the work dir, mark it staged")
    sub.add_parser("stage-out", help="write result.json, outputs and side-effect files as a tar to stdout")
    sub.add_parser("release", help="tell run/hold that the outputs are collected")
    hold = sub.add_parser("hold", help="wait until released or SECONDS pass (collector pod)")
    hold.add_argument("seconds", type=float)
    sub.add_parser("snapshot-in", help="extract a tar stream from stdin as the definition's new input snapshot")
    sub.add_parser("scheduled-run", help="one run of a definition (CronJob container; run name in env "
                   "JSK8S_RUN_NAME, retention in env JSK8S_SCHEDULE)")
    forget = sub.add_parser("forget-run", help="remove an imported run from the definition's volume")
    forget.add_argument("run")
    return parser


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    job = JobDir(args.job_dir)

    if args.command in ("snapshot-in", "scheduled-run", "forget-run"):
        return _definition_command(args)

    if args.command == "run":
        # Imported here so that the staging commands, run by exec, start fast.
        from . import run

        # Line buffering: progress lines must reach the pod log as they happen.
        if hasattr(sys.stdout, "reconfigure"):
            sys.stdout.reconfigure(line_buffering=True)
        return run.main(job)
    if args.command in ("stage-in", "stage-out"):
        from .staging import StagingError, stage_in, stage_out

        try:
            (stage_in if args.command == "stage-in" else stage_out)(job)
        except StagingError as e:
            print(f"jsk8s-executor {args.command}: {e}", file=sys.stderr)
            return 1
        return 0
    if args.command == "release":
        touch(job.collected)
        return 0
    if args.command == "hold":
        # The collector pod starts because the outputs are not collected yet: a marker left by an
        # earlier collection whose outcome was never recorded must not end it at once.
        job.collected.unlink(missing_ok=True)
        wait_for(job.collected, args.seconds)
        return 0
    return 2


def _definition_command(args) -> int:
    from .schedule import DefinitionDir, Retention, ScheduleError, StagingError, forget_run, scheduled_run, snapshot_in

    defn = DefinitionDir(args.job_dir)
    try:
        if args.command == "snapshot-in":
            snapshot_in(defn)
        elif args.command == "forget-run":
            forget_run(defn, args.run)
        else:
            if hasattr(sys.stdout, "reconfigure"):
                sys.stdout.reconfigure(line_buffering=True)
            return scheduled_run(defn, os.environ.get("JSK8S_RUN_NAME", ""), Retention.from_env())
    except (ScheduleError, StagingError) as e:
        print(f"jsk8s-executor {args.command}: {e}", file=sys.stderr)
        return 2 if args.command == "scheduled-run" else 1
    return 0
