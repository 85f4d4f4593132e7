"""Fixtures that drive real jupyter-scheduler Schedulers against the local cluster."""
import os
import time

import nbformat
import pytest
from jupyter_scheduler.environments import CondaEnvironmentManager
from jupyter_scheduler.models import CreateJob, Status
from jupyter_scheduler.orm import create_tables
from jupyter_scheduler.scheduler import Scheduler

TERMINAL = {Status.COMPLETED, Status.FAILED, Status.STOPPED}


def write_notebook(path, *sources, kernel="python3", parameters_cell=None):
    nb = nbformat.v4.new_notebook()
    if kernel:
        nb.metadata.kernelspec = {"name": kernel, "display_name": kernel, "language": "python"}
    cells = []
    if parameters_cell is not None:
        cells.append(nbformat.v4.new_code_cell(parameters_cell, metadata={"tags": ["parameters"]}))
    cells += [nbformat.v4.new_code_cell(s) for s in sources]
    nb.cells = cells
    os.makedirs(os.path.dirname(path), exist_ok=True)
    nbformat.write(nb, path)
    return path


class SchedulerHarness:
    """A real jupyter-scheduler Scheduler with its own root dir, staging dir and SQLite DB."""

    def __init__(self, tmp_path, name, execution_manager_class, scheduler_class=Scheduler, config=None):
        self.root = tmp_path / f"{name}-root"
        self.root.mkdir()
        db_url = f"sqlite:///{tmp_path}/{name}.sqlite"
        create_tables(db_url)
        self.scheduler = scheduler_class(
            root_dir=str(self.root), environments_manager=CondaEnvironmentManager(), db_url=db_url,
            config=config, staging_path=str(tmp_path / f"{name}-staging"))
        if execution_manager_class is not None:
            self.scheduler.execution_manager_class = execution_manager_class

    def submit(self, input_uri, **kwargs):
        kwargs.setdefault("runtime_environment_name", "default")
        kwargs.setdefault("name", os.path.splitext(os.path.basename(input_uri))[0])
        kwargs.setdefault("output_formats", ["ipynb"])
        return self.scheduler.create_job(CreateJob(input_uri=input_uri, **kwargs))

    def wait(self, job_id, timeout=240):
        deadline = time.monotonic() + timeout
        while True:
            job = self.scheduler.get_job(job_id, job_files=False)
            # New jobs read STOPPED until the executor's before_start runs (jupyter-scheduler #451).
            if job.status in TERMINAL and (job.status != Status.STOPPED or job.start_time):
                return job
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} still {job.status} after {timeout}s")
            time.sleep(0.5)

    def staging_dir(self, job):
        return os.path.dirname(self.scheduler.get_staging_paths(job)["input"])

    def output(self, job, fmt):
        return self.scheduler.get_staging_paths(job)[fmt]


@pytest.fixture
def k8s_env(monkeypatch, kubeconfig, namespace, executor_image):
    """Environment for the K8sExecutionManager in jupyter-scheduler's spawned child process,
    which sees no traitlets config: the K8S_* fallbacks carry it."""
    monkeypatch.setenv("KUBECONFIG", kubeconfig)
    monkeypatch.setenv("K8S_NAMESPACE", namespace)
    monkeypatch.setenv("K8S_IMAGE", executor_image)
    return namespace


@pytest.fixture
def k8s_scheduler(tmp_path, k8s_env):
    from jupyter_scheduler_k8s.executors import K8sExecutionManager
    return SchedulerHarness(tmp_path, "k8s", K8sExecutionManager)


@pytest.fixture
def local_scheduler(tmp_path):
    from jupyter_scheduler.executors import DefaultExecutionManager
    return SchedulerHarness(tmp_path, "local", DefaultExecutionManager)


def leftovers(core, batch, namespace):
    """The job objects still in the namespace (after giving garbage collection a moment)."""
    deadline = time.monotonic() + 30
    while True:
        left = ([p.metadata.name for p in core.list_namespaced_pod(namespace).items]
                + [c.metadata.name for c in core.list_namespaced_persistent_volume_claim(namespace).items]
                + [j.metadata.name for j in batch.list_namespaced_job(namespace).items])
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.5)
