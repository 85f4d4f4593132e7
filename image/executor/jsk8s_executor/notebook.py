"""Notebook handling: parameter injection, execution with nbclient, output files, error text."""

import os
import signal
import sys
import threading
from pathlib import Path

import nbconvert
import nbformat
from jupyter_client.kernelspec import KernelSpecManager
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError
from nbconvert.filters import strip_ansi

MAX_MESSAGE = 500  # status_message is String(1024) and shown as a red error line: keep it short.
# Output formats the UI offers under a name that is not nbconvert's exporter name.
EXPORTERS = {"md": "markdown", "py": "python"}


class JobError(Exception):
    """A failure whose text is already a good status message."""


class MissingKernel(JobError):
    pass


class UnreadableNotebook(JobError):
    pass


class Terminated(Exception):
    """The pod got SIGTERM (job stopped, or past its deadline) while the notebook ran."""


# --- parameters --------------------------------------------------------------
# Same result as jupyter_scheduler.parameterize.add_parameters (which we must not import):
# values are written verbatim (`key = value`), the cell is tagged "injected-parameters" and goes
# in place of an existing injected cell, else after the first "parameters" cell, else on top.
def _first_cell_with_tag(nb, tag: str) -> int:
    for index, cell in enumerate(nb.cells):
        if tag in cell.metadata.get("tags", []):
            return index
    return -1


def add_parameters(nb, parameters: dict):
    cell = nbformat.v4.new_code_cell(source="\n".join(f"{key} = {value}" for key, value in parameters.items()))
    cell.metadata["tags"] = ["injected-parameters"]
    injected = _first_cell_with_tag(nb, "injected-parameters")
    params = _first_cell_with_tag(nb, "parameters")
    if injected >= 0:
        nb.cells = nb.cells[:injected] + [cell] + nb.cells[injected + 1 :]
    elif params >= 0:
        nb.cells = nb.cells[: params + 1] + [cell] + nb.cells[params + 1 :]
    else:
        nb.cells = [cell] + nb.cells
    return nb


# --- kernels and execution ---------------------------------------------------
def available_kernels() -> list[str]:
    return sorted(KernelSpecManager().find_kernel_specs())


def check_kernel(name: str, kernels: list[str]) -> None:
    if name not in kernels:
        raise MissingKernel(
            f"Kernel '{name}' is not installed in the executor image (available: {', '.join(kernels) or 'none'})"
        )


class StreamingClient(NotebookClient):
    """NotebookClient that echoes the notebook's printed output to our stdout as it arrives,
    so `kubectl logs` (and the run log) show it, and remembers which cell is running."""

    current_cell: int | None = None
    stopping = False

    async def async_execute_cell(self, cell, cell_index, *args, **kwargs):
        if self.stopping:
            raise Terminated()
        if cell.cell_type == "code" and cell.source.strip():
            self.current_cell = cell_index
        return await super().async_execute_cell(cell, cell_index, *args, **kwargs)

    def stop(self) -> None:
        """Interrupt the running cell and run no further cell (called from our SIGTERM handler).

        The cell then ends through nbclient's normal error path, so its partial outputs are kept.
        """
        self.stopping = True
        process = getattr(getattr(self.km, "provisioner", None), "process", None)
        if process is not None:
            try:
                process.send_signal(signal.SIGINT)
            except OSError:
                pass

    def process_message(self, msg, cell, cell_index):
        if msg["msg_type"] == "stream":
            out = sys.stderr if msg["content"].get("name") == "stderr" else sys.stdout
            out.write(msg["content"].get("text", ""))
            out.flush()
        elif msg["msg_type"] == "error":
            # The traceback goes to the run log too: that is where users look first.
            traceback = "\n".join(msg["content"].get("traceback") or [])
            sys.stderr.write(strip_ansi(traceback) + "\n")
            sys.stderr.flush()
        return super().process_message(msg, cell, cell_index)


def make_client(nb, kernel_name: str, work: Path, cell_timeout: int | None) -> StreamingClient:
    return StreamingClient(
        nb,
        timeout=cell_timeout,
        kernel_name=kernel_name,
        resources={"metadata": {"path": str(work)}},
        store_widget_state=True,
        allow_errors=False,
    )


def execute_in_thread(client: StreamingClient) -> None:
    """client.execute() in a worker thread, re-raising its exception here.

    In the main thread nbclient installs its own SIGTERM handler, which shuts the kernel down
    mid-cell and loses both the cell's outputs and the reason. asyncio only allows signal
    handlers in the main thread, so from a worker thread nbclient skips that and our handler
    (run.py) stays in charge.
    """
    failure = []

    def target():
        try:
            client.execute()
        except BaseException as e:
            failure.append(e)

    thread = threading.Thread(target=target, name="notebook", daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(0.2)  # short waits keep the main thread responsive to signals
    if failure:
        raise failure[0]


# --- errors ------------------------------------------------------------------
def _short(text: str, limit: int = MAX_MESSAGE) -> str:
    text = " ".join(str(text).split())  # one line: it ends up in a one-line UI field
    return text if len(text) <= limit else text[: limit - 1] + "…"


def memory_limit_text() -> str | None:
    """The container's memory limit from the Downward API (bytes), as Mi/Gi, or None."""
    try:
        limit = int(os.environ.get("JSK8S_MEMORY_LIMIT", "0"))
    except ValueError:
        return None
    if limit <= 0:
        return None
    gib, mib = 1024**3, 1024**2
    if limit % gib == 0:
        return f"{limit // gib}Gi"
    if limit >= gib:
        return f"{limit / gib:.1f}Gi"
    return f"{round(limit / mib)}Mi"


def describe_error(exc: BaseException, cell_index: int | None, cell_timeout: int | None) -> dict:
    """result.json's `error`: ename, evalue and one short, specific sentence for status_message."""
    cell = f"cell {cell_index + 1}" if cell_index is not None else "a cell"
    ename, evalue = type(exc).__name__, str(exc)
    if isinstance(exc, CellExecutionError):
        ename, evalue = exc.ename, exc.evalue
        message = f"CellExecutionError in {cell}: {ename}: {evalue}"
    elif isinstance(exc, CellTimeoutError):
        message = f"{cell.capitalize()} did not finish within the cell timeout of {cell_timeout} s"
    elif isinstance(exc, DeadKernelError):
        message = f"The kernel died while running {cell}"
        limit = memory_limit_text()
        if limit:
            message += f"; it probably ran out of memory (the job's memory limit is {limit})"
    elif isinstance(exc, Terminated):
        evalue = "SIGTERM"
        message = f"The job was terminated (stopped, or past its deadline) while running {cell}"
    elif isinstance(exc, JobError):
        message = evalue
    elif cell_index is None:
        message = f"Could not run the notebook: {ename}: {evalue}"
    else:
        message = f"Error while running {cell}: {ename}: {evalue}"
    return {"ename": ename, "evalue": _short(evalue, 2000), "message": _short(message)}


# --- outputs -----------------------------------------------------------------
def write_outputs(nb, outputs: dict[str, str], work: Path) -> tuple[list[str], list[str]]:
    """Write every requested format under exactly the given name.

    Returns (written names, problems). Like jupyter-scheduler's create_output_files, formats
    other than ipynb go through nbconvert's exporter of that name (md and py by their exporters'
    names, markdown and python); each format is tried even if another one fails, so a broken
    exporter costs one file, not all of them.
    """
    written, problems = [], []
    for fmt, name in outputs.items():
        path = work / name
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if fmt == "ipynb":
                body = nbformat.writes(nb)
            else:
                body, _ = nbconvert.get_exporter(EXPORTERS.get(fmt, fmt))().from_notebook_node(nb)
            # Binary exporters (pdf, webpdf) return bytes.
            if isinstance(body, bytes):
                path.write_bytes(body)
            else:
                path.write_text(body, encoding="utf-8")
            written.append(name)
        except Exception as e:
            problems.append(f"Could not write the {fmt} output: {type(e).__name__}: {_short(e, 200)}")
    return written, problems
