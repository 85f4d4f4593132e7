"""Safe extraction of the tar stream that comes back from a job pod.

Everything a job pod sends is untrusted: the notebook ran arbitrary code there. Only regular files
and directories are accepted; absolute paths, `..`, links, devices and FIFOs are refused; nothing is
written outside the destination (not even through a symlink already inside it); and the total size
is capped. Members are written as they arrive, so nothing is buffered whole in memory.
"""
import json
import os
import tarfile
from pathlib import Path
from typing import IO, List, Optional

RESULT_MEMBER = "result.json"
WORK_PREFIX = "work/"
RESULT_SIZE_LIMIT = 1024 * 1024
_CHUNK = 1024 * 1024


class UnsafeOutputError(Exception):
    """The job pod sent something we refuse to write."""


class OutputTooLargeError(UnsafeOutputError):
    pass


def _check_member(member: tarfile.TarInfo, dest: str) -> str:
    """Returns the relative path `member` may be written to under dest, or raises."""
    if not (member.isfile() or member.isdir()):
        kind = "link" if (member.issym() or member.islnk()) else "special file"
        raise UnsafeOutputError(f"refused {kind} {member.name!r} in the job's outputs")
    rel = os.path.normpath(member.name)
    if os.path.isabs(member.name) or rel == ".." or rel.startswith("../") or rel == ".":
        raise UnsafeOutputError(f"refused {member.name!r} in the job's outputs: not a path inside the job")
    try:
        # The stdlib's own rules for untrusted archives as a second check: the resolved target
        # (following links already in dest) must stay inside dest.
        tarfile.data_filter(member, dest)
    except tarfile.FilterError as e:
        raise UnsafeOutputError(f"refused {member.name!r} in the job's outputs: {e}") from None
    return rel


def _make_dirs_inside(dest: Path, rel_dir: str) -> Path:
    """Creates dest/rel_dir one level at a time, refusing any level that is a link."""
    current = dest
    for part in Path(rel_dir).parts:
        current = current / part
        if current.is_symlink():
            raise UnsafeOutputError(f"refused {rel_dir!r}: it passes through a link")
        current.mkdir(exist_ok=True)
    return current


def _open_inside(dest: Path, rel: str):
    """Opens dest/rel for writing without following any symlink on the way."""
    target = _make_dirs_inside(dest, os.path.dirname(rel)) / os.path.basename(rel)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
    return os.fdopen(fd, "wb")


def extract_outputs(stream: IO[bytes], dest: str, size_limit: int) -> "tuple[Optional[dict], List[str]]":
    """Extracts a stage-out stream (docs/design.md) into `dest`.

    Returns the parsed result.json (None if absent) and the relative paths written.
    """
    dest_path = Path(dest).resolve()
    dest_path.mkdir(parents=True, exist_ok=True)
    result = None
    written: List[str] = []
    total = 0
    with tarfile.open(fileobj=stream, mode="r|") as tar:
        for member in tar:
            if member.name == RESULT_MEMBER and member.isfile():
                if member.size > RESULT_SIZE_LIMIT:
                    raise UnsafeOutputError("refused result.json larger than 1 MiB")
                try:
                    result = json.loads(tar.extractfile(member).read())
                except ValueError:
                    raise UnsafeOutputError("the job's result.json is not valid JSON") from None
                if result is not None and not isinstance(result, dict):
                    raise UnsafeOutputError("the job's result.json is not a JSON object")
                continue
            if not member.name.startswith(WORK_PREFIX):
                raise UnsafeOutputError(f"refused unexpected member {member.name!r} in the job's outputs")
            member.name = member.name[len(WORK_PREFIX):]
            rel = _check_member(member, str(dest_path))
            if member.isdir():
                _make_dirs_inside(dest_path, rel)
                continue
            total += member.size
            if total > size_limit:
                raise OutputTooLargeError(
                    f"the job's outputs exceed the size limit of {size_limit} bytes (output_size_limit)")
            source = tar.extractfile(member)
            with _open_inside(dest_path, rel) as out:
                while True:
                    chunk = source.read(_CHUNK)
                    if not chunk:
                        break
                    out.write(chunk)
            written.append(rel)
    return result, written
