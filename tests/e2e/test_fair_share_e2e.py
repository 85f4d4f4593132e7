"""Fair share, as installed: what one user may have at once (values.yaml `limits`), enforced where
the Kubernetes rights are (the jobs gateway, as the chart's ServiceAccount; the user's server in
direct mode). Over a limit the request is refused with a message that names the limit and its
value, and nothing is created. (The session's install sets limits.definitionsPerUser to 2:
conftest.chart_values_for.)"""
import json
import threading
import time
import urllib.error
import uuid

import pytest

from jupyter_scheduler_k8s.kube import names

from .conftest import DEFINITIONS_PER_USER, NEVER_SOON, leftovers, running_pod, upgrade_chart, write_notebook
from .hub import call

pytestmark = pytest.mark.e2e


def _definition(name: str) -> dict:
    return {"definition": {"name": name, "input_file": "nap.ipynb", "outputs": {"ipynb": "nap.ipynb"},
                           "log_name": "nap.log", "schedule": NEVER_SOON, "timezone": "UTC", "active": False}}


def _theirs(batch, core, namespace, user: str) -> tuple:
    """(CronJobs, PVCs) of job definitions that the user owns, as the admin sees them."""
    selector = f"{names.definition_selector('', names.COMPONENT_SCHEDULE)},{names.LABEL_USERNAME}={names.safe_slug(user)}"
    return (sorted(c.metadata.name for c in batch.list_namespaced_cron_job(namespace, label_selector=selector).items),
            sorted(p.metadata.name for p in core.list_namespaced_persistent_volume_claim(
                namespace, label_selector=selector).items))


def test_definitions_over_the_users_limit_are_refused_and_nothing_is_made(
        gateway, hub, user_server, core, batch, jobs_namespace):
    """Dora's definitions, straight through the gateway's API and through her server: the one
    past the limit is a 429 without Retry-After (waiting lifts no limit), and in her server an
    error that JupyterLab shows; another user may still create hers."""
    dora = hub.user_token("dora")
    mine = [str(uuid.uuid4()) for _ in range(DEFINITIONS_PER_USER)]
    for number, definition_id in enumerate(mine):
        status, answer, _ = call(f"{gateway.api}definitions/{definition_id}", "PUT", dora, _definition(f"d{number}"))
        assert status == 201, answer
    made = _theirs(batch, core, jobs_namespace, "dora")
    assert len(made[0]) == len(made[1]) == DEFINITIONS_PER_USER, made

    status, answer, headers = call(f"{gateway.api}definitions/{uuid.uuid4()}", "PUT", dora, _definition("one more"))
    assert status == 429, answer
    assert "Retry-After" not in headers, dict(headers)
    assert f"limits.definitionsPerUser: {DEFINITIONS_PER_USER}" in answer["message"], answer
    assert answer["error"] == "over-limit", answer
    # A retried create of one she has is no new definition.
    assert call(f"{gateway.api}definitions/{mine[0]}", "PUT", dora, _definition("d0"))[0] == 201

    # Through her own server, as JupyterLab's "Create" does: a 400 with the gateway's message.
    server = user_server("dora", gateway)
    write_notebook(str(server.root / "nap.ipynb"), "print('nap')")
    with pytest.raises(urllib.error.HTTPError) as refused:
        server.create_definition("nap.ipynb", schedule=NEVER_SOON)
    assert refused.value.code == 400
    message = json.loads(refused.value.read())["message"]
    assert f"You have {DEFINITIONS_PER_USER} job definitions" in message, message
    assert f"limits.definitionsPerUser: {DEFINITIONS_PER_USER}" in message, message
    assert server.request("GET", "/scheduler/job_definitions")["job_definitions"] == []
    assert _theirs(batch, core, jobs_namespace, "dora") == made

    # The limit is hers alone: Erin creates one.
    erin = hub.user_token("erin")
    theirs = str(uuid.uuid4())
    assert call(f"{gateway.api}definitions/{theirs}", "PUT", erin, _definition("erin's"))[0] == 201

    for token, definition_id in [(dora, d) for d in mine] + [(erin, theirs)]:
        assert call(f"{gateway.api}definitions/{definition_id}", "DELETE", token)[0] == 204
    assert leftovers(core, batch, jobs_namespace) == []


def test_in_direct_mode_the_server_enforces_the_limit(make_server, core, batch, jobs_namespace):
    """Without a gateway the user's server holds the rights, and enforces the same limit."""
    server = make_server(name="limited", username="limited-user", definitions_per_user=1)
    write_notebook(str(server.root / "nap.ipynb"), "print('nap')")
    first = server.create_definition("nap.ipynb", schedule=NEVER_SOON)
    with pytest.raises(urllib.error.HTTPError) as refused:
        server.create_definition("nap.ipynb", schedule=NEVER_SOON)
    assert refused.value.code == 400
    message = json.loads(refused.value.read())["message"]
    assert "You have 1 job definition," in message and "limits.definitionsPerUser: 1" in message, message
    assert [d["job_definition_id"] for d in server.request("GET", "/scheduler/job_definitions")["job_definitions"]] == [first]
    assert len(_theirs(batch, core, jobs_namespace, "limited-user")[0]) == 1
    server.delete_definition(first)
    assert leftovers(core, batch, jobs_namespace) == []


# ---- the queue: limits.runningJobsPerUser and limits.queuedJobsPerUser ----------------------------

RUNNING_CAP, QUEUED_CAP = 2, 7


@pytest.fixture(scope="module")
def capped(gateway, kubeconfig):
    """The session's install with the caps these tests name; the defaults again afterwards."""
    upgrade_chart(kubeconfig, f"limits.runningJobsPerUser={RUNNING_CAP}", f"limits.queuedJobsPerUser={QUEUED_CAP}")
    gateway.wait_ready()
    yield gateway
    upgrade_chart(kubeconfig, "limits.runningJobsPerUser=5", "limits.queuedJobsPerUser=200")
    gateway.wait_ready()


def _user_jobs(batch, namespace, user: str) -> list:
    selector = f"{names.LABEL_COMPONENT}={names.COMPONENT_JOB},{names.LABEL_USERNAME}={names.safe_slug(user)}"
    return batch.list_namespaced_job(namespace, label_selector=selector).items


def _states(batch, namespace, user: str) -> list:
    return [(j.metadata.name, j.spec.suspend, j.metadata.annotations) for j in _user_jobs(batch, namespace, user)]


class Sampler:
    """Every second, from the API: which of each user's job pods run a notebook (running and not
    yet Ready: a Ready pod has written its result and only holds it for collection), and when
    each job's pod was first seen doing so."""

    def __init__(self, core, namespace: str):
        self.core, self.namespace = core, namespace
        self.most: dict = {}
        self.first_seen: dict = {}
        self.samples = 0
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self._stop.is_set():
            pods = self.core.list_namespaced_pod(
                self.namespace, label_selector=f"{names.LABEL_COMPONENT}={names.COMPONENT_JOB}").items
            running: dict = {}
            for pod in pods:
                statuses = pod.status.container_statuses or []
                if pod.status.phase == "Running" and statuses and statuses[0].state.running and not statuses[0].ready:
                    user = pod.metadata.annotations[names.ANNOTATION_USERNAME]
                    running[user] = running.get(user, 0) + 1
                    self.first_seen.setdefault(pod.metadata.labels[names.LABEL_JOB_ID], self.samples)
            for user, count in running.items():
                self.most[user] = max(self.most.get(user, 0), count)
            self.samples += 1
            self._stop.wait(1)

    def stop(self):
        self._stop.set()
        self.thread.join(10)


def _wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while not (answer := condition()):
        assert time.monotonic() < deadline, what() if callable(what) else what
        time.sleep(0.5)
    return answer


def test_a_users_jobs_wait_their_turn_oldest_first_and_others_go_ahead(
        capped, hub, user_server, core, batch, jobs_namespace):
    """Frank submits 9 jobs with a cap of 2: never more than 2 of his run at once, they start in
    the order he submitted them, the ones that wait are listed QUEUED with why; a 10th is refused
    (7 wait already). One queued job is stopped and one deleted: no pod ever starts for them.
    Grace's one job, submitted while his wait, starts at once."""
    frank = user_server("frank", capped)
    write_notebook(str(frank.root / "nap.ipynb"), "import time; time.sleep(6); print('napped')")
    # The first two run long enough that seven wait behind them when the tenth comes.
    write_notebook(str(frank.root / "long.ipynb"), "import time; time.sleep(30); print('napped')")
    sampler = Sampler(core, jobs_namespace)
    try:
        # Two fill his cap (once admitted, they no longer count as waiting), then seven wait.
        submitted = [frank.create_job("long.ipynb") for _ in range(RUNNING_CAP)]
        _wait_for(lambda: sum(1 for j in _user_jobs(batch, jobs_namespace, "frank") if not j.spec.suspend)
                  == RUNNING_CAP, 120, "frank's first jobs were not admitted")
        submitted += [frank.create_job("nap.ipynb") for _ in range(QUEUED_CAP)]
        kept, to_stop, to_delete = submitted[:7], submitted[7], submitted[8]
        # Every one of them has its Job: 2 admitted and 7 waiting, so the 10th is one too many.
        _wait_for(lambda: len(_user_jobs(batch, jobs_namespace, "frank")) == 9
                  and not any(names.ANNOTATION_STAGING in (j.metadata.annotations or {})
                              for j in _user_jobs(batch, jobs_namespace, "frank")), 120,
                  lambda: f"frank's 9 Jobs not all staged: {_states(batch, jobs_namespace, 'frank')}")
        refused = frank.wait(frank.create_job("nap.ipynb"), timeout=60)
        assert refused["status"] == "FAILED", refused
        assert f"limits.queuedJobsPerUser: {QUEUED_CAP}" in refused["status_message"], refused
        queued = frank.wait(submitted[-1], timeout=60, until=("QUEUED",))
        assert queued["status_message"].startswith(f"waiting: {RUNNING_CAP} of your jobs are running"), queued

        grace = user_server("grace", capped)
        write_notebook(str(grace.root / "quick.ipynb"), "print('quick')")
        graces = grace.create_job("quick.ipynb")
        assert grace.wait(graces, timeout=120)["status"] == "COMPLETED"
        frank.stop_job(to_stop)
        frank.delete_job(to_delete)
        assert frank.job(to_stop)["status"] == "STOPPED"

        for job_id in kept:
            job = frank.wait(job_id, timeout=300)
            assert job["status"] == "COMPLETED", job
            assert "napped" in frank.output(job, "ipynb").read_text()
    finally:
        sampler.stop()
    assert sampler.most.get("frank") == RUNNING_CAP, sampler.most  # the cap was reached, never passed
    starts = [sampler.first_seen[job_id] for job_id in kept]
    assert starts == sorted(starts), f"started out of order: {starts}"
    # Grace's job ran while Frank's last ones still waited.
    assert graces in sampler.first_seen and sampler.first_seen[graces] < starts[-1], (sampler.first_seen, starts)
    assert to_stop not in sampler.first_seen and to_delete not in sampler.first_seen
    assert frank.job(to_stop)["status_message"] == "stopped by the user"
    assert to_delete not in [j["job_id"] for j in frank.request("GET", "/scheduler/jobs?max_items=100")["jobs"]]
    assert leftovers(core, batch, jobs_namespace) == []


def test_queued_jobs_need_neither_the_server_nor_the_gateway(capped, user_server, core, batch, jobs_namespace):
    """Henry's server is stopped while 4 of his 6 jobs wait, and every gateway pod is deleted:
    the queue goes on by itself; when his server is back, all 6 are COMPLETED with outputs."""
    henry = user_server("henry", capped)
    write_notebook(str(henry.root / "nap.ipynb"), "import time; time.sleep(8); print('napped')")
    jobs = [henry.create_job("nap.ipynb") for _ in range(6)]
    _wait_for(lambda: len(_user_jobs(batch, jobs_namespace, "henry")) == 6
              and sum(1 for j in _user_jobs(batch, jobs_namespace, "henry")
                      if j.spec.suspend and names.ANNOTATION_STAGING not in (j.metadata.annotations or {})) == 4,
              120, "henry's jobs are not staged and waiting")
    henry.stop()
    capped.kill()
    capped.wait_ready()
    # Every notebook ran: each pod holds its result for collection (Ready), with no server to take it.
    _wait_for(lambda: sum(1 for j in _user_jobs(batch, jobs_namespace, "henry") if (j.status.ready or 0) > 0) == 6,
              300, "henry's queued jobs did not all run while his server was away")
    henry = user_server("henry", capped)  # the same state directory: the job list is his
    for job_id in jobs:
        job = henry.wait(job_id, timeout=180)
        assert job["status"] == "COMPLETED", job
        assert "napped" in henry.output(job, "ipynb").read_text()
    assert leftovers(core, batch, jobs_namespace) == []


def test_a_scheduled_run_counts_against_its_owners_cap(capped, user_server, core, batch, jobs_namespace):
    """Jill's 2 running jobs fill her cap: her definition's run (Run now) waits as a suspended
    Job, and runs, and is imported, once they end."""
    jill = user_server("jill", capped)
    write_notebook(str(jill.root / "nap.ipynb"), "import time; time.sleep(30); print('napped')")
    write_notebook(str(jill.root / "report.ipynb"), "print('scheduled report')")
    napping = [jill.create_job("nap.ipynb") for _ in range(RUNNING_CAP)]
    for job_id in napping:
        running_pod(core, jobs_namespace, job_id)
    definition_id = jill.create_definition("report.ipynb", schedule=NEVER_SOON)
    run_id = jill.run_now(definition_id)
    selector = f"{names.LABEL_DEFINITION_ID}={names.safe_slug(definition_id)}"
    (run,) = _wait_for(lambda: batch.list_namespaced_job(jobs_namespace, label_selector=selector).items, 60,
                       "the run's Job was not made")
    assert run.spec.suspend, "the run started beside 2 running jobs"
    assert [j["status"] for j in map(jill.job, napping)] == ["IN_PROGRESS"] * RUNNING_CAP
    (imported,) = jill.wait_imported(definition_id, [run_id], timeout=180)
    assert imported["status"] == "COMPLETED", imported
    assert all(jill.wait(job_id)["status"] == "COMPLETED" for job_id in napping)
    jill.delete_definition(definition_id)
    assert leftovers(core, batch, jobs_namespace) == []


def test_one_gateway_replica_admits_at_a_time(gateway, product_kubeconfig, jobs_namespace, api_client):
    """The installed replicas: the queue's Lease is held by one of them. Then, 10 times, two
    admitters with the gateway's code and identity start at once on a Lease of their own (and an
    empty queue): one of them leads, and at no moment may both admit."""
    from kubernetes import client

    from jupyter_scheduler_k8s.kube.clients import Clients
    from jupyter_scheduler_k8s.kube.queue import LEASE_NAME, Admitter

    coordination = client.CoordinationV1Api(api_client)
    holder = _wait_for(lambda: coordination.read_namespaced_lease(LEASE_NAME, jobs_namespace).spec.holder_identity,
                       60, "no gateway replica holds the queue's Lease")
    assert any(holder.startswith(pod.metadata.name + "-") for pod in gateway.pods()), holder

    for round_ in range(10):
        lease = f"jsk8s-e2e-race-{round_}"
        pair = [Admitter(Clients(product_kubeconfig), jobs_namespace, lambda: RUNNING_CAP, username="nobody-queues",
                         lease=lease) for _ in range(2)]
        try:
            threads = [threading.Thread(target=admitter.start) for admitter in pair]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            _wait_for(lambda: any(a.may_act() for a in pair), 30, f"round {round_}: nobody leads")
            for _ in range(30):
                assert sum(a.may_act() for a in pair) == 1, f"round {round_}: both may admit"
                time.sleep(0.1)
        finally:
            for admitter in pair:
                admitter.stop()
            coordination.delete_namespaced_lease(lease, jobs_namespace)
