"""K8sScheduler's bookkeeping, without a cluster: recovery ends a job it cannot take up as FAILED
with its reason and goes on to the next; a stop that races a collection collects once. (What
they do on Kubernetes is tested end to end in tests/e2e/test_scheduler_e2e.py.)"""
import threading
import time

import pytest
from jupyter_scheduler.environments import CondaEnvironmentManager
from jupyter_scheduler.models import Status
from jupyter_scheduler.orm import Job, JobDefinition, create_tables
from traitlets.config import Config

from jupyter_scheduler_k8s.scheduler import K8sScheduler

from .data_pkg.helpers import clean_env  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("clean_env")


@pytest.fixture
def scheduler(tmp_path):
    db_url = f"sqlite:///{tmp_path}/scheduler.sqlite"
    create_tables(db_url)
    # No cluster: deleting the failed job's objects fails too, which must not matter.
    config = Config({"K8sScheduler": {"recovery_interval_seconds": 3600},
                     "K8sConfig": {"kubeconfig": str(tmp_path / "no-such-kubeconfig"),
                                   "profiles": {"small": {}}}})
    s = K8sScheduler(root_dir=str(tmp_path), environments_manager=CondaEnvironmentManager(), db_url=db_url,
                     config=config, staging_path=str(tmp_path / "staging"))
    # The test calls recover() itself: the background rounds must not take its jobs first.
    s.recovery.stop(wait=10)
    s.definitions.imports.stop(wait=10)
    yield s
    s.shutdown()


def _add(scheduler, name, **fields):
    with scheduler.db_session() as session:
        job = Job(name=name, input_filename=f"{name}.ipynb", runtime_environment_name="default",
                  output_formats=["ipynb", "log"], status=Status.IN_PROGRESS, **fields)
        session.add(job)
        session.commit()
        return job.job_id


def test_one_job_that_cannot_be_taken_up_does_not_hold_up_the_others(scheduler, monkeypatch):
    unreadable = _add(scheduler, "unreadable")
    renamed = _add(scheduler, "renamed", compute_type="gone")
    healthy = _add(scheduler, "healthy", compute_type="small")
    tracked = []
    monkeypatch.setattr(scheduler.monitor, "track", lambda run, submit=True: tracked.append(run.job.job_id))
    run_for = scheduler._run_for

    def run_for_or_fail(model, staging_paths):
        if model.job_id == unreadable:
            raise OSError("staging dir unreadable")
        return run_for(model, staging_paths)
    monkeypatch.setattr(scheduler, "_run_for", run_for_or_fail)

    assert scheduler.recover() == 1
    assert tracked == [healthy]
    jobs = {j: scheduler.get_job(j, job_files=False) for j in (unreadable, renamed, healthy)}
    assert jobs[healthy].status == Status.IN_PROGRESS
    assert jobs[unreadable].status == Status.FAILED
    assert jobs[unreadable].status_message == ("the job could not be recovered after a server restart: "
                                               "OSError: staging dir unreadable")
    assert jobs[renamed].status == Status.FAILED
    assert "Unknown compute type 'gone'; valid: small" in jobs[renamed].status_message
    assert jobs[renamed].end_time


class RacingRun:
    """Stands in for the JobRun whose collection is under way when the user presses Stop."""

    def __init__(self, job_id):
        self.job = type("J", (), {"job_id": job_id})()
        self.selector = "test"
        self.volume = True  # the monitor's cleanup deletes it once the outputs are in
        self.collected, self.stopped = [], 0
        self.queued = None  # it ran: a stop collects

    def stop(self):
        self.stopped += 1

    def collect_from_volume(self):
        self.collected.append("stop")
        return {"status": "failed"}, []


def test_schedules_are_left_to_the_cronjob_controller(scheduler, monkeypatch):
    """No in-server TaskRunner fires definitions (their CronJobs do), and recovery leaves the runs
    of a CronJob to the import round, which knows them by their Job."""
    assert scheduler.task_runner is None
    run = _add(scheduler, "scheduled", job_definition_id="d1")
    plain = _add(scheduler, "plain", compute_type="small")
    tracked = []
    monkeypatch.setattr(scheduler.monitor, "track", lambda run, submit=True: tracked.append(run.job.job_id))
    assert scheduler.recover() == 1 and tracked == [plain]
    assert scheduler.get_job(run, job_files=False).status == Status.IN_PROGRESS


def test_definitions_deleted_at_once_do_not_wait_on_each_other(scheduler, monkeypatch):
    """Deleting a definition deletes its runs on the same request thread: three deletions at once,
    with two request threads, all finish."""
    monkeypatch.setattr(scheduler.definitions.schedules, "delete", lambda definition_id: time.sleep(0.2))
    definitions = []
    with scheduler.db_session() as session:
        for n in range(3):
            definition = JobDefinition(name=f"d{n}", input_filename="a.ipynb", runtime_environment_name="default",
                                       schedule="* * * * *")
            session.add(definition)
            session.commit()
            definitions.append(definition.job_definition_id)
            for _ in range(2):
                session.add(Job(name=f"r{n}", input_filename="a.ipynb", runtime_environment_name="default",
                                output_formats=["ipynb"], status=Status.COMPLETED,
                                job_definition_id=definition.job_definition_id))
            session.commit()
    threads = [threading.Thread(target=scheduler.delete_job_definition, args=(d,)) for d in definitions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not any(thread.is_alive() for thread in threads)
    with scheduler.db_session() as session:
        assert session.query(Job).count() == 0 and session.query(JobDefinition).count() == 0


def test_a_stop_racing_a_collection_collects_once(scheduler, monkeypatch):
    job_id = _add(scheduler, "racing", compute_type="small")
    run = RacingRun(job_id)
    scheduler.monitor.runs[job_id] = run
    started, release = threading.Event(), threading.Event()

    def collecting():  # the monitor's final step: collect, record, delete the volume
        started.set()
        release.wait(30)
        run.collected.append("monitor")
        run.volume = False
    scheduler.monitor._act(run, collecting, final=True)
    assert started.wait(10)

    deleted, collected_when_deleted = threading.Event(), []
    monkeypatch.setattr(scheduler.driver, "wait_for_pod", lambda *a, **k: True)
    monkeypatch.setattr(scheduler.driver, "volume_exists", lambda job_id: run.volume)

    def delete(job_id):
        collected_when_deleted.extend(run.collected)
        deleted.set()
    monkeypatch.setattr(scheduler, "_delete_objects_quietly", delete)
    waiting, wait_idle = threading.Event(), scheduler.monitor.wait_idle

    def waits(*args, **kwargs):
        waiting.set()
        return wait_idle(*args, **kwargs)
    monkeypatch.setattr(scheduler.monitor, "wait_idle", waits)
    scheduler.stop_job(job_id)  # from a plain thread: waits for the stop, not the collection
    assert scheduler.get_job(job_id, job_files=False).status == Status.STOPPED
    assert run.stopped == 1 and not scheduler.monitor.tracked(job_id)

    # The stop's collector waits for the collection under way, which then ends: only after it
    # are the objects deleted, and the outputs were collected once.
    assert waiting.wait(10), "the stop's collector did not wait for the collection under way"
    release.set()
    assert deleted.wait(10)
    assert collected_when_deleted == ["monitor"] and run.collected == ["monitor"]


def test_packaging_a_home_folder_leaves_out_jupyters_own_state(tmp_path):
    """On JupyterHub the notebook's folder is often the home directory, which holds the staging
    area (a plain copy recursed into its own destination until 'File name too long'), the
    scheduler's database and the runtime files with the server's tokens."""
    from jupyter_scheduler_k8s.scheduler import package_folder
    home = tmp_path / "home"
    data = home / ".local" / "share" / "jupyter"
    staging = data / "scheduler_staging_area" / "job-1"
    for path, text in [(home / "report.ipynb", "{}"), (home / "data" / "in.csv", "a,b"),
                       (home / ".config" / "tool.toml", "x=1"), (data / "scheduler.sqlite", "db"),
                       (data / "runtime" / "jpserver-1.json", "token")]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    staging.mkdir(parents=True)
    copied = package_folder(str(home), str(staging), skip=(str(data / "scheduler_staging_area"), str(data),
                                                             str(data / "runtime")))
    assert copied == [".config/tool.toml", "data/in.csv", "report.ipynb"]
    assert (staging / "data" / "in.csv").read_text() == "a,b"
    assert not (staging / ".local" / "share" / "jupyter").exists()


def test_a_backend_id_as_jupyter_scheduler_3_passes_it_is_accepted(tmp_path, recwarn):
    """jupyter-scheduler 3.0 (not on PyPI yet) builds each backend's scheduler with `backend_id`.
    2.x's Scheduler has no such argument: ours keeps it and passes nothing unknown upstream."""
    db_url = f"sqlite:///{tmp_path}/scheduler.sqlite"
    create_tables(db_url)
    config = Config({"K8sScheduler": {"recovery_interval_seconds": 3600},
                     "K8sConfig": {"kubeconfig": str(tmp_path / "no-such-kubeconfig")}})
    s = K8sScheduler(root_dir=str(tmp_path), environments_manager=CondaEnvironmentManager(), db_url=db_url,
                     config=config, staging_path=str(tmp_path / "staging"), backend_id="k8s")
    try:
        assert s.backend_id == "k8s"
        assert not [w for w in recwarn if "backend_id" in str(w.message)]
    finally:
        s.shutdown()
