"""The contract with the executor image (`jsk8s-executor`, image/executor): the commands the
package runs in a job's container, where the job's volume is, and the environment the container
gets. The image's side is image/executor/jsk8s_executor (cli.py, spec.py, schedule.py);
tests/unit/test_executor_contract.py checks that both sides agree."""
from typing import Dict, Optional

COMMAND = "jsk8s-executor"
JOB_DIR = "/job"
# Written by `run` once the notebook has ended: the pod's readiness probe waits for it.
RESULT_FILE = f"{JOB_DIR}/result.json"

SPEC_ENV = "JSK8S_SPEC"                   # spec(), as JSON: what `run` executes
SCHEDULE_ENV = "JSK8S_SCHEDULE"           # retention(), as JSON: what `scheduled-run` keeps
RUN_NAME_ENV = "JSK8S_RUN_NAME"           # a scheduled run's name, from its Job's label
MEMORY_LIMIT_ENV = "JSK8S_MEMORY_LIMIT"   # the container's memory limit, for the OOM message


def run() -> list:
    """A job's container: waits for stage-in, executes the notebook, holds for collection."""
    return [COMMAND, "run"]


def scheduled_run() -> list:
    """A CronJob's container: one run of a definition, staged from the volume's snapshot."""
    return [COMMAND, "scheduled-run"]


def hold(seconds: int) -> list:
    """A holder (or collector) pod's container: keeps the volume mounted for exec."""
    return [COMMAND, "hold", str(seconds)]


def stage_in() -> list:
    return [COMMAND, "stage-in"]


def stage_out(run_name: Optional[str] = None) -> list:
    """A job's outputs as a tar stream; with `run_name`, one scheduled run's, on a definition's volume."""
    job_dir = ["--job-dir", f"{JOB_DIR}/runs/{run_name}"] if run_name else []
    return [COMMAND, *job_dir, "stage-out"]


def release() -> list:
    """The outputs are collected: `run` and `hold` may end."""
    return [COMMAND, "release"]


def snapshot_in() -> list:
    """A definition's new input snapshot, from a tar stream."""
    return [COMMAND, "snapshot-in"]


def forget_run(run_name: str) -> list:
    """An imported run, removed from a definition's volume."""
    return [COMMAND, "forget-run", run_name]


def usage() -> list:
    """What `doctor` runs to check that the image is an executor image."""
    return [COMMAND, "--help"]


def spec(input_file: str, outputs: Dict[str, str], parameters: dict, collect_hold_seconds: int) -> dict:
    """The executor spec (docs/design.md, "Executor spec"): the notebook, its outputs by format,
    the parameters, and how long `run` holds the volume for collection."""
    return {"input": input_file, "outputs": dict(outputs), "parameters": dict(parameters),
            "kernel_name": None, "cell_timeout": None, "collect_hold_seconds": collect_hold_seconds}


def retention(runs_kept: int, max_age_seconds: int, log_name: str, log_limit: int) -> dict:
    """A definition's JSK8S_SCHEDULE (docs/design.md, "Schedules"): how many runs its volume keeps
    and for how long, and each run's log."""
    return {"runs_kept": runs_kept, "max_age_seconds": max_age_seconds, "log_name": log_name, "log_limit": log_limit}
