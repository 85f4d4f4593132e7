"""JupyterHub's own chart (z2jh, vendored), installed the way the README's "Install with
JupyterHub" tells an operator, with this chart beside it, and driven as users drive it: they log
in through the hub (dummy authenticator), start their servers through KubeSpawner, and reach
jupyter-scheduler's REST API through the hub's proxy, with their own tokens.

The steps (Z2jhInstall.install):
0. the operator's hub: z2jh with this cluster's settings (local images, no registry, no
   cloud metadata block, no user scheduler) and a dummy authenticator;
1. `helm install jupyter-scheduler-k8s` into the hub's namespace (README step 1);
2. the z2jh values block from `helm get notes`, unchanged, added to the hub's release with
   `helm upgrade` (README step 2).
"""
import json
import os
import secrets
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import requests
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "chart"))
import helmrender  # noqa: E402

Z2JH_VERSION = "4.4.0"
NAMESPACE = "jhub"                       # the README's names
HUB_RELEASE = "jhub"
RELEASE = "jupyter-scheduler-k8s"
JOBS_NS = f"{NAMESPACE}-jobs"
GATEWAY = f"{RELEASE}-gateway"
TERMINAL = ("COMPLETED", "FAILED", "STOPPED")


def z2jh_chart() -> Path:
    """The vendored chart: $JSK8S_Z2JH_DIR, else ../shared/vendor beside the checkout, else
    /work/shared/vendor (as ci/image/env.sh finds it for the hub image)."""
    for d in (os.environ.get("JSK8S_Z2JH_DIR"), ROOT.parent / "shared" / "vendor" / f"z2jh-{Z2JH_VERSION}",
              Path(f"/work/shared/vendor/z2jh-{Z2JH_VERSION}")):
        if d and (Path(d) / "jupyterhub" / "Chart.yaml").is_file():
            return Path(d) / "jupyterhub"
    raise AssertionError(f"z2jh {Z2JH_VERSION} not found: set JSK8S_Z2JH_DIR")


def _image(name_tag):
    name, tag = name_tag.rsplit(":", 1)
    return {"name": name, "tag": tag, "pullPolicy": "Never"}


# What the operator offers in the "Create job" form: two compute profiles (the first, the default,
# keeps the chart's resources) and two environments. The environments share this cluster's one
# executor image; the form tells them apart by name.
PROFILES = {
    "standard": {"description": "the chart's resources"},
    "small": {"description": "0.1 CPU, 512 MiB",
              "resources": {"requests": {"cpu": "100m", "memory": "512Mi"}, "limits": {"cpu": "1", "memory": "512Mi"}}},
}
ENVIRONMENT_NAMES = ("python", "python-team")


def our_values(executor_image: str, gateway_image: str) -> list:
    """README step 1's flags, with this cluster's images (loaded, never pulled), a smaller CPU
    request for the gateway, and the profiles and environments above."""
    environments = [{"name": name, "image": executor_image, "description": f"Python 3 ({name})"}
                    for name in ENVIRONMENT_NAMES]
    flags = ["--set", "gateway.resources.requests.cpu=50m",
             "--set-json", f"executor.profiles={json.dumps(PROFILES)}",
             "--set-json", f"executor.environments={json.dumps(environments)}"]
    for part, image in (("executor", executor_image), ("gateway", gateway_image)):
        name, tag = image.rsplit(":", 1)
        flags += ["--set", f"{part}.image.name={name}", "--set", f"{part}.image.tag={tag}",
                  "--set", f"{part}.image.pullPolicy=Never"]
    return flags


def site_values(images: dict, password: str) -> dict:
    """What the operator's z2jh release holds before our chart: this cluster's settings only."""
    return {
        "hub": {"image": _image(images["hub"]), "db": {"type": "sqlite-memory"},
                "config": {"JupyterHub": {"authenticator_class": "dummy"},
                           "Authenticator": {"allow_all": True},
                           "DummyAuthenticator": {"password": password}}},
        "proxy": {"service": {"type": "ClusterIP"}, "chp": {"image": _image(images["proxy"])}},
        "singleuser": {"image": _image(images["user"]), "cloudMetadata": {"blockWithIptables": False},
                       "memory": {"guarantee": "256M", "limit": "1G"}, "storage": {"capacity": "1Gi"},
                       "startTimeout": 180},
        "prePuller": {"hook": {"enabled": False}, "continuous": {"enabled": False}},
        "scheduling": {"userScheduler": {"enabled": False}, "userPlaceholder": {"enabled": False}},
    }


def helm(kubeconfig, *args, timeout=600):
    result = subprocess.run([helmrender.helm_path(), "--kubeconfig", kubeconfig, *args],
                            capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"helm {' '.join(args[:2])}: {result.stderr}"
    return result.stdout


class Z2jhInstall:
    def __init__(self, kubeconfig: str, core, workdir: Path, images: dict):
        self.kubeconfig, self.core, self.workdir, self.images = kubeconfig, core, Path(workdir), images
        self.password = secrets.token_hex(12)
        self.notes = None          # our chart's NOTES.txt, as `helm get notes` shows it
        self.notes_values = None   # the z2jh block in it, parsed

    def install(self, our_values: list) -> "Z2jhInstall":
        self._wait_namespace_gone()
        site = self.workdir / "site-values.yaml"
        site.write_text(yaml.safe_dump(site_values(self.images, self.password)))
        helm(self.kubeconfig, "install", HUB_RELEASE, str(z2jh_chart()), "-n", NAMESPACE, "--create-namespace",
             "-f", str(site), "--wait", "--timeout", "5m")
        helm(self.kubeconfig, "install", RELEASE, str(helmrender.CHART), "-n", NAMESPACE, *our_values)
        self.notes = helm(self.kubeconfig, "get", "notes", RELEASE, "-n", NAMESPACE)
        self.notes_values = helmrender.z2jh_values(self.notes)
        block = self.workdir / "jobs-gateway-values.yaml"
        block.write_text(yaml.safe_dump(self.notes_values))
        helm(self.kubeconfig, "upgrade", HUB_RELEASE, str(z2jh_chart()), "-n", NAMESPACE,
             "-f", str(site), "-f", str(block), "--wait", "--timeout", "5m")
        return self

    def _wait_namespace_gone(self, timeout: float = 300) -> None:
        """An earlier run's namespace may still be terminating (its pods' grace periods)."""
        deadline = time.monotonic() + timeout
        while self.core.list_namespace(field_selector=f"metadata.name={NAMESPACE}").items:
            assert time.monotonic() < deadline, f"namespace {NAMESPACE} is still terminating"
            time.sleep(2)

    def uninstall(self) -> None:
        for release in (RELEASE, HUB_RELEASE):
            subprocess.run([helmrender.helm_path(), "--kubeconfig", self.kubeconfig, "uninstall", release,
                            "-n", NAMESPACE, "--wait"], capture_output=True, timeout=300)
        try:  # the users' PVCs (KubeSpawner's, not the release's) go with the namespace
            self.core.delete_namespace(NAMESPACE)
        except Exception:  # noqa: BLE001 - best effort; the cluster is torn down after the run
            pass

    @property
    def url(self) -> str:
        """The hub's public address: proxy-public's cluster IP (kube-proxy's rules cover the node)."""
        return f"http://{self.core.read_namespaced_service('proxy-public', NAMESPACE).spec.cluster_ip}"

    def login(self, name: str) -> "HubUser":
        return HubUser(self, name).login()

    def logs(self, component: str, lines: int = 80) -> str:
        out = []
        for pod in self.core.list_namespaced_pod(NAMESPACE, label_selector=f"component={component}").items:
            try:
                out.append(f"--- {pod.metadata.name}\n" + self.core.read_namespaced_pod_log(
                    pod.metadata.name, NAMESPACE, tail_lines=lines))
            except Exception as e:  # noqa: BLE001 - only for a failure message
                out.append(f"--- {pod.metadata.name}: {e}")
        return "\n".join(out)


class HubUser:
    """One user, logged in through the hub's login form; afterwards everything goes through the
    proxy with the token the user made for themselves, as JupyterLab's requests do."""

    def __init__(self, hub: Z2jhInstall, name: str):
        self.hub, self.name = hub, name
        self.token = None

    def login(self) -> "HubUser":
        session = requests.Session()
        url = self.hub.url
        session.get(f"{url}/hub/login", timeout=30).raise_for_status()
        xsrf = session.cookies.get("_xsrf")
        answer = session.post(f"{url}/hub/login", allow_redirects=False, timeout=60,
                              data={"username": self.name, "password": self.hub.password, "_xsrf": xsrf})
        assert answer.status_code == 302, (answer.status_code, answer.text[:500])
        # Logging in starts a new session, with a new XSRF token (as the browser's next page shows).
        session.get(f"{url}/hub/token", timeout=30).raise_for_status()
        xsrf = [c.value for c in session.cookies if c.name == "_xsrf"][-1]
        answer = session.post(f"{url}/hub/api/users/{self.name}/tokens", timeout=30,
                              headers={"X-XSRFToken": xsrf}, json={"note": "e2e", "expires_in": 4 * 3600})
        assert answer.status_code == 201, (answer.status_code, answer.text[:500])
        self.token = answer.json()["token"]
        return self

    def call(self, method: str, path: str, body=None, token=None, timeout=60):
        """A request to the hub's public address (`path` starts with /) with this user's token."""
        headers = {"Authorization": f"token {token or self.token}"}
        return requests.request(method, self.hub.url + path, json=body, headers=headers, timeout=timeout)

    # ---- the user's server, through the hub's REST API -------------------------------------------
    def server_state(self) -> dict:
        answer = self.call("GET", f"/hub/api/users/{self.name}")
        answer.raise_for_status()
        return answer.json()["servers"].get("", {})

    def start_server(self, timeout: float = 240) -> "HubUser":
        answer = self.call("POST", f"/hub/api/users/{self.name}/server")
        assert answer.status_code in (201, 202, 400), answer.text  # 400: already running
        self._wait_server(lambda s: s.get("ready"), timeout, "ready")
        return self

    def stop_server(self, timeout: float = 180) -> None:
        answer = self.call("DELETE", f"/hub/api/users/{self.name}/server")
        assert answer.status_code in (202, 204), answer.text
        self._wait_server(lambda s: not s, timeout, "stopped")
        # and its pod is gone, so that a new one starts from the volume alone
        deadline = time.monotonic() + timeout
        while self.hub.core.list_namespaced_pod(NAMESPACE, field_selector=f"metadata.name={self.pod}").items:
            assert time.monotonic() < deadline, f"{self.pod} is still there"
            time.sleep(1)

    def _wait_server(self, done, timeout, what):
        deadline = time.monotonic() + timeout
        while not done(self.server_state()):
            assert time.monotonic() < deadline, f"{self.name}'s server not {what}:\n{self.hub.logs('hub')}"
            time.sleep(1)

    @property
    def pod(self) -> str:
        return f"jupyter-{self.name}"

    def exec(self, command: list, timeout: float = 120):
        """(exit code, output) of a command in the user's server container, as from its terminal."""
        from kubernetes.stream import stream
        ws = stream(self.hub.core.connect_get_namespaced_pod_exec, self.pod, NAMESPACE, container="notebook",
                    command=command, stdin=False, stdout=True, stderr=True, tty=False, _preload_content=False)
        ws.run_forever(timeout=timeout)
        return ws.returncode, ws.read_channel(1) + ws.read_channel(2)

    def log_tail(self, lines: int = 60) -> str:
        try:
            return self.hub.core.read_namespaced_pod_log(self.pod, NAMESPACE, tail_lines=lines)
        except Exception as e:  # noqa: BLE001 - only for a failure message
            return f"no log of {self.pod}: {e}"

    # ---- the user server's APIs, through the proxy ------------------------------------------------
    def server(self, method: str, path: str, body=None, token=None):
        return self.call(method, f"/user/{self.name}{path}", body, token=token)

    def put_notebook(self, path: str, notebook) -> None:
        answer = self.server("PUT", f"/api/contents/{path}", {"type": "notebook", "format": "json",
                                                              "content": json.loads(json.dumps(notebook))})
        assert answer.status_code in (200, 201), answer.text

    def environments(self) -> list:
        answer = self.server("GET", "/scheduler/runtime_environments")
        answer.raise_for_status()
        return answer.json()

    def create_job(self, input_uri: str, **fields) -> str:
        body = {"input_uri": input_uri, "name": Path(input_uri).stem, "output_formats": ["ipynb"],
                "runtime_environment_name": self.environments()[0]["name"]}
        body.update(fields)
        answer = self.server("POST", "/scheduler/jobs", body)
        assert answer.status_code == 200, f"{answer.text}\n{self.log_tail()}"
        return answer.json()["job_id"]

    def job(self, job_id: str) -> dict:
        answer = self.server("GET", f"/scheduler/jobs/{job_id}")
        answer.raise_for_status()
        return answer.json()

    def jobs(self) -> list:
        answer = self.server("GET", "/scheduler/jobs")
        answer.raise_for_status()
        return answer.json()["jobs"]

    def wait(self, job_id: str, timeout: float = 300, until=TERMINAL) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if job["status"] in until:
                return job
            assert time.monotonic() < deadline, f"job {job_id} still {job['status']} after {timeout}s\n{self.log_tail()}"
            time.sleep(1)

    def stop_job(self, job_id: str) -> None:
        answer = self.server("PATCH", f"/scheduler/jobs/{job_id}", {"status": "STOPPED"})
        assert answer.status_code == 204, answer.text

    def delete_job(self, job_id: str) -> None:
        answer = self.server("DELETE", f"/scheduler/jobs/{job_id}")
        assert answer.status_code == 204, answer.text

    # ---- job definitions (schedules) -------------------------------------------------------------
    def create_definition(self, input_uri: str, schedule: str = "* * * * *", **fields) -> str:
        body = {"input_uri": input_uri, "name": Path(input_uri).stem, "output_formats": ["ipynb"],
                "runtime_environment_name": self.environments()[0]["name"], "schedule": schedule, "timezone": "UTC"}
        body.update(fields)
        answer = self.server("POST", "/scheduler/job_definitions", body)
        assert answer.status_code == 200, f"{answer.text}\n{self.log_tail()}"
        return answer.json()["job_definition_id"]

    def run_now(self, definition_id: str) -> str:
        """The job definition's "Run now": a run made at once from the CronJob's template."""
        answer = self.server("POST", f"/scheduler/job_definitions/{definition_id}/jobs", {})
        assert answer.status_code == 200, f"{answer.text}\n{self.log_tail()}"
        return answer.json()["job_id"]

    def update_definition(self, definition_id: str, **fields) -> None:
        answer = self.server("PATCH", f"/scheduler/job_definitions/{definition_id}", fields)
        assert answer.status_code == 204, answer.text

    def delete_definition(self, definition_id: str) -> None:
        answer = self.server("DELETE", f"/scheduler/job_definitions/{definition_id}")
        assert answer.status_code == 204, answer.text

    def definitions(self) -> list:
        answer = self.server("GET", "/scheduler/job_definitions")
        answer.raise_for_status()
        return answer.json()["job_definitions"]

    def delete_everything(self) -> None:
        """Her definitions and jobs, deleted as she would (a running job is stopped first); nothing
        when her server is not running (it holds her list)."""
        if not self.server_state().get("ready"):
            return
        for definition in self.definitions():
            self.delete_definition(definition["job_definition_id"])
        for job in self.jobs():
            self.delete_job(job["job_id"])

    def runs(self, definition_id: str) -> list:
        answer = self.server("GET", f"/scheduler/jobs?job_definition_id={definition_id}&max_items=1000")
        answer.raise_for_status()
        return sorted(answer.json()["jobs"], key=lambda j: j["create_time"])

    def wait_imported(self, definition_id: str, job_ids, timeout: float = 240) -> list:
        """Waits until these runs (their Jobs' uids) are listed, ended; returns them."""
        deadline, wanted = time.monotonic() + timeout, set(job_ids)
        while True:
            runs = [r for r in self.runs(definition_id) if r["job_id"] in wanted]
            if len(runs) == len(wanted) and all(r["status"] in ("COMPLETED", "FAILED") for r in runs):
                return runs
            assert time.monotonic() < deadline, (f"runs {sorted(wanted)} not all listed and ended after {timeout}s: "
                                                 f"{[(r['job_id'], r['status']) for r in runs]}\n{self.log_tail()}")
            time.sleep(2)

    def download(self, job_id: str) -> dict:
        """What the job list's download button does (the outputs are copied next to the input),
        then each file as the browser fetches it: {path relative to the output folder: bytes}."""
        answer = self.server("GET", f"/scheduler/jobs/{job_id}/download_files?redownload=true")
        assert answer.status_code == 204, answer.text
        job = self.job(job_id)
        paths = [f["file_path"] for f in job["job_files"] if f.get("file_path")]
        folder = str(Path(paths[0]).parent)
        listing = self.server("GET", f"/api/contents/{urllib.parse.quote(folder)}").json()["content"]
        files = {}
        for entry in listing:
            if entry["type"] != "directory":
                got = self.server("GET", f"/files/{urllib.parse.quote(entry['path'])}")
                got.raise_for_status()
                files[entry["name"]] = got.content
        return files
