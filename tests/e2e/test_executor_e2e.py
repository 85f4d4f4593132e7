"""Issue 3 end to end: real jupyter-scheduler Schedulers drive real Kubernetes Jobs."""
import json
import os

import nbformat
import pytest
from jupyter_scheduler.exceptions import SchedulerError
from jupyter_scheduler.models import Status

from .conftest import leftovers, write_notebook

pytestmark = pytest.mark.e2e

PARAMETERS = "greeting = 'hello'\nn = 1"
BODY = [
    "import os, json\nprint(greeting, n)",
    "rows = open('data/input.csv', encoding='utf-8').read().splitlines()\nlen(rows) * n",
    "os.makedirs('results', exist_ok=True)\n"
    "open('results/summary.json', 'w').write(json.dumps({'rows': len(rows), 'n': n}))\n"
    "open('naïve name.txt', 'w').write('side effect')",
]


def _project(root):
    write_notebook(str(root / "project" / "analysis.ipynb"), *BODY, parameters_cell=PARAMETERS)
    (root / "project" / "data").mkdir()
    (root / "project" / "data" / "input.csv").write_text("a\nb\nc\n", encoding="utf-8")
    return "project/analysis.ipynb"


def _outputs(path):
    nb = nbformat.read(path, as_version=4)
    return [[{k: v for k, v in o.items() if k in ("output_type", "text", "data")} for o in c.get("outputs", [])]
            for c in nb.cells if c.cell_type == "code"]


def test_parameters_input_folder_side_effects_match_the_local_executor(
        k8s_scheduler, local_scheduler, core, batch, k8s_env):
    params = {"greeting": "'bonjour'", "n": "3"}
    jobs = {}
    for name, harness in (("k8s", k8s_scheduler), ("local", local_scheduler)):
        uri = _project(harness.root)
        jobs[name] = harness.submit(uri, parameters=params, output_formats=["ipynb", "html"],
                                    package_input_folder=True, name=f"analysis via {name}")
    results = {name: h.wait(jobs[name]) for name, h in (("k8s", k8s_scheduler), ("local", local_scheduler))}
    k8s_job = results["k8s"]
    assert k8s_job.status == Status.COMPLETED, k8s_job.status_message
    assert results["local"].status == Status.COMPLETED, results["local"].status_message

    ipynb, html = k8s_scheduler.output(k8s_job, "ipynb"), k8s_scheduler.output(k8s_job, "html")
    assert os.path.exists(ipynb) and os.path.exists(html)
    assert "bonjour 3" in open(html, encoding="utf-8").read()
    assert _outputs(ipynb) == _outputs(local_scheduler.output(results["local"], "ipynb"))

    staging = k8s_scheduler.staging_dir(k8s_job)
    assert json.load(open(os.path.join(staging, "results", "summary.json"))) == {"rows": 3, "n": 3}
    assert {"results/summary.json", "naïve name.txt"} <= set(k8s_job.packaged_files)
    # The local executor also lists the input notebook (its relpath is taken from the wrong
    # directory upstream); everything else it lists, we list too.
    assert set(results["local"].packaged_files) - {"analysis.ipynb"} <= set(k8s_job.packaged_files)
    assert leftovers(core, batch, k8s_env) == []


def test_failing_cell_gives_failed_with_error_and_partial_notebook(k8s_scheduler, core, batch, k8s_env):
    write_notebook(str(k8s_scheduler.root / "fails.ipynb"), "print('before')", "raise ValueError('boom')", "print('never')")
    job = k8s_scheduler.wait(k8s_scheduler.submit("fails.ipynb"))
    assert job.status == Status.FAILED
    assert "ValueError" in job.status_message and "boom" in job.status_message
    assert len(job.status_message) <= 1024
    nb = nbformat.read(k8s_scheduler.output(job, "ipynb"), as_version=4)
    assert nb.cells[0].outputs[0]["text"] == "before\n"
    assert any(o.get("ename") == "ValueError" for o in nb.cells[1].outputs)
    assert leftovers(core, batch, k8s_env) == []


def test_oom_gives_failed_naming_oomkilled(k8s_scheduler, core, batch, k8s_env, monkeypatch):
    monkeypatch.setenv("K8S_EXECUTOR_MEMORY_LIMIT", "300Mi")
    write_notebook(str(k8s_scheduler.root / "hog.ipynb"), "blocks = []\nfor _ in range(40):\n    blocks.append(b'x' * (64 * 1024 * 1024))")
    job = k8s_scheduler.wait(k8s_scheduler.submit("hog.ipynb"))
    assert job.status == Status.FAILED
    assert "OOMKilled" in job.status_message and "300Mi" in job.status_message
    assert leftovers(core, batch, k8s_env) == []


def test_unknown_image_gives_failed_naming_the_image(k8s_scheduler, core, batch, k8s_env, monkeypatch):
    monkeypatch.setenv("K8S_IMAGE", "localhost/no-such-image:0.0.1")
    write_notebook(str(k8s_scheduler.root / "hello.ipynb"), "print('hi')")
    job = k8s_scheduler.wait(k8s_scheduler.submit("hello.ipynb"))
    assert job.status == Status.FAILED
    assert "localhost/no-such-image:0.0.1" in job.status_message
    assert leftovers(core, batch, k8s_env) == []


def test_missing_kernel_gives_failed_listing_the_image_kernels(k8s_scheduler, core, batch, k8s_env):
    write_notebook(str(k8s_scheduler.root / "julia.ipynb"), "1 + 1", kernel="julia-1.9")
    job = k8s_scheduler.wait(k8s_scheduler.submit("julia.ipynb"))
    assert job.status == Status.FAILED
    assert "julia-1.9" in job.status_message and "python3" in job.status_message
    assert leftovers(core, batch, k8s_env) == []


def test_unicode_and_spaces_in_file_names(k8s_scheduler, core, batch, k8s_env):
    write_notebook(str(k8s_scheduler.root / "données et résultats.ipynb"), "print('ünïcødé ✓')")
    job = k8s_scheduler.wait(k8s_scheduler.submit("données et résultats.ipynb", output_formats=["ipynb", "html"]))
    assert job.status == Status.COMPLETED, job.status_message
    assert "ünïcødé ✓" in open(k8s_scheduler.output(job, "html"), encoding="utf-8").read()
    assert leftovers(core, batch, k8s_env) == []


@pytest.mark.parametrize("content", ['{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}', "not json {"])
def test_validate_rejects_bad_notebooks_at_submit_time(k8s_scheduler, content):
    (k8s_scheduler.root / "bad.ipynb").write_text(content, encoding="utf-8")
    with pytest.raises(SchedulerError):
        k8s_scheduler.submit("bad.ipynb")
