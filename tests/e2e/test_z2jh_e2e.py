"""The product as an operator installs it with JupyterHub: z2jh's own chart (KubeSpawner, the
configurable-http-proxy, its Secrets and NetworkPolicies) plus ours, with the values our NOTES
print, used verbatim. Two users log in, start their servers, and drive jupyter-scheduler's REST
API through the hub's proxy with their own tokens. Nothing here holds Kubernetes credentials but
the fixtures: the user servers reach the jobs gateway through the proxy, and the gateway acts
under the chart's ServiceAccount."""
import re
import textwrap
import time

import nbformat
import pytest
import yaml
from kubernetes import client

from jupyter_scheduler_k8s.kube import names

from .conftest import finished_runs, leftovers, wait_log, wait_new_finished_runs
from .hub import call, definition_endpoints, job_endpoints
from .netpol import egress_allows
from .z2jh import JOBS_NS, NAMESPACE, ROOT

pytestmark = pytest.mark.e2e


def notebook(*sources):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(s) for s in sources]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


@pytest.fixture(scope="module")
def users(jupyterhub):
    """alice and bob, logged in, with their servers started through KubeSpawner."""
    logged_in = {name: jupyterhub.login(name) for name in ("alice", "bob")}
    for user in logged_in.values():
        user.start_server()
    return logged_in


@pytest.fixture(autouse=True)
def cleaned_up(request):
    """What alice and bob made is deleted after each test, also when it failed, so that the tests
    after it (which check that the jobs namespace is empty) fail only for what they test."""
    yield
    if "users" in request.fixturenames:
        for user in request.getfixturevalue("users").values():
            user.delete_everything()


def test_the_values_our_notes_print_are_the_readmes(jupyterhub):
    """The block the hub was upgraded with (from `helm get notes`) is the README's, for these names."""
    text = (ROOT / "README.md").read_text()
    blocks = [textwrap.dedent(b) for b in re.findall(r"```yaml\n(.*?)```", text, re.DOTALL) if "singleuser:" in b]
    assert [yaml.safe_load(b) for b in blocks] == [jupyterhub.notes_values]
    assert "NOTE: no JupyterHub hub Service" not in jupyterhub.notes, "step 1 is done after z2jh is installed"


def _job_objects(batch, job_id, timeout=60):
    """The Kubernetes Jobs of a job, once there is one."""
    deadline = time.monotonic() + timeout
    while not (found := batch.list_namespaced_job(JOBS_NS, label_selector=f"{names.LABEL_JOB_ID}={job_id}").items):
        if time.monotonic() > deadline:
            return []
        time.sleep(0.5)
    return found


def _job_pod(core, job_id, timeout=120) -> str:
    deadline = time.monotonic() + timeout
    while not (pods := core.list_namespaced_pod(JOBS_NS, label_selector=f"{names.LABEL_JOB_ID}={job_id},"
                                                f"{names.LABEL_COMPONENT}={names.COMPONENT_JOB}").items):
        assert time.monotonic() < deadline, f"no pod for job {job_id}"
        time.sleep(0.5)
    return pods[0].metadata.name


def test_two_users_run_jobs_through_the_proxy(users, core, batch):
    for name, user in users.items():
        user.put_notebook("report.ipynb", notebook(
            f"open('by-{name}.txt', 'w').write('{name} was here')\nprint('hello from', '{name}')"))
    jobs = {name: user.create_job("report.ipynb", output_formats=["ipynb", "html"], package_input_folder=True)
            for name, user in users.items()}
    for name, user in users.items():
        job = user.wait(jobs[name])
        assert job["status"] == "COMPLETED", job["status_message"]
        files = user.download(jobs[name])
        html = next(v for k, v in files.items() if k.endswith(".html"))
        ipynb = next(v for k, v in files.items() if k.endswith(".ipynb") and k != "report.ipynb")
        log = next(v for k, v in files.items() if k.endswith(".log"))
        assert f"hello from {name}".encode() in html and f"hello from {name}".encode() in log
        assert nbformat.reads(ipynb.decode(), as_version=4).cells[0].outputs[0]["text"] == f"hello from {name}\n"
        assert files[f"by-{name}.txt"] == f"{name} was here".encode()
        # A finished job deletes from the list.
        user.delete_job(jobs[name])
        assert jobs[name] not in [j["job_id"] for j in user.jobs()]
    assert leftovers(core, batch, JOBS_NS) == []


def test_one_users_token_gets_nothing_of_anothers(users, core, batch):
    alice, bob = users["alice"], users["bob"]
    bob.put_notebook("nap.ipynb", notebook("import time; time.sleep(600)"))
    job_id = bob.create_job("nap.ipynb")
    assert _job_objects(batch, job_id), "Bob's job has its Kubernetes Job before Alice tries it"
    pod = _job_pod(core, job_id)
    job = f"{alice.hub.url}/services/jobs-gateway/api/v1/jobs/{job_id}"
    # Alice's token, through the proxy, on every gateway endpoint that names Bob's job or pod.
    for method, url, body in job_endpoints(job, pod):
        status, answer, _ = call(url, method, alice.token, body)
        assert status == 404, (method, url, status, answer)
    # Bob's server itself refuses Alice's token.
    assert bob.server("GET", f"/scheduler/jobs/{job_id}", token=alice.token).status_code == 403
    assert bob.job(job_id)["status"] == "IN_PROGRESS"
    bob.stop_job(job_id)
    assert bob.wait(job_id, timeout=120)["status"] == "STOPPED"
    bob.delete_job(job_id)
    assert job_id not in [j["job_id"] for j in bob.jobs()]
    assert leftovers(core, batch, JOBS_NS) == []


def test_a_restarted_server_finds_its_job_finished(users, core, batch):
    """Her server is stopped once the notebook runs; the notebook ends while no server is there
    (seen as the admin, in the pod's log); the server that comes back collects it."""
    alice = users["alice"]
    alice.put_notebook("slow.ipynb", notebook("import time; time.sleep(20)", "print('slept')"))
    job_id = alice.create_job("slow.ipynb", output_formats=["ipynb", "html"])
    pod = _job_pod(core, job_id)
    wait_log(core, JOBS_NS, pod, "[jsk8s] staged")
    alice.stop_server()
    # The server is gone and its job still runs: nobody watches it until the server is back.
    running = _job_objects(batch, job_id)
    assert len(running) == 1 and not running[0].status.succeeded and not running[0].status.failed
    wait_log(core, JOBS_NS, pod, "for the outputs to be collected")  # the notebook ended
    assert "[jsk8s] collected" not in core.read_namespaced_pod_log(pod, JOBS_NS)
    alice.start_server()
    job = alice.wait(job_id)
    assert job["status"] == "COMPLETED", job["status_message"]
    files = alice.download(job_id)
    assert b"slept" in next(v for k, v in files.items() if k.endswith(".html"))
    assert leftovers(core, batch, JOBS_NS) == []


def test_a_schedule_runs_while_the_server_is_stopped(users, core, batch):
    """A job definition is a CronJob that the gateway made as alice's. It runs while her server
    is up ("Run now", rather than waiting for the clock twice); stopped through the hub's API,
    the server misses nothing: the run the CronJob makes on the next minute is listed with its
    outputs when it is back. Bob's token reaches none of it."""
    alice, bob = users["alice"], users["bob"]
    alice.put_notebook("minutely.ipynb", notebook("import datetime\nprint('ran at', datetime.datetime.now())"))
    definition_id = alice.create_definition("minutely.ipynb", output_formats=["ipynb", "html"])
    cronjob = batch.read_namespaced_cron_job(names.definition_name(definition_id), JOBS_NS)
    assert cronjob.metadata.annotations[names.ANNOTATION_USERNAME] == "alice"
    assert (cronjob.spec.schedule, cronjob.spec.time_zone, cronjob.spec.concurrency_policy) == ("* * * * *", "UTC", "Forbid")

    def check(run):
        assert run["status"] == "COMPLETED", run["status_message"]
        files = alice.download(run["job_id"])
        assert b"ran at" in next(v for k, v in files.items() if k.endswith(".html"))
        assert b"ran at" in next(v for k, v in files.items() if k.endswith(".log"))

    first = alice.run_now(definition_id)
    check(alice.wait_imported(definition_id, [first], timeout=200)[0])

    alice.stop_server()
    made = wait_new_finished_runs(batch, JOBS_NS, definition_id, 1)

    # While her server is stopped nothing imports her runs, so their Jobs are there: Bob's token,
    # through the proxy, on every gateway endpoint that names her definition and one of her real
    # runs, gets 404, and none of it is touched; her own token lists them (the control).
    gateway = f"{alice.hub.url}/services/jobs-gateway/api/v1"
    for run_name in made:
        for method, url, body in definition_endpoints(f"{gateway}/definitions/{definition_id}", run_name):
            status, answer, _ = call(url, method, bob.token, body)
            assert status == 404, (method, url, status, answer)
    status, answer, _ = call(f"{gateway}/runs?definition_id={definition_id}", "GET", bob.token)
    assert status == 200 and answer["jobs"] == []
    status, answer, _ = call(f"{gateway}/runs?definition_id={definition_id}", "GET", alice.token)
    assert status == 200 and set(made) <= {job["metadata"]["name"] for job in answer["jobs"]}, answer
    assert set(made) <= set(finished_runs(batch, JOBS_NS, definition_id))
    assert bob.runs(definition_id) == []

    # Back, her server lists exactly that run (a run's job id is its Job's uid), with outputs.
    alice.start_server()
    for run in alice.wait_imported(definition_id, made.values(), timeout=200):
        check(run)

    alice.update_definition(definition_id, active=False)
    assert batch.read_namespaced_cron_job(names.definition_name(definition_id), JOBS_NS).spec.suspend is True
    alice.delete_definition(definition_id)
    assert alice.runs(definition_id) == []
    assert leftovers(core, batch, JOBS_NS) == []


def test_a_failing_notebook_shows_its_cell_error(users, core, batch):
    bob = users["bob"]
    bob.put_notebook("broken.ipynb", notebook("x = 1", "1 / 0"))
    job = bob.wait(bob.create_job("broken.ipynb"))
    assert job["status"] == "FAILED"
    assert "ZeroDivisionError" in job["status_message"], job["status_message"]
    listed = next(j for j in bob.jobs() if j["job_id"] == job["job_id"])
    assert "ZeroDivisionError" in listed["status_message"]
    assert leftovers(core, batch, JOBS_NS) == []


def test_doctor_in_a_user_server(users):
    """README step 3: `jupyter-scheduler-k8s doctor` from a terminal in a user's server."""
    code, out = users["bob"].exec(["jupyter-scheduler-k8s", "doctor"])
    assert code == 0, out
    assert "as user bob" in out and "ready" in out, out


def test_user_servers_hold_no_kubernetes_credentials(users, core):
    pod = core.read_namespaced_pod(users["alice"].pod, NAMESPACE)
    assert pod.spec.automount_service_account_token is False or not any(
        m.mount_path.startswith("/var/run/secrets/kubernetes.io") for c in pod.spec.containers
        for m in (c.volume_mounts or []))
    probe = ("import ssl, urllib.request, urllib.error, os\n"
             "print('token' if os.path.exists('/var/run/secrets/kubernetes.io/serviceaccount/token') else 'no token')\n"
             "try:\n"
             "    urllib.request.urlopen('https://kubernetes.default.svc/api/v1/namespaces/%s/secrets',"
             " context=ssl._create_unverified_context(), timeout=10)\n"
             "    print('listed')\n"
             "except urllib.error.HTTPError as e:\n"
             "    print('status', e.code)\n"
             "except OSError as e:\n"
             "    print('unreachable', e)\n" % NAMESPACE)
    _, out = users["alice"].exec(["python3", "-c", probe])
    assert "no token" in out, out
    # The API server answers (this cluster's bridge CNI does not enforce NetworkPolicies), but
    # refuses a request without credentials ...
    assert re.search(r"^status 40[13]$", out, re.M), out
    # ... and where they are enforced, z2jh's user-server policy, with our values in it, lets no
    # packet through to the API server's address and port.
    policy = client.NetworkingV1Api(core.api_client).read_namespaced_network_policy("singleuser", NAMESPACE)
    assert policy.spec.pod_selector.match_labels.items() <= pod.metadata.labels.items()
    slices = client.DiscoveryV1Api(core.api_client).list_namespaced_endpoint_slice(
        "default", label_selector="kubernetes.io/service-name=kubernetes").items
    targets = [(address, port.port) for s in slices for e in s.endpoints for address in e.addresses
               for port in s.ports]
    assert targets
    for address, port in targets:
        assert not egress_allows(policy, address, port), (address, port, policy.spec.egress)
        # (the reading is not vacuous: the same policy lets DNS through to that address, and the
        # internet's addresses, which z2jh allows by default)
        assert egress_allows(policy, address, 53) and egress_allows(policy, "8.8.8.8", 443)
