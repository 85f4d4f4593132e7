"""The `jupyter-scheduler-k8s` command: fast to start, one clear line when credentials are missing."""
import os
import subprocess
import sys

import nbformat


def _run(args, tmp_path, code=None):
    env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "KUBERNETES_SERVICE_HOST")}
    env.update(HOME=str(tmp_path), JUPYTER_CONFIG_DIR=str(tmp_path / "jupyter"), JUPYTER_CONFIG_PATH="")
    command = [sys.executable, "-c", code] if code else [sys.executable, "-m", "jupyter_scheduler_k8s.cli", *args]
    return subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)


def test_help_imports_neither_the_kubernetes_client_nor_jupyter_server(tmp_path):
    code = ("import sys\nfrom jupyter_scheduler_k8s.cli import main\n"
            "try:\n    main(['run', '--help'])\nexcept SystemExit:\n    pass\n"
            "print('HEAVY', sorted(m for m in ('kubernetes', 'jupyter_server', 'jupyter_scheduler') if m in sys.modules))")
    result = _run([], tmp_path, code=code)
    assert "HEAVY []" in result.stdout, result.stdout + result.stderr


def test_run_without_credentials_says_what_to_set(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.metadata.kernelspec = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp_path / "a.ipynb")
    for command in (["run", "a.ipynb"], ["doctor"]):
        result = _run(command, tmp_path)
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: no Kubernetes credentials: pass --kubeconfig or set KUBECONFIG")
        assert "Traceback" not in result.stderr
