"""Render tests: `helm template` with each values combination, asserting on the objects."""
import json
import re
import textwrap

import pytest
import yaml

from helmrender import (
    CHART, CI_VALUES, NAMESPACE, RELEASE, ROOT, find, notes, one, render, render_error, server_config, z2jh_values,
)

FULLNAME = f"{RELEASE}-jupyter-scheduler-k8s"
GATEWAY = f"{FULLNAME}-gateway"
JOBS_NS = f"{NAMESPACE}-jobs"
SA_USERNAME = f"system:serviceaccount:{NAMESPACE}:{GATEWAY}"
CI = {path.name.removesuffix("-values.yaml"): path for path in CI_VALUES}
COMBINATIONS = [("default", ())] + [(name, (path,)) for name, path in CI.items()]
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding",
                  "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}

def needed_rules():
    """{(apiGroup, resource): verbs} from doctor.NEEDED, which the backend checks at run time."""
    from jupyter_scheduler_k8s.doctor import NEEDED
    return {(group, resource + (f"/{sub}" if sub else "")): set(verbs) for group, resource, sub, verbs in NEEDED}


# The API calls in the package's source, by client method name: (verbs, resource).
_VERBS = {"create": {"create"}, "read": {"get"}, "list": {"list"}, "delete": {"delete"},
          "connect_get": {"get", "create"}, "patch": {"patch"}}
_RESOURCES = {"persistent_volume_claim": ("", "persistentvolumeclaims"), "pod": ("", "pods"),
              "pod_exec": ("", "pods/exec"), "pod_log": ("", "pods/log"), "job": ("batch", "jobs"),
              "event": ("", "events"), "cron_job": ("batch", "cronjobs")}


def used_rules():
    used = {}
    for path in (ROOT / "jupyter_scheduler_k8s").rglob("*.py"):
        for verb, resource in re.findall(r"\.(create|read|list|delete|connect_get|patch|replace|"
                                         r"delete_collection)_namespaced_(\w+?)\b", path.read_text()):
            assert verb in _VERBS and resource in _RESOURCES, f"{path.name}: {verb}_namespaced_{resource} is not mapped"
            used.setdefault(_RESOURCES[resource], set()).update(_VERBS[verb])
    used[("", "pods")].add("watch")  # watch.pod_events streams list_namespaced_pod
    used[("batch", "jobs")].add("watch")  # the queue's Admitter streams list_namespaced_job
    # The official client's leader election (kube/queue.py) reads, creates and replaces its Lease.
    used[("coordination.k8s.io", "leases")] = {"get", "create", "update"}
    return used


def test_doctor_checks_exactly_the_verbs_the_code_uses():
    assert needed_rules() == used_rules()


def rules_of(role):
    """{(apiGroup, resource): verbs}, failing on a rule listed twice."""
    result = {}
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                key = (group, resource)
                assert key not in result, f"{key} appears in two rules"
                result[key] = set(rule["verbs"])
    return result


def test_ci_values_files_exist():
    assert {"same-namespace", "quota", "profiles", "netpol", "admission-audit", "minimal"} <= set(CI)


# --- namespaces --------------------------------------------------------------------------------

def test_default_jobs_namespace_is_separate_and_restricted():
    objects = render()
    ns = one(objects, "Namespace")
    assert ns["metadata"]["name"] == JOBS_NS != NAMESPACE
    labels = ns["metadata"]["labels"]
    for mode in ("enforce", "warn", "audit"):
        assert labels[f"pod-security.kubernetes.io/{mode}"] == "restricted"
        assert labels[f"pod-security.kubernetes.io/{mode}-version"] == "latest"
    # In the release namespace: the config user servers mount, and the gateway.
    in_release = {(o["kind"], o["metadata"]["name"]) for o in objects
                  if o["metadata"].get("namespace") == NAMESPACE}
    assert in_release == {("ConfigMap", f"{FULLNAME}-config"), ("ServiceAccount", GATEWAY), ("Deployment", GATEWAY),
                          ("Service", GATEWAY), ("NetworkPolicy", GATEWAY),
                          ("PodDisruptionBudget", GATEWAY)}
    for kind in ("Role", "RoleBinding"):
        assert one(objects, kind)["metadata"]["namespace"] == JOBS_NS
    assert one(objects, "NetworkPolicy", name=f"{FULLNAME}-jobs")["metadata"]["namespace"] == JOBS_NS
    assert server_config(objects)["K8sConfig"]["namespace"] == JOBS_NS


def test_every_namespaced_object_names_its_namespace():
    for name, files in COMBINATIONS:
        for obj in render(values_files=files):
            if obj["kind"] not in CLUSTER_SCOPED:
                assert obj["metadata"].get("namespace"), f"{name}: {obj['kind']} has no namespace"


def test_explicit_jobs_namespace_is_used_everywhere():
    objects = render({"jobs": {"namespace": "notebook-jobs"}})
    assert one(objects, "Namespace")["metadata"]["name"] == "notebook-jobs"
    for kind in ("Role", "RoleBinding"):
        assert one(objects, kind)["metadata"]["namespace"] == "notebook-jobs"
    assert one(objects, "NetworkPolicy", name=f"{FULLNAME}-jobs")["metadata"]["namespace"] == "notebook-jobs"
    assert server_config(objects)["K8sConfig"]["namespace"] == "notebook-jobs"
    for binding in find(objects, "ValidatingAdmissionPolicyBinding"):
        selector = binding["spec"]["matchResources"]["namespaceSelector"]["matchLabels"]
        assert selector == {"kubernetes.io/metadata.name": "notebook-jobs"}


def test_existing_jobs_namespace_is_not_created():
    objects = render({"jobs": {"namespace": "existing", "createNamespace": False}})
    assert not find(objects, "Namespace")
    assert one(objects, "Role")["metadata"]["namespace"] == "existing"
    text = notes({"jobs": {"namespace": "existing", "createNamespace": False}})
    assert "kubectl label namespace existing pod-security.kubernetes.io/enforce=restricted" in text


def test_same_namespace_is_refused_without_the_explicit_flag():
    error = render_error({"jobs": {"namespace": NAMESPACE}})
    assert "jobs.allowReleaseNamespace: true" in error
    assert f"release namespace ({NAMESPACE})" in error


def test_same_namespace_with_the_flag_renders_and_warns():
    values = {"jobs": {"namespace": NAMESPACE, "allowReleaseNamespace": True}}
    objects = render(values)
    assert not find(objects, "Namespace"), "the release namespace must never be a chart object"
    assert one(objects, "Role")["metadata"]["namespace"] == NAMESPACE
    assert server_config(objects)["K8sConfig"]["namespace"] == NAMESPACE
    text = notes(values)
    assert "WARNING: notebook jobs run in the JupyterHub namespace" in text
    assert "#####" in text
    # The ci file ct lints with says the same, in namespace "default" where helm lint renders.
    assert "WARNING" in notes(values_files=[CI["same-namespace"]], namespace="default")


def test_default_notes_carry_no_warning():
    assert "WARNING" not in notes()


def test_invalid_or_too_long_jobs_namespace_fails():
    assert "at '/jobs/namespace': 'Bad_Name' does not match pattern" in render_error({"jobs": {"namespace": "Bad_Name"}})
    error = render_error(namespace="n" * 60)  # "<60 chars>-jobs" is over 63
    assert "longer than 63 characters" in error


# --- RBAC --------------------------------------------------------------------------------------

def test_role_has_exactly_the_backend_verbs():
    role = one(render(), "Role")
    assert rules_of(role) == needed_rules()


def test_role_binding_binds_the_gateway_service_account_only():
    objects = render()
    binding = one(objects, "RoleBinding")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": one(objects, "Role")["metadata"]["name"]}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": GATEWAY, "namespace": NAMESPACE}]
    sa = one(objects, "ServiceAccount")
    assert sa["metadata"] == {**sa["metadata"], "name": GATEWAY, "namespace": NAMESPACE}
    assert one(objects, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == GATEWAY


@pytest.mark.parametrize("name,files", COMBINATIONS, ids=[c[0] for c in COMBINATIONS])
def test_no_rights_in_the_release_namespace_and_none_on_secrets(name, files):
    objects = render(values_files=files)
    same_namespace = name == "same-namespace"
    release_ns = "default" if same_namespace else NAMESPACE
    for role in find(objects, "Role") + find(objects, "ClusterRole"):
        for (group, resource), verbs in rules_of(role).items():
            assert resource != "secrets" and "*" not in (group, resource) and "*" not in verbs
    if not same_namespace:
        assert not find(objects, "Role", namespace=release_ns)
        assert not find(objects, "RoleBinding", namespace=release_ns)


def test_storage_class_read_is_a_tiny_optional_cluster_role():
    objects = render()
    cluster_role = one(objects, "ClusterRole")
    assert rules_of(cluster_role) == {("storage.k8s.io", "storageclasses"): {"get", "list"}}
    binding = one(objects, "ClusterRoleBinding")
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": GATEWAY, "namespace": NAMESPACE}]
    # Cluster-scoped names carry the release namespace: two hubs never collide.
    assert cluster_role["metadata"]["name"] == f"{FULLNAME}-{NAMESPACE}"
    off = render({"rbac": {"storageClassRead": False}})
    assert not find(off, "ClusterRole") and not find(off, "ClusterRoleBinding")


def test_existing_service_account_is_bound_not_created():
    objects = render(values_files=[CI["minimal"]])
    assert not find(objects, "ServiceAccount")
    assert one(objects, "RoleBinding")["subjects"][0]["name"] == "jobs-gateway-sa"
    assert one(objects, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "jobs-gateway-sa"


# --- server config -----------------------------------------------------------------------------

REQUIRED_K8S_KEYS = {
    "namespace", "image", "image_pull_policy", "storage_size", "extra_labels", "job_ttl_seconds",
    "timeout_seconds", "scheduling_timeout_seconds", "collect_hold_seconds", "output_size_limit",
    "run_log_limit", "node_selector", "tolerations", "profiles", "default_profile",
    "cpu_request", "cpu_limit", "memory_request", "memory_limit", "schedule_concurrency_policy",
    "schedule_starting_deadline_seconds", "schedule_runs_kept", "schedule_run_max_age_seconds",
    "schedule_import_interval_seconds", "definitions_per_user", "running_jobs_per_user", "queued_jobs_per_user",
}


def test_server_config_defaults():
    config = server_config(render())
    # The package's server extension (400 for refused requests), also where the image's own
    # jupyter_server_config.d lacks the package's file.
    assert config["ServerApp"] == {"jpserver_extensions": {"jupyter_scheduler_k8s": True}}
    assert config["SchedulerApp"] == {
        "scheduler_class": "jupyter_scheduler_k8s.scheduler.K8sScheduler",
        "environment_manager_class": "jupyter_scheduler_k8s.environments.K8sEnvironmentManager",
    }
    assert config["Scheduler"] == {"execution_manager_class": "jupyter_scheduler_k8s.executors.K8sExecutionManager"}
    k8s = config["K8sConfig"]
    assert set(k8s) == REQUIRED_K8S_KEYS, "unset optional values must be left out, not null"
    assert k8s == {
        "namespace": JOBS_NS, "image": "localhost/jupyter-scheduler-k8s-executor:0.1.0",
        "image_pull_policy": "IfNotPresent", "storage_size": "1Gi", "extra_labels": {},
        "job_ttl_seconds": 300, "timeout_seconds": 0, "scheduling_timeout_seconds": 300,
        "collect_hold_seconds": 600, "output_size_limit": 1073741824, "run_log_limit": 4194304,
        "node_selector": {}, "tolerations": [], "profiles": {}, "default_profile": "",
        "cpu_request": "250m", "cpu_limit": "2", "memory_request": "1Gi", "memory_limit": "1Gi",
        "schedule_concurrency_policy": "Forbid", "schedule_starting_deadline_seconds": 300,
        "schedule_runs_kept": 20, "schedule_run_max_age_seconds": 604800, "schedule_import_interval_seconds": 30,
        "definitions_per_user": 20, "running_jobs_per_user": 5, "queued_jobs_per_user": 200,
    }


def test_server_config_with_every_setting():
    k8s = server_config(render(values_files=[CI["profiles"]]))["K8sConfig"]
    assert set(k8s) == REQUIRED_K8S_KEYS | {"storage_class", "environments", "extra_annotations"}
    assert k8s["image"] == "registry.example.org/jupyter/jupyter-scheduler-k8s-executor:0.1.0-cuda"
    assert k8s["image_pull_policy"] == "Always"
    assert (k8s["storage_size"], k8s["storage_class"]) == ("5Gi", "fast-ssd")
    assert (k8s["cpu_request"], k8s["memory_request"], k8s["memory_limit"]) == ("1", "2Gi", "4Gi")
    assert k8s["cpu_limit"] == ""  # "" turns the default limit off
    assert k8s["profiles"]["gpu"] == {
        "description": "1 NVIDIA GPU, 16 GiB", "cpu_request": "4", "memory_request": "16Gi",
        "memory_limit": "16Gi", "gpu": 1, "node_selector": {"accelerator": "nvidia"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "timeout_seconds": 7200,
    }
    assert k8s["profiles"]["small"] == {"description": "1 CPU, 2 GiB", "cpu_request": "1", "cpu_limit": "1",
                                        "memory_request": "2Gi", "memory_limit": "2Gi"}
    assert k8s["default_profile"] == "small"
    assert k8s["environments"][1] == {"name": "pytorch",
                                      "image": "registry.example.org/jupyter/jupyter-scheduler-k8s-executor:0.1.0-cuda"}
    assert k8s["extra_labels"] == {"team": "data-science"}
    assert k8s["extra_annotations"] == {"example.org/owner": "platform"}
    assert (k8s["job_ttl_seconds"], k8s["timeout_seconds"], k8s["scheduling_timeout_seconds"],
            k8s["collect_hold_seconds"], k8s["output_size_limit"]) == (600, 3600, 900, 1200, 536870912)


@pytest.mark.parametrize("name,files", COMBINATIONS, ids=[c[0] for c in COMBINATIONS])
def test_server_config_is_accepted_by_the_backend_traits(name, files):
    """Every key is a configurable K8sConfig trait, and traitlets accepts every value."""
    from traitlets.config import Config

    from jupyter_scheduler_k8s.config import PROFILE_KEYS, K8sConfig

    k8s = server_config(render(values_files=files))["K8sConfig"]
    traits = K8sConfig.class_traits(config=True)
    assert set(k8s) <= set(traits), f"not K8sConfig traits: {set(k8s) - set(traits)}"
    for profile in k8s["profiles"].values():
        assert set(profile) <= PROFILE_KEYS
    configured = K8sConfig(config=Config({"K8sConfig": k8s}))
    for key, value in k8s.items():
        assert getattr(configured, key) == value


def test_quantities_are_strings_even_when_given_as_numbers():
    values = {"executor": {"resources": {"requests": {"cpu": 0.5, "memory": 1000000},
                                         "limits": {"cpu": 2, "memory": "4Gi"}},
                           "storage": {"size": 2000000000}}}
    k8s = server_config(render(values))["K8sConfig"]
    assert (k8s["cpu_request"], k8s["memory_request"], k8s["cpu_limit"], k8s["memory_limit"]) == \
        ("0.5", "1000000", "2", "4Gi")
    assert k8s["storage_size"] == "2000000000"
    # --set gives int64 rather than float64; same result.
    k8s = server_config(render(extra_args=("--set", "executor.resources.limits.memory=1000000")))["K8sConfig"]
    assert k8s["memory_limit"] == "1000000"


def test_null_pull_policy_and_empty_storage_class_are_left_to_the_backend():
    k8s = server_config(render({"executor": {"image": {"pullPolicy": None}, "storage": {"storageClass": None}}}))
    assert "image_pull_policy" not in k8s["K8sConfig"] and "storage_class" not in k8s["K8sConfig"]


def test_image_tag_defaults_to_app_version():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert server_config(render())["K8sConfig"]["image"].endswith(":" + chart["appVersion"])
    k8s = server_config(render({"executor": {"image": {"name": "r.example/x", "tag": "1.2"}}}))["K8sConfig"]
    assert k8s["image"] == "r.example/x:1.2"


def test_the_default_tags_are_the_versions_the_images_are_built_with():
    """What image/README.md tells users to push: the chart's appVersion is the executor's and the
    package's version (the gateway image's tag), so that the default values find the images."""
    import tomllib

    from jupyter_scheduler_k8s import __version__
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    executor = tomllib.loads((CHART.parents[1] / "image" / "executor" / "pyproject.toml").read_text())
    assert chart["appVersion"] == executor["project"]["version"] == __version__


def test_default_profile_must_exist_and_environment_names_be_unique():
    error = render_error({"executor": {"defaultProfile": "gpu", "profiles": {"small": {}}}})
    assert 'executor.defaultProfile is "gpu"' in error and "small" in error
    env = {"name": "py", "image": "x:1"}
    error = render_error({"executor": {"environments": [env, env]}})
    assert 'two environments named "py"' in error


# --- admission policy --------------------------------------------------------------------------

def _policy(objects, suffix):
    return one(objects, "ValidatingAdmissionPolicy", name=f"{FULLNAME}-{NAMESPACE}-{suffix}")


def test_admission_policy_matches_the_service_account_in_the_jobs_namespace():
    objects = render()
    for suffix in ("pods", "names"):
        policy = _policy(objects, suffix)
        assert policy["spec"]["failurePolicy"] == "Fail"
        assert policy["spec"]["matchConditions"] == [
            {"name": "from-the-gateway", "expression": f"request.userInfo.username == '{SA_USERNAME}'"}]
        binding = one(objects, "ValidatingAdmissionPolicyBinding", name=policy["metadata"]["name"])
        assert binding["spec"]["policyName"] == policy["metadata"]["name"]
        assert binding["spec"]["validationActions"] == ["Deny"]
        assert binding["spec"]["matchResources"]["namespaceSelector"]["matchLabels"] == \
            {"kubernetes.io/metadata.name": JOBS_NS}
    rules = _policy(objects, "pods")["spec"]["matchConstraints"]["resourceRules"]
    matched = {(g, r) for rule in rules for g in rule["apiGroups"] for r in rule["resources"]}
    assert matched == {("", "pods"), ("batch", "jobs"), ("batch", "cronjobs")}
    assert all(set(rule["operations"]) == {"CREATE", "UPDATE"} for rule in rules)


def test_admission_policy_reads_pod_job_and_cronjob_specs():
    variables = {v["name"]: v["expression"] for v in _policy(render(), "pods")["spec"]["variables"]}
    template = " ".join(variables["podTemplate"].split())
    assert "object.kind == 'Pod' ? object" in template
    assert "object.kind == 'Job' ? object.spec.template" in template
    assert "object.spec.jobTemplate.spec.template" in template
    assert variables["spec"] == "variables.podTemplate.spec"


@pytest.mark.parametrize("needle,message", [
    ("!has(v.hostPath)", "hostPath volumes are not allowed"),
    ("!has(v.secret)", "Secret volumes are not allowed"),
    ("!has(s.secret) && !has(s.serviceAccountToken)", "Projected volumes with a Secret or ServiceAccount token"),
    ("variables.spec.serviceAccountName in ['', 'default']", "default ServiceAccount"),
    ("variables.spec.automountServiceAccountToken == false", "automountServiceAccountToken to false"),
    ("c.securityContext.privileged == false", "Privileged containers are not allowed"),
    ("variables.spec.hostNetwork", "hostNetwork, hostPID and hostIPC are not allowed"),
    ("variables.spec.hostPID", "hostNetwork, hostPID and hostIPC are not allowed"),
    ("variables.spec.hostIPC", "hostNetwork, hostPID and hostIPC are not allowed"),
    ("p.hostPort == 0", "hostPort is not allowed"),
    ("e.valueFrom.secretKeyRef", "may not read Secrets through environment variables"),
    ("claimName.startsWith('jsk8s-')", "their own PersistentVolumeClaims"),
    ("'app.kubernetes.io/managed-by' in variables.labels", "app.kubernetes.io/managed-by=jupyter-scheduler-k8s"),
])
def test_admission_policy_rule(needle, message):
    validations = _policy(render(), "pods")["spec"]["validations"]
    matching = [v for v in validations if needle in " ".join(v["expression"].split())]
    assert len(matching) == 1, f"no single validation contains {needle!r}"
    assert message in matching[0]["message"]
    assert matching[0]["reason"] == "Forbidden"


def test_admission_policy_messages_are_single_lines():
    """The API server rejects a validation message with a line break."""
    for policy in find(render(), "ValidatingAdmissionPolicy"):
        for validation in policy["spec"]["validations"]:
            assert "\n" not in validation.get("message", "")
            assert validation.get("message") or validation.get("messageExpression")


def test_allowed_volume_types_come_from_values():
    objects = render(values_files=[CI["admission-audit"]])
    validations = _policy(objects, "pods")["spec"]["validations"]
    allow = [v for v in validations if "v.all(k, k == 'name'" in v["expression"]]
    assert len(allow) == 1
    assert "['persistentVolumeClaim','emptyDir']" in allow[0]["expression"]
    assert allow[0]["message"].endswith("persistentVolumeClaim, emptyDir.")
    for binding in find(objects, "ValidatingAdmissionPolicyBinding"):
        assert binding["spec"]["validationActions"] == ["Warn", "Audit"]


def test_names_policy_pins_exec_create_and_delete_to_backend_names():
    spec = _policy(render(), "names")["spec"]
    ops = {(r, op) for rule in spec["matchConstraints"]["resourceRules"]
           for r in rule["resources"] for op in rule["operations"]}
    assert ("pods/exec", "CONNECT") in ops
    for resource in ("pods", "persistentvolumeclaims", "jobs"):
        assert {(resource, "CREATE"), (resource, "DELETE")} <= ops
    assert spec["validations"][0]["expression"] == "request.name.startsWith('jsk8s-')"


def test_backend_object_names_match_the_policy_prefix():
    from jupyter_scheduler_k8s.kube import names

    job_id = "0f6d9a2e-5b8c-4c1e-9e63-2a4b7d1c9f00"
    assert names.object_name(job_id).startswith("jsk8s-")
    assert names.collector_name(job_id).startswith("jsk8s-")


def test_admission_policy_can_be_disabled():
    objects = render(values_files=[CI["minimal"]])
    assert not find(objects, "ValidatingAdmissionPolicy")
    assert not find(objects, "ValidatingAdmissionPolicyBinding")


# --- network policy ----------------------------------------------------------------------------

def _jobs_policy(objects):
    return one(objects, "NetworkPolicy", name=f"{FULLNAME}-jobs")


PRIVATE = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "169.254.0.0/16"]


def test_network_policy_blocks_private_addresses_and_all_ingress():
    policy = _jobs_policy(render())
    spec = policy["spec"]
    assert spec["podSelector"] == {"matchLabels": {"app.kubernetes.io/managed-by": "jupyter-scheduler-k8s"}}
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    assert not spec.get("ingress")
    ip_rules = [peer["ipBlock"] for rule in spec["egress"] for peer in rule.get("to", []) if "ipBlock" in peer]
    assert ip_rules == [{"cidr": "0.0.0.0/0", "except": PRIVATE}]
    dns = [rule for rule in spec["egress"] if "to" not in rule]
    assert dns == [{"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]}]


def test_network_policy_with_further_restrictions():
    spec = _jobs_policy(render(values_files=[CI["netpol"]]))["spec"]
    cidrs = [peer["ipBlock"]["cidr"] for rule in spec["egress"] for peer in rule.get("to", []) if "ipBlock" in peer]
    assert "0.0.0.0/0" not in cidrs and cidrs == ["203.0.113.0/24"]
    assert any(rule.get("ports") == [{"port": 5432, "protocol": "TCP"}] for rule in spec["egress"])
    blocked = _jobs_policy(render({"networkPolicy": {"blockedCIDRs": ["169.254.169.254/32", "10.0.0.0/8"]}})
                           )["spec"]["egress"][0]["to"][0]["ipBlock"]
    assert blocked["except"] == ["169.254.169.254/32", "10.0.0.0/8"]


def test_network_policy_can_be_disabled():
    objects = render({"networkPolicy": {"enabled": False}})
    assert not find(objects, "NetworkPolicy", namespace=JOBS_NS)
    assert find(objects, "NetworkPolicy", name=GATEWAY)
    assert not find(render({"gateway": {"networkPolicy": {"enabled": False}}}), "NetworkPolicy", name=GATEWAY)


# --- quota and limit range ---------------------------------------------------------------------

def test_quota_and_limit_range_are_off_by_default():
    objects = render()
    assert not find(objects, "ResourceQuota") and not find(objects, "LimitRange")


def test_quota_and_limit_range_when_enabled():
    objects = render(values_files=[CI["quota"]])
    quota = one(objects, "ResourceQuota", namespace="notebook-jobs")
    assert quota["spec"]["hard"] == {"pods": "20", "persistentvolumeclaims": "20", "requests.cpu": "16",
                                     "requests.memory": "64Gi", "requests.storage": "50Gi",
                                     "count/jobs.batch": "20"}
    limits = one(objects, "LimitRange", namespace="notebook-jobs")["spec"]["limits"]
    assert [item["type"] for item in limits] == ["Container", "PersistentVolumeClaim"]


def test_enabled_quota_or_limit_range_needs_content():
    assert "resourceQuota.hard is empty" in render_error({"resourceQuota": {"enabled": True}})
    assert "limitRange.limits is empty" in render_error({"limitRange": {"enabled": True}})


# --- labels ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,files", COMBINATIONS, ids=[c[0] for c in COMBINATIONS])
def test_every_object_has_the_common_labels(name, files):
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    for obj in render(values_files=files):
        labels = obj["metadata"].get("labels", {})
        where = f"{name}: {obj['kind']}/{obj['metadata']['name']}"
        assert labels.get("app.kubernetes.io/name") == "jupyter-scheduler-k8s", where
        assert labels.get("app.kubernetes.io/instance") == RELEASE, where
        assert labels.get("app.kubernetes.io/version") == chart["appVersion"], where
        assert labels.get("app.kubernetes.io/managed-by") == "Helm", where
        assert labels.get("helm.sh/chart") == f"jupyter-scheduler-k8s-{chart['version']}", where
        assert labels.get("app.kubernetes.io/component"), where


def test_fullname_override_renames_everything():
    objects = render({"fullnameOverride": "sched"})
    assert one(objects, "ServiceAccount")["metadata"]["name"] == "sched-gateway"
    assert one(objects, "Deployment")["metadata"]["name"] == one(objects, "Service")["metadata"]["name"] == "sched-gateway"
    assert one(objects, "ConfigMap")["metadata"]["name"] == "sched-config"
    assert one(objects, "Role")["metadata"]["name"] == "sched"


# --- NOTES.txt ---------------------------------------------------------------------------------

def test_notes_print_the_z2jh_values():
    values = z2jh_values(notes())
    assert set(values) == {"hub", "proxy", "singleuser"}
    scope = "access:services!service=jobs-gateway"
    assert values["hub"] == {
        "services": {"jobs-gateway": {"url": f"http://{GATEWAY}.{NAMESPACE}:8000", "display": False}},
        "loadRoles": {"user": {"scopes": ["self", scope]}},
        "config": {"KubeSpawner": {"server_token_scopes": ["users:activity!user", "access:servers!server", scope]}},
    }
    egress = values["proxy"]["chp"]["networkPolicy"]["egress"]
    selector = one(render(), "Deployment")["spec"]["selector"]["matchLabels"]
    assert egress == [{"to": [{"podSelector": {"matchLabels": selector}}], "ports": [{"port": 8000, "protocol": "TCP"}]}]
    singleuser = values["singleuser"]
    assert set(singleuser) == {"extraEnv", "storage"}, "user servers need no ServiceAccount and no API egress"
    env = singleuser["extraEnv"]
    assert env == {"JUPYTER_CONFIG_PATH": "/usr/local/etc/jupyter-scheduler-k8s",
                   "JSK8S_GATEWAY_URL": "http://proxy-public/services/jobs-gateway/"}
    assert singleuser["storage"]["extraVolumes"] == [
        {"name": "jupyter-scheduler-k8s-config", "configMap": {"name": f"{FULLNAME}-config"}}]
    assert singleuser["storage"]["extraVolumeMounts"] == [
        {"name": "jupyter-scheduler-k8s-config", "mountPath": env["JUPYTER_CONFIG_PATH"], "readOnly": True}]
    assert "jupyter-scheduler-k8s doctor" in notes()


def test_notes_match_the_rendered_objects():
    """Every name NOTES.txt hands to z2jh exists in the release, whatever the overrides."""
    values = {"fullnameOverride": "sched", "jobs": {"namespace": "nb-jobs"},
              "gateway": {"hub": {"serviceName": "nb-gateway"}, "service": {"port": 8080}}}
    objects = render(values)
    printed = z2jh_values(notes(values))
    service, deployment = one(objects, "Service"), one(objects, "Deployment")
    assert printed["hub"]["services"]["nb-gateway"]["url"] == f"http://{service['metadata']['name']}.{NAMESPACE}:8080"
    assert service["spec"]["ports"][0]["port"] == 8080
    assert printed["singleuser"]["extraEnv"]["JSK8S_GATEWAY_URL"] == "http://proxy-public/services/nb-gateway/"
    assert printed["singleuser"]["storage"]["extraVolumes"][0]["configMap"]["name"] == \
        one(objects, "ConfigMap")["metadata"]["name"]
    selector = printed["proxy"]["chp"]["networkPolicy"]["egress"][0]["to"][0]["podSelector"]["matchLabels"]
    assert selector == service["spec"]["selector"]
    assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["JUPYTERHUB_SERVICE_NAME"]["value"] == "nb-gateway"
    assert env["JUPYTERHUB_SERVICE_PREFIX"]["value"] == "/services/nb-gateway/"
    assert env["JUPYTERHUB_API_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": "hub", "key": "hub.services.nb-gateway.apiToken"}
    assert "access:services!service=nb-gateway" in printed["hub"]["loadRoles"]["user"]["scopes"]


@pytest.mark.parametrize("readme", [CHART / "README.md", ROOT / "README.md"], ids=["chart", "top"])
def test_readme_carries_the_same_values(readme):
    """The READMEs' "Install with JupyterHub" block is what NOTES.txt prints for their example
    install (`helm install jupyter-scheduler-k8s ... --namespace jhub`)."""
    text = readme.read_text()
    assert "## Install with JupyterHub" in text
    blocks = [textwrap.dedent(b) for b in re.findall(r"```yaml\n(.*?)```", text, re.DOTALL)]
    block = [b for b in blocks if "singleuser:" in b]
    assert len(block) == 1
    assert yaml.safe_load(block[0]) == z2jh_values(notes(release="jupyter-scheduler-k8s", namespace="jhub"))


# --- the gateway -------------------------------------------------------------------------------

def test_gateway_pod_passes_restricted_and_has_probes_and_resources():
    deployment = one(render(), "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"] == {"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 100,
                                      "seccompProfile": {"type": "RuntimeDefault"}}
    (container,) = pod["containers"]
    assert container["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                            "capabilities": {"drop": ["ALL"]}}
    assert container["image"] == "localhost/jupyter-scheduler-k8s-gateway:0.1.0"
    assert container["args"] == ["jupyter-scheduler-k8s", "gateway", "--port", "8000"]
    for probe, path in (("readinessProbe", "ready"), ("livenessProbe", "health")):
        assert container[probe]["httpGet"] == {"path": f"/services/jobs-gateway/api/v1/{path}", "port": "http"}
    assert container["resources"] == {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"memory": "512Mi"}}
    assert all(set(v) <= {"name", "configMap", "emptyDir"} for v in pod["volumes"]), "no Secret or hostPath volume"
    env = {e["name"]: e for e in container["env"]}
    assert env["JUPYTERHUB_API_URL"]["value"] == "http://hub:8081/hub/api"
    assert env["JUPYTER_CONFIG_PATH"]["value"] == "/usr/local/etc/jupyter-scheduler-k8s"
    assert deployment["spec"]["selector"]["matchLabels"].items() <= \
        deployment["spec"]["template"]["metadata"]["labels"].items()
    # A changed configuration rolls the pods.
    other = one(render({"jobs": {"timeoutSeconds": 60}}), "Deployment")["spec"]["template"]["metadata"]
    assert other["annotations"]["checksum/config"] != \
        deployment["spec"]["template"]["metadata"]["annotations"]["checksum/config"]


def test_gateway_settings_come_from_values():
    values = {"gateway": {"replicas": 3, "image": {"name": "r.example/gw", "tag": "9", "pullPolicy": "Always"},
                          "hub": {"apiUrl": "http://hub.jhub.svc:8081/hub/api",
                                  "apiToken": {"existingSecret": "my-secret", "key": "token"}},
                          "inputSizeLimitBytes": 4096, "streamsPerUser": 3, "streamsTotal": 30, "threads": 16,
                          "callsPerUser": 4, "holdersPerUser": 1, "bodyLimitBytes": 65536, "bodyTimeoutSeconds": 20,
                          "idleSeconds": 45,
                          "nodeSelector": {"pool": "system"}}}
    objects = render(values)
    deployment = one(objects, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert deployment["spec"]["replicas"] == 3
    assert (pod["containers"][0]["image"], pod["containers"][0]["imagePullPolicy"]) == ("r.example/gw:9", "Always")
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert env["JUPYTERHUB_API_URL"]["value"] == "http://hub.jhub.svc:8081/hub/api"
    assert env["JUPYTERHUB_API_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "my-secret", "key": "token"}
    assert pod["nodeSelector"] == {"pool": "system"}
    assert server_config(objects)["GatewayConfig"] == {
        "input_size_limit": 4096, "streams_per_user": 3, "streams_total": 30, "threads": 16, "calls_per_user": 4,
        "holders_per_user": 1, "body_limit": 65536, "body_timeout_seconds": 20, "idle_seconds": 45}


def test_two_gateway_replicas_with_a_disruption_budget_by_default():
    objects = render()
    deployment, pdb = one(objects, "Deployment"), one(objects, "PodDisruptionBudget")
    assert deployment["spec"]["replicas"] == 2
    assert pdb["apiVersion"] == "policy/v1" and pdb["metadata"]["namespace"] == NAMESPACE
    assert pdb["spec"] == {"maxUnavailable": 1, "selector": deployment["spec"]["selector"]}
    pod = deployment["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == 60
    (spread,) = pod["topologySpreadConstraints"]
    assert spread["whenUnsatisfiable"] == "ScheduleAnyway"  # never keeps a replica from starting
    assert spread["labelSelector"] == deployment["spec"]["selector"]
    assert spread["topologyKey"] == "kubernetes.io/hostname"

    pdb = one(render({"gateway": {"pdb": {"maxUnavailable": None, "minAvailable": 1},
                                  "terminationGracePeriodSeconds": 300}}), "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1 and "maxUnavailable" not in pdb["spec"]
    assert not find(render({"gateway": {"pdb": {"enabled": False}}}), "PodDisruptionBudget")
    for pdb in ({"minAvailable": 1}, {"maxUnavailable": None}):
        assert "exactly one of maxUnavailable and minAvailable" in render_error({"gateway": {"pdb": pdb}})


@pytest.mark.parametrize("name,files", COMBINATIONS, ids=[c[0] for c in COMBINATIONS])
def test_gateway_config_is_accepted_by_the_gateway_traits(name, files):
    from traitlets.config import Config

    from jupyter_scheduler_k8s.gateway.app import GatewayConfig

    settings = server_config(render(values_files=files))["GatewayConfig"]
    configured = GatewayConfig(config=Config({"GatewayConfig": settings}))
    for key, value in settings.items():
        assert getattr(configured, key) == value


def test_gateway_network_policy_admits_only_the_hubs_proxy_and_hub():
    objects = render()
    spec = one(objects, "NetworkPolicy", name=GATEWAY)["spec"]
    assert spec["podSelector"]["matchLabels"] == one(objects, "Service")["spec"]["selector"]
    assert spec["policyTypes"] == ["Ingress"]
    (rule,) = spec["ingress"]
    assert rule["ports"] == [{"port": "http", "protocol": "TCP"}]
    (peer,) = rule["from"]
    assert peer == {"podSelector": {"matchExpressions": [
        {"key": "app", "operator": "In", "values": ["jupyterhub"]},
        {"key": "component", "operator": "In", "values": ["proxy", "hub"]}]}}
    extra = {"from": [{"podSelector": {"matchLabels": {"component": "singleuser-server"}}}]}
    spec = one(render({"gateway": {"networkPolicy": {"ingress": [extra]}}}), "NetworkPolicy", name=GATEWAY)["spec"]
    assert spec["ingress"][1] == extra


def test_service_targets_the_gateway_pods():
    objects = render()
    service, deployment = one(objects, "Service"), one(objects, "Deployment")
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"] == [{"name": "http", "port": 8000, "targetPort": "http", "protocol": "TCP"}]
    assert deployment["spec"]["template"]["spec"]["containers"][0]["ports"] == [
        {"name": "http", "containerPort": 8000, "protocol": "TCP"}]


def test_config_json_round_trips_through_the_configmap():
    cm = one(render(values_files=[CI["profiles"]]), "ConfigMap")
    assert list(cm["data"]) == ["jupyter_server_config.json"]
    json.loads(cm["data"]["jupyter_server_config.json"])
