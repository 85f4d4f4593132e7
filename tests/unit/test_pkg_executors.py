"""executors.py: `supported_features` and `validate`, called exactly as jupyter-scheduler calls them
(handlers.py: `cls.supported_features(cls)`; scheduler.py:
`execution_manager_class.validate(execution_manager_class, input_path)`)."""
import inspect
import json
import pickle

import nbformat
import pytest
from jupyter_scheduler.executors import DefaultExecutionManager, ExecutionManager
from jupyter_scheduler.models import JobFeature
from traitlets.config import Config

from jupyter_scheduler_k8s import executors
from jupyter_scheduler_k8s.executors import K8sExecutionManager

cls = K8sExecutionManager


def test_supported_features_is_a_plain_function_called_with_the_class():
    assert inspect.isfunction(inspect.getattr_static(cls, "supported_features"))
    features = cls.supported_features(cls)
    # The handler serializes it as is.
    assert json.loads(json.dumps(features))


def test_validate_is_a_plain_function_called_with_the_class(tmp_path):
    assert inspect.isfunction(inspect.getattr_static(cls, "validate"))
    path = tmp_path / "nb.ipynb"
    path.write_text(nbformat.writes(good_notebook()))
    assert cls.validate(cls, str(path)) is True


def test_same_calling_convention_as_the_default_manager(tmp_path):
    # What works for DefaultExecutionManager must work for ours, with the same arguments.
    path = tmp_path / "nb.ipynb"
    path.write_text(nbformat.writes(good_notebook()))
    for manager in (DefaultExecutionManager, cls):
        assert set(manager.supported_features(manager)) <= set(JobFeature)
        assert manager.validate(manager, str(path))


def test_every_job_feature_is_declared():
    features = cls.supported_features(cls)
    assert set(features) == set(JobFeature)
    assert all(isinstance(v, bool) for v in features.values())


def test_declared_features_are_true_to_the_backend():
    features = cls.supported_features(cls)
    assert features[JobFeature.job_name] and features[JobFeature.parameters] and features[JobFeature.output_formats]
    # Stop and delete of the Kubernetes Job need K8sScheduler, not the executor's child process.
    assert not features[JobFeature.stop_job]
    assert not features[JobFeature.delete_job]


def good_notebook(kernelspec=None):
    nb = nbformat.v4.new_notebook()
    nb.cells.append(nbformat.v4.new_code_cell("print(1)"))
    nb.metadata["kernelspec"] = kernelspec or {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


def write(tmp_path, content, name="nb.ipynb"):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return str(path)


def test_validate_accepts_a_good_notebook(tmp_path):
    assert cls.validate(cls, write(tmp_path, nbformat.writes(good_notebook()), "mon carnet été.ipynb")) is True


@pytest.mark.parametrize("content", [
    "{not json",
    "",
    b"\xff\xfe\x00\x01",
    "[1, 2, 3]",
    '"a string"',
    json.dumps({"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}),
    json.dumps({"cells": [], "metadata": {"kernelspec": {}}, "nbformat": 4, "nbformat_minor": 5}),
    json.dumps({"cells": [], "metadata": {"kernelspec": None}, "nbformat": 4, "nbformat_minor": 5}),
    json.dumps({"cells": [], "metadata": {"kernelspec": {"name": ""}}, "nbformat": 4, "nbformat_minor": 5}),
    json.dumps({"cells": [], "metadata": None, "nbformat": 4, "nbformat_minor": 5}),
], ids=["invalid-json", "empty", "not-utf8", "list", "string", "no-kernelspec", "empty-kernelspec",
        "null-kernelspec", "empty-name", "null-metadata"])
def test_validate_rejects(tmp_path, content):
    assert cls.validate(cls, write(tmp_path, content)) is False


def test_validate_rejects_a_missing_file(tmp_path):
    assert cls.validate(cls, str(tmp_path / "missing.ipynb")) is False


def test_module_level_functions_are_the_class_attributes():
    assert cls.__dict__["supported_features"] is executors.supported_features
    assert cls.__dict__["validate"] is executors.validate
    assert issubclass(cls, ExecutionManager)


def test_execution_manager_pickles_without_clients(tmp_path):
    """Built in the server and pickled into a spawned process: plain data only, no API clients."""
    manager = cls("job-1", str(tmp_path), "sqlite:///:memory:", {"input": str(tmp_path / "a.ipynb")},
                  config=Config({"K8sConfig": {"namespace": "jobs"}}))
    restored = pickle.loads(pickle.dumps(manager))
    assert restored.k8s_config["K8sConfig"]["namespace"] == "jobs"
    assert restored.staging_paths == {"input": str(tmp_path / "a.ipynb")}
