"""A stand-in for a user's Jupyter server: hosts a K8sScheduler in its own process, so tests can
kill it mid-job (SIGKILL) and start another on the same database.

    python scheduler_host.py STATE_DIR submit NOTEBOOK [CREATE_JOB_JSON]   prints the job id, keeps running
    python scheduler_host.py STATE_DIR wait JOB_ID TIMEOUT                 prints the finished job as JSON
Config comes from STATE_DIR/config.json (traitlets JSON) and the K8S_* environment variables.
"""
import json
import sys
import time
from pathlib import Path

from jupyter_scheduler.environments import CondaEnvironmentManager
from jupyter_scheduler.models import CreateJob, Status
from jupyter_scheduler.orm import create_tables
from traitlets.config import Config

from jupyter_scheduler_k8s.scheduler import K8sScheduler


def scheduler(state: Path) -> K8sScheduler:
    db_url = f"sqlite:///{state}/scheduler.sqlite"
    create_tables(db_url)
    config_file = state / "config.json"
    config = Config(json.loads(config_file.read_text())) if config_file.exists() else Config()
    (state / "root").mkdir(exist_ok=True)
    return K8sScheduler(root_dir=str(state / "root"), environments_manager=CondaEnvironmentManager(),
                        db_url=db_url, config=config, staging_path=str(state / "staging"))


def main():
    state, command = Path(sys.argv[1]), sys.argv[2]
    s = scheduler(state)
    if command == "submit":
        extra = json.loads(sys.argv[4]) if len(sys.argv) > 4 else {}
        extra.setdefault("name", Path(sys.argv[3]).stem)
        extra.setdefault("runtime_environment_name", "default")
        job_id = s.create_job(CreateJob(input_uri=sys.argv[3], **extra))
        print(job_id, flush=True)
        while True:
            time.sleep(3600)
    elif command == "wait":
        job_id, deadline = sys.argv[3], time.monotonic() + float(sys.argv[4])
        while time.monotonic() < deadline:
            job = s.get_job(job_id, job_files=False)
            if job.status in (Status.COMPLETED, Status.FAILED, Status.STOPPED):
                print(job.json(), flush=True)
                return
            time.sleep(0.5)
        print(s.get_job(job_id, job_files=False).json(), flush=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
