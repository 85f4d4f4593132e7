"""`jupyter-scheduler-k8s doctor`: checks, one line each, that notebook jobs can run with this
configuration, and says what to do about each failure. Exits non-zero when jobs could not run."""
import time
import uuid
from typing import Callable, List, Tuple

from kubernetes import client
from kubernetes.client.rest import ApiException

from .config import K8sConfig
from .kube import executor, manifests, names, reasons
from .kube.clients import Clients, is_local_context, pull_policy
from .kube.reasons import describe_error

OK, WARN, FAIL = "ok", "warn", "FAIL"

# (group, resource, subresource, verbs): exactly what the backend does, no more. The chart's Role
# grants the same (tests/chart checks both against the API calls in this package's source).
# Objects are deleted by name, never by collection.
NEEDED = [
    ("", "persistentvolumeclaims", "", ["create", "get", "delete"]),
    ("", "pods", "", ["create", "get", "list", "watch", "delete"]),
    # Exec is a websocket GET upgraded to a stream: the API server checks both verbs.
    ("", "pods", "exec", ["create", "get"]),
    ("", "pods", "log", ["get"]),
    # The queue (kube/queue.py): patch admits a Job (and marks it staged), watch follows them.
    ("batch", "jobs", "", ["create", "get", "list", "watch", "patch", "delete"]),
    # Job definitions (kube/schedules.py): patch changes the schedule, list counts them per user.
    ("batch", "cronjobs", "", ["create", "get", "list", "patch", "delete"]),
    ("", "events", "", ["list"]),
    # The Lease that lets one gateway replica at a time admit (the client's leader election).
    ("coordination.k8s.io", "leases", "", ["get", "create", "update"]),
]


class Doctor:
    def __init__(self, cfg: K8sConfig, clients: Clients, echo: Callable[[str], None] = print):
        self.cfg, self.clients, self.echo = cfg, clients, echo
        self.results: List[Tuple[str, str]] = []

    def report(self, status: str, message: str) -> bool:
        self.results.append((status, message))
        self.echo(f"[{status:>4}] {message}")
        return status != FAIL

    def run(self) -> int:
        cfg = self.cfg
        self.report(OK, f"config: namespace={cfg.namespace} image={cfg.image} storage={cfg.storage_size} "
                        f"class={cfg.storage_class or '(cluster default)'} profiles={list(cfg.profiles) or 'none'}")
        if not self.api_server():
            return 1
        self.permissions()
        self.storage_class()
        self.admission()
        self.image()
        return 1 if any(status == FAIL for status, _ in self.results) else 0

    def api_server(self) -> bool:
        try:
            version = client.VersionApi(self.clients.api_client).get_code()
        except Exception as e:  # noqa: BLE001 - any failure means the same to the operator
            return self.report(FAIL, f"API server not reachable ({e}); check kubeconfig/in-cluster config and "
                                     "that a NetworkPolicy lets the server reach the API server")
        return self.report(OK, f"API server {version.git_version} reachable (context {self.clients.context_name or '?'})")

    def run_hub_mode(self, gateway) -> int:
        """In a user server in hub mode: the jobs gateway answers, takes this server's token, and
        holds every permission it needs in the jobs namespace (it checks them itself)."""
        self.report(OK, f"hub mode: jobs gateway {self.cfg.gateway_url}")
        try:
            me = gateway.whoami()
        except Exception as e:  # noqa: BLE001 - any failure means the same to the user
            self.report(FAIL, f"the jobs gateway did not accept this server's request ({describe_error(e)}); "
                              "check K8sConfig.gateway_url and the hub's service and role settings (README)")
            return 1
        self.report(OK, f"the gateway knows this server's token as user {me['name']}")
        missing = me.get("missing_permissions") or []
        if missing:
            self.report(FAIL, f"the gateway lacks permissions in namespace {me['namespace']}: {', '.join(missing)}; "
                              "check the chart's Role and RoleBinding for the gateway")
        else:
            self.report(OK, f"jobs namespace {me['namespace']} ready: the gateway holds every permission it needs")
        return 1 if any(status == FAIL for status, _ in self.results) else 0

    def missing_permissions(self) -> List[str]:
        """The NEEDED verbs this identity lacks in the jobs namespace."""
        auth = client.AuthorizationV1Api(self.clients.api_client)
        missing = []
        for group, resource, sub, verbs in NEEDED:
            for verb in verbs:
                review = client.V1SelfSubjectAccessReview(spec=client.V1SelfSubjectAccessReviewSpec(
                    resource_attributes=client.V1ResourceAttributes(
                        namespace=self.cfg.namespace, group=group, resource=resource, subresource=sub or None, verb=verb)))
                if not auth.create_self_subject_access_review(review).status.allowed:
                    missing.append(f"{verb} {resource}{'/' + sub if sub else ''}")
        return missing

    def permissions(self) -> None:
        missing = self.missing_permissions()
        if missing:
            self.report(FAIL, f"missing permissions in namespace {self.cfg.namespace}: {', '.join(missing)}; "
                              "check the chart's Role and RoleBinding (or the server's ServiceAccount)")
        else:
            self.report(OK, f"all {sum(len(v) for *_, v in NEEDED)} permissions granted in namespace {self.cfg.namespace}")

    def storage_class(self) -> None:
        storage = client.StorageV1Api(self.clients.api_client)
        try:
            if self.cfg.storage_class:
                storage.read_storage_class(self.cfg.storage_class)
                self.report(OK, f"StorageClass {self.cfg.storage_class} exists")
                return
            defaults = [sc.metadata.name for sc in storage.list_storage_class().items
                        if (sc.metadata.annotations or {}).get("storageclass.kubernetes.io/is-default-class") == "true"]
        except ApiException as e:
            if e.status == 404:
                self.report(FAIL, f"StorageClass {self.cfg.storage_class} does not exist; set storage_class "
                                  "(chart: executor.storage.storageClass) to one of `kubectl get storageclass`")
            elif e.status == 403:
                self.report(WARN, "cannot read StorageClasses (chart: rbac.storageClassRead) to check storage")
            else:
                raise
            return
        if defaults:
            self.report(OK, f"default StorageClass {defaults[0]} will provision job volumes")
        else:
            self.report(FAIL, "no StorageClass configured and the cluster has no default one; set storage_class")

    def _probe_pod(self, name: str) -> client.V1Pod:
        return manifests.make_collector_pod(
            name, self.cfg.namespace, names.labels("doctor", names.COMPONENT_COLLECTOR, self.cfg.username),
            {}, image=self.cfg.image, pull_policy=pull_policy(self.cfg.image_pull_policy, self.clients.context_name),
            pvc_name=name, hold_seconds=1)

    def admission(self) -> None:
        """Server-side dry run of the objects jobs create: Pod Security and admission policies run."""
        core = client.CoreV1Api(self.clients.api_client)
        ns = self.cfg.namespace
        try:
            labels = core.read_namespace(ns).metadata.labels or {}
            level = labels.get("pod-security.kubernetes.io/enforce", "privileged (not set)")
            self.report(OK, f"namespace {ns} exists, Pod Security enforce level: {level}")
        except ApiException as e:
            if e.status == 404:
                self.report(FAIL, f"namespace {ns} does not exist; create it (chart: jobs.createNamespace)")
                return
            if e.status != 403:
                raise
        pod = self._probe_pod(f"jsk8s-doctor-{uuid.uuid4().hex[:8]}")
        try:
            core.create_namespaced_pod(ns, pod, dry_run="All")
            self.report(OK, "job pods are admitted (Pod Security and admission policies, server-side dry run)")
        except ApiException as e:
            self.report(FAIL, f"job pods would be refused: {describe_error(e)}")

    def image(self) -> None:
        """Starts a tiny pod with the executor image: the only sure test that nodes can get it."""
        core = client.CoreV1Api(self.clients.api_client)
        name = f"jsk8s-doctor-{uuid.uuid4().hex[:8]}"
        pod = self._probe_pod(name)
        pod.spec.volumes = None
        pod.spec.containers[0].volume_mounts = None
        pod.spec.containers[0].command = executor.usage()
        local = is_local_context(self.clients.context_name)
        try:
            core.create_namespaced_pod(self.cfg.namespace, pod)
        except ApiException as e:
            self.report(FAIL, f"could not start a test pod with the executor image: {describe_error(e)}")
            return
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                p = core.read_namespaced_pod(name, self.cfg.namespace)
                cs = reasons.container_status(p)
                waiting = cs.state.waiting if cs is not None and cs.state else None
                if waiting is not None and waiting.reason in ("ErrImagePull", "ImagePullBackOff", "ErrImageNeverPull", "InvalidImageName"):
                    hint = ("load it into the cluster (e.g. `make load-image`, `kind load docker-image`)" if local
                            else "push it to a registry the nodes can pull from, or fix image/pull secrets")
                    self.report(FAIL, f"executor image {self.cfg.image} is not available: {waiting.reason}; {hint}")
                    return
                if p.status.phase in ("Succeeded", "Failed") or (cs is not None and (cs.state.running or cs.state.terminated)):
                    self.report(OK, f"executor image {self.cfg.image} starts on the cluster")
                    return
                time.sleep(1)
            self.report(WARN, f"a test pod with {self.cfg.image} did not start within 120 s (busy or unschedulable cluster?)")
        finally:
            try:
                core.delete_namespaced_pod(name, self.cfg.namespace, grace_period_seconds=0)
            except ApiException:
                pass
