"""A real JupyterHub (from PyPI) as a process, and the chart's jobs gateway as installed, for the
hub-mode tests. The hub listens on the node's address, where the gateway's pod reaches it, issues
the users' tokens and answers the gateway's token checks through its REST API, as on a real
install. It runs without a proxy: nothing here goes through one (the real z2jh install, with its
proxy, is tests of its own)."""
import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from .processes import ManagedProcess, free_port

GATEWAY_SERVICE = "jobs-gateway"
GATEWAY_SCOPE = f"access:services!service={GATEWAY_SERVICE}"

HUB_CONFIG = '''
from jupyterhub.proxy import Proxy


class NoProxy(Proxy):
    """Only the hub's REST API is used: no proxy process, no routes."""
    should_start = False

    async def start(self):
        pass

    async def stop(self):
        pass

    async def add_route(self, routespec, target, data):
        pass

    async def delete_route(self, routespec):
        pass

    async def get_all_routes(self):
        return {{}}


c.JupyterHub.proxy_class = NoProxy
c.JupyterHub.authenticator_class = "dummy"
c.Authenticator.allow_all = True
c.JupyterHub.hub_ip = "{ip}"
c.JupyterHub.hub_port = {hub_port}
c.JupyterHub.port = {public_port}
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.db_url = "sqlite:///{state}/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = "{state}/cookie_secret"
c.JupyterHub.pid_file = "{state}/jupyterhub.pid"
c.JupyterHub.services = [
    {{"name": "{gateway}", "api_token": "{gateway_token}"}},
    {{"name": "fixture", "api_token": "{fixture_token}"}},
]
c.JupyterHub.load_roles = [
    {{"name": "fixture", "scopes": ["admin:users", "tokens"], "services": ["fixture"]}},
    # What an operator grants so that users' tokens may reach the gateway (NOTES.txt).
    {{"name": "user", "scopes": ["self", "{scope}"]}},
]
'''


def wait_http(url: str, process: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except urllib.error.HTTPError:
            return  # it answers
        except (urllib.error.URLError, ConnectionError, OSError):
            tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
            assert process.poll() is None, f"{url}: the process exited:\n{tail}"
            assert time.monotonic() < deadline, f"{url} did not answer:\n{tail}"
            time.sleep(0.3)


def call(url: str, method: str = "GET", token: str = None, body=None, headers=None, timeout: float = 30):
    """(status, parsed JSON body or bytes, headers) of an HTTP request, whatever the status."""
    data = json.dumps(body).encode() if isinstance(body, (dict, list)) else body
    request = urllib.request.Request(url, data=data, method=method, headers=dict(headers or {}))
    if token:
        request.add_header("Authorization", f"token {token}")
    if isinstance(body, (dict, list)):
        request.add_header("Content-Type", "application/json")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        response = e
    raw = response.read()
    try:
        parsed = json.loads(raw) if raw else None
    except ValueError:
        parsed = raw
    return response.status if hasattr(response, "status") else response.code, parsed, response.headers


def job_endpoints(job: str, pod: str) -> list:
    """(method, url, body) of every gateway endpoint that names one job (its URL, `job`) or its pod:
    what another user's token must get a 404 from."""
    return [("GET", job, None), ("PUT", job, {"job": {"input_file": "x.ipynb", "outputs": {}}}),
            ("DELETE", job, None), ("GET", f"{job}/volume", None), ("GET", f"{job}/warning", None),
            ("POST", f"{job}/stop", None), ("POST", f"{job}/collector", {}), ("DELETE", f"{job}/collector", None),
            ("PUT", f"{job}/pods/{pod}/input", b"x" * 1024), ("GET", f"{job}/pods/{pod}/output", None),
            ("POST", f"{job}/pods/{pod}/release", None), ("GET", f"{job}/pods/{pod}/log", None)]


def definition_endpoints(definition: str, run: str) -> list:
    """(method, url, body) of every gateway endpoint that names one job definition (its URL,
    `definition`) or one of its runs."""
    body = {"definition": {"input_file": "x.ipynb", "outputs": {}, "log_name": "x.log", "schedule": "* * * * *"}}
    return [("PUT", definition, body), ("PATCH", definition, body), ("DELETE", definition, None),
            ("POST", f"{definition}/runs", {}), ("DELETE", f"{definition}/runs/{run}", None),
            ("GET", f"{definition}/runs/{run}/pod", None), ("POST", f"{definition}/runs/{run}/forget", None),
            ("GET", f"{definition}/runs/{run}/output", None), ("POST", f"{definition}/holder", {}),
            ("PUT", f"{definition}/snapshot", b"x" * 1024)]


class Hub(ManagedProcess):
    """JupyterHub on `ip` (the node's address: pods reach it there). start() again after stop()
    brings the same hub back, with its users and tokens, on the same port."""

    def __init__(self, state: Path, ip: str = "127.0.0.1"):
        super().__init__()
        self.state, self.ip = Path(state), ip
        self.log_path = self.state / "hub.log"
        self.state.mkdir(parents=True, exist_ok=True)
        self.port = free_port(ip)
        self.gateway_token, self.fixture_token = secrets.token_hex(16), secrets.token_hex(16)
        self.api_url = f"http://{ip}:{self.port}/hub/api"

    def start(self) -> "Hub":
        config = self.state / "jupyterhub_config.py"
        config.write_text(HUB_CONFIG.format(
            ip=self.ip, hub_port=self.port, public_port=free_port(), state=self.state, gateway=GATEWAY_SERVICE,
            gateway_token=self.gateway_token, fixture_token=self.fixture_token, scope=GATEWAY_SCOPE))
        log = self.log_path
        env = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTERHUB")}
        self.process = subprocess.Popen([sys.executable, "-m", "jupyterhub", "-f", str(config)], cwd=self.state,
                                        env=env, stdout=open(log, "ab"), stderr=subprocess.STDOUT)
        wait_http(self.api_url + "/", self.process, log)
        return self

    def user_token(self, name: str, scopes=(GATEWAY_SCOPE,), expires_in=None) -> str:
        """Creates the user if need be and a token of theirs with these scopes."""
        status, _, _ = call(f"{self.api_url}/users/{name}", "POST", self.fixture_token)
        assert status in (201, 409), status
        request = {"scopes": list(scopes), "note": "e2e"}
        if expires_in:
            request["expires_in"] = expires_in
        status, body, _ = call(f"{self.api_url}/users/{name}/tokens", "POST", self.fixture_token, request)
        assert status == 201, body
        return body["token"]


class InstalledGateway:
    """The chart's gateway Deployment, reached from this host through its Service's cluster IP
    (kube-proxy's rules cover the node itself)."""

    def __init__(self, core, apps, namespace: str, name: str):
        self.core, self.apps, self.namespace, self.name = core, apps, namespace, name

    @property
    def url(self) -> str:
        service = self.core.read_namespaced_service(self.name, self.namespace)
        return f"http://{service.spec.cluster_ip}:{service.spec.ports[0].port}/services/{GATEWAY_SERVICE}/"

    @property
    def api(self) -> str:
        return self.url + "api/v1/"

    def pod_api(self, pod) -> str:
        """One gateway pod's API, by its pod IP (per-pod caps hold per pod)."""
        return self.api.replace(urllib.parse.urlsplit(self.api).netloc, f"{pod.status.pod_ip}:8000")

    def pods(self):
        selector = ",".join(f"{k}={v}" for k, v in
                            self.apps.read_namespaced_deployment(self.name, self.namespace).spec.selector.match_labels.items())
        return self.core.list_namespaced_pod(self.namespace, label_selector=selector).items

    def wait_ready(self, timeout: float = 180) -> "InstalledGateway":
        """Until every pod of the current ReplicaSet is ready, no other is left, and the API answers."""
        deadline = time.monotonic() + timeout
        while True:
            d = self.apps.read_namespaced_deployment(self.name, self.namespace)
            pods = self.pods()
            ready = (d.status.observed_generation == d.metadata.generation
                     and (d.status.updated_replicas or 0) == (d.status.ready_replicas or 0) == d.spec.replicas
                     and len(pods) == d.spec.replicas and not any(p.metadata.deletion_timestamp for p in pods))
            if ready:
                try:
                    urllib.request.urlopen(self.api + "health", timeout=5)
                    return self
                except OSError:
                    pass
            assert time.monotonic() < deadline, f"the gateway did not become ready:\n{self.log_tail()}"
            time.sleep(0.5)

    def kill(self) -> None:
        """Every gateway pod, at once and without grace: the Deployment starts new ones."""
        for pod in self.pods():
            self.core.delete_namespaced_pod(pod.metadata.name, self.namespace, grace_period_seconds=0)

    def restarts(self) -> int:
        return sum(status.restart_count for pod in self.pods() for status in pod.status.container_statuses or [])

    def processes(self) -> list:
        """The gateway's server processes, as seen from this host (the node): those whose cgroup
        is one of the gateway pods'."""
        uids = [pod.metadata.uid for pod in self.pods()]
        found = []
        for entry in os.listdir("/proc"):
            try:
                cgroup = Path(f"/proc/{entry}/cgroup").read_text()
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except (OSError, ValueError):
                continue
            if any(uid in cgroup or uid.replace("-", "_") in cgroup for uid in uids) and b"gateway" in cmdline:
                found.append(int(entry))
        assert found, f"no gateway process on this node for pods {uids}"
        return found


    def log_tail(self, lines: int = 60) -> str:
        tails = []
        for pod in self.pods():
            try:
                tails.append(f"--- {pod.metadata.name}\n" + self.core.read_namespaced_pod_log(
                    pod.metadata.name, self.namespace, tail_lines=lines))
            except Exception as e:  # noqa: BLE001 - only for a failure message
                tails.append(f"--- {pod.metadata.name}: no log ({e})")
        return "\n".join(tails)


class PeakMemory:
    """The peak resident memory of some processes from now on (the kernel's VmHWM, reset with
    clear_refs), against what they held at the start."""

    def __init__(self, pids):
        self.pids = list(pids)
        self.start = {pid: _status(pid, "VmRSS") for pid in self.pids}
        for pid in self.pids:
            Path(f"/proc/{pid}/clear_refs").write_text("5")  # resets VmHWM to the current RSS

    def growth(self) -> int:
        """The largest growth of any of them, in bytes."""
        return max(_status(pid, "VmHWM") - self.start[pid] for pid in self.pids)


def _status(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} for process {pid}")


def trickle_upload(url: str, token: str, outcome: list, seconds: float = 240) -> None:
    """An upload that sends 100 bytes every 5 s: records whether the gateway cut it off before
    the client gave up."""
    parts = urllib.parse.urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as s:
        s.sendall(f"PUT {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nAuthorization: token {token}\r\n"
                  f"Content-Length: {1024 ** 2}\r\n\r\n".encode())
        ends = time.monotonic() + seconds
        try:
            while time.monotonic() < ends:
                s.sendall(b"\0" * 100)
                s.settimeout(5)
                try:
                    if s.recv(65536) == b"":
                        outcome.append("cut")
                        return
                except socket.timeout:
                    pass
                except OSError:
                    outcome.append("cut")
                    return
        except OSError:
            outcome.append("cut")
            return
    outcome.append("held to the end")
