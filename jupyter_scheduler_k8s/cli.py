"""`jupyter-scheduler-k8s` (also `jupyter scheduler-k8s`): run one notebook on Kubernetes, or check the setup.

    jupyter-scheduler-k8s run NOTEBOOK [-p key=value]... [-f html]... [--input-folder] [-o DIR]
    jupyter-scheduler-k8s doctor
    jupyter-scheduler-k8s gateway [--port 8000]
"""
import argparse
import os
import shutil
import sys
import tempfile
import time
import uuid
from datetime import datetime

# Only what every command needs is imported here: the kubernetes client takes seconds to import,
# and jupyter_scheduler pulls in all of jupyter_server, so `--help` and argument errors stay fast.


def _parameter(text: str):
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    # As in the UI, a value is Python source: `-p n=3`, `-p label='"text"'`.
    return key, value


def _config_from_args(args):
    """Jupyter config files (as the server would read them), then command-line overrides."""
    from .config import K8sConfig, jupyter_config_files

    c = jupyter_config_files()
    for trait in ("namespace", "image", "image_pull_policy", "kubeconfig", "context"):
        value = getattr(args, trait, None)
        if value:
            c.K8sConfig[trait] = value
    if getattr(args, "timeout", None):
        c.K8sConfig.timeout_seconds = args.timeout
    if getattr(args, "memory_limit", None):
        c.K8sConfig.memory_limit = args.memory_limit
    return K8sConfig(config=c)


def output_name(notebook: str, created: datetime, fmt: str) -> str:
    """`<notebook>-YYYY-MM-DD-HH-MM-SS-AM.<fmt>`, the way jupyter-scheduler names a job's outputs."""
    return f"{os.path.splitext(notebook)[0]}-{created.strftime('%Y-%m-%d-%I-%M-%S-%p')}.{fmt}"


def _stage(args, staging_dir: str, created: datetime):
    notebook = os.path.abspath(args.notebook)
    name = os.path.basename(notebook)
    if args.input_folder:
        shutil.copytree(os.path.dirname(notebook), staging_dir, dirs_exist_ok=True)
    else:
        shutil.copyfile(notebook, os.path.join(staging_dir, name))
    formats = list(dict.fromkeys(["ipynb"] + (args.format or [])))
    return {fmt: output_name(name, created, fmt) for fmt in formats}, name


def _clients(cfg):
    """The API clients, or None after one line that says which credentials to provide."""
    from kubernetes.config import ConfigException

    from .kube.clients import Clients

    clients = Clients(cfg.kubeconfig, cfg.context)
    try:
        clients.api_client
    except (ConfigException, OSError) as e:
        print("error: no Kubernetes credentials: pass --kubeconfig or set KUBECONFIG, or run in a pod "
              f"with a ServiceAccount token ({' '.join(str(e).split())})", file=sys.stderr)
        return None
    return clients


def cmd_run(args) -> int:
    if not os.path.isfile(args.notebook):
        print(f"error: no such notebook: {args.notebook}", file=sys.stderr)
        return 2
    cfg = _config_from_args(args)
    from .kube.driver import KubeDriver
    from .jobs.lifecycle import JobRun
    from .jobs.steps import JobFailed, NotebookJob
    from .modes import make_driver
    if cfg.gateway_url:  # hub mode: through the jobs gateway, with this server's hub token
        driver = make_driver(cfg)
    else:
        clients = _clients(cfg)
        if clients is None:
            return 2
        driver = KubeDriver(cfg, clients)

    job_id = str(uuid.uuid4())
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="jsk8s-run-") as staging_dir:
        outputs, name = _stage(args, staging_dir, datetime.now())
        job = NotebookJob(job_id=job_id, staging_dir=staging_dir, input_file=name, outputs=outputs,
                          parameters=dict(args.parameter or []), package_input_folder=args.input_folder,
                          job_name=args.name or os.path.splitext(name)[0], compute_type=args.profile)

        def phase(p):
            print(f"[{time.monotonic() - started:6.1f}s] {p}", flush=True)

        run = JobRun(job, cfg, driver, on_phase=phase)
        print(f"job {job_id} in namespace {cfg.namespace}, image {cfg.image}", flush=True)
        status = 0
        try:
            outcome = run.run()
        except JobFailed as e:
            outcome, status = e.outcome, 1
            print(f"FAILED: {e}", file=sys.stderr)
            if run.log_text:
                print("--- last lines of the pod log ---\n" + run.log_tail(20), file=sys.stderr)
        out_dir = os.path.abspath(args.output_dir)
        if outcome is not None:
            os.makedirs(out_dir, exist_ok=True)
            for rel in outcome.outputs + outcome.side_effects:
                target = os.path.join(out_dir, rel)
                os.makedirs(os.path.dirname(target), exist_ok=True)
                shutil.copyfile(os.path.join(staging_dir, rel), target)
                print(f"  wrote {target}")
            run.cleanup_quietly(outcome)
        phase("done" if status == 0 else "failed")
        return status


def cmd_doctor(args) -> int:
    from .doctor import Doctor

    cfg = _config_from_args(args)
    if cfg.gateway_url:
        from .modes import make_driver
        return Doctor(cfg, None).run_hub_mode(make_driver(cfg))
    clients = _clients(cfg)
    return 2 if clients is None else Doctor(cfg, clients).run()


def cmd_gateway(args) -> int:
    """Serves the jobs gateway (hub mode) until it is stopped."""
    import logging

    from .config import jupyter_config_files
    from .gateway.app import Gateway, GatewayConfig

    logging.basicConfig(level=logging.INFO, format="[%(levelname)1.1s %(asctime)s %(name)s] %(message)s")
    c = jupyter_config_files()
    for trait in ("ip", "port", "service_prefix"):
        if getattr(args, trait, None):
            c.GatewayConfig[trait] = getattr(args, trait)
    cfg = _config_from_args(args)
    # The gateway acts for many users: K8sConfig.username (one user's, in direct mode) is unused.
    Gateway(cfg, GatewayConfig(config=c)).serve()
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="jupyter-scheduler-k8s", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--namespace", help="jobs namespace (default: K8sConfig / $K8S_NAMESPACE)")
    common.add_argument("--image", help="executor image (default: K8sConfig / $K8S_IMAGE)")
    common.add_argument("--image-pull-policy", dest="image_pull_policy", choices=["Always", "IfNotPresent", "Never"])
    common.add_argument("--kubeconfig", help="kubeconfig path (default: in-cluster, $KUBECONFIG, ~/.kube/config)")
    common.add_argument("--context", help="kubeconfig context")

    run = sub.add_parser("run", parents=[common], help="run a notebook as a Kubernetes Job")
    run.add_argument("notebook")
    run.add_argument("-p", "--parameter", action="append", type=_parameter, metavar="KEY=VALUE")
    run.add_argument("-f", "--format", action="append", metavar="FORMAT",
                     help="output format besides ipynb (html, pdf, ...), repeatable")
    run.add_argument("--input-folder", action="store_true", help="send the notebook's whole folder along")
    run.add_argument("-o", "--output-dir", default="out", help="where outputs are written (default: ./out)")
    run.add_argument("--name", help="job name (default: the notebook's name)")
    run.add_argument("--profile", help="compute profile name")
    run.add_argument("--timeout", type=int, help="run time limit in seconds")
    run.add_argument("--memory-limit", help="memory limit, e.g. 512Mi")
    run.set_defaults(func=cmd_run)

    doctor = sub.add_parser("doctor", parents=[common], help="check that jobs can run with this configuration")
    doctor.set_defaults(func=cmd_doctor)

    gateway = sub.add_parser("gateway", parents=[common],
                             help="serve the jobs gateway: hub mode's one holder of Kubernetes rights")
    gateway.add_argument("--ip", help="address to listen on (default 0.0.0.0)")
    gateway.add_argument("--port", type=int, help="port to listen on (default 8000)")
    gateway.add_argument("--service-prefix", dest="service_prefix",
                         help="URL prefix (default $JUPYTERHUB_SERVICE_PREFIX, else /services/jobs-gateway/)")
    gateway.set_defaults(func=cmd_gateway)

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
