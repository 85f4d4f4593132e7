"""A real JupyterHub (from PyPI) as a process on loopback, and the jobs gateway as a process, for
the hub-mode tests. The hub issues the users' tokens and answers the gateway's token checks
through its REST API, as on a real install. It runs without a proxy: nothing here goes through
one (the real z2jh install, with its proxy, is tests of its own)."""
import json
import os
import secrets
import subprocess
import sys
import time
import urllib.error
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
c.JupyterHub.hub_ip = "127.0.0.1"
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


class Hub(ManagedProcess):
    def __init__(self, state: Path):
        super().__init__()
        self.state = Path(state)
        self.log_path = self.state / "hub.log"
        self.state.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.gateway_token, self.fixture_token = secrets.token_hex(16), secrets.token_hex(16)
        self.api_url = f"http://127.0.0.1:{self.port}/hub/api"

    def start(self) -> "Hub":
        config = self.state / "jupyterhub_config.py"
        config.write_text(HUB_CONFIG.format(
            hub_port=self.port, public_port=free_port(), state=self.state, gateway=GATEWAY_SERVICE,
            gateway_token=self.gateway_token, fixture_token=self.fixture_token, scope=GATEWAY_SCOPE))
        log = self.log_path
        env = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTERHUB")}
        self.process = subprocess.Popen([sys.executable, "-m", "jupyterhub", "-f", str(config)], cwd=self.state,
                                        env=env, stdout=open(log, "ab"), stderr=subprocess.STDOUT)
        wait_http(self.api_url + "/", self.process, log)
        return self

    def user_token(self, name: str, scopes=(GATEWAY_SCOPE,)) -> str:
        """Creates the user if need be and a token of theirs with these scopes."""
        status, _, _ = call(f"{self.api_url}/users/{name}", "POST", self.fixture_token)
        assert status in (201, 409), status
        status, body, _ = call(f"{self.api_url}/users/{name}/tokens", "POST", self.fixture_token,
                               {"scopes": list(scopes), "note": "e2e"})
        assert status == 201, body
        return body["token"]


class GatewayProcess(ManagedProcess):
    """`jupyter-scheduler-k8s gateway`, with the chart's server config and a kubeconfig."""
    stop_seconds = 10

    def __init__(self, state: Path, config: dict, kubeconfig: str, hub_api_url: str, service_token: str):
        super().__init__()
        self.state = Path(state)
        self.log_path = self.state / "gateway.log"
        self.state.mkdir(parents=True, exist_ok=True)
        self.config, self.kubeconfig = config, kubeconfig
        self.hub_api_url, self.service_token = hub_api_url, service_token
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/services/{GATEWAY_SERVICE}/"
        self.api = self.url + "api/v1/"

    def start(self) -> "GatewayProcess":
        config_dir = self.state / "config"
        config_dir.mkdir(exist_ok=True)
        (config_dir / "jupyter_server_config.json").write_text(json.dumps(self.config, indent=1))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("K8S_", "JSK8S_", "JUPYTER"))}
        env.update(JUPYTER_CONFIG_DIR=str(config_dir), KUBECONFIG=self.kubeconfig,
                   JUPYTERHUB_API_URL=self.hub_api_url, JUPYTERHUB_API_TOKEN=self.service_token,
                   JUPYTERHUB_SERVICE_NAME=GATEWAY_SERVICE, JUPYTERHUB_SERVICE_PREFIX=f"/services/{GATEWAY_SERVICE}/")
        log = self.log_path
        self.process = subprocess.Popen(
            [sys.executable, "-m", "jupyter_scheduler_k8s.cli", "gateway", "--ip", "127.0.0.1", "--port", str(self.port)],
            env=env, stdout=open(log, "ab"), stderr=subprocess.STDOUT)
        wait_http(self.api + "health", self.process, log)
        return self

