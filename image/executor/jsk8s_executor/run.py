"""`jsk8s-executor run`: the Job container's main process.

Wait for stage-in, execute, write every output and result.json whatever happened, then hold
until the server has collected the outputs (or collect_hold_seconds pass) so that it can still
exec into this pod. Exit 0 completed, 1 failed, 2 bad spec or never staged.
"""

import os
import signal
import stat
import sys
from pathlib import Path

import nbformat

from .jobdir import JobDir, wait_for, write_json_atomic
from .notebook import (
    Terminated,
    UnreadableNotebook,
    add_parameters,
    available_kernels,
    check_kernel,
    describe_error,
    execute_in_thread,
    make_client,
    write_outputs,
)
from .spec import Spec, SpecError


def log(message: str) -> None:
    print(f"[jsk8s] {message}", flush=True)


class _Sigterm:
    """SIGTERM stops the notebook (its partial outputs are still written) and ends the hold."""

    received = False
    client = None

    def __call__(self, signum, frame):
        self.received = True
        if self.client is not None:
            self.client.stop()


def snapshot(work: Path) -> dict[str, tuple[int, int]]:
    """Regular files under `work` (symlinks are neither followed nor listed) with size and mtime."""
    files = {}
    for root, _dirs, names in os.walk(work):
        for name in names:
            path = os.path.join(root, name)
            try:
                st = os.lstat(path)
            except FileNotFoundError:  # removed while we walk
                continue
            if stat.S_ISREG(st.st_mode):
                files[os.path.relpath(path, work)] = (st.st_size, st.st_mtime_ns)
    return files


def execute(spec: Spec, work: Path, sigterm: _Sigterm) -> dict:
    """Run the notebook and write its outputs; return result.json's content."""
    kernels = available_kernels()
    before = snapshot(work)
    nb, error, client = None, None, None
    try:
        try:
            with open(work / spec.input, encoding="utf-8") as f:
                nb = nbformat.read(f, as_version=4)
        except Exception as e:
            raise UnreadableNotebook(f"Cannot read the input notebook '{spec.input}': {type(e).__name__}: {e}") from e
        if spec.parameters:
            log(f"injecting parameters: {', '.join(spec.parameters)}")
            nb = add_parameters(nb, spec.parameters)
        kernel = spec.kernel_name or nb.metadata.get("kernelspec", {}).get("name")
        if not kernel:
            kernel = "python3"
            log("the notebook names no kernel; using python3")
        check_kernel(kernel, kernels)
        log(f"executing with kernel {kernel}")
        client = sigterm.client = make_client(nb, kernel, work, spec.cell_timeout)
        if sigterm.received:
            raise Terminated()
        execute_in_thread(client)
    except Exception as e:
        # After SIGTERM the cell's error is our own interrupt: report the termination instead.
        cell = client.current_cell if client else None
        error = describe_error(Terminated() if sigterm.received else e, cell, spec.cell_timeout)
    finally:
        sigterm.client = None

    excluded = {spec.input, *spec.outputs.values()}
    after = snapshot(work)
    side_effects = sorted(p for p, sig in after.items() if before.get(p) != sig and p not in excluded)
    written, problems = write_outputs(nb, spec.outputs, work) if nb is not None else ([], [])
    if problems and error is None:
        error = {"ename": "OutputError", "evalue": problems[0], "message": problems[0][:500]}
    for problem in problems:
        log(problem)
    return {
        "status": "failed" if error else "completed",
        "error": error,
        "outputs": written,
        "side_effects": side_effects,
        "kernels": kernels,
    }


def main(job: JobDir) -> int:
    try:
        spec = Spec.from_env()
    except SpecError as e:
        print(f"jsk8s-executor run: bad spec: {e}", file=sys.stderr)
        return 2

    sigterm = _Sigterm()
    previous = signal.signal(signal.SIGTERM, sigterm)
    try:
        log("waiting for inputs")
        if not wait_for(job.staged, spec.stage_timeout_seconds, stop=lambda: sigterm.received):
            print(
                f"jsk8s-executor run: inputs were never staged ({job.staged} missing after "
                f"{spec.stage_timeout_seconds:g} s)",
                file=sys.stderr,
            )
            return 2
        log("staged")
        os.chdir(job.work)  # relative paths in the notebook resolve against the staged inputs
        result = execute(spec, job.work, sigterm)
        write_json_atomic(job.result, result)
        if result["error"]:
            log(f"failed: {result['error']['message']}")
        else:
            log("completed")
        log(f"outputs: {', '.join(result['outputs']) or 'none'}; side effects: {len(result['side_effects'])}")

        log(f"waiting up to {spec.collect_hold_seconds:g} s for the outputs to be collected")
        if wait_for(job.collected, spec.collect_hold_seconds, stop=lambda: sigterm.received):
            log("collected")
        return 0 if result["status"] == "completed" else 1
    finally:
        signal.signal(signal.SIGTERM, previous)
