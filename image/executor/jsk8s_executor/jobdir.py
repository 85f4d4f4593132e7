"""The job volume's layout (docs/design.md, "Files on the PVC") and small helpers on it."""

import json
import os
import time
from pathlib import Path, PurePosixPath

POLL_SECONDS = 0.2


def volume_root(root: str | os.PathLike | None = None) -> Path:
    """Where the volume is: `root`, else env JSK8S_JOB_DIR (tests use another mount), else /job."""
    return Path(root or os.environ.get("JSK8S_JOB_DIR") or "/job")


class JobDir:
    def __init__(self, root: str | os.PathLike | None = None):
        self.root = volume_root(root)
        self.work = self.root / "work"
        self.staged = self.root / ".staged"
        self.collected = self.root / ".collected"
        self.result = self.root / "result.json"


def wait_for(path: Path, timeout: float, stop=lambda: False) -> bool:
    """Poll until `path` exists; False after `timeout` seconds or when `stop()` says so."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() >= deadline or stop():
            return False
        time.sleep(POLL_SECONDS)
    return True


def touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()


def safe_relpath(name) -> str:
    """Return `name` as a normalised relative POSIX path, or raise ValueError.

    Every path that crosses the pod boundary (spec names, tar members, result.json
    entries) goes through this, so none can point outside the work dir.
    """
    if not isinstance(name, str) or not name or "\0" in name:
        raise ValueError(f"invalid path {name!r}")
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts:
        raise ValueError(f"path must stay inside the work dir: {name!r}")
    rel = str(path)
    if rel in ("", "."):
        raise ValueError(f"invalid path {name!r}")
    return rel


def write_json_atomic(path: Path, data) -> None:
    # The readiness probe and the server look for result.json: it must never be seen half-written.
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
