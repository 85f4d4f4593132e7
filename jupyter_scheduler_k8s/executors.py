"""jupyter-scheduler execution manager that runs each notebook job as a Kubernetes Job.

Configure with `c.Scheduler.execution_manager_class = "jupyter_scheduler_k8s.executors.K8sExecutionManager"`.
"""
import json
import logging
from typing import Dict

from jupyter_scheduler.executors import ExecutionManager
from jupyter_scheduler.models import JobFeature
from jupyter_scheduler.orm import Job
from traitlets.config import Config

from .config import K8sConfig, server_config
from .jobs.lifecycle import JobRun
from .jobs.steps import JobFailed, NotebookJob, Outcome
from .modes import make_driver

log = logging.getLogger(__name__)


def supported_features(cls) -> Dict[JobFeature, bool]:
    """What this backend really does. jupyter-scheduler calls it as `cls.supported_features(cls)`,
    so it is a plain function, not a classmethod."""
    return {
        JobFeature.job_name: True,
        JobFeature.parameters: True,
        JobFeature.output_formats: True,
        JobFeature.job_definition: False,
        JobFeature.idempotency_token: False,
        JobFeature.tags: False,
        JobFeature.email_notifications: False,
        JobFeature.timeout_seconds: False,
        JobFeature.retry_on_timeout: False,
        JobFeature.max_retries: False,
        JobFeature.min_retry_interval_millis: False,
        JobFeature.output_filename_template: False,
        # Killing the child process would orphan the Kubernetes Job: real stop and delete
        # need K8sScheduler.
        JobFeature.stop_job: False,
        JobFeature.delete_job: False,
    }


def validate(cls, input_path: str) -> bool:
    """Submit-time check (called as `cls.validate(cls, path)`): the notebook must be JSON with a
    kernelspec name, or the job could never run."""
    try:
        with open(input_path, encoding="utf-8") as f:
            nb = json.load(f)
        return bool(nb.get("metadata", {}).get("kernelspec", {}).get("name"))
    except (OSError, ValueError, AttributeError):
        return False


class K8sExecutionManager(ExecutionManager):
    """Runs `process()` in the child process jupyter-scheduler spawns; the Kubernetes work is in
    lifecycle.JobRun, which the in-server K8sScheduler drives too."""

    supported_features = supported_features
    validate = validate

    def __init__(self, job_id: str, root_dir: str, db_url: str, staging_paths: Dict[str, str],
                 config: Config = None):
        super().__init__(job_id, root_dir, db_url, staging_paths)
        # Runs in the server: capture its config as plain data. No clients here, since this
        # object is pickled into a spawned process.
        self.k8s_config = Config(config) if config is not None else server_config()

    def execute(self):
        job = NotebookJob.from_staging_paths(self.job_id, self.staging_paths, self.model)
        cfg = K8sConfig(config=self.k8s_config)
        run = self._run = JobRun(job, cfg, make_driver(cfg),
                                 on_phase=lambda phase: log.info("job %s: %s", self.job_id, phase))
        try:
            self._outcome = run.run()
        except JobFailed as e:
            self._outcome = e.outcome
            if e.outcome is not None:
                self.record_files(e.outcome)
            raise
        self.record_files(self._outcome)

    # The job's objects go once its outcome is in the DB (process() records it after execute()).
    _run, _outcome = None, None

    def on_complete(self):
        super().on_complete()
        self._clean_up()

    def on_failure(self, e: Exception):
        super().on_failure(e)
        self._clean_up()

    def _clean_up(self):
        if self._run is not None and self._outcome is not None:
            self._run.cleanup_quietly(self._outcome)

    def record_files(self, outcome: Outcome) -> None:
        """Side-effect files join packaged_files, so the UI's download copies them."""
        if not outcome.side_effects:
            return
        with self.db_session() as session:
            current = session.query(Job.packaged_files).filter(Job.job_id == self.job_id).scalar() or []
            merged = sorted(set(current) | set(outcome.side_effects))
            session.query(Job).filter(Job.job_id == self.job_id).update({"packaged_files": merged})
            session.commit()
