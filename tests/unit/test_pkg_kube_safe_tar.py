"""kube/safe_tar.py: extraction of the (untrusted) stage-out stream, from crafted archives in the
stage-out layout (`result.json` + `work/<rel>`, docs/design.md)."""
import io
import json
import os
import sys
import tarfile
from pathlib import Path

import pytest

from jupyter_scheduler_k8s.kube import safe_tar
from jupyter_scheduler_k8s.kube.safe_tar import (
    HEADER_SIZE_LIMIT, RESULT_SIZE_LIMIT, OutputTooLargeError, UnsafeOutputError, extract_outputs,
)

REPO = Path(__file__).resolve().parents[2]
RESULT = {"status": "completed", "error": None, "outputs": ["my notebook-2026-11-26-01-02-03-AM.ipynb"],
          "side_effects": ["data/out.csv"], "kernels": ["python3"]}
LIMIT = 10 * 1024 * 1024


class Stream:
    """A non-seekable byte stream, like the exec API's stdout."""

    def __init__(self, data: bytes):
        self._buf = io.BytesIO(data)

    def read(self, n=-1):
        return self._buf.read(n)


def member(name, data=b"", type=tarfile.REGTYPE, linkname="", mode=0o644):
    info = tarfile.TarInfo(name)
    info.type = type
    info.mode = mode
    info.linkname = linkname
    if type in (tarfile.REGTYPE, tarfile.AREGTYPE):
        info.size = len(data)
    return info, (io.BytesIO(data) if info.size else None)


LIST_ALL = object()


def archive(*members, result=LIST_ALL, fmt=tarfile.PAX_FORMAT) -> Stream:
    """A stage-out stream; by default its result.json lists every file in it."""
    if result is LIST_ALL:
        files = [info.name[len("work/"):] for info, _ in members if info.isreg() and info.name.startswith("work/")]
        result = dict(RESULT, side_effects=[f for f in files if f not in RESULT["outputs"]])
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w|", format=fmt) as tar:
        if result is not None:
            data = result if isinstance(result, bytes) else json.dumps(result).encode()
            tar.addfile(*member("result.json", data))
        for info, fileobj in members:
            tar.addfile(info, fileobj)
    return Stream(buf.getvalue())


def tree(root: Path) -> dict:
    """Every path under root (relative), with file contents; symlinks as ('->', target)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            if path.is_symlink():
                out[rel] = ("->", os.readlink(path))
            elif path.is_file():
                out[rel] = path.read_bytes()
            else:
                out[rel] = "dir"
    return out


@pytest.fixture
def site(tmp_path):
    """dest (the staging dir), a sibling canary dir with a file in it, and a snapshot of both sides."""
    dest = tmp_path / "staging" / "job-1"
    dest.mkdir(parents=True)
    (dest / "my notebook.ipynb").write_text("{}")  # the input, already there
    canary = tmp_path / "canary"
    canary.mkdir()
    (canary / "keep.txt").write_text("untouched")

    class Site:
        def __init__(self):
            self.root, self.dest, self.canary = tmp_path, dest, canary
            self.before_root = self.outside()

        def outside(self):
            return {k: v for k, v in tree(tmp_path).items() if not k.startswith("staging")}

        def assert_nothing_outside(self):
            assert self.outside() == self.before_root
            assert sorted(os.listdir(tmp_path / "staging")) == ["job-1"]

    return Site()


# ---- what works -----------------------------------------------------------------------------------

def test_normal_extraction(site):
    notebook = json.dumps({"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}).encode()
    stream = archive(
        member("work/my notebook-2026-11-26-01-02-03-AM.ipynb", notebook),
        member("work/data", type=tarfile.DIRTYPE, mode=0o755),
        member("work/data/out.csv", b"a,b\n1,2\n"),
        member("work/deep/er/file.bin", bytes(range(256)) * 10),
        member("work/empty.txt", b""),
    )
    result, written = extract_outputs(stream, str(site.dest), LIMIT)
    assert result["outputs"] == RESULT["outputs"]
    assert written == ["my notebook-2026-11-26-01-02-03-AM.ipynb", "data/out.csv", "deep/er/file.bin", "empty.txt"]
    assert tree(site.dest) == {
        "my notebook.ipynb": b"{}",
        "my notebook-2026-11-26-01-02-03-AM.ipynb": notebook,
        "data": "dir",
        "data/out.csv": b"a,b\n1,2\n",
        "deep": "dir",
        "deep/er": "dir",
        "deep/er/file.bin": bytes(range(256)) * 10,
        "empty.txt": b"",
    }
    site.assert_nothing_outside()


def test_extraction_overwrites_a_stale_file(site):
    (site.dest / "report.html").write_text("old, longer content")
    _, written = extract_outputs(archive(member("work/report.html", b"new")), str(site.dest), LIMIT)
    assert written == ["report.html"]
    assert (site.dest / "report.html").read_bytes() == b"new"


def test_unicode_and_spaces_in_names(site):
    names = ["Résumé ü 2026-11-26-01-02-03-AM.ipynb", "données/été 2026.csv", "名前 with  spaces.txt",
             "emoji 📈.html"]
    stream = archive(*(member("work/" + n, n.encode()) for n in names),
                     result=dict(RESULT, outputs=names[:1], side_effects=names[1:]))
    result, written = extract_outputs(stream, str(site.dest), LIMIT)
    assert written == names
    assert result["outputs"] == names[:1]
    for n in names:
        assert (site.dest / n).read_bytes() == n.encode()


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_tar_formats(site, fmt):
    _, written = extract_outputs(archive(member("work/out.txt", b"x"), fmt=fmt), str(site.dest), LIMIT)
    assert written == ["out.txt"]


def test_no_result_json_writes_nothing(site):
    result, written = extract_outputs(archive(member("work/out.txt", b"x"), result=None), str(site.dest), LIMIT)
    assert result is None
    assert written == []
    assert not (site.dest / "out.txt").exists()


def test_files_result_json_does_not_list_are_not_written(site):
    stream = archive(member("work/data/out.csv", b"listed"), member("work/planted.sh", b"not listed"),
                     member("work/data/extra.csv", b"not listed"), result=RESULT)
    _, written = extract_outputs(stream, str(site.dest), LIMIT)
    assert written == ["data/out.csv"]
    assert tree(site.dest) == {"my notebook.ipynb": b"{}", "data": "dir", "data/out.csv": b"listed"}


def test_result_json_after_other_members_is_refused(site):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w|") as tar:
        tar.addfile(*member("work/data/out.csv", b"x"))
        tar.addfile(*member("result.json", json.dumps(RESULT).encode()))
    with pytest.raises(UnsafeOutputError, match="unexpected member 'result.json'"):
        extract_outputs(Stream(buf.getvalue()), str(site.dest), LIMIT)


# ---- bounds on headers and members ---------------------------------------------------------------

def test_a_pax_header_over_the_limit_is_refused_before_it_is_read():
    info, data = member("work/out.txt", b"x")
    info.pax_headers = {"comment": "x" * (HEADER_SIZE_LIMIT + 1)}
    with pytest.raises(UnsafeOutputError, match="extended tar header"):
        extract_outputs(archive((info, data)), "/nonexistent-never-written", LIMIT)


def test_a_gnu_long_name_over_the_limit_is_refused():
    info, data = member("work/" + "d/" * (HEADER_SIZE_LIMIT // 2) + "out.txt", b"x")
    with pytest.raises(UnsafeOutputError, match="extended tar header"):
        extract_outputs(archive((info, data), result=RESULT, fmt=tarfile.GNU_FORMAT),
                        "/nonexistent-never-written", LIMIT)


def test_a_pax_header_under_the_limit_is_fine(site):
    info, data = member("work/out.txt", b"x")
    info.pax_headers = {"comment": "x" * 1000}
    _, written = extract_outputs(archive((info, data)), str(site.dest), LIMIT)
    assert written == ["out.txt"]


def test_too_many_members_are_refused(site, monkeypatch):
    monkeypatch.setattr(safe_tar, "MEMBER_LIMIT", 20)
    members = [member(f"work/d{i}", type=tarfile.DIRTYPE, mode=0o755) for i in range(20)]
    with pytest.raises(UnsafeOutputError, match="more than 20 tar members"):
        extract_outputs(archive(*members), str(site.dest), LIMIT)
    extract_outputs(archive(*members[:19]), str(site.dest), LIMIT)  # result.json + 19 is the limit


def test_result_json_of_exactly_1_mib_is_accepted(site):
    skeleton = json.dumps(dict(RESULT, pad="")).encode()
    padded = dict(RESULT, pad="x" * (RESULT_SIZE_LIMIT - len(skeleton)))
    data = json.dumps(padded).encode()
    assert len(data) == RESULT_SIZE_LIMIT == 1024 * 1024
    result, _ = extract_outputs(archive(result=data), str(site.dest), LIMIT)
    assert result == padded


def test_dest_is_created(tmp_path):
    dest = tmp_path / "new" / "dir"
    extract_outputs(archive(member("work/a.txt", b"a")), str(dest), LIMIT)
    assert (dest / "a.txt").read_bytes() == b"a"


def test_round_trip_with_the_executors_stage_out(tmp_path, site):
    """The executor image's real `stage-out` output extracts as the contract says."""
    sys.path.insert(0, str(REPO / "image" / "executor"))
    try:
        from jsk8s_executor import staging
        from jsk8s_executor.jobdir import JobDir
    finally:
        sys.path.remove(str(REPO / "image" / "executor"))
    job = JobDir(tmp_path / "job")
    (job.work / "data").mkdir(parents=True)
    (job.work / "my notebook-2026-11-26-01-02-03-AM.ipynb").write_text('{"cells": []}')
    (job.work / "data" / "out.csv").write_text("a,b\n")
    (job.work / "ignored.txt").write_text("not listed in result.json")
    job.result.write_text(json.dumps(RESULT))
    out = io.BytesIO()
    staging.stage_out(job, out)
    result, written = extract_outputs(Stream(out.getvalue()), str(site.dest), LIMIT)
    assert result == RESULT
    assert sorted(written) == ["data/out.csv", "my notebook-2026-11-26-01-02-03-AM.ipynb"]
    assert (site.dest / "data" / "out.csv").read_text() == "a,b\n"
    assert not (site.dest / "ignored.txt").exists()


# ---- what is refused --------------------------------------------------------------------------------

def refused(site, *members, error=UnsafeOutputError, match=None, **kwargs):
    with pytest.raises(error, match=match):
        extract_outputs(archive(*members, **kwargs), str(site.dest), LIMIT)
    site.assert_nothing_outside()


def test_refuses_absolute_paths(site):
    refused(site, member(str(site.canary / "evil.txt"), b"x"))
    refused(site, member("/evil.txt", b"x"))
    assert not Path("/evil.txt").exists()


@pytest.mark.parametrize("kind", ["dir", "file"])
def test_refuses_absolute_paths_after_the_work_prefix(site, kind):
    target = str(site.canary / "evil" / "sub")
    if kind == "dir":
        m = member("work/" + target, type=tarfile.DIRTYPE, mode=0o755)
    else:
        m = member("work/" + target + "/file.txt", b"x")
    refused(site, m)


@pytest.mark.parametrize("name", [
    "work/../escape.txt", "work/a/../../escape.txt", "work/../canary/evil.txt", "work/../../canary/evil.txt",
    "../escape.txt", "work/./../escape.txt",
])
def test_refuses_dotdot(site, name):
    refused(site, member(name, b"x"))
    assert not (site.dest.parent / "escape.txt").exists()


@pytest.mark.parametrize("target", ["data/out.csv", "out.csv", "/etc/passwd", "../../canary/keep.txt",
                                    "../../canary"])
def test_refuses_symlinks(site, target):
    refused(site, member("work/link", type=tarfile.SYMTYPE, linkname=target), match="link")
    # A symlink followed by a write through it.
    refused(site, member("work/link", type=tarfile.SYMTYPE, linkname=target), member("work/link/x", b"x"))
    assert not (site.dest / "link").exists() and not (site.dest / "link").is_symlink()


@pytest.mark.parametrize("target", ["work/out.csv", "out.csv", "/etc/passwd", "result.json"])
def test_refuses_hard_links(site, target):
    refused(site, member("work/out.csv", b"data"), member("work/hard", type=tarfile.LNKTYPE, linkname=target),
            match="link")
    assert not (site.dest / "hard").exists()


@pytest.mark.parametrize("type", [tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE])
def test_refuses_devices_and_fifos(site, type):
    m = member("work/dev", type=type)
    m[0].devmajor, m[0].devminor = 1, 3
    refused(site, m, match="special file")
    assert not (site.dest / "dev").exists()


@pytest.mark.parametrize("name", ["other.txt", "workfoo/x.txt", "result.json.bak", "data/out.csv", "Work/x.txt",
                                  ".staged", ".collected"])
def test_refuses_members_outside_work(site, name):
    refused(site, member(name, b"x"), match="unexpected member")


def test_refuses_result_json_that_is_not_a_regular_file(site):
    refused(site, member("result.json", type=tarfile.SYMTYPE, linkname="/etc/passwd"), result=None)
    refused(site, member("result.json", type=tarfile.DIRTYPE), result=None)


@pytest.mark.parametrize("data", [b"{not json", b"", b"\xff\xfe\x00", b'{"status": "completed"'])
def test_refuses_invalid_result_json(site, data):
    refused(site, result=data, match="not valid JSON")


@pytest.mark.parametrize("data", [b"[1, 2]", b'"completed"', b"42"])
def test_refuses_result_json_that_is_not_an_object(site, data):
    refused(site, result=data)


def test_refuses_result_json_over_1_mib(site):
    data = json.dumps(dict(RESULT, pad="x" * RESULT_SIZE_LIMIT)).encode()
    assert len(data) > 1024 * 1024
    refused(site, result=data, match="larger than 1 MiB")


# ---- size cap -----------------------------------------------------------------------------------------

def dest_bytes(dest: Path) -> int:
    return sum(p.stat().st_size for p in dest.rglob("*") if p.is_file() and p.name != "my notebook.ipynb")


def test_size_cap(site):
    stream = archive(member("work/a.bin", b"a" * 60), member("work/b.bin", b"b" * 60), member("work/c.bin", b"c"))
    with pytest.raises(OutputTooLargeError, match="size limit of 100 bytes"):
        extract_outputs(stream, str(site.dest), 100)
    assert (site.dest / "a.bin").read_bytes() == b"a" * 60
    assert not (site.dest / "b.bin").exists()
    assert not (site.dest / "c.bin").exists()
    assert dest_bytes(site.dest) <= 100
    site.assert_nothing_outside()


def test_size_cap_single_big_file_writes_nothing(site):
    with pytest.raises(OutputTooLargeError):
        extract_outputs(archive(member("work/big.bin", b"x" * 4096)), str(site.dest), 4095)
    assert not (site.dest / "big.bin").exists()


def test_size_cap_is_inclusive(site):
    _, written = extract_outputs(archive(member("work/a.bin", b"a" * 60), member("work/b.bin", b"b" * 40)),
                                 str(site.dest), 100)
    assert written == ["a.bin", "b.bin"]


def test_too_large_is_an_unsafe_output_error():
    assert issubclass(OutputTooLargeError, UnsafeOutputError)


# ---- links already inside the destination -----------------------------------------------------------

def test_does_not_write_through_an_existing_directory_symlink(site):
    outside = site.root / "outside-dir"
    outside.mkdir()
    (site.dest / "link").symlink_to(outside)
    site.before_root = site.outside()
    refused(site, member("work/link/x", b"x"))
    refused(site, member("work/link/sub/x", b"x"))
    refused(site, member("work/link/sub", type=tarfile.DIRTYPE, mode=0o755))
    assert list(outside.iterdir()) == []


def test_does_not_write_through_an_existing_file_symlink(site):
    (site.dest / "out.csv").symlink_to(site.canary / "keep.txt")
    site.before_root = site.outside()
    refused(site, member("work/out.csv", b"overwritten"))
    assert (site.canary / "keep.txt").read_text() == "untouched"


def test_a_link_inside_the_job_is_refused_not_followed(site):
    """A link to another file of the job leads nowhere outside, but is not written through either:
    the refusal is the job's answer (an OSError would be taken for a passing fault and retried)."""
    (site.dest / "other.csv").write_text("kept")
    (site.dest / "out.csv").symlink_to(site.dest / "other.csv")
    refused(site, member("work/out.csv", b"overwritten"), match="a link is in its place")
    assert (site.dest / "other.csv").read_text() == "kept"


def test_does_not_follow_a_dangling_symlink_outside(site):
    (site.dest / "out.csv").symlink_to(site.canary / "new.txt")
    site.before_root = site.outside()
    refused(site, member("work/out.csv", b"created?"))
    assert not (site.canary / "new.txt").exists()


def test_result_json_null_counts_as_absent(site):
    result, _ = extract_outputs(archive(result=b"null"), str(site.dest), LIMIT)
    assert result is None
