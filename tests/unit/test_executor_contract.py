"""kube/executor.py, the contract with the executor image, checked against the image's own code
(image/executor/jsk8s_executor): every command the package runs parses as the executor's command
line, and every command the executor has is one the package runs; the spec and the retention the
package writes are read back whole, under the names the executor reads; the volume's layout is
the executor's."""
import argparse
import json
import tomllib
from pathlib import Path

import pytest

from jsk8s_executor import cli
from jsk8s_executor.jobdir import JobDir
from jsk8s_executor.schedule import DefinitionDir, Retention
from jsk8s_executor.spec import Spec
from jupyter_scheduler_k8s.kube import executor

EXECUTOR_SOURCE = Path(cli.__file__).parent
COMMANDS = [executor.run(), executor.scheduled_run(), executor.hold(600), executor.stage_in(),
            executor.stage_out(), executor.stage_out("jsk8s-d-abc-29000000"), executor.release(),
            executor.snapshot_in(), executor.forget_run("jsk8s-d-abc-29000000")]


def subcommands(parser: argparse.ArgumentParser) -> set:
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return set(actions[0].choices)


def test_the_command_is_the_images_console_script():
    scripts = tomllib.loads((EXECUTOR_SOURCE.parent / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {executor.COMMAND: "jsk8s_executor.cli:main"}
    assert all(command[0] == executor.COMMAND for command in COMMANDS + [executor.usage()])


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_the_package_runs_parses_as_the_executors(command):
    args = cli.parser().parse_args(command[1:])
    assert args.command in command


def test_every_executor_command_is_one_the_package_runs():
    used = {cli.parser().parse_args(command[1:]).command for command in COMMANDS}
    assert used == subcommands(cli.parser())


def test_a_scheduled_runs_outputs_are_read_from_its_run_directory():
    args = cli.parser().parse_args(executor.stage_out("jsk8s-d-abc-29000000")[1:])
    assert Path(args.job_dir) == DefinitionDir(executor.JOB_DIR).run("jsk8s-d-abc-29000000").root


def test_the_volume_layout_is_the_executors(monkeypatch):
    monkeypatch.delenv("JSK8S_JOB_DIR", raising=False)
    assert JobDir().root == Path(executor.JOB_DIR)
    assert JobDir().result == Path(executor.RESULT_FILE)


def test_the_spec_is_read_back_whole(monkeypatch):
    spec = executor.spec("in put.ipynb", {"ipynb": "out.ipynb", "html": "out.html"}, {"n": 3}, 600)
    monkeypatch.setenv(executor.SPEC_ENV, json.dumps(spec))
    read = Spec.from_env()
    assert {key: getattr(read, key) for key in spec} == spec
    # Every field the executor reads from the server is one the server writes (the stage
    # timeout is the executor's own).
    assert set(Spec.__dataclass_fields__) - set(spec) == {"stage_timeout_seconds"}


def test_the_retention_is_read_back_whole(monkeypatch):
    retention = executor.retention(5, 3600, "run.log", 8192)
    monkeypatch.setenv(executor.SCHEDULE_ENV, json.dumps(retention))
    read = Retention.from_env()
    assert {key: getattr(read, key) for key in retention} == retention
    assert set(Retention.__dataclass_fields__) == set(retention)


@pytest.mark.parametrize("name", [executor.RUN_NAME_ENV, executor.MEMORY_LIMIT_ENV])
def test_the_executor_reads_the_variables_the_manifests_set(name):
    sources = "".join(path.read_text() for path in EXECUTOR_SOURCE.glob("*.py"))
    assert f'os.environ.get("{name}"' in sources
