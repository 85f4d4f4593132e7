"""Scheduled runs: a job definition's volume, which CronJob pods use without the user's server.

Layout of a definition's volume (docs/design.md, "Schedules"):

    snapshots/<stamp>/   one input snapshot: the notebook and, with an input folder, the folder
    input -> snapshots/<stamp>   the current snapshot (a symlink, swapped atomically)
    runs/<run>/          one run, laid out like a job volume (work/, .staged, result.json)

`snapshot-in` (exec, in a holder pod) writes a new snapshot and swaps `input` to it.
`scheduled-run` (the CronJob's container) prunes old runs, copies the current snapshot into
runs/<run>/work and runs the notebook there with `jsk8s-executor run`, keeping the tail of its
log as one more output. The server imports each run later and then removes it (`forget-run`).
"""

import collections
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

from .jobdir import JobDir, safe_relpath, touch, volume_root, write_json_atomic
from .staging import StagingError, stage_in

# A run's name is its Kubernetes Job's name: a DNS label.
_RUN_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


class ScheduleError(Exception):
    pass


@dataclass
class Retention:
    """How many runs a definition's volume keeps, and for how long, until they are imported."""

    runs_kept: int = 20
    max_age_seconds: float = 7 * 24 * 3600
    log_name: str = "run.log"
    log_limit: int = 4 * 2**20

    @classmethod
    def from_env(cls) -> "Retention":
        data = json.loads(os.environ.get("JSK8S_SCHEDULE") or "{}")
        if not isinstance(data, dict):
            raise ScheduleError("JSK8S_SCHEDULE must be a JSON object")
        try:
            return cls(
                runs_kept=max(1, int(data.get("runs_kept", cls.runs_kept))),
                max_age_seconds=float(data.get("max_age_seconds", cls.max_age_seconds)),
                log_name=safe_relpath(data.get("log_name", cls.log_name)),
                log_limit=max(4096, int(data.get("log_limit", cls.log_limit))),
            )
        except (TypeError, ValueError) as e:
            raise ScheduleError(f"bad JSK8S_SCHEDULE: {e}") from None


class DefinitionDir:
    def __init__(self, root: str | os.PathLike | None = None):
        self.root = volume_root(root)
        self.snapshots = self.root / "snapshots"
        self.input = self.root / "input"
        self.runs = self.root / "runs"

    def run(self, name: str) -> JobDir:
        if not isinstance(name, str) or not _RUN_NAME.match(name):
            raise ScheduleError(f"invalid run name {name!r}")
        return JobDir(self.runs / name)


def snapshot_in(defn: DefinitionDir, stream=None) -> str:
    """Extracts a tar stream into a new snapshot, makes it the current one and removes the older
    ones. A run that starts meanwhile copies either the old snapshot or the new, never a mix."""
    defn.snapshots.mkdir(parents=True, exist_ok=True)
    stamp = f"{time.time_ns():x}"
    stage_in(JobDir(defn.snapshots / stamp), stream)  # the same checks as a job's stage-in
    link = defn.root / f".input-{stamp}"
    os.symlink(f"snapshots/{stamp}/work", link)
    os.replace(link, defn.input)
    for old in defn.snapshots.iterdir():
        if old.name != stamp:
            shutil.rmtree(old, ignore_errors=True)
    return stamp


def prune(defn: DefinitionDir, retention: Retention, now: float | None = None, keep: str = "") -> list[str]:
    """Removes the runs beyond `runs_kept` (oldest first) and those older than `max_age_seconds`;
    `keep` (the run starting) is never removed and counts as one. Returns the names removed."""
    now = time.time() if now is None else now
    if not defn.runs.is_dir():
        return []
    runs = sorted((p for p in defn.runs.iterdir() if p.is_dir() and p.name != keep),
                  key=lambda p: p.stat().st_mtime, reverse=True)
    room = retention.runs_kept - (1 if keep else 0)
    removed = []
    for index, path in enumerate(runs):
        if index >= room or now - path.stat().st_mtime > retention.max_age_seconds:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path.name)
    return removed


def forget_run(defn: DefinitionDir, name: str) -> None:
    """Removes an imported run's files."""
    shutil.rmtree(defn.run(name).root, ignore_errors=True)


class _Tail:
    """The last `limit` bytes written, from a line start; the head of a chatty run is dropped."""

    def __init__(self, limit: int):
        self.limit, self.chunks, self.size, self.cut = limit, collections.deque(), 0, 0

    def write(self, data: bytes) -> None:
        self.chunks.append(data)
        self.size += len(data)
        while self.size - len(self.chunks[0]) >= self.limit:
            dropped = self.chunks.popleft()
            self.size -= len(dropped)
            self.cut += len(dropped)

    def text(self) -> bytes:
        data = b"".join(self.chunks)
        if self.cut:
            newline = data.find(b"\n")
            data = data[newline + 1:] if newline >= 0 else data
            return f"[jsk8s] the first part of the log was cut; this is its last {len(data)} bytes\n".encode() + data
        return data


def scheduled_run(defn: DefinitionDir, name: str, retention: Retention, argv=("jsk8s-executor", "run")) -> int:
    """One run of a definition: prune, copy the snapshot, run, keep the log's tail as an output.
    Exits as `run` does (0 completed, 1 failed, 2 bad spec or no snapshot)."""
    job = defn.run(name)
    prune(defn, retention, keep=name)
    source = defn.input.resolve() if defn.input.is_symlink() else None
    if source is None or not source.is_dir():
        print(f"jsk8s-executor scheduled-run: the definition has no input snapshot ({defn.input})", file=sys.stderr)
        return 2
    if not job.staged.exists():  # a retried pod keeps the inputs it had
        shutil.rmtree(job.root, ignore_errors=True)
        shutil.copytree(source, job.work, symlinks=True)
        touch(job.staged)
    env = dict(os.environ, JSK8S_JOB_DIR=str(job.root))
    tail = _Tail(retention.log_limit)
    child = subprocess.Popen(list(argv), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    previous = signal.signal(signal.SIGTERM, lambda *_: child.send_signal(signal.SIGTERM))
    try:
        out = sys.stdout.buffer
        for line in iter(child.stdout.readline, b""):
            out.write(line)
            out.flush()
            tail.write(line)
        code = child.wait()
    finally:
        signal.signal(signal.SIGTERM, previous)
    _add_log(job, retention.log_name, tail.text())
    return code


def _add_log(job: JobDir, log_name: str, data: bytes) -> None:
    """The log becomes one more listed output, so that stage-out sends it like the others."""
    (job.work / log_name).parent.mkdir(parents=True, exist_ok=True)
    (job.work / log_name).write_bytes(data)
    try:
        result = json.loads(job.result.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return  # no result: the server reports the run by its Job's state
    if isinstance(result, dict):
        result["log"] = log_name
        result["outputs"] = [o for o in result.get("outputs") or [] if o != log_name] + [log_name]
        write_json_atomic(job.result, result)


__all__ = ["DefinitionDir", "Retention", "ScheduleError", "StagingError", "forget_run", "prune",
           "scheduled_run", "snapshot_in"]
