"""Every setting of the backend, as traitlets, in one place.

Operators set these through the Helm chart (which writes `K8sConfig` into the user server's
`jupyter_server_config.json`) or in `jupyter_server_config.py` as `c.K8sConfig.<name>`.
The seed's K8S_* environment variables still work, as fallbacks below configured values.
"""
import os

from traitlets import Dict, Enum, Int, List, Unicode, default, validate
from traitlets.config import Application, Config, LoggingConfigurable

from . import __version__

SA_NAMESPACE_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
PULL_POLICIES = ("Always", "IfNotPresent", "Never")
PROFILE_KEYS = {"description", "cpu_request", "cpu_limit", "memory_request", "memory_limit", "gpu",
                "node_selector", "tolerations", "timeout_seconds"}


def _env(name, fallback=None):
    value = os.environ.get(name, "").strip()
    return value or fallback


def _check_policy(value):
    if value is not None and value not in PULL_POLICIES:
        raise ValueError(f"image_pull_policy must be one of {', '.join(PULL_POLICIES)}, not {value!r}")
    return value


class K8sConfig(LoggingConfigurable):
    """Where and how notebook jobs run on Kubernetes."""

    namespace = Unicode(config=True, help="""
        Namespace in which job PVCs, Jobs and pods are created.
        Default: $K8S_NAMESPACE, else the namespace of the server's own ServiceAccount when running
        in a cluster, else `default`. The Helm chart sets a namespace separate from JupyterHub's.""")

    @default("namespace")
    def _namespace_default(self):
        if _env("K8S_NAMESPACE"):
            return _env("K8S_NAMESPACE")
        try:
            with open(SA_NAMESPACE_FILE) as f:
                return f.read().strip()
        except OSError:
            return "default"

    image = Unicode(config=True, help="""
        Executor image that runs the notebooks (built from this project's `image/`).
        Default: $K8S_IMAGE, else `localhost/jupyter-scheduler-k8s-executor:<package version>`, the name
        `make image` builds and `make load-image` loads into a local cluster.""")

    @default("image")
    def _image_default(self):
        return _env("K8S_IMAGE", f"localhost/jupyter-scheduler-k8s-executor:{__version__}")

    image_pull_policy = Unicode(None, allow_none=True, config=True, help="""
        imagePullPolicy of job pods: Always, IfNotPresent or Never. Default: $K8S_IMAGE_PULL_POLICY,
        else chosen from the cluster: `Never` on local clusters (kind, minikube, docker-desktop, k3d,
        this project's ci/cluster), whose images are loaded by hand, and `IfNotPresent` elsewhere.""")

    @default("image_pull_policy")
    def _pull_policy_default(self):
        # Defaults skip @validate, so the environment's value is checked here.
        return _check_policy(_env("K8S_IMAGE_PULL_POLICY"))

    @validate("image_pull_policy")
    def _check_pull_policy(self, proposal):
        return _check_policy(proposal["value"])

    storage_size = Unicode(config=True, help="""
        Size of each job's PersistentVolumeClaim, which holds the inputs and everything the notebook
        writes. Default: $K8S_STORAGE_SIZE, else 1Gi.""")

    @default("storage_size")
    def _storage_size_default(self):
        return _env("K8S_STORAGE_SIZE", "1Gi")

    storage_class = Unicode(None, allow_none=True, config=True, help="""
        StorageClass of job PVCs. Default: $K8S_STORAGE_CLASS, else the cluster's default class.""")

    @default("storage_class")
    def _storage_class_default(self):
        return _env("K8S_STORAGE_CLASS")

    # Defaults that make a burst of jobs queue in Pending instead of overcommitting a node: the
    # scheduler places pods by their requests, and a memory limit equal to the request means a
    # node never runs more notebooks than its memory holds. Profiles raise them per job.
    cpu_request = Unicode(config=True, help="""
        CPU request of the executor container (notebook and kernel). Default: $K8S_EXECUTOR_CPU_REQUEST,
        else 250m. An empty string leaves it unset.""")
    cpu_limit = Unicode(config=True, help="""
        CPU limit of the executor container; a notebook above it is throttled, not killed.
        Default: $K8S_EXECUTOR_CPU_LIMIT, else 2. An empty string leaves it unset.""")
    memory_request = Unicode(config=True, help="""
        Memory request of the executor container. Default: $K8S_EXECUTOR_MEMORY_REQUEST, else 1Gi.
        An empty string leaves it unset.""")
    memory_limit = Unicode(config=True, help="""
        Memory limit of the executor container. A notebook that exceeds it fails with OOMKilled.
        Default: $K8S_EXECUTOR_MEMORY_LIMIT, else 1Gi (equal to the request, so memory is never
        overcommitted). An empty string leaves it unset.""")

    @default("cpu_request")
    def _cpu_request_default(self):
        return _env("K8S_EXECUTOR_CPU_REQUEST", "250m")

    @default("cpu_limit")
    def _cpu_limit_default(self):
        return _env("K8S_EXECUTOR_CPU_LIMIT", "2")

    @default("memory_request")
    def _memory_request_default(self):
        return _env("K8S_EXECUTOR_MEMORY_REQUEST", "1Gi")

    @default("memory_limit")
    def _memory_limit_default(self):
        return _env("K8S_EXECUTOR_MEMORY_LIMIT", "1Gi")

    kubeconfig = Unicode(None, allow_none=True, config=True, help="""
        Path of a kubeconfig file. Default: $KUBECONFIG (its first path); when neither is set, the
        in-cluster ServiceAccount if the server runs in a pod, else ~/.kube/config.""")

    @default("kubeconfig")
    def _kubeconfig_default(self):
        # Read when the config is built, not when the kubernetes package was imported.
        paths = _env("KUBECONFIG")
        return paths.split(os.pathsep)[0] if paths else None

    context = Unicode(None, allow_none=True, config=True,
                      help="kubeconfig context to use. Default: the file's current context.")

    gateway_url = Unicode("", config=True, help="""
        Hub mode: the jobs gateway's URL, e.g. http://proxy-public/services/jobs-gateway/ (through
        the hub's proxy). When set, this server holds no Kubernetes credentials: every request goes
        to the gateway, authenticated with gateway_token, and kubeconfig and context are unused.
        Default: $JSK8S_GATEWAY_URL.""")

    @default("gateway_url")
    def _gateway_url_default(self):
        return _env("JSK8S_GATEWAY_URL", "")

    gateway_token = Unicode(config=True, help="""
        The JupyterHub API token sent to the jobs gateway. Default: $JUPYTERHUB_API_TOKEN, which
        JupyterHub gives every user server.""")

    @default("gateway_token")
    def _gateway_token_default(self):
        return _env("JUPYTERHUB_API_TOKEN", "")

    username = Unicode(config=True, help="""
        The JupyterHub user who owns these jobs, put on every object as the `hub.jupyter.org/username`
        label. Default: $JSK8S_USERNAME (the chart fills it through the Downward API), else
        $JUPYTERHUB_USER.""")

    @default("username")
    def _username_default(self):
        return _env("JSK8S_USERNAME", _env("JUPYTERHUB_USER", ""))

    extra_labels = Dict(config=True, help="Labels added to every PVC, Job and pod this backend creates.")
    extra_annotations = Dict(config=True, help="Annotations added to every PVC, Job and pod this backend creates.")

    job_ttl_seconds = Int(300, config=True, help="""
        ttlSecondsAfterFinished of each Job. The backend deletes a Job itself once its outputs are
        collected; the TTL cleans up Jobs whose server never came back.""")

    timeout_seconds = Int(0, config=True, help="""
        Default run time limit of a job, in seconds (activeDeadlineSeconds); 0 means none.
        A compute profile's `timeout_seconds` overrides it.""")

    scheduling_timeout_seconds = Int(300, config=True, help="""
        How long a job may wait to be scheduled (for example for a GPU) or for its image before it
        fails with the scheduler's reason.""")

    collect_hold_seconds = Int(600, config=True, help="""
        How long a finished job pod waits for the server to collect its outputs before it exits.
        Outputs stay on the PVC either way; a server that comes back later collects them from there.""")

    output_size_limit = Int(1024 ** 3, config=True, help="""
        Largest total size, in bytes, of the outputs and side-effect files accepted from one job.
        Anything that comes out of a job pod is untrusted.""")

    run_log_limit = Int(4 * 1024 ** 2, config=True, help="""
        Largest size, in bytes, of a job's run log (the notebook's printed output and the
        executor's messages). Longer logs keep their end, where a failure's traceback is.""")

    schedule_concurrency_policy = Enum(["Forbid", "Allow", "Replace"], "Forbid", config=True, help="""
        concurrencyPolicy of a job definition's CronJob: what happens when a run is due while the
        previous one still runs. Forbid skips the new run; Replace stops the old one.""")

    schedule_starting_deadline_seconds = Int(300, config=True, help="""
        startingDeadlineSeconds of a job definition's CronJob: a run that could not start within
        this many seconds of its time (the controller was down, or the previous run still ran
        under Forbid) is skipped. Also keeps the controller from giving up on a CronJob after
        more than 100 missed start times.""")

    schedule_runs_kept = Int(20, config=True, help="""
        Runs of a job definition kept on its volume (and as finished Jobs) until the user's server
        imports them into the job list; older ones are deleted. Bounds what a definition keeps
        while its server is culled.""")

    schedule_run_max_age_seconds = Int(7 * 24 * 3600, config=True, help="""
        Runs of a job definition not imported within this many seconds are deleted, with their Jobs.""")

    schedule_import_interval_seconds = Int(30, config=True, help="""
        How often the user's server looks for finished runs of its job definitions to import
        (and once at start-up).""")

    definitions_per_user = Int(20, min=0, config=True, help="""
        Job definitions (schedules) one user may have; creating one more is refused with a
        message naming this limit. 0: no limit. Enforced where the Kubernetes rights are: by the
        jobs gateway on JupyterHub, by the user's server in direct mode.""")

    running_jobs_per_user = Int(5, min=0, config=True, help="""
        Jobs (and scheduled runs) of one user that run at once. More wait in a queue, shown as
        QUEUED, and start by themselves, oldest first, as the user's running ones end. 0: no
        limit. The queue is kept in Kubernetes (suspended Jobs, admitted by the jobs gateway),
        so a waiting job needs neither the user's server nor the gateway that accepted it.""")

    queued_jobs_per_user = Int(200, min=0, config=True, help="""
        Jobs of one user that may wait in the queue; one more fails at once with a message
        naming this limit, and nothing is created. 0: no limit.""")

    node_selector = Dict(config=True, help="nodeSelector of every job pod (a profile's adds to it).")
    tolerations = List(config=True, help="Tolerations of every job pod (a profile's add to them).")

    profiles = Dict(config=True, help="""
        Compute profiles offered in the UI's compute-type list, by name. Each is a dict with any of:
        description, cpu_request, cpu_limit, memory_request, memory_limit, gpu (nvidia.com/gpu count),
        node_selector, tolerations, timeout_seconds. Unset keys fall back to the settings above.""")

    @validate("profiles")
    def _check_profiles(self, proposal):
        for name, profile in proposal["value"].items():
            unknown = set(profile) - PROFILE_KEYS
            if unknown:
                raise ValueError(f"profile {name!r} has unknown keys {sorted(unknown)}; known: {sorted(PROFILE_KEYS)}")
        return proposal["value"]

    default_profile = Unicode("", config=True, help="Profile used when a job names none. Default: the first one.")

    environments = List(config=True, help="""
        Runtime environments offered in the UI: a list of dicts with `name`, `image` and an optional
        `description`. Default: one environment named after the image.""")


def jupyter_config_files() -> Config:
    """What a Jupyter server started here would load from `jupyter_server_config.json` files on
    the Jupyter config path (JUPYTER_CONFIG_PATH first): the chart's ConfigMap lands there. Lets
    the command line tools resolve the same settings as the server."""
    from jupyter_core.paths import jupyter_config_path
    from traitlets.config.loader import JSONFileConfigLoader

    merged = Config()
    # Later directories are less specific: load them first so earlier ones win.
    for directory in reversed(jupyter_config_path()):
        path = os.path.join(directory, "jupyter_server_config.json")
        if os.path.isfile(path):
            merged.merge(JSONFileConfigLoader("jupyter_server_config.json", directory).load_config())
    return merged


def server_config() -> Config:
    """The traitlets config of the running Jupyter server, or an empty one outside a server.

    Execution managers are built by jupyter-scheduler with no config argument and pickled into a
    child process, so they capture this plain (picklable) Config in the server instead.
    """
    if Application.initialized():
        return Config(Application.instance().config)
    return Config()


class UnknownProfileError(ValueError):
    pass


def resolve_profile(cfg: K8sConfig, name) -> dict:
    """Resources and placement for a compute profile name (None: the default profile).

    Raises UnknownProfileError naming the valid profiles, so a bad name fails at submit time.
    """
    base = {"cpu_request": cfg.cpu_request, "cpu_limit": cfg.cpu_limit, "memory_request": cfg.memory_request,
            "memory_limit": cfg.memory_limit, "gpu": 0, "node_selector": dict(cfg.node_selector),
            "tolerations": list(cfg.tolerations), "timeout_seconds": cfg.timeout_seconds}
    if not cfg.profiles:
        if name and name != "default":
            raise UnknownProfileError(f"Unknown compute type {name!r}: this server offers no compute profiles")
        return _fit_requests_to_limits(base, {})
    name = name or cfg.default_profile or next(iter(cfg.profiles))
    if name not in cfg.profiles:
        raise UnknownProfileError(f"Unknown compute type {name!r}; valid: {', '.join(cfg.profiles)}")
    profile = cfg.profiles[name]
    for key in ("cpu_request", "cpu_limit", "memory_request", "memory_limit", "gpu", "timeout_seconds"):
        if profile.get(key) not in (None, ""):
            base[key] = profile[key]
    base["node_selector"].update(profile.get("node_selector") or {})
    base["tolerations"] += list(profile.get("tolerations") or [])
    return _fit_requests_to_limits(base, profile)


def _fit_requests_to_limits(resolved: dict, profile: dict) -> dict:
    """Kubernetes refuses a container whose request exceeds its limit. A profile that asks for
    more than the limit it inherits gets a limit to match; otherwise the limit wins (a memory
    limit set below the default request means "this much", as a lone limit does in Kubernetes)."""
    from kubernetes.utils import parse_quantity  # here: importing kubernetes takes seconds

    for resource in ("cpu", "memory"):
        request, limit = resolved[f"{resource}_request"], resolved[f"{resource}_limit"]
        if request and limit and parse_quantity(request) > parse_quantity(limit):
            if profile.get(f"{resource}_request") not in (None, "") and profile.get(f"{resource}_limit") in (None, ""):
                resolved[f"{resource}_limit"] = request
            else:
                resolved[f"{resource}_request"] = limit
    return resolved


def image_for(cfg: K8sConfig, environment) -> str:
    """The image of a runtime environment name (falls back to `image` for unknown or no name)."""
    for env in cfg.environments:
        if env.get("name") == environment and env.get("image"):
            return env["image"]
    return cfg.image
