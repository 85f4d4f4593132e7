"""Safe extraction of the tar stream that comes back from a job pod.

Everything a job pod sends is untrusted: the notebook ran arbitrary code there. Only regular files
and directories are accepted; absolute paths, `..`, links, devices and FIFOs are refused; nothing is
written outside the destination (not even through a symlink already inside it); and the total size
is capped. Members are written as they arrive, so nothing is buffered whole in memory. Extended
headers (PAX, GNU long names) are capped before tarfile reads them into memory, and so is the
number of members. Only the files that result.json (the first member) lists are written.
"""
import json
import os
import tarfile
from pathlib import Path
from typing import IO, List, Optional

RESULT_MEMBER = "result.json"
WORK_PREFIX = "work/"
RESULT_SIZE_LIMIT = 1024 * 1024
# A PAX or GNU long-name header holds a path and a few attributes: far below this.
HEADER_SIZE_LIMIT = 64 * 1024
MEMBER_LIMIT = 10000
_CHUNK = 1024 * 1024
_EXTENDED_HEADERS = (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE,
                     tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK)


class UnsafeOutputError(Exception):
    """The job pod sent something we refuse to write."""


class OutputTooLargeError(UnsafeOutputError):
    pass


class _BoundedTarInfo(tarfile.TarInfo):
    """Refuses an extended header larger than HEADER_SIZE_LIMIT before tarfile reads it whole.
    (_proc_member is where every Python version tarfile supports dispatches a header by type.)"""

    def _proc_member(self, tarfile_):
        if self.type in _EXTENDED_HEADERS and self.size > HEADER_SIZE_LIMIT:
            raise UnsafeOutputError(f"refused an extended tar header of {self.size} bytes in the job's outputs "
                                    f"(the limit is {HEADER_SIZE_LIMIT})")
        return super()._proc_member(tarfile_)


def _check_member(member: tarfile.TarInfo, dest: str) -> str:
    """Returns the relative path `member` may be written to under dest, or raises."""
    if not (member.isfile() or member.isdir()):
        kind = "link" if (member.issym() or member.islnk()) else "special file"
        raise UnsafeOutputError(f"refused {kind} {member.name!r} in the job's outputs")
    rel = os.path.normpath(member.name)
    if os.path.isabs(member.name) or rel == ".." or rel.startswith("../") or rel == ".":
        raise UnsafeOutputError(f"refused {member.name!r} in the job's outputs: not a path inside the job")
    # Links already in dest (a stale output, a user's file) must not lead outside it.
    if os.path.commonpath([os.path.realpath(os.path.join(dest, rel)), dest]) != dest:
        raise UnsafeOutputError(f"refused {member.name!r} in the job's outputs: it leads outside the job's "
                                "directory through a link")
    if hasattr(tarfile, "data_filter"):  # Python >= 3.11.4, 3.10.12, 3.9.17
        try:
            # The stdlib's own rules for untrusted archives, as a second check. Nothing above,
            # nor _open_inside's refusal of links, depends on it: older Pythons lack it.
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
    if target.is_symlink():
        raise UnsafeOutputError(f"refused {rel!r} in the job's outputs: a link is in its place")
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
    return os.fdopen(fd, "wb")


def extract_outputs(stream: IO[bytes], dest: str, size_limit: int) -> "tuple[Optional[dict], List[str]]":
    """Extracts a stage-out stream (docs/design.md) into `dest`.

    Returns the parsed result.json (None if absent) and the relative paths written: the outputs
    and side effects that result.json lists, nothing else.
    """
    dest_path = Path(dest).resolve()
    dest_path.mkdir(parents=True, exist_ok=True)
    result = None
    listed: set = set()
    written: List[str] = []
    total = 0
    with tarfile.open(fileobj=stream, mode="r|", tarinfo=_BoundedTarInfo) as tar:
        for count, member in enumerate(tar, 1):
            if count > MEMBER_LIMIT:
                raise UnsafeOutputError(f"refused the job's outputs: more than {MEMBER_LIMIT} tar members")
            if count == 1 and member.name == RESULT_MEMBER and member.isfile():
                result = _read_result(tar, member)
                listed = {os.path.normpath(str(n)) for key in ("outputs", "side_effects")
                          for n in (result or {}).get(key) or [] if isinstance(n, str)}
                continue
            if not member.name.startswith(WORK_PREFIX):
                raise UnsafeOutputError(f"refused unexpected member {member.name!r} in the job's outputs")
            member.name = member.name[len(WORK_PREFIX):]
            rel = _check_member(member, str(dest_path))
            if member.isdir() or rel not in listed:
                continue  # directories are made for the files in them
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


def _read_result(tar: tarfile.TarFile, member: tarfile.TarInfo) -> Optional[dict]:
    if member.size > RESULT_SIZE_LIMIT:
        raise UnsafeOutputError("refused result.json larger than 1 MiB")
    try:
        result = json.loads(tar.extractfile(member).read())
    except ValueError:
        raise UnsafeOutputError("the job's result.json is not valid JSON") from None
    if result is not None and not isinstance(result, dict):
        raise UnsafeOutputError("the job's result.json is not a JSON object")
    return result
