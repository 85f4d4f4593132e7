"""Offline validation of every rendered manifest against the Kubernetes API schemas that the
kubernetes-validate package bundles (no network, no cluster)."""
import pytest
from kubernetes_validate import utils as kv
from packaging.version import Version

from helmrender import CI_VALUES, render

TARGET = Version("1.35")  # the Kubernetes version of ci/cluster and the chart's tested target
COMBINATIONS = [("default", ())] + [(p.name.removesuffix("-values.yaml"), (p,)) for p in CI_VALUES]


def schema_version():
    """The newest bundled schema version that is not newer than TARGET."""
    usable = [v for v in kv.all_versions() if Version(v) < Version(f"{TARGET.major}.{TARGET.minor + 1}")]
    assert usable, f"kubernetes-validate bundles no schema for Kubernetes <= {TARGET}"
    return max(usable, key=Version)


def test_schemas_for_the_target_version_are_bundled():
    assert Version(schema_version()).release[:2] == TARGET.release[:2]


@pytest.mark.parametrize("name,files", COMBINATIONS, ids=[c[0] for c in COMBINATIONS])
def test_rendered_manifests_are_valid_kubernetes_objects(name, files):
    version = schema_version()
    objects = render(values_files=files, namespace="default" if name == "same-namespace" else "jhub")
    assert objects
    for obj in objects:
        try:
            # strict: unknown fields fail too, as with kubectl's server-side field validation.
            kv.validate(obj, version, strict=True)
        except kv.ValidationError as e:
            pytest.fail(f"{name}: {obj['kind']}/{obj['metadata']['name']}: {e.message} at {list(e.path)}")
