"""What the e2e tests' own processes (Jupyter servers, JupyterHub) share: a
log file, SIGKILL (a pod evicted or culled abruptly), a polite stop, and the log's tail."""
import signal
import socket
import subprocess
from pathlib import Path


def free_port(ip: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((ip, 0))
        return s.getsockname()[1]


class ManagedProcess:
    log_path: Path
    stop_seconds = 20

    def __init__(self):
        self.process = None

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(self.stop_seconds)
            except subprocess.TimeoutExpired:
                self.kill()

    def log_tail(self, lines: int = 40) -> str:
        path = self.log_path
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""
