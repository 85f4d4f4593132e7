"""The jobs gateway as the chart installs it, against a stranger and a hostile notebook: what they
send is refused or bounded, the gateway's memory stays put, and it is never restarted.

Memory is the gateway process's own peak (VmHWM, read on this host, which is the node)."""
import socket
import threading
import time
import urllib.parse
import urllib.request
import uuid

import nbformat
import pytest
from kubernetes import client

from .conftest import FULLNAME, NEVER_SOON, leftovers, running_pod, write_notebook
from .hub import PeakMemory, call, trickle_upload
from .netpol import egress_allows

pytestmark = pytest.mark.e2e
MiB = 1024 ** 2
JOB_ID = "5f0c9a52-1e4b-4d8e-9a57-2c1f0b7d3e11"


def _stranger_put(url: str, size: int, answers: list) -> None:
    """A PUT of `size` bytes without a token: the answer to its headers alone, then as much of
    the body as the gateway takes before it closes the connection."""
    parts = urllib.parse.urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=60) as s:
        s.sendall(f"PUT {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: application/json\r\n"
                  f"Content-Length: {size}\r\n\r\n".encode())
        answer = s.recv(65536)  # before a byte of the body is sent
        sent, block = 0, b"\0" * MiB
        try:
            while sent < size:
                s.sendall(block)
                sent += len(block)
        except OSError:
            pass
        answers.append((answer, sent))


def test_strangers_bodies_are_never_read(gateway):
    """Four clients without a token, each sending 100 MiB at once: each is refused on its headers,
    the gateway stops reading, its memory does not grow, and it serves on, never restarted."""
    memory = PeakMemory(gateway.processes())
    answers = []
    threads = [threading.Thread(target=_stranger_put, args=(url, 100 * MiB, answers)) for url in (
        f"{gateway.api}jobs/{JOB_ID}", f"{gateway.api}jobs/{JOB_ID}/pods/jsk8s-x/input",
        f"{gateway.api}definitions/{JOB_ID}", f"{gateway.api}definitions/{JOB_ID}/snapshot")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert len(answers) == 4
    for answer, sent in answers:
        assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
        assert sent < 100 * MiB, "the gateway read a stranger's whole body"
    growth = memory.growth()
    print(f"gateway peak RSS growth under 4 x 100 MiB from strangers: {growth / MiB:.1f} MiB; "
          f"body bytes the clients got out before the gateway closed: {[sent // MiB for _, sent in answers]} MiB")
    assert growth < 32 * MiB, f"the gateway's memory grew by {growth / MiB:.0f} MiB"
    assert urllib.request.urlopen(gateway.api + "health", timeout=10).status == 200
    assert gateway.restarts() == 0


TAMPER = '''
import os, shutil, jsk8s_executor
tries = {
    "replace the executor": lambda: open(shutil.which("jsk8s-executor"), "w").write("#!/bin/sh\\ncat /dev/zero >&2\\n"),
    "add a command before it": lambda: open(os.path.join(os.path.dirname(shutil.which("jsk8s-executor")), "tar"), "w"),
    "change its package": lambda: open(jsk8s_executor.__file__, "a").write("raise SystemExit"),
}
for what, attempt in tries.items():
    try:
        attempt()
        print(what, ": DONE")
    except OSError as e:
        print(what, ":", e.strerror)
'''
TINY_PACKAGE = '''
import pathlib
pkg = pathlib.Path("tinypkg")
(pkg / "tinypkg").mkdir(parents=True, exist_ok=True)
(pkg / "tinypkg" / "__init__.py").write_text("WORKS = 'tinypkg imported'\\n")
(pkg / "pyproject.toml").write_text("[build-system]\\nrequires = ['setuptools']\\n"
                                    "build-backend = 'setuptools.build_meta'\\n[project]\\nname = 'tinypkg'\\nversion = '1.0'\\n")
'''
# Started by the notebook, it outlives it in the pod (same uid as what the gateway execs there):
# it stops the first `stage-out`, and writes 1 GiB into its stderr. (It leaves the kernel's
# process tree first: ipykernel ends its children when it shuts down.)
FLOOD = '''
import os, signal, time
if os.fork():
    os._exit(0)
me, deadline = os.getpid(), time.time() + 900
while time.time() < deadline:
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            if b"stage-out" not in open(f"/proc/{entry}/cmdline", "rb").read().split(b"\\0"):
                continue
            os.kill(int(entry), signal.SIGSTOP)
            fd = os.open(f"/proc/{entry}/fd/2", os.O_WRONLY)
        except OSError:
            continue
        block = b"flood! " * (1024 ** 2 // 7)
        try:
            for _ in range(1024):
                os.write(fd, block)
        except OSError:
            pass
        raise SystemExit
    time.sleep(0.005)
'''


def test_a_notebook_cannot_replace_the_executor_nor_flood_the_gateway(gateway, user_server, core, batch,
                                                                     jobs_namespace):
    """Two of Mallory's jobs at once. One tries to replace what the gateway runs in its pod
    (refused), and %pip-installs a package (allowed: its kernel has a package directory). The
    other leaves a process behind that writes 1 GiB into its stage-out's stderr: the job fails with
    a short message, and the gateway's memory does not move."""
    server = user_server("mallory", gateway)
    write_notebook(str(server.root / "tamper" / "tamper.ipynb"), TAMPER, TINY_PACKAGE,
                   "%pip install --quiet --no-index --no-build-isolation ./tinypkg",
                   "import tinypkg; print(tinypkg.WORKS)")
    write_notebook(str(server.root / "flood.ipynb"),
                   "import subprocess, sys\n"
                   f"subprocess.Popen([sys.executable, '-c', {FLOOD!r}], start_new_session=True,\n"
                   "                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
                   "print('flooder started')")
    memory = PeakMemory(gateway.processes())
    tamper = server.create_job("tamper/tamper.ipynb", output_formats=["ipynb"], package_input_folder=True)
    flood = server.create_job("flood.ipynb", output_formats=["ipynb"])

    job = server.wait(tamper)
    assert job["status"] == "COMPLETED", job["status_message"]
    cells = nbformat.read(server.output(job, "ipynb"), as_version=4).cells
    printed = "".join(o.get("text", "") for o in cells[0].outputs)
    assert printed.splitlines() == [f"{what} : Permission denied" for what in (
        "replace the executor", "add a command before it", "change its package")], printed
    assert "tinypkg imported" in "".join(o.get("text", "") for o in cells[3].outputs), cells[3].outputs

    job = server.wait(flood, timeout=300)
    growth = memory.growth()
    print(f"gateway peak RSS growth while a pod wrote 1 GiB into stage-out's stderr: {growth / MiB:.1f} MiB; "
          f"the job's message: {job['status_message']!r}")
    assert job["status"] == "FAILED", (job["status"], job["status_message"])
    assert "printed more than 1 MiB and was cut off" in job["status_message"], job["status_message"]
    assert len(job["status_message"]) < 600
    assert growth < 32 * MiB, f"the gateway's memory grew by {growth / MiB:.0f} MiB"
    assert gateway.restarts() == 0
    assert call(gateway.api + "health")[0] == 200
    assert leftovers(core, batch, jobs_namespace) == []


def test_job_pods_reach_no_private_address(gateway, hub, core, jobs_namespace):
    """The chart's job NetworkPolicy, as installed, against the real addresses a notebook would
    try: the gateway's Service and pods, the hub's API, the API server and the node. (This
    cluster's bridge network plugin does not enforce NetworkPolicies: see netpol.py.)"""
    policy = client.NetworkingV1Api(core.api_client).read_namespaced_network_policy(f"{FULLNAME}-jobs", jobs_namespace)
    service = core.read_namespaced_service(gateway.name, gateway.namespace)
    api_server = [(address, port.port) for s in client.DiscoveryV1Api(core.api_client).list_namespaced_endpoint_slice(
        "default", label_selector="kubernetes.io/service-name=kubernetes").items
        for e in s.endpoints for address in e.addresses for port in s.ports]
    node = [(a.address, 10250) for n in core.list_node().items for a in n.status.addresses if a.type == "InternalIP"]
    targets = [(service.spec.cluster_ip, service.spec.ports[0].port), (hub.ip, hub.port), *api_server, *node,
               *[(pod.status.pod_ip, 8000) for pod in gateway.pods()],
               ("169.254.169.254", 80), ("100.100.100.200", 80)]  # the clouds' metadata servers
    assert len(targets) >= 6, targets
    for address, port in targets:
        assert not egress_allows(policy, address, port), (address, port, policy.spec.egress)
        assert egress_allows(policy, address, 53), (address, policy.spec.egress)  # DNS: the control
    assert egress_allows(policy, "151.101.0.223", 443)  # the internet (pypi.org): the other control


def test_one_users_flood_leaves_anothers_job_alone(gateway, hub, user_server, core, batch, jobs_namespace):
    """Alice floods the gateway (40 holder starts, 10 trickled uploads, 20 log reads at once)
    while Bob runs a job: his job completes with its outputs, the gateway stays ready, Alice's
    extra requests are refused with 429 and her trickles are cut off. (Bob's time with and
    without the flood: bench/gateway --flood.)"""
    alice, bob = user_server("alice", gateway), user_server("bob", gateway)
    write_notebook(str(alice.root / "nap.ipynb"), "print('napping', flush=True)\nimport time; time.sleep(240)")
    napping = alice.create_job("nap.ipynb")
    token = alice.hub_token
    definition = str(uuid.uuid4())  # a definition of hers, straight through the gateway (no snapshot needed)
    status, answer, _ = call(f"{gateway.api}definitions/{definition}", "PUT", token, {"definition": {
        "input_file": "nap.ipynb", "outputs": {"ipynb": "nap.ipynb"}, "log_name": "nap.log",
        "schedule": NEVER_SOON, "timezone": "UTC", "active": False}})
    assert status == 201, answer
    pod = running_pod(core, jobs_namespace, napping).metadata.name
    statuses, trickles, ready = [], [], []

    def post(url, method="POST"):
        statuses.append(call(url, method, token, {} if method == "POST" else None, timeout=120)[0])

    flood = [threading.Thread(target=post, args=(f"{gateway.api}definitions/{definition}/holder",)) for _ in range(40)]
    flood += [threading.Thread(target=trickle_upload, args=(f"{gateway.api}jobs/{napping}/pods/{pod}/input", token, trickles))
              for _ in range(10)]
    flood += [threading.Thread(target=post, args=(f"{gateway.api}jobs/{napping}/pods/{pod}/log", "GET"))
              for _ in range(20)]
    for thread in flood:
        thread.start()
    write_notebook(str(bob.root / "report.ipynb"), "print('bob was here')")
    job = bob.create_job("report.ipynb", output_formats=["ipynb", "html"])
    while bob.job(job)["status"] not in ("COMPLETED", "FAILED", "STOPPED"):
        ready.append(call(gateway.api + "ready")[0])
        time.sleep(1)
    job = bob.job(job)
    assert job["status"] == "COMPLETED", (job["status_message"], gateway.log_tail())
    assert "bob was here" in bob.output(job, "html").read_text()
    assert ready and set(ready) == {200}, ready  # Alice's share of the threads never ran out for all
    for thread in flood:
        thread.join(300)
    print(f"Alice's flood: {len(statuses)} requests answered "
          f"({sorted((s, statuses.count(s)) for s in set(statuses))}), trickles: {trickles}")
    # Holders: two at a time per gateway pod (the Service spreads her requests); logs: no stream slot left.
    assert statuses.count(429) >= 40 - 2 * len(gateway.pods()), statuses
    assert all(status in (200, 201, 429) for status in statuses), statuses
    assert trickles.count("cut") == 10, trickles  # cut for stalling, or refused at once for want of a slot
    alice.delete_job(napping)
    assert call(f"{gateway.api}definitions/{definition}", "DELETE", token)[0] == 204
    assert leftovers(core, batch, jobs_namespace) == []
