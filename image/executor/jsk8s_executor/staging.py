"""`stage-in` and `stage-out`: tar streams over the exec API's stdin/stdout.

stage-in trusts nothing it is sent (only regular files and directories, inside the work dir);
stage-out sends only regular files that result.json lists, never following a symlink, because
the notebook had write access to the work dir.
"""

import io
import json
import os
import stat
import sys
import tarfile
from pathlib import PurePosixPath

from .jobdir import JobDir, safe_relpath, touch

# Python < 3.11.4 (e.g. Debian bookworm's 3.11.2) has no extraction filters; our own checks
# below refuse everything the "data" filter would, so the filter is a second line of defence.
_FILTER = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}


class StagingError(Exception):
    pass


def _inside(root: str, path: str) -> bool:
    return os.path.commonpath([root, os.path.realpath(path)]) == root


def stage_in(job: JobDir, stream=None) -> None:
    stream = stream or sys.stdin.buffer
    if job.staged.exists():
        # A server that restarted cannot know whether it staged already. Once `run` may have
        # started, the inputs must not change under it: read and drop the stream instead.
        while stream.read(1 << 20):
            pass
        print("inputs were already staged; kept them", file=sys.stderr)
        return
    job.work.mkdir(parents=True, exist_ok=True)
    root = os.path.realpath(job.work)
    try:
        with tarfile.open(fileobj=stream, mode="r|*") as tar:
            for member in tar:
                if member.isdir() and PurePosixPath(member.name) == PurePosixPath("."):
                    continue
                if not (member.isreg() or member.isdir()):
                    kind = "link" if member.issym() or member.islnk() else "special file"
                    raise StagingError(f"refusing {kind} {member.name!r}: only regular files and directories")
                try:
                    name = safe_relpath(member.name)
                except ValueError as e:
                    raise StagingError(f"refusing {e}") from None
                # A leftover symlink on the volume must not redirect the write.
                if not _inside(root, os.path.join(root, name)):
                    raise StagingError(f"refusing {member.name!r}: it resolves outside the work dir")
                member.name = name
                # set_attrs=False: no owner, setuid bits or odd modes from the sender.
                tar.extract(member, root, set_attrs=False, **_FILTER)
                if member.isreg():
                    os.chmod(os.path.join(root, name), 0o755 if member.mode & 0o100 else 0o644)
    except (tarfile.TarError, OSError) as e:
        raise StagingError(f"cannot extract the input archive: {e}") from None
    touch(job.staged)


def _open_regular(root: str, rel: str):
    """Open work/<rel> for reading if it is a regular file reached without any symlink, else None."""
    path = os.path.join(root, rel)
    if os.path.realpath(path) != path:  # a symlink somewhere on the way
        return None
    try:
        # O_NOFOLLOW: no last-moment symlink; O_NONBLOCK: a FIFO must not hang us.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        return None
    return os.fdopen(fd, "rb"), st


def _add(tar: tarfile.TarFile, name: str, f, st) -> None:
    info = tarfile.TarInfo(name)
    info.size = st.st_size
    info.mtime = int(st.st_mtime)
    info.mode = 0o755 if st.st_mode & 0o100 else 0o644
    tar.addfile(info, f)


_SKIPS_SHOWN = 10


def stage_out(job: JobDir, out=None) -> None:
    out = out or sys.stdout.buffer
    try:
        data = job.result.read_bytes()
        result = json.loads(data)
    except (OSError, ValueError) as e:
        raise StagingError(f"no usable result.json: {e}") from None
    names = list(dict.fromkeys([*result.get("outputs", []), *result.get("side_effects", [])]))
    root = os.path.realpath(job.work)
    skipped = []
    with tarfile.open(fileobj=out, mode="w|") as tar:
        info = tarfile.TarInfo("result.json")
        info.size = len(data)
        info.mode = 0o644
        info.mtime = int(os.stat(job.result).st_mtime)
        tar.addfile(info, io.BytesIO(data))
        for name in names:
            try:
                rel = safe_relpath(name)
            except ValueError as e:
                skipped.append(str(e))
                continue
            opened = _open_regular(root, rel)
            if opened is None:
                skipped.append(f"{rel!r}: not a regular file")
                continue
            f, st = opened
            with f:
                _add(tar, f"work/{rel}", f, st)
    out.flush()
    # result.json is the notebook's to write: say what was skipped, in a bounded number of lines.
    for reason in skipped[:_SKIPS_SHOWN]:
        print(f"jsk8s-executor stage-out: skipping {reason[:300]}", file=sys.stderr)
    if len(skipped) > _SKIPS_SHOWN:
        print(f"jsk8s-executor stage-out: skipping {len(skipped) - _SKIPS_SHOWN} more", file=sys.stderr)
