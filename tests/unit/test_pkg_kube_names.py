"""kube/names.py: object names, label values, labels and annotations."""
import re
import uuid

import pytest

from jupyter_scheduler_k8s.kube import names

LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def is_label_value(value: str) -> bool:
    return len(value) <= 63 and bool(LABEL_VALUE.match(value))


@pytest.mark.parametrize("value", ["alice", "Alice_B.c-1", "a", "0", "x" * 63, "",
                                   "5f0c9a52-1e4b-4d8e-9a57-2c1f0b7d3e11"])
def test_safe_slug_keeps_valid_values(value):
    assert names.safe_slug(value) == value


@pytest.mark.parametrize("value", [
    "alice@example.com", "Zoë", "jürgen müller", "-leading", "trailing-", "_x_", "a/b", "名前", "@@@",
    "x" * 64, "a" * 200 + "@b", "user name with spaces", ".", "my nightly report (v2)",
])
def test_safe_slug_sanitizes_invalid_values(value):
    slug = names.safe_slug(value)
    assert slug != value
    assert is_label_value(slug), slug
    assert slug  # never empty for a non-empty input
    assert re.search(r"[0-9a-f]{8}$", slug), "sanitized values end in a hash of the original"


def test_safe_slug_readable_prefix():
    assert names.safe_slug("alice@example.com").startswith("alice-example.com-")
    assert names.safe_slug("jürgen müller").startswith("j-rgen-m-ller-")


@pytest.mark.parametrize("max_length", [63, 57, 20, 9])
def test_safe_slug_caps_length(max_length):
    for value in ["x" * 100, "ä" * 100, "a b " * 40, "a" * (max_length + 1)]:
        slug = names.safe_slug(value, max_length)
        assert len(slug) <= max_length
        assert LABEL_VALUE.match(slug)


def test_safe_slug_keeps_distinct_inputs_distinct():
    values = ["alice@example.com", "alice#example.com", "alice example.com", "alice-example.com",
              "Alice@example.com", "alice@example.co", "a b", "a  b", "a\tb", "a-b",
              "x" * 64, "x" * 65, "x" * 63 + "y", "ü", "ö", "名", "前"]
    slugs = [names.safe_slug(v) for v in values]
    assert len(set(slugs)) == len(values)
    # Deterministic: the same user always gets the same label.
    assert slugs == [names.safe_slug(v) for v in values]


def test_object_name_of_uuid_job_ids():
    ids = [str(uuid.uuid4()) for _ in range(500)]
    ids.append("5F0C9A52-1E4B-4D8E-9A57-2C1F0B7D3E11")
    objs = [names.object_name(i) for i in ids]
    for name in objs:
        assert len(name) <= 63
        assert DNS1123_LABEL.match(name), name
        assert name.startswith("jsk8s-")
    assert len(set(objs)) == len(ids)
    assert names.object_name("5f0c9a52-1e4b-4d8e-9a57-2c1f0b7d3e11") == "jsk8s-5f0c9a52-1e4b-4d8e-9a57-2c1f0b7d3e11"


def test_collector_name_is_a_distinct_valid_name():
    job_id = str(uuid.uuid4())
    name = names.collector_name(job_id)
    assert DNS1123_LABEL.match(name) and len(name) <= 63
    assert name != names.object_name(job_id)


def test_labels():
    job_id = "5f0c9a52-1e4b-4d8e-9a57-2c1f0b7d3e11"
    assert names.labels(job_id, names.COMPONENT_JOB, "alice@example.com", "My report") == {
        "app.kubernetes.io/managed-by": "jupyter-scheduler-k8s",
        "app.kubernetes.io/component": "notebook-job",
        "scheduler.jupyter.org/job-id": job_id,
        "hub.jupyter.org/username": names.safe_slug("alice@example.com"),
        "scheduler.jupyter.org/job-name": names.safe_slug("My report"),
    }
    assert names.labels(job_id, names.COMPONENT_COLLECTOR) == {
        "app.kubernetes.io/managed-by": "jupyter-scheduler-k8s",
        "app.kubernetes.io/component": "output-collector",
        "scheduler.jupyter.org/job-id": job_id,
    }
    for value in names.labels(job_id, names.COMPONENT_JOB, "Zoë " * 30, "ü" * 100).values():
        assert is_label_value(value)


def test_extra_labels_cannot_override_ours():
    extra = {"team": "data", "app.kubernetes.io/managed-by": "someone-else",
             "scheduler.jupyter.org/job-id": "forged"}
    labels = names.labels("id-1", names.COMPONENT_JOB, extra=extra)
    assert labels["team"] == "data"
    assert labels["app.kubernetes.io/managed-by"] == "jupyter-scheduler-k8s"
    assert labels["scheduler.jupyter.org/job-id"] == "id-1"
    assert extra["app.kubernetes.io/managed-by"] == "someone-else"  # not mutated


def test_annotations_keep_raw_values():
    assert names.annotations("alice@example.com", "Mon rapport: été 2026 / v2") == {
        "hub.jupyter.org/username": "alice@example.com",
        "scheduler.jupyter.org/job-name": "Mon rapport: été 2026 / v2",
    }
    assert names.annotations() == {}
    extra = {"owner": "x"}
    assert names.annotations("bob", extra=extra) == {"owner": "x", "hub.jupyter.org/username": "bob"}
    assert extra == {"owner": "x"}


def test_selectors_match_the_labels():
    job_id = str(uuid.uuid4())
    labels = names.labels(job_id, names.COMPONENT_JOB, "alice")
    for term in names.job_selector(job_id).split(","):
        key, value = term.split("=")
        assert labels[key] == value
    key, value = names.all_jobs_selector().split("=")
    assert labels[key] == value
