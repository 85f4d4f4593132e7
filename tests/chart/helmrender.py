"""Render the chart with `helm template` and parse what comes out. No cluster needed.

helm comes from $HELM, else from the version-keyed cache that `ci/cluster/build tools` fills
(the path is computed by ci/cluster/env.sh, so it follows its pinned versions).
"""
import atexit
import functools
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "jupyter-scheduler-k8s"
CI_VALUES = sorted((CHART / "ci").glob("*-values.yaml"))
RELEASE = "hub"
NAMESPACE = "jhub"


class HelmError(Exception):
    """helm exited non-zero; the message is its stderr."""


@functools.lru_cache(maxsize=None)
def helm_path():
    """The helm binary to use, or None when there is none."""
    if os.environ.get("HELM"):
        candidate = Path(shutil.which(os.environ["HELM"]) or os.environ["HELM"])
    else:
        tools_dir = subprocess.run(
            ["bash", "-c", '. ci/cluster/env.sh && printf %s "$TOOLS_DIR"'],
            cwd=ROOT, check=True, capture_output=True, text=True,
        ).stdout
        candidate = Path(tools_dir) / "helm"
    return str(candidate) if candidate.is_file() and os.access(candidate, os.X_OK) else None


def _run_template(chart, values, values_files, namespace, release, extra_args):
    with tempfile.TemporaryDirectory() as tmp:
        args = [helm_path(), "template", release, str(chart), "--namespace", namespace]
        for path in values_files:
            args += ["--values", str(path)]
        if values:
            values_path = Path(tmp) / "values.yaml"
            values_path.write_text(json.dumps(values))
            args += ["--values", str(values_path)]
        args += list(extra_args)
        proc = subprocess.run(args, capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise HelmError(proc.stderr)
    return proc.stdout


@functools.lru_cache(maxsize=None)
def _render_cached(values_json, values_files, namespace, release, extra_args):
    return _run_template(CHART, json.loads(values_json), values_files, namespace, release, extra_args)


def render_text(values=None, values_files=(), namespace=NAMESPACE, release=RELEASE, extra_args=()):
    """`helm template` output as text. Raises HelmError with helm's stderr on failure."""
    return _render_cached(json.dumps(values or {}, sort_keys=True), tuple(str(p) for p in values_files),
                          namespace, release, tuple(extra_args))


def render(values=None, values_files=(), namespace=NAMESPACE, release=RELEASE, extra_args=()):
    """The rendered objects, as a list of dicts (copies: callers may change them)."""
    text = render_text(values, values_files, namespace, release, extra_args)
    return [doc for doc in yaml.safe_load_all(text) if doc]


def render_error(values=None, values_files=(), namespace=NAMESPACE, release=RELEASE, extra_args=()):
    """helm's error message for a render that must fail."""
    try:
        render_text(values, values_files, namespace, release, extra_args)
    except HelmError as e:
        return str(e)
    raise AssertionError(f"helm template succeeded, but should have failed for values {values!r}")


@functools.lru_cache(maxsize=None)
def _notes_chart():
    """A copy of the chart whose NOTES.txt also renders as a manifest, so that `helm template`
    (which never prints NOTES) can show it. `helm install --dry-run=client` would, but it still
    insists on reaching a cluster."""
    tmp = Path(tempfile.mkdtemp(prefix="jsk8s-notes-chart-"))
    atexit.register(shutil.rmtree, tmp, True)
    copy = tmp / CHART.name
    shutil.copytree(CHART, copy)
    notes = (copy / "templates" / "NOTES.txt").read_text()
    (copy / "templates" / "_test-notes.tpl").write_text(
        '{{- define "test.notes" -}}\n' + notes + "\n{{- end }}\n")
    (copy / "templates" / "zz-test-notes.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: test-notes\n"
        'data:\n  notes: {{ include "test.notes" . | toJson }}\n')
    return copy


def notes(values=None, values_files=(), namespace=NAMESPACE, release=RELEASE):
    """NOTES.txt as `helm install` would print it (without a cluster: lookups are empty)."""
    values_json = json.dumps(values or {}, sort_keys=True)
    text = _run_template(_notes_chart(), json.loads(values_json), tuple(str(p) for p in values_files),
                         namespace, release, ("--show-only", "templates/zz-test-notes.yaml"))
    return yaml.safe_load(text)["data"]["notes"]


def find(objects, kind, name=None, namespace=None):
    """Objects of a kind, optionally with a name and namespace."""
    return [o for o in objects if o["kind"] == kind
            and (name is None or o["metadata"]["name"] == name)
            and (namespace is None or o["metadata"].get("namespace") == namespace)]


def one(objects, kind, **kwargs):
    found = find(objects, kind, **kwargs)
    assert len(found) == 1, f"expected one {kind} {kwargs}, found {len(found)}"
    return found[0]


def server_config(objects):
    """The parsed jupyter_server_config.json of the chart's ConfigMap."""
    cm = one(objects, "ConfigMap")
    return json.loads(cm["data"]["jupyter_server_config.json"])


def z2jh_values(text):
    """The z2jh values block NOTES.txt (or the README) prints, parsed. The e2e install feeds the
    same block, taken from `helm get notes`, to JupyterHub's chart."""
    match = re.search(r"^hub:\n(?:(?:[ a-z].*)?\n)+?(?=\n?What each part does)", text, re.MULTILINE)
    assert match, "no z2jh values block (hub: ... up to 'What each part does')"
    return yaml.safe_load(match.group(0))
