"""Hub mode: a real JupyterHub issues two users' tokens; each user's Jupyter server runs
K8sScheduler with no Kubernetes credentials at all and reaches the jobs gateway with its token;
the gateway runs as the chart installs it (its Deployment, image and ServiceAccount). Isolation is
checked endpoint by endpoint, with a forged pod, and with tokens that must be refused."""
import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid

import nbformat
import pytest
from kubernetes import client

from jupyter_scheduler_k8s.kube import names

from .conftest import leftovers, running_pod, upgrade_chart, wait_log, write_notebook
from .hub import call, job_endpoints

pytestmark = pytest.mark.e2e
def _listed_pods(url: str, token: str):
    """The names in the first event of a pod watch (the LIST), without waiting for the rest."""
    request = urllib.request.Request(url, headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(request, timeout=60) as response:
        first = json.loads(response.readline())
    assert first["type"] == "LIST", first
    return [p["metadata"]["name"] for p in first["pods"]]


def test_two_users_run_jobs_through_the_gateway(gateway, user_server, core, batch, jobs_namespace):
    servers = {user: user_server(user, gateway) for user in ("alice", "bob")}
    jobs = {}
    for user, server in servers.items():
        write_notebook(str(server.root / "report.ipynb"),
                       f"open('by-{user}.txt', 'w').write('{user} was here')\nprint('hello from', '{user}')")
        jobs[user] = server.create_job("report.ipynb", output_formats=["ipynb", "html"], package_input_folder=True)
    for user, server in servers.items():
        job = server.wait(jobs[user])
        assert job["status"] == "COMPLETED", (job["status_message"], gateway.log_tail())
        assert f"hello from {user}" in server.output(job, "html").read_text()
        assert nbformat.read(server.output(job, "ipynb"), as_version=4).cells[0].outputs[0]["text"] == \
            f"hello from {user}\n"
        assert f"hello from {user}" in server.output(job, "log").read_text()
        assert (server.staging_dir(job["job_id"]) / f"by-{user}.txt").read_text() == f"{user} was here"
    assert leftovers(core, batch, jobs_namespace) == []

    # `doctor` in a user server, in hub mode: the gateway answers, knows the token, holds its rights.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("K8S_", "JSK8S_", "JUPYTER", "KUBECONFIG"))}
    env.update(JSK8S_GATEWAY_URL=gateway.url, JUPYTERHUB_API_TOKEN=servers["alice"].hub_token)
    doctor = subprocess.run([sys.executable, "-m", "jupyter_scheduler_k8s.cli", "doctor"], env=env,
                            capture_output=True, text=True, timeout=120)
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert "as user alice" in doctor.stdout and "ready" in doctor.stdout, doctor.stdout
    # ... and the `run` command goes through the gateway too.
    out = servers["alice"].root / "cli-out"
    ran = subprocess.run([sys.executable, "-m", "jupyter_scheduler_k8s.cli", "run", str(servers["alice"].root / "report.ipynb"),
                          "-f", "html", "-o", str(out)], env=env, capture_output=True, text=True, timeout=300)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "hello from alice" in next(out.glob("*.html")).read_text()
    assert leftovers(core, batch, jobs_namespace) == []


def test_another_users_job_is_a_404_everywhere_and_forged_pods_are_ignored(
        gateway, user_server, core, batch, jobs_namespace):
    alice, bob = user_server("alice", gateway), user_server("bob", gateway)
    write_notebook(str(bob.root / "nap.ipynb"), "import time; time.sleep(600)")
    job_id = bob.create_job("nap.ipynb")
    pod = running_pod(core, jobs_namespace, job_id).metadata.name
    api, job = gateway.api, f"{gateway.api}jobs/{job_id}"

    # Alice's token, on every endpoint that names Bob's job or pod.
    for method, url, body in job_endpoints(job, pod):
        status, answer, _ = call(url, method, alice.hub_token, body)
        assert status == 404, (method, url, status, answer)
    assert _listed_pods(f"{api}pods?job_id={job_id}", alice.hub_token) == []

    # A pod with Bob's labels and annotation, made by hand (here as admin): not his job's pod.
    # (Not the Job controller's own selector labels: the controller would adopt such an orphan.)
    forged = f"jsk8s-forged-{uuid.uuid4().hex[:6]}"
    real = core.read_namespaced_pod(pod, jobs_namespace)
    labels = {k: v for k, v in real.metadata.labels.items() if "job-name" not in k and "controller-uid" not in k}
    core.create_namespaced_pod(jobs_namespace, client.V1Pod(
        metadata=client.V1ObjectMeta(name=forged, labels=labels, annotations=real.metadata.annotations),
        spec=real.spec.__class__(containers=real.spec.containers, volumes=real.spec.volumes,
                                 automount_service_account_token=False, security_context=real.spec.security_context,
                                 restart_policy="Never")))
    try:
        for method, path in [("GET", "output"), ("POST", "release"), ("GET", "log"), ("PUT", "input")]:
            status, _, _ = call(f"{job}/pods/{forged}/{path}", method, bob.hub_token,
                                b"x" if method == "PUT" else None)
            assert status == 404, (method, path, status)
        assert _listed_pods(f"{api}pods?job_id={job_id}", bob.hub_token) == [pod]
        # Bob's own job is untouched by all of this, and stops and deletes through his server.
        assert bob.job(job_id)["status"] == "IN_PROGRESS"
        bob.stop_job(job_id)
        assert bob.wait(job_id, timeout=60)["status"] == "STOPPED"
        bob.delete_job(job_id)
    finally:
        core.delete_namespaced_pod(forged, jobs_namespace, grace_period_seconds=0)
    assert leftovers(core, batch, jobs_namespace) == []


def test_tokens_and_an_unreachable_hub(gateway, hub):
    whoami = gateway.api + "whoami"
    expiring = hub.user_token("alice", expires_in=1)
    time.sleep(2.5)
    for token in (None, "not-a-token", expiring):
        status, answer, _ = call(whoami, token=token)
        assert status == 401 and answer == {"status": 401, "message": "a valid JupyterHub token is required"}, answer
    assert call(whoami, token=hub.user_token("alice", scopes=["read:users:name!user"]))[0] == 403
    alice = hub.user_token("alice")
    assert call(whoami, token=alice)[1]["name"] == "alice"
    assert call(whoami, token=alice)[1]["missing_permissions"] == []
    assert call(f"{gateway.api}jobs/{uuid.uuid4()}", token=alice)[0] == 404
    assert call(f"{gateway.api}jobs/not-a-job-id", token=alice)[0] == 404

    # The hub goes away: a token the gateway has not seen yet gets 503, and no detail of where
    # the hub was looked for. The hub comes back with the same users and tokens.
    fresh = hub.user_token("alice")
    hub.stop()
    try:
        status, answer, _ = call(whoami, token=fresh)
        assert status == 503 and hub.ip not in str(answer) and "hub" in answer["message"].lower(), answer
    finally:
        hub.start()
    assert call(whoami, token=fresh)[1]["name"] == "alice"


def test_size_and_stream_limits(gateway, hub, user_server, core, batch, jobs_namespace, kubeconfig):
    limits = {"inputSizeLimitBytes": (4096, 1073741824), "streamsPerUser": (3, 8), "streamsTotal": (5, 200)}
    upgrade_chart(kubeconfig, *[f"gateway.{key}={low}" for key, (low, _) in limits.items()])
    try:
        gateway.wait_ready()
        _limits(gateway, hub, user_server, core, batch, jobs_namespace)
    finally:
        upgrade_chart(kubeconfig, *[f"gateway.{key}={default}" for key, (_, default) in limits.items()])
        gateway.wait_ready()


def _watch(api, token):
    return urllib.request.urlopen(urllib.request.Request(
        f"{api}pods?tick=1", headers={"Authorization": f"token {token}"}), timeout=30)


def _limits(gateway, hub, user_server, core, batch, jobs_namespace):
    # Three streams per user and five in all, per gateway pod (asked here of one of them):
    # Carol's fourth watch waits its turn, while Dave's goes on; with Dave's second, Erin's first
    # waits too.
    api = gateway.pod_api(gateway.pods()[0])
    carol, dave, erin = (hub.user_token(user) for user in ("carol", "dave", "erin"))
    held = [_watch(api, carol) for _ in range(3)]
    try:
        status, answer, headers = call(f"{api}pods?tick=1", token=carol)
        assert status == 429 and headers["Retry-After"] and "too many" in answer["message"], answer
        held += [_watch(api, dave), _watch(api, dave)]
        status, answer, headers = call(f"{api}pods?tick=1", token=erin)
        assert status == 429 and headers["Retry-After"], answer
    finally:
        for response in held:
            response.close()

    # Inputs above the limit: 413, and the job fails with that reason, leaving nothing behind.
    server = user_server("alice", gateway)
    # Also when the stream is longer than the client said (the stream may exceed the limit on the
    # files' bytes by 16 MiB of tar headers): cut off, 413, and the job goes on.
    write_notebook(str(server.root / "small.ipynb"), "print('staged and running', flush=True)\nimport time; time.sleep(5)")
    small = server.create_job("small.ipynb")
    pod = running_pod(core, jobs_namespace, small).metadata.name
    wait_log(core, jobs_namespace, pod, "staged and running")  # the real stage-in is done
    # Uploads go to the pod that holds the job's volume: one more, started through the API.
    assert call(f"{gateway.api}jobs/{small}/collector", "POST", server.hub_token, {})[0] == 201
    holder = names.collector_name(small)
    deadline = time.monotonic() + 60
    while core.read_namespaced_pod(holder, jobs_namespace).status.phase != "Running":
        assert time.monotonic() < deadline, "the holder pod did not start"
        time.sleep(0.5)
    status, answer, _ = call(f"{gateway.api}jobs/{small}/pods/{holder}/input", "PUT", server.hub_token,
                             iter([b"x" * 2 ** 20] * 18), headers={"X-Jsk8s-Input-Bytes": "10"})
    assert status == 413 and "4096" in answer["message"], answer
    assert call(f"{gateway.api}jobs/{small}/collector", "DELETE", server.hub_token)[0] == 204
    assert server.wait(small, timeout=120)["status"] == "COMPLETED"
    write_notebook(str(server.root / "big.ipynb"), "x = 1  # " + "padding " * 2000)
    job = server.wait(server.create_job("big.ipynb"), timeout=120)
    assert job["status"] == "FAILED" and "exceed the limit of 4096 bytes" in job["status_message"], job
    assert leftovers(core, batch, jobs_namespace) == []


def test_jobs_survive_gateway_and_server_restarts(gateway, user_server, core, batch, jobs_namespace):
    server = user_server("alice", gateway)
    write_notebook(str(server.root / "slow.ipynb"), "import time; time.sleep(20); print('done sleeping')")
    job_id = server.create_job("slow.ipynb", output_formats=["ipynb", "html"])
    running_pod(core, jobs_namespace, job_id)
    before = {p.metadata.uid for p in gateway.pods()}
    gateway.kill()  # every gateway pod, without grace: the Deployment makes new ones, which know nothing
    server.kill()
    gateway.wait_ready()
    assert not before & {p.metadata.uid for p in gateway.pods()}
    restarted = user_server("alice", gateway)
    job = restarted.wait(job_id, timeout=180)
    assert job["status"] == "COMPLETED", (job["status_message"], gateway.log_tail())
    assert "done sleeping" in restarted.output(job, "html").read_text()
    assert leftovers(core, batch, jobs_namespace) == []
