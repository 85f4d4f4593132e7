"""The executor's side of schedules: a definition's volume, its snapshots and its runs."""
import io
import json
import os
import sys
import tarfile
import time
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "image" / "executor"))

from jsk8s_executor import cli  # noqa: E402
from jsk8s_executor.schedule import (  # noqa: E402
    DefinitionDir, Retention, ScheduleError, _Tail, forget_run, prune, scheduled_run, snapshot_in,
)

RUN = [sys.executable, "-m", "jsk8s_executor", "run"]


def tar_of(files: dict) -> io.BytesIO:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    buffer.seek(0)
    return buffer


def notebook(*sources) -> bytes:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
    nb.metadata.kernelspec = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nbformat.writes(nb).encode()


@pytest.fixture
def defn(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", str(REPO / "image" / "executor"))
    monkeypatch.delenv("JSK8S_MEMORY_LIMIT", raising=False)
    return DefinitionDir(tmp_path / "def")


def spec(monkeypatch, name="report.ipynb", **extra):
    monkeypatch.setenv("JSK8S_SPEC", json.dumps({
        "input": name, "outputs": {"ipynb": "out.ipynb", "md": "out.md"}, "collect_hold_seconds": 0, **extra}))


def test_a_new_snapshot_replaces_the_old_one(defn):
    snapshot_in(defn, tar_of({"report.ipynb": b"one", "data/in.csv": b"a"}))
    first = defn.input.resolve()
    snapshot_in(defn, tar_of({"report.ipynb": b"two"}))
    assert defn.input.is_symlink() and defn.input.resolve() != first
    assert (defn.input / "report.ipynb").read_bytes() == b"two"
    assert not (defn.input / "data").exists()
    assert len(list(defn.snapshots.iterdir())) == 1


def test_a_snapshot_refuses_what_a_stage_in_refuses(defn):
    from jsk8s_executor.staging import StagingError
    with pytest.raises(StagingError):
        snapshot_in(defn, tar_of({"../escape.txt": b"x"}))
    assert not defn.input.exists()


def test_a_run_uses_the_snapshot_and_keeps_its_log_as_an_output(defn, monkeypatch, capsys):
    snapshot_in(defn, tar_of({"report.ipynb": notebook("print('total', 6 * 7)", "open('side.txt', 'w').write('x')"),
                              "data/in.csv": b"a"}))
    spec(monkeypatch)
    assert scheduled_run(defn, "jsk8s-d-abc-29000001", Retention(log_name="report.log"), RUN) == 0
    run = defn.run("jsk8s-d-abc-29000001")
    result = json.loads(run.result.read_text())
    assert result["status"] == "completed"
    assert result["outputs"] == ["out.ipynb", "out.md", "report.log"] and result["log"] == "report.log"
    assert result["side_effects"] == ["side.txt"]
    assert "total 42" in (run.work / "report.log").read_text()
    assert "total 42" in capsys.readouterr().out  # and in the pod's own log
    assert (defn.input / "report.ipynb").exists() and not (defn.input / "side.txt").exists()


def test_a_failing_run_exits_1_with_the_cell_error(defn, monkeypatch):
    snapshot_in(defn, tar_of({"report.ipynb": notebook("1 / 0")}))
    spec(monkeypatch)
    assert scheduled_run(defn, "run-1", Retention(), RUN) == 1
    result = json.loads(defn.run("run-1").result.read_text())
    assert result["status"] == "failed" and "ZeroDivisionError" in result["error"]["message"]
    assert "ZeroDivisionError" in (defn.run("run-1").work / "run.log").read_text()


def test_a_run_without_a_snapshot_exits_2(defn, monkeypatch, capsys):
    spec(monkeypatch)
    assert scheduled_run(defn, "run-1", Retention(), RUN) == 2
    assert "no input snapshot" in capsys.readouterr().err


def test_run_names_are_dns_labels(defn):
    for bad in ("", "../x", "Run", "a/b", "x" * 64):
        with pytest.raises(ScheduleError):
            defn.run(bad)


def test_prune_keeps_the_newest_runs_and_drops_old_ones(defn):
    now = time.time()
    for index, age in enumerate([10, 20, 30, 40, 9 * 24 * 3600]):
        run = defn.run(f"run-{index}")
        run.work.mkdir(parents=True)
        os.utime(run.root, (now - age, now - age))
    removed = prune(defn, Retention(runs_kept=3, max_age_seconds=7 * 24 * 3600), now=now, keep="run-new")
    assert sorted(removed) == ["run-2", "run-3", "run-4"]
    assert sorted(p.name for p in defn.runs.iterdir()) == ["run-0", "run-1"]


def test_forget_run_removes_only_that_run(defn):
    for name in ("run-a", "run-b"):
        defn.run(name).work.mkdir(parents=True)
    forget_run(defn, "run-a")
    assert [p.name for p in defn.runs.iterdir()] == ["run-b"]


def test_the_log_tail_starts_at_a_line():
    tail = _Tail(100)
    for i in range(50):
        tail.write(f"line {i}\n".encode())
    text = tail.text().decode()
    assert text.startswith("[jsk8s] the first part of the log was cut")
    assert text.endswith("line 49\n") and "line 0\n" not in text


def test_retention_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("JSK8S_SCHEDULE", json.dumps({"runs_kept": 0, "max_age_seconds": 60, "log_name": "a.log"}))
    assert Retention.from_env() == Retention(runs_kept=1, max_age_seconds=60, log_name="a.log")
    monkeypatch.setenv("JSK8S_SCHEDULE", json.dumps({"log_name": "../a.log"}))
    with pytest.raises(ScheduleError):
        Retention.from_env()


def test_cli_snapshot_and_forget(defn, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(tar_of({"report.ipynb": b"{}"})))
    assert cli.main(["--job-dir", str(defn.root), "snapshot-in"]) == 0
    assert (defn.input / "report.ipynb").read_bytes() == b"{}"
    defn.run("run-a").work.mkdir(parents=True)
    assert cli.main(["--job-dir", str(defn.root), "forget-run", "run-a"]) == 0
    assert cli.main(["--job-dir", str(defn.root), "forget-run", "../x"]) == 1
    assert not defn.run("run-a").root.exists()
