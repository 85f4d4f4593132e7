"""A user's Jupyter server, for real: `jupyter server` with jupyter-scheduler, configured by the
chart's ConfigMap, holding the chart's ServiceAccount token, driven through the REST API that
JupyterLab's scheduler UI calls. Tests can SIGKILL it mid-job and start it again on the same
state (database, staging area, root dir)."""
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

from .processes import ManagedProcess, free_port

TERMINAL = ("COMPLETED", "FAILED", "STOPPED")


class JupyterServer(ManagedProcess):
    def __init__(self, state: Path, config: dict, kubeconfig: str, username: str = "e2e-user", env=None):
        super().__init__()
        self.state, self.config, self.kubeconfig, self.username = Path(state), config, kubeconfig, username
        self.env = dict(env or {})  # e.g. JUPYTERHUB_API_TOKEN, as JupyterHub gives a user server
        self.root = self.state / "root"
        self.root.mkdir(parents=True, exist_ok=True)
        self.token = uuid.uuid4().hex
        self.log_path = self.state / "server.log"
        self.url = None

    # ---- process ------------------------------------------------------------------------------
    def start(self, timeout: float = 90) -> "JupyterServer":
        config_dir = self.state / "config"
        for directory in (config_dir, self.state / "data", self.state / "runtime"):
            directory.mkdir(exist_ok=True)
        (config_dir / "jupyter_server_config.json").write_text(json.dumps(self.config, indent=1))
        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("K8S_", "JSK8S_", "JUPYTER"))}
        env.update(JUPYTER_CONFIG_DIR=str(config_dir), JUPYTER_DATA_DIR=str(self.state / "data"),
                   JUPYTER_RUNTIME_DIR=str(self.state / "runtime"), KUBECONFIG=self.kubeconfig,
                   JSK8S_USERNAME=self.username)
        env.update(self.env)
        log = open(self.state / "server.log", "ab")
        self.process = subprocess.Popen(
            # --allow-root: CI runs as root; JupyterHub's user servers do not.
            [sys.executable, "-m", "jupyter_server", "--no-browser", "--allow-root", "--ServerApp.ip=127.0.0.1",
             f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--IdentityProvider.token={self.token}",
             f"--ServerApp.root_dir={self.root}"],
            env=env, stdout=log, stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.request("GET", "/api/status")
                return self
            except (urllib.error.URLError, ConnectionError):
                assert self.process.poll() is None, f"jupyter server exited: {self.log_tail()}"
                assert time.monotonic() < deadline, f"jupyter server did not answer: {self.log_tail()}"
                time.sleep(0.3)

    # ---- the REST API the scheduler UI uses ---------------------------------------------------------
    def request(self, method: str, path: str, body=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Authorization": f"token {self.token}",
                                              "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as response:
            text = response.read().decode()
            return json.loads(text) if text else None

    def form_defaults(self) -> dict:
        """What the "Create job" form sends when nothing is changed: the first environment, every
        output format it offers (all are checked), its default compute type."""
        env = self.request("GET", "/scheduler/runtime_environments")[0]
        return {"runtime_environment_name": env["name"], "output_formats": [f["name"] for f in env["output_formats"]],
                "compute_type": env.get("default_compute_type"), "parameters": {}}

    def create_job(self, input_uri: str, **fields) -> str:
        body = {"input_uri": input_uri, "name": Path(input_uri).stem, "output_formats": ["ipynb"],
                "runtime_environment_name": self.request("GET", "/scheduler/runtime_environments")[0]["name"]}
        body.update(fields)
        return self.request("POST", "/scheduler/jobs", body)["job_id"]

    def job(self, job_id: str) -> dict:
        return self.request("GET", f"/scheduler/jobs/{job_id}")

    def stop_job(self, job_id: str) -> None:
        self.request("PATCH", f"/scheduler/jobs/{job_id}", {"status": "STOPPED"})

    def delete_job(self, job_id: str) -> None:
        self.request("DELETE", f"/scheduler/jobs/{job_id}")

    # ---- job definitions (schedules) ---------------------------------------------------------------
    def create_definition(self, input_uri: str, schedule: str = "* * * * *", **fields) -> str:
        body = {"input_uri": input_uri, "name": Path(input_uri).stem, "output_formats": ["ipynb"],
                "runtime_environment_name": self.request("GET", "/scheduler/runtime_environments")[0]["name"],
                "schedule": schedule, "timezone": "UTC"}
        body.update(fields)
        return self.request("POST", "/scheduler/job_definitions", body)["job_definition_id"]

    def definition(self, definition_id: str) -> dict:
        return self.request("GET", f"/scheduler/job_definitions/{definition_id}")

    def update_definition(self, definition_id: str, **fields) -> None:
        self.request("PATCH", f"/scheduler/job_definitions/{definition_id}", fields)

    def delete_definition(self, definition_id: str) -> None:
        self.request("DELETE", f"/scheduler/job_definitions/{definition_id}")

    def run_now(self, definition_id: str, **fields) -> str:
        return self.request("POST", f"/scheduler/job_definitions/{definition_id}/jobs", fields)["job_id"]

    def runs(self, definition_id: str) -> list:
        """The definition's jobs in the job list, oldest first."""
        jobs = self.request("GET", f"/scheduler/jobs?job_definition_id={definition_id}&max_items=1000")["jobs"]
        return sorted(jobs, key=lambda j: j["create_time"])

    def wait_imported(self, definition_id: str, job_ids, timeout: float = 240) -> list:
        """Waits until these runs (their Jobs' uids) are listed, ended; returns them."""
        deadline, wanted = time.monotonic() + timeout, set(job_ids)
        while True:
            runs = [r for r in self.runs(definition_id) if r["job_id"] in wanted]
            if len(runs) == len(wanted) and all(r["status"] in ("COMPLETED", "FAILED") for r in runs):
                return runs
            assert time.monotonic() < deadline, (
                f"runs {sorted(wanted)} of {definition_id} not all listed and ended after {timeout}s: "
                f"{[(r['job_id'], r['status']) for r in runs]}; the server's log ends:\n{self.log_tail(60)}")
            time.sleep(1)

    def wait(self, job_id: str, timeout: float = 240, until=TERMINAL) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if job["status"] in until:
                return job
            assert time.monotonic() < deadline, (f"job {job_id} still {job['status']} after {timeout}s; "
                                                 f"the server's log ends:\n{self.log_tail(60)}")
            time.sleep(0.5)

    def staging_dir(self, job_id: str) -> Path:
        return self.state / "data" / "scheduler_staging_area" / job_id

    def output(self, job: dict, fmt: str) -> Path:
        """The staged output of a format (named like jupyter-scheduler's staging paths)."""
        matches = [p for p in self.staging_dir(job["job_id"]).iterdir()
                   if p.suffix == f".{fmt}" and p.name != job["input_filename"]]
        assert len(matches) == 1, f"{fmt}: {matches}"
        return matches[0]
