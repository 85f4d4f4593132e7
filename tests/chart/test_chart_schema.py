"""The values schema: rejects typos and wrong types at render time, and documents every key."""
import json
import subprocess

import pytest
import yaml

from helmrender import CHART, ROOT, render, render_error

SCHEMA = json.loads((CHART / "values.schema.json").read_text())
VALUES = yaml.safe_load((CHART / "values.yaml").read_text())
SCHEMA_ERROR = "values don't meet the specifications of the schema"


@pytest.mark.parametrize("values,where,key", [
    ({"jobz": {}}, "at ''", "jobz"),
    ({"jobs": {"namepsace": "x"}}, "at '/jobs'", "namepsace"),
    ({"executor": {"image": {"nmae": "x"}}}, "at '/executor/image'", "nmae"),
    ({"executor": {"resources": {"request": {"cpu": "1"}}}}, "at '/executor/resources'", "request"),
    ({"executor": {"profiles": {"gpu": {"gpus": 1}}}}, "at '/executor/profiles/gpu'", "gpus"),
    ({"executor": {"environments": [{"name": "a", "image": "b", "imgae": "c"}]}},
     "at '/executor/environments/0'", "imgae"),
    ({"networkPolicy": {"egressAllowRules": {"allIpv4": True}}}, "at '/networkPolicy/egressAllowRules'", "allIpv4"),
    ({"admissionPolicy": {"enable": False}}, "at '/admissionPolicy'", "enable"),
    ({"resourceQuota": {"enabled": True, "hrad": {}}}, "at '/resourceQuota'", "hrad"),
])
def test_misspelled_key_is_rejected_with_its_path(values, where, key):
    error = render_error(values)
    assert SCHEMA_ERROR in error
    assert where in error and f"additional properties '{key}' not allowed" in error


@pytest.mark.parametrize("values,where,expected", [
    ({"jobs": {"timeoutSeconds": "ten"}}, "at '/jobs/timeoutSeconds'", "want integer"),
    ({"jobs": {"ttlSecondsAfterFinished": -1}}, "at '/jobs/ttlSecondsAfterFinished'", "minimum"),
    ({"networkPolicy": {"enabled": "yes"}}, "at '/networkPolicy/enabled'", "want boolean"),
    ({"executor": {"tolerations": {"key": "x"}}}, "at '/executor/tolerations'", "want array"),
    ({"executor": {"image": {"pullPolicy": "Sometimes"}}}, "at '/executor/image/pullPolicy'",
     "value must be one of 'Always', 'IfNotPresent', 'Never'"),
    ({"executor": {"resources": {"limits": {"memory": "4 GB"}}}}, "at '/executor/resources/limits/memory'",
     "does not match pattern"),
    ({"executor": {"profiles": {"gpu": {"gpu": "one"}}}}, "at '/executor/profiles/gpu/gpu'", "want integer"),
    ({"jobs": {"namespace": "Jobs_NS"}}, "at '/jobs/namespace'", "does not match pattern"),
    ({"jobs": {"extraLabels": {"team": 5}}}, "at '/jobs/extraLabels/team'", "want string"),
    ({"networkPolicy": {"blockedCIDRs": ["169.254.169.254"]}}, "at '/networkPolicy/blockedCIDRs/0'",
     "does not match pattern"),
    ({"admissionPolicy": {"validationActions": ["Reject"]}}, "at '/admissionPolicy/validationActions/0'",
     "value must be one of 'Deny', 'Warn', 'Audit'"),
    ({"admissionPolicy": {"allowedVolumeTypes": ["hostPath"]}}, "at '/admissionPolicy/allowedVolumeTypes/0'",
     "value must be one of 'persistentVolumeClaim'"),
])
def test_wrong_type_or_value_is_rejected_with_its_path(values, where, expected):
    error = render_error(values)
    assert SCHEMA_ERROR in error
    assert where in error and expected in error


def test_set_flags_are_checked_too():
    error = render_error(extra_args=("--set", "jobs.timeoutSecond=5"))
    assert "additional properties 'timeoutSecond' not allowed" in error


def test_global_is_accepted_for_use_as_a_dependency():
    render({"global": {"anything": 1}, "enabled": True})


def _object_schemas(node, path="$"):
    """Every schema node that describes an object, with its path."""
    if isinstance(node, dict):
        if node.get("type") == "object" or "object" in (node.get("type") or []) or "properties" in node:
            yield path, node
        for key, value in node.items():
            yield from _object_schemas(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _object_schemas(value, f"{path}[{i}]")


def test_every_object_in_the_schema_is_closed():
    """additionalProperties is false, or a schema that every free key's value must match
    (labels, profiles, quantities): never absent, never true. Only Helm's `global` is open."""
    for path, node in _object_schemas(SCHEMA):
        if path == "$.properties.global":
            continue
        extra = node.get("additionalProperties")
        assert extra is False or isinstance(extra, dict), f"{path} accepts unknown keys"


def _documented(schema_node, values_node, path):
    assert "description" in schema_node, f"{path} has no description in values.schema.yaml"
    if isinstance(values_node, dict) and values_node and "properties" in schema_node:
        for key, value in values_node.items():
            assert key in schema_node["properties"], f"{path}.{key} is not in the schema"
            _documented(schema_node["properties"][key], value, f"{path}.{key}")


def test_every_values_key_is_described_in_the_schema():
    for key, value in VALUES.items():
        assert key in SCHEMA["properties"], f"{key} is not in the schema"
        _documented(SCHEMA["properties"][key], value, key)


def test_values_yaml_comments_document_every_key():
    """Each key of values.yaml has a comment line right above it (or belongs to a group whose
    comment covers its fields, like requests/limits)."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    undocumented = []
    for i, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or stripped.startswith("- ") or ":" not in stripped:
            continue
        key = stripped.split(":")[0]
        previous = lines[i - 1].strip() if i else ""
        parent_documented = previous.endswith(":") and not previous.startswith("#")
        if not previous.startswith("#") and not parent_documented and key not in ("name", "cpu", "memory"):
            undocumented.append(key)
    assert not undocumented, f"values.yaml keys without a comment: {undocumented}"


def test_schema_json_is_generated_from_its_yaml_source():
    proc = subprocess.run([str(ROOT / "ci" / "chart" / "schema"), "--check"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    source = yaml.safe_load((CHART / "values.schema.yaml").read_text())
    assert source == SCHEMA
    assert "values.schema.yaml" in (CHART / ".helmignore").read_text().split()


def test_default_values_pass_the_schema():
    render()
