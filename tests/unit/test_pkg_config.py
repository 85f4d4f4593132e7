"""config.py (traits, env fallbacks, profiles, environments) and the pull-policy choice of kube/clients.py."""
import copy
import pickle

import pytest
from traitlets import TraitError
from traitlets.config import Application, Config

from jupyter_scheduler_k8s import __version__
from jupyter_scheduler_k8s import config as k8s_config
from jupyter_scheduler_k8s.kube.clients import is_local_context, pull_policy
from jupyter_scheduler_k8s.config import K8sConfig, UnknownProfileError, image_for, resolve_profile, server_config

from .data_pkg.helpers import clean_env  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("clean_env")


def make(**traits) -> K8sConfig:
    return K8sConfig(config=Config({"K8sConfig": traits}))


# (trait, env var, env value, configured value, default outside a cluster with no env)
FALLBACKS = [
    ("namespace", "K8S_NAMESPACE", "env-ns", "trait-ns", "default"),
    ("image", "K8S_IMAGE", "env/image:1", "trait/image:2", f"localhost/jupyter-scheduler-k8s-executor:{__version__}"),
    ("image_pull_policy", "K8S_IMAGE_PULL_POLICY", "Always", "Never", None),
    ("storage_size", "K8S_STORAGE_SIZE", "5Gi", "10Gi", "1Gi"),
    ("storage_class", "K8S_STORAGE_CLASS", "env-class", "trait-class", None),
    ("cpu_request", "K8S_EXECUTOR_CPU_REQUEST", "100m", "500m", "250m"),
    ("cpu_limit", "K8S_EXECUTOR_CPU_LIMIT", "1", "4", "2"),
    ("memory_request", "K8S_EXECUTOR_MEMORY_REQUEST", "512Mi", "2Gi", "1Gi"),
    ("memory_limit", "K8S_EXECUTOR_MEMORY_LIMIT", "2Gi", "4Gi", "1Gi"),
    ("username", "JSK8S_USERNAME", "env-user", "trait-user", ""),
    ("username", "JUPYTERHUB_USER", "hub-user", "trait-user", ""),
]
IDS = [f"{t}-{e}" for t, e, *_ in FALLBACKS]


@pytest.mark.parametrize("trait,env,env_value,trait_value,default", FALLBACKS, ids=IDS)
def test_default_without_env(trait, env, env_value, trait_value, default):
    assert getattr(K8sConfig(), trait) == default


@pytest.mark.parametrize("trait,env,env_value,trait_value,default", FALLBACKS, ids=IDS)
def test_env_beats_default(monkeypatch, trait, env, env_value, trait_value, default):
    monkeypatch.setenv(env, env_value)
    assert getattr(K8sConfig(), trait) == env_value


@pytest.mark.parametrize("trait,env,env_value,trait_value,default", FALLBACKS, ids=IDS)
def test_trait_beats_env(monkeypatch, trait, env, env_value, trait_value, default):
    monkeypatch.setenv(env, env_value)
    assert getattr(make(**{trait: trait_value}), trait) == trait_value


def test_empty_resource_settings_leave_requests_and_limits_unset():
    from jupyter_scheduler_k8s.kube.manifests import resources
    p = resolve_profile(make(cpu_request="", cpu_limit="", memory_request="", memory_limit=""), None)
    assert resources(p["cpu_request"], p["cpu_limit"], p["memory_request"], p["memory_limit"]).to_dict() == \
        {"claims": None, "limits": None, "requests": None}


@pytest.mark.parametrize("trait,env,env_value,trait_value,default", FALLBACKS, ids=IDS)
def test_blank_env_is_ignored(monkeypatch, trait, env, env_value, trait_value, default):
    monkeypatch.setenv(env, "   ")
    assert getattr(K8sConfig(), trait) == default


def test_jsk8s_username_beats_jupyterhub_user(monkeypatch):
    monkeypatch.setenv("JUPYTERHUB_USER", "hub-user")
    monkeypatch.setenv("JSK8S_USERNAME", "downward-api-user")
    assert K8sConfig().username == "downward-api-user"


def test_namespace_from_serviceaccount_in_cluster(monkeypatch, tmp_path):
    sa = tmp_path / "namespace"
    sa.write_text("jupyter-jobs\n")
    monkeypatch.setattr(k8s_config, "SA_NAMESPACE_FILE", str(sa))
    assert K8sConfig().namespace == "jupyter-jobs"
    monkeypatch.setenv("K8S_NAMESPACE", "env-ns")
    assert K8sConfig().namespace == "env-ns"


def test_namespace_outside_cluster_is_default():
    assert K8sConfig().namespace == "default"


@pytest.mark.parametrize("policy", ["Always", "IfNotPresent", "Never"])
def test_valid_pull_policies(policy):
    assert make(image_pull_policy=policy).image_pull_policy == policy


@pytest.mark.parametrize("policy", ["always", "Sometimes", ""])
def test_invalid_pull_policy_is_rejected(policy):
    with pytest.raises((ValueError, TraitError), match="image_pull_policy must be one of"):
        make(image_pull_policy=policy)


def test_invalid_pull_policy_from_env_is_rejected(monkeypatch):
    monkeypatch.setenv("K8S_IMAGE_PULL_POLICY", "Sometimes")
    with pytest.raises((ValueError, TraitError)):
        K8sConfig().image_pull_policy


def test_profiles_with_unknown_keys_are_rejected():
    with pytest.raises((ValueError, TraitError), match=r"profile 'gpu' has unknown keys \['cpu', 'gpus'\]"):
        make(profiles={"small": {"cpu_limit": "1"}, "gpu": {"gpus": 1, "cpu": "4"}})


def test_every_trait_has_help():
    traits = K8sConfig.class_traits(config=True)
    assert len(traits) >= 20
    missing = [name for name, trait in traits.items() if not (trait.help or "").strip()]
    assert missing == []


def test_server_config_outside_an_app_is_empty(monkeypatch):
    monkeypatch.setattr(Application, "_instance", None)
    cfg = server_config()
    assert isinstance(cfg, Config)
    assert cfg == Config()


def test_server_config_inside_an_app_is_a_picklable_copy(monkeypatch):
    monkeypatch.setattr(Application, "_instance", None)
    app = Application.instance(config=Config({"K8sConfig": {"namespace": "from-app"}}))
    try:
        cfg = server_config()
    finally:
        Application.clear_instance()
    assert cfg is not app.config
    restored = pickle.loads(pickle.dumps(cfg))
    assert K8sConfig(config=restored).namespace == "from-app"


# ---- profiles ---------------------------------------------------------------------------------------

BASE = dict(cpu_request="250m", cpu_limit="1", memory_request="512Mi", memory_limit="1Gi",
            node_selector={"pool": "notebooks"},
            tolerations=[{"key": "dedicated", "operator": "Equal", "value": "notebooks", "effect": "NoSchedule"}],
            timeout_seconds=600)
PROFILES = {
    "small": {"description": "1 CPU, 2 GiB", "cpu_request": "1", "cpu_limit": "1", "memory_request": "2Gi",
              "memory_limit": "2Gi"},
    "gpu": {"description": "1 GPU", "cpu_request": "4", "memory_limit": "16Gi", "gpu": 1,
            "node_selector": {"accelerator": "nvidia"},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            "timeout_seconds": 7200},
}


def test_resolve_profile_without_profiles_uses_the_traits():
    cfg = make(**BASE)
    expected = {"cpu_request": "250m", "cpu_limit": "1", "memory_request": "512Mi", "memory_limit": "1Gi",
                "gpu": 0, "node_selector": {"pool": "notebooks"}, "tolerations": BASE["tolerations"],
                "timeout_seconds": 600}
    assert resolve_profile(cfg, None) == expected
    assert resolve_profile(cfg, "") == expected
    assert resolve_profile(cfg, "default") == expected


def test_resolve_profile_without_profiles_rejects_a_name():
    with pytest.raises(UnknownProfileError, match="offers no compute profiles"):
        resolve_profile(make(), "gpu")


def test_resolve_profile_default_is_the_first():
    cfg = make(profiles=PROFILES, **BASE)
    assert resolve_profile(cfg, None) == {
        "cpu_request": "1", "cpu_limit": "1", "memory_request": "2Gi", "memory_limit": "2Gi", "gpu": 0,
        "node_selector": {"pool": "notebooks"}, "tolerations": BASE["tolerations"], "timeout_seconds": 600,
    }


def test_resolve_profile_configured_default():
    cfg = make(profiles=PROFILES, default_profile="gpu", **BASE)
    assert resolve_profile(cfg, None)["gpu"] == 1
    assert resolve_profile(cfg, "small")["gpu"] == 0


def test_resolve_profile_named_overrides_and_merges():
    cfg = make(profiles=PROFILES, **BASE)
    before = copy.deepcopy((cfg.profiles, cfg.node_selector, cfg.tolerations))
    expected = {
        # cpu_limit follows the request above the inherited limit of 1: Kubernetes would refuse it.
        "cpu_request": "4", "cpu_limit": "4", "memory_request": "512Mi", "memory_limit": "16Gi", "gpu": 1,
        "node_selector": {"pool": "notebooks", "accelerator": "nvidia"},
        "tolerations": BASE["tolerations"] + PROFILES["gpu"]["tolerations"],
        "timeout_seconds": 7200,
    }
    assert resolve_profile(cfg, "gpu") == expected
    # No accumulation across calls, and the config is untouched.
    assert resolve_profile(cfg, "gpu") == expected
    assert (cfg.profiles, cfg.node_selector, cfg.tolerations) == before
    assert resolve_profile(cfg, "small")["node_selector"] == {"pool": "notebooks"}


def test_resolve_profile_result_is_not_aliased_to_the_config():
    cfg = make(profiles=PROFILES, **BASE)
    resolved = resolve_profile(cfg, "gpu")
    resolved["node_selector"]["x"] = "y"
    resolved["tolerations"].append({"key": "z"})
    assert cfg.node_selector == {"pool": "notebooks"}
    assert len(cfg.tolerations) == 1
    assert PROFILES["gpu"]["tolerations"] == cfg.profiles["gpu"]["tolerations"]


def test_unknown_profile_error_lists_the_valid_names():
    cfg = make(profiles=PROFILES)
    with pytest.raises(UnknownProfileError) as info:
        resolve_profile(cfg, "huge")
    assert "'huge'" in str(info.value)
    assert "small, gpu" in str(info.value)
    assert isinstance(info.value, ValueError)


def test_profile_empty_values_fall_back():
    cfg = make(profiles={"p": {"cpu_request": "", "memory_limit": None, "cpu_limit": "3"}}, **BASE)
    resolved = resolve_profile(cfg, "p")
    assert (resolved["cpu_request"], resolved["memory_limit"], resolved["cpu_limit"]) == ("250m", "1Gi", "3")


# ---- environments -----------------------------------------------------------------------------------

def test_image_for():
    cfg = make(image="base/image:1", environments=[
        {"name": "py311", "image": "reg/py311:1", "description": "Python 3.11"},
        {"name": "no-image"},
    ])
    assert image_for(cfg, "py311") == "reg/py311:1"
    assert image_for(cfg, "no-image") == "base/image:1"
    assert image_for(cfg, "unknown") == "base/image:1"
    assert image_for(cfg, None) == "base/image:1"
    assert image_for(make(image="base/image:1"), "py311") == "base/image:1"


# ---- pull policy from the cluster context (kube/clients.py) -----------------------------------------------

@pytest.mark.parametrize("context,local", [
    ("kind-kind", True), ("kind-jsk8s", True), ("k3d-dev", True), ("minikube", True),
    ("docker-desktop", True), ("docker-for-desktop", True), ("jsk8s-local", True),
    ("in-cluster", False), ("", False), (None, False), ("gke_proj_europe-west1_prod", False),
    ("arn:aws:eks:eu-west-1:123:cluster/kind-of-prod", False), ("minikube-2", False), ("my-kind-x", False),
])
def test_is_local_context(context, local):
    assert is_local_context(context) is local


def test_pull_policy():
    assert pull_policy(None, "kind-jsk8s") == "Never"
    assert pull_policy(None, "in-cluster") == "IfNotPresent"
    assert pull_policy("Always", "kind-jsk8s") == "Always"
    assert pull_policy("IfNotPresent", "minikube") == "IfNotPresent"


def test_a_limit_below_the_default_request_lowers_the_request():
    resolved = resolve_profile(make(memory_limit="300Mi"), None)
    assert (resolved["memory_request"], resolved["memory_limit"]) == ("300Mi", "300Mi")


def test_a_profile_request_above_the_inherited_limit_raises_the_limit():
    cfg = make(profiles={"big": {"memory_request": "8Gi"}, "capped": {"memory_limit": "512Mi"}})
    assert (resolve_profile(cfg, "big")["memory_request"], resolve_profile(cfg, "big")["memory_limit"]) == ("8Gi", "8Gi")
    assert (resolve_profile(cfg, "capped")["memory_request"], resolve_profile(cfg, "capped")["memory_limit"]) == \
        ("512Mi", "512Mi")
