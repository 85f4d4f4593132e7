"""The executor image's `jsk8s-executor`, run in-process (and once as a subprocess) against a
temporary job dir (JSK8S_JOB_DIR). Needs a python3 kernel (ipykernel) in the test environment."""

import copy
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[2]
DATA = Path(__file__).parent / "data"
sys.path.insert(0, str(REPO / "image" / "executor"))

from jsk8s_executor import cli, staging  # noqa: E402
from jsk8s_executor.notebook import add_parameters, describe_error  # noqa: E402

# Names as the server passes them: exactly what jupyter-scheduler put in staging_paths.
OUTPUTS = {"ipynb": "my notebook-2026-11-26-01-02-03-AM.ipynb", "html": "my notebook-2026-11-26-01-02-03-AM.html"}


@pytest.fixture
def job(tmp_path, monkeypatch):
    root = tmp_path / "job"
    (root / "work").mkdir(parents=True)
    monkeypatch.setenv("JSK8S_JOB_DIR", str(root))
    monkeypatch.delenv("JSK8S_MEMORY_LIMIT", raising=False)
    monkeypatch.chdir(tmp_path)  # `run` changes directory; get it back after the test
    return root


def stage(job: Path, notebook: str, name: str = "my notebook.ipynb", nb=None) -> None:
    if nb is None:
        shutil.copy(DATA / notebook, job / "work" / name)
    else:
        nbformat.write(nb, job / "work" / name)
    (job / ".staged").touch()
    (job / ".collected").touch()  # no hold after the run


def code_notebook(*sources) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(src) for src in sources])
    nb.metadata.kernelspec = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


def run(monkeypatch, **spec) -> int:
    spec = {"input": "my notebook.ipynb", "outputs": OUTPUTS, "collect_hold_seconds": 5, **spec}
    monkeypatch.setenv("JSK8S_SPEC", json.dumps(spec))
    return cli.main(["run"])


def result(job: Path) -> dict:
    return json.loads((job / "result.json").read_text())


def read_output(job: Path) -> nbformat.NotebookNode:
    return nbformat.read(job / "work" / OUTPUTS["ipynb"], as_version=4)


# --- parameter injection -----------------------------------------------------
def _shape(nb):
    return [(c.cell_type, c.source, c.metadata.get("tags", [])) for c in nb.cells]


@pytest.mark.parametrize("notebook", ["params.ipynb", "fails.ipynb"])  # with / without a parameters cell
def test_add_parameters_matches_jupyter_scheduler(notebook):
    upstream = pytest.importorskip("jupyter_scheduler.parameterize")
    nb = nbformat.read(DATA / notebook, as_version=4)
    params = {"greeting": "'hi'", "rows": 3}
    ours = add_parameters(copy.deepcopy(nb), params)
    theirs = upstream.add_parameters(copy.deepcopy(nb), params)
    assert _shape(ours) == _shape(theirs)
    # ...and twice in a row (re-run of a job's output) replaces the injected cell.
    assert _shape(add_parameters(ours, {"rows": 4})) == _shape(upstream.add_parameters(theirs, {"rows": 4}))


def test_add_parameters_placement():
    nb = nbformat.read(DATA / "params.ipynb", as_version=4)
    out = add_parameters(nb, {"rows": 3, "greeting": "'x'"})
    assert [c.metadata.get("tags") for c in out.cells[1:3]] == [["parameters"], ["injected-parameters"]]
    assert out.cells[2].source == "rows = 3\ngreeting = 'x'"
    top = add_parameters(nbformat.read(DATA / "fails.ipynb", as_version=4), {"a": 1})
    assert top.cells[0].metadata["tags"] == ["injected-parameters"] and len(top.cells) == 4


# --- run ---------------------------------------------------------------------
def test_run_success_writes_outputs_and_side_effects(job, monkeypatch, capsys):
    stage(job, "params.ipynb")
    (job / "work" / "unchanged.txt").write_text("input folder file")
    assert run(monkeypatch, parameters={"greeting": "'from the test'", "rows": 2}) == 0

    res = result(job)
    assert res["status"] == "completed" and res["error"] is None
    assert res["outputs"] == list(OUTPUTS.values())
    assert res["side_effects"] == ["data/out.csv"]
    assert "python3" in res["kernels"]
    assert (job / "work" / "data" / "out.csv").read_text() == "n\n0\n1"
    assert "<html" in (job / "work" / OUTPUTS["html"]).read_text()
    out = read_output(job)
    assert out.cells[2].metadata["tags"] == ["injected-parameters"]
    assert out.cells[3].outputs[0]["text"] == "from the test 2\n"
    # Progress and the notebook's printed output reach the pod log.
    logs = capsys.readouterr()
    assert "[jsk8s] staged" in logs.out and "executing with kernel python3" in logs.out
    assert "from the test 2" in logs.out and "to stderr" in logs.err


def test_run_failing_cell_keeps_partial_notebook(job, monkeypatch):
    stage(job, "fails.ipynb")
    assert run(monkeypatch) == 1
    res = result(job)
    assert res["status"] == "failed"
    assert res["error"] == {
        "ename": "ValueError",
        "evalue": "boom",
        "message": "CellExecutionError in cell 2: ValueError: boom",
    }
    assert res["outputs"] == list(OUTPUTS.values())
    cells = read_output(job).cells
    assert cells[0].outputs[0]["text"] == "before the error\n"
    assert cells[1].outputs[0]["output_type"] == "error" and cells[1].outputs[0]["evalue"] == "boom"
    assert cells[2].outputs == []
    assert "boom" in (job / "work" / OUTPUTS["html"]).read_text()


def test_failing_cell_traceback_reaches_the_pod_log(job, monkeypatch, capsys):
    stage(job, "fails.ipynb")
    assert run(monkeypatch) == 1
    err = capsys.readouterr().err
    assert "ValueError" in err and "boom" in err and "\x1b[" not in err


def test_every_format_the_ui_offers_is_written(job, monkeypatch):
    """The environment manager's selectable formats, as the form's defaults send them."""
    from jupyter_scheduler_k8s.environments import SELECTABLE_FORMATS
    outputs = {fmt: f"my notebook-2026-11-26-01-02-03-AM.{fmt}" for fmt in SELECTABLE_FORMATS}
    stage(job, "params.ipynb")
    assert run(monkeypatch, outputs=outputs, parameters={"rows": 2}) == 0
    assert result(job)["outputs"] == list(outputs.values())
    work = job / "work"
    assert (work / outputs["md"]).read_text().count("```python") >= 2
    py = (work / outputs["py"]).read_text()
    assert "rows = 2" in py and "ipynb" not in outputs["py"]
    compile(py, outputs["py"], "exec")


def test_run_missing_kernel_names_available_kernels(job, monkeypatch):
    nb = nbformat.read(DATA / "params.ipynb", as_version=4)
    nb.metadata.kernelspec = {"name": "ir", "display_name": "R", "language": "R"}
    stage(job, None, nb=nb)
    assert run(monkeypatch) == 1
    res = result(job)
    assert res["error"]["message"] == (
        f"Kernel 'ir' is not installed in the executor image (available: {', '.join(res['kernels'])})"
    )
    # Outputs are still written: the (unexecuted) notebook with its parameters.
    assert res["outputs"] == list(OUTPUTS.values())


def test_run_kernel_name_overrides_notebook(job, monkeypatch):
    stage(job, "params.ipynb")
    assert run(monkeypatch, kernel_name="no-such-kernel") == 1
    assert result(job)["error"]["message"].startswith("Kernel 'no-such-kernel' is not installed")


def test_run_cell_timeout(job, monkeypatch):
    stage(job, None, nb=code_notebook("import time\ntime.sleep(30)"))
    assert run(monkeypatch, cell_timeout=1) == 1
    assert result(job)["error"]["message"] == "Cell 1 did not finish within the cell timeout of 1 s"


def test_run_dead_kernel(job, monkeypatch):
    stage(job, None, nb=code_notebook("import os\nos._exit(9)"))
    monkeypatch.setenv("JSK8S_MEMORY_LIMIT", str(512 * 1024**2))
    assert run(monkeypatch) == 1
    assert result(job)["error"]["message"] == (
        "The kernel died while running cell 1; it probably ran out of memory (the job's memory limit is 512Mi)"
    )
    assert result(job)["outputs"] == list(OUTPUTS.values())


@pytest.mark.parametrize(
    "limit, suffix",
    [(None, ""), ("0", ""), (str(2 * 1024**3), "; it probably ran out of memory (the job's memory limit is 2Gi)")],
)
def test_dead_kernel_message_memory_limit(monkeypatch, limit, suffix):
    from nbclient.exceptions import DeadKernelError

    if limit is None:
        monkeypatch.delenv("JSK8S_MEMORY_LIMIT", raising=False)
    else:
        monkeypatch.setenv("JSK8S_MEMORY_LIMIT", limit)
    message = describe_error(DeadKernelError("Kernel died"), 0, None)["message"]
    assert message == "The kernel died while running cell 1" + suffix


def test_error_message_is_short():
    from nbclient.exceptions import CellExecutionError

    err = describe_error(CellExecutionError("tb", "ValueError", "x" * 5000), 4, None)
    assert len(err["message"]) <= 500 and err["message"].startswith("CellExecutionError in cell 5: ValueError: xxx")


def test_run_never_staged_exits_2(job, monkeypatch, capsys):
    assert run(monkeypatch, stage_timeout_seconds=0.3) == 2
    assert "never staged" in capsys.readouterr().err
    assert not (job / "result.json").exists()


def test_run_bad_spec_exits_2(job, monkeypatch, capsys):
    assert run(monkeypatch, outputs={"ipynb": "../escape.ipynb"}) == 2
    assert "bad spec" in capsys.readouterr().err


def test_run_sigterm_still_writes_outputs(job):
    """A stop or the Job's deadline sends SIGTERM: the partial notebook and a clear reason survive."""
    stage(job, None, nb=code_notebook("print('started', flush=True)", "import time\ntime.sleep(60)"))
    (job / ".collected").unlink()
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO / "image" / "executor"),
        "JSK8S_SPEC": json.dumps({"input": "my notebook.ipynb", "outputs": OUTPUTS, "collect_hold_seconds": 60}),
    }
    proc = subprocess.Popen([sys.executable, "-m", "jsk8s_executor", "run"], env=env, stdout=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if line.startswith("started"):
            break
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 1  # no hold after SIGTERM
    res = result(job)
    assert res["error"]["message"] == "The job was terminated (stopped, or past its deadline) while running cell 2"
    assert read_output(job).cells[0].outputs[0]["text"] == "started\n"


# --- staging -----------------------------------------------------------------
def _tar(*members) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _file(name, data=b"x"):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def _special(name, kind, linkname=""):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    return info, None


def _stage_in(monkeypatch, data: bytes) -> int:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    return cli.main(["stage-in"])


def test_stage_in_extracts_and_marks_staged(job, monkeypatch, capsys):
    dir_info = tarfile.TarInfo("./sub")
    dir_info.type = tarfile.DIRTYPE
    script = tarfile.TarInfo("./run.sh")
    script.size, script.mode = 2, 0o4777
    archive = _tar(_file("./my notebook.ipynb", b"{}"), (dir_info, None), _file("./sub/a.csv"), (script, b"hi"))
    assert _stage_in(monkeypatch, archive) == 0
    assert (job / "work" / "my notebook.ipynb").read_bytes() == b"{}"
    assert (job / "work" / "sub" / "a.csv").exists() and (job / ".staged").exists()
    assert (job / "work" / "run.sh").stat().st_mode & 0o7777 == 0o755  # no setuid, no world write
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize(
    "member",
    [
        _file("../x"),
        _file("sub/../../x"),
        _file("/etc/evil"),
        _special("link", tarfile.SYMTYPE, "/etc/passwd"),
        _special("inner-link", tarfile.SYMTYPE, "sub/a.csv"),
        _special("hard", tarfile.LNKTYPE, "my notebook.ipynb"),
        _special("dev", tarfile.CHRTYPE),
        _special("fifo", tarfile.FIFOTYPE),
    ],
    ids=["dotdot", "nested-dotdot", "absolute", "symlink-out", "symlink-in", "hardlink", "device", "fifo"],
)
# Debian bookworm's Python 3.11.2 (the CI image) has no tarfile filters: our checks must hold alone.
@pytest.mark.parametrize("tar_filter", [True, False], ids=["with-data-filter", "without-filter"])
def test_stage_in_refuses_unsafe_members(job, monkeypatch, capsys, member, tar_filter):
    if not tar_filter:
        monkeypatch.setattr(staging, "_FILTER", {})
    assert _stage_in(monkeypatch, _tar(member)) == 1
    assert "refusing" in capsys.readouterr().err
    assert not (job / ".staged").exists()
    assert not (job.parent / "x").exists() and not (job / "x").exists()


def test_stage_in_refuses_writing_through_existing_symlink(job, monkeypatch, tmp_path):
    (tmp_path / "outside").mkdir()
    (job / "work" / "sub").symlink_to(tmp_path / "outside")
    assert _stage_in(monkeypatch, _tar(_file("sub/evil"))) == 1
    assert not (tmp_path / "outside" / "evil").exists()


def test_stage_in_twice_keeps_the_first_inputs(job, monkeypatch, capsys):
    """A restarted server may stage again; a running notebook's inputs must not change."""
    assert _stage_in(monkeypatch, _tar(_file("./nb.ipynb", b"first"))) == 0
    assert _stage_in(monkeypatch, _tar(_file("./nb.ipynb", b"second"))) == 0
    assert (job / "work" / "nb.ipynb").read_bytes() == b"first"
    assert "already staged" in capsys.readouterr().err


def test_stage_in_rejects_garbage(job, monkeypatch, capsys):
    assert _stage_in(monkeypatch, b"not a tar stream" * 100) == 1
    assert "cannot extract" in capsys.readouterr().err


def _stage_out(monkeypatch) -> tuple[int, dict[str, bytes]]:
    out = io.TextIOWrapper(io.BytesIO())
    monkeypatch.setattr(sys, "stdout", out)
    rc = cli.main(["stage-out"])
    with tarfile.open(fileobj=io.BytesIO(out.buffer.getvalue()), mode="r|") as tar:
        members = {m.name: (tar.extractfile(m).read() if m.isreg() else m.type) for m in tar}
    return rc, members


def test_stage_out_only_listed_regular_files(job, monkeypatch, tmp_path):
    work = job / "work"
    (work / "out.ipynb").write_text("{}")
    (work / "data").mkdir()
    (work / "data" / "a.csv").write_text("a")
    (work / "not-listed.txt").write_text("secret")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "b.csv").write_text("outside")
    (work / "evil-link").symlink_to("/etc/passwd")
    (work / "linked-dir").symlink_to(tmp_path / "outside")
    os.mkfifo(work / "fifo")
    listed = ["data/a.csv", "evil-link", "linked-dir/b.csv", "fifo", "../outside/b.csv", "/etc/passwd", "missing"]
    res = {"status": "completed", "error": None, "outputs": ["out.ipynb"], "side_effects": listed, "kernels": []}
    (job / "result.json").write_text(json.dumps(res))

    rc, members = _stage_out(monkeypatch)
    assert rc == 0
    assert members == {
        "result.json": json.dumps(res).encode(),
        "work/out.ipynb": b"{}",
        "work/data/a.csv": b"a",
    }


def test_stage_out_says_what_it_skipped_in_a_bounded_number_of_lines(job, monkeypatch, capsys):
    """result.json is the notebook's to write: a million bogus names print a dozen lines."""
    bogus = [f"../bogus-{i}-" + "x" * 1000 for i in range(5000)]
    res = {"status": "completed", "error": None, "outputs": [], "side_effects": bogus, "kernels": []}
    (job / "result.json").write_text(json.dumps(res))
    rc, members = _stage_out(monkeypatch)
    assert rc == 0 and list(members) == ["result.json"]
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 11 and "skipping 4990 more" in err and len(err) < 5000


def test_stage_out_without_result_fails(job, monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdout", io.TextIOWrapper(io.BytesIO()))
    assert cli.main(["stage-out"]) == 1
    assert "no usable result.json" in capsys.readouterr().err


def test_release_ends_hold(job):
    held = threading.Thread(target=cli.main, args=(["hold", "30"],))
    held.start()
    time.sleep(0.5)
    assert held.is_alive()
    assert cli.main(["release"]) == 0
    held.join(5)
    assert not held.is_alive()


def test_hold_is_not_ended_by_a_marker_left_from_before(job):
    """A collection whose outcome was never recorded left `.collected`: the next collector holds."""
    (job / ".collected").touch()
    start = time.monotonic()
    assert cli.main(["hold", "1"]) == 0
    assert time.monotonic() - start >= 1


def test_run_unreadable_notebook(job, monkeypatch):
    (job / "work" / "my notebook.ipynb").write_text("{not json")
    (job / ".staged").touch()
    (job / ".collected").touch()
    assert run(monkeypatch) == 1
    res = result(job)
    assert res["error"]["message"].startswith("Cannot read the input notebook 'my notebook.ipynb': ")
    assert res["outputs"] == []
