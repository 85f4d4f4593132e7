"""Job definitions as CronJobs, as installed: a real Jupyter server with K8sScheduler holding a token
of the chart's ServiceAccount, driven through the REST API of JupyterLab's scheduler UI. The
CronJob controller runs the definitions whether or not the server is up; the server imports the
runs when it is."""
import datetime
import json
import time
import urllib.error

import nbformat
import pytest

from jupyter_scheduler_k8s.kube import names

from .conftest import NEVER_SOON, leftovers, wait_new_finished_runs, write_notebook

pytestmark = pytest.mark.e2e

EVERY_MINUTE = "* * * * *"


def _cronjob(batch, namespace, definition_id):
    return batch.read_namespaced_cron_job(names.definition_name(definition_id), namespace)


def _jobs_made(batch, namespace, definition_id, seconds, first=False) -> dict:
    """The run Jobs the definition's CronJob creates from now on, for `seconds` (or until the
    first one): {name: Job}, seen by a watch, so a Job that is deleted soon after still counts."""
    from kubernetes import watch
    selector = names.definition_selector(definition_id, names.COMPONENT_SCHEDULED_RUN)
    listed = batch.list_namespaced_job(namespace, label_selector=selector)
    before, made = {j.metadata.name for j in listed.items}, {}
    events = watch.Watch()
    for event in events.stream(batch.list_namespaced_job, namespace, label_selector=selector,
                               resource_version=listed.metadata.resource_version, timeout_seconds=seconds):
        job = event["object"]
        if event["type"] == "ADDED" and job.metadata.name not in before:
            made[job.metadata.name] = job
            if first:
                events.stop()
    assert made or not first, f"no run Job made in {seconds}s"
    return made


def _scheduled_for(job) -> datetime.datetime:
    """The time the CronJob controller made the Job for (its own annotation); a Job made
    otherwise ("Run now"), its creation."""
    stamp = (job.metadata.annotations or {}).get("batch.kubernetes.io/cronjob-scheduled-timestamp")
    return datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00")) if stamp else job.metadata.creation_timestamp


def _volume_runs(core, namespace, definition_id, image) -> list:
    """The run directories on the definition's volume, listed by a pod of the admin's."""
    name = f"e2e-ls-{definition_id[:8]}"
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {
        names.LABEL_MANAGED_BY: names.MANAGED_BY}},
        "spec": {"restartPolicy": "Never", "automountServiceAccountToken": False,
                 "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 100,
                                     "seccompProfile": {"type": "RuntimeDefault"}},
                 "containers": [{"name": "ls", "image": image, "imagePullPolicy": "Never",
                                 "command": ["sh", "-c", "ls -1 /job/runs"],
                                 "resources": {"limits": {"memory": "64Mi"}},
                                 "securityContext": {"allowPrivilegeEscalation": False,
                                                     "capabilities": {"drop": ["ALL"]}},
                                 "volumeMounts": [{"name": "v", "mountPath": "/job"}]}],
                 "volumes": [{"name": "v", "persistentVolumeClaim": {
                     "claimName": names.definition_name(definition_id)}}]}}
    core.create_namespaced_pod(namespace, pod)
    try:
        deadline = time.monotonic() + 90
        while core.read_namespaced_pod(name, namespace).status.phase not in ("Succeeded", "Failed"):
            assert time.monotonic() < deadline, "the listing pod did not finish"
            time.sleep(0.5)
        return core.read_namespaced_pod_log(name, namespace).split()
    finally:
        core.delete_namespaced_pod(name, namespace, grace_period_seconds=0)


def test_a_schedule_runs_while_the_server_is_down(make_server, core, batch, jobs_namespace):
    """A run made while the server is up comes back with its outputs; paused, the CronJob makes no
    runs; resumed, it runs again, and the run it made while the server was stopped appears when
    it is back; deleted, nothing of it is left."""
    server = make_server(name="scheduled", schedule_import_interval_seconds=3)
    write_notebook(str(server.root / "daily.ipynb"),
                   "rows = open('data/in.csv').read().split()\nprint('rows', len(rows))",
                   "import datetime; open('stamp.txt', 'w').write(str(datetime.datetime.now()))")
    (server.root / "data").mkdir()
    (server.root / "data" / "in.csv").write_text("a\nb\nc\n")
    definition_id = server.create_definition("daily.ipynb", output_formats=["ipynb", "html"],
                                             package_input_folder=True)
    cronjob = _cronjob(batch, jobs_namespace, definition_id)
    assert (cronjob.spec.schedule, cronjob.spec.time_zone, cronjob.spec.concurrency_policy) == (EVERY_MINUTE, "UTC", "Forbid")
    assert cronjob.spec.starting_deadline_seconds == 300 and not cronjob.spec.suspend
    assert len(cronjob.metadata.name) <= 52

    def check_outputs(run):
        assert run["status"] == "COMPLETED", run["status_message"]
        assert "rows 3" in server.output(run, "log").read_text()
        assert "rows 3" in server.output(run, "html").read_text()
        nb = nbformat.read(server.output(run, "ipynb"), as_version=4)
        assert nb.cells[0].outputs[0]["text"] == "rows 3\n"
        assert (server.staging_dir(run["job_id"]) / "stamp.txt").exists()
        assert "stamp.txt" in run["packaged_files"]

    # The first run is asked for ("Run now": a Job from the CronJob's template, the same executor
    # command) rather than waited for: the minute the CronJob fires on is waited for below.
    check_outputs(server.wait(server.run_now(definition_id), timeout=150))

    # Paused: the CronJob makes no Job on the next minute, watched until 20 s past it (the
    # controller makes a due Job within a second or two; watched as the admin: a Job that the
    # server imports and deletes meanwhile is still seen).
    paused_at = datetime.datetime.now(datetime.timezone.utc)
    server.update_definition(definition_id, active=False)
    assert _cronjob(batch, jobs_namespace, definition_id).spec.suspend is True
    past_the_minute = 60 - datetime.datetime.now(datetime.timezone.utc).second + 20
    made = {name: scheduled for name, scheduled in (
        (name, _scheduled_for(job)) for name, job in _jobs_made(
            batch, jobs_namespace, definition_id, seconds=past_the_minute).items())
        if scheduled >= paused_at}  # one due before the pause may start as it comes
    assert not made, f"runs made while paused: {made}"
    resumed_at = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    server.update_definition(definition_id, active=True)
    assert _cronjob(batch, jobs_namespace, definition_id).spec.suspend is False

    # Resumed, and the server goes away (as a culled one does): the CronJob runs again. The run it
    # made is the one the server lists when it is back (a run's job id is its Job's uid), with its
    # outputs.
    server.stop()
    made_while_down = wait_new_finished_runs(batch, jobs_namespace, definition_id, 1)
    for name in made_while_down:
        assert batch.read_namespaced_job(name, jobs_namespace).metadata.creation_timestamp >= resumed_at, name
    server = make_server(name="scheduled", schedule_import_interval_seconds=3)
    for run in server.wait_imported(definition_id, made_while_down.values(), timeout=120):
        check_outputs(run)
    runs = server.runs(definition_id)
    assert len({r["job_id"] for r in runs}) == len(runs)

    # Deleted: the CronJob, its Jobs, pods and volume, and the runs in the list.
    server.delete_definition(definition_id)
    assert leftovers(core, batch, jobs_namespace) == []
    assert server.runs(definition_id) == []
    with pytest.raises(urllib.error.HTTPError):
        server.definition(definition_id)


def test_a_failing_schedule_keeps_only_its_newest_runs(make_server, core, batch, jobs_namespace, executor_image):
    """With one run kept, the older run's files are deleted from the volume by the next run; the
    server that comes back lists the newest run FAILED with the cell's error and its log. (The
    runs are asked for, one after the other, rather than waited for: retention is the executor's,
    whoever made the run's Job; test_a_schedule_runs_while_the_server_is_down waits for the clock.)"""
    server = make_server(name="failing", schedule_runs_kept=1, schedule_import_interval_seconds=3600)
    write_notebook(str(server.root / "broken.ipynb"), "print('before the error')", "1 / 0")
    definition_id = server.create_definition("broken.ipynb", schedule=NEVER_SOON)
    made = []  # (name, uid), oldest first
    for _ in range(2):  # nothing imports them until the end (an import an hour)
        server.run_now(definition_id)
        made += wait_new_finished_runs(batch, jobs_namespace, definition_id, 1).items()
    server.stop()
    (newest, newest_uid) = made[-1]
    assert _volume_runs(core, jobs_namespace, definition_id, executor_image) == [newest], made
    assert _cronjob(batch, jobs_namespace, definition_id).spec.failed_jobs_history_limit == 1

    server = make_server(name="failing", schedule_runs_kept=1, schedule_import_interval_seconds=3)
    (run,) = server.wait_imported(definition_id, [newest_uid], timeout=120)  # the kept run, by uid
    assert run["status"] == "FAILED", run
    assert "ZeroDivisionError" in run["status_message"]
    log = server.output(run, "log").read_text()
    assert "before the error" in log and "ZeroDivisionError" in log
    server.delete_definition(definition_id)
    assert leftovers(core, batch, jobs_namespace) == []


def test_time_zones_and_run_now(make_server, core, batch, jobs_namespace):
    """A definition's time zone is the CronJob's spec.timeZone, and changes with it; an unknown one
    is refused with a clear message. "Run now" makes a Job from the CronJob's template."""
    server = make_server(schedule_import_interval_seconds=3)
    write_notebook(str(server.root / "report.ipynb"), "print('n is', n)", parameters_cell="n = 1")
    definition_id = server.create_definition("report.ipynb", schedule="0 8 * * 1-5", timezone="Europe/Paris",
                                             parameters={"n": "2"})
    assert _cronjob(batch, jobs_namespace, definition_id).spec.time_zone == "Europe/Paris"
    server.update_definition(definition_id, timezone="America/New_York", schedule="30 7 * * *")
    cronjob = _cronjob(batch, jobs_namespace, definition_id)
    assert (cronjob.spec.time_zone, cronjob.spec.schedule) == ("America/New_York", "30 7 * * *")

    with pytest.raises(urllib.error.HTTPError) as refused:
        server.create_definition("report.ipynb", timezone="Mars/Olympus_Mons")
    assert "Unknown time zone 'Mars/Olympus_Mons'" in json.loads(refused.value.read())["message"]
    with pytest.raises(urllib.error.HTTPError) as refused:
        server.update_definition(definition_id, timezone="Mars/Olympus_Mons")
    assert "Unknown time zone" in json.loads(refused.value.read())["message"]

    job_id = server.run_now(definition_id)
    assert server.job(job_id)["status"] == "IN_PROGRESS"
    manual = [j for j in batch.list_namespaced_job(jobs_namespace).items if j.metadata.uid == job_id]
    assert manual and manual[0].metadata.owner_references[0].kind == "CronJob"
    run = server.wait(job_id, timeout=180)
    assert run["status"] == "COMPLETED", run["status_message"]
    assert "n is 2" in server.output(run, "log").read_text()
    assert [r["job_id"] for r in server.runs(definition_id)] == [job_id]

    server.delete_definition(definition_id)
    assert leftovers(core, batch, jobs_namespace) == []
