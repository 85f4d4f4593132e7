"""What the server side asks of Kubernetes, as the two contracts that both modes fill in:
`Driver` for one-off jobs (the lifecycle's steps) and `Schedules` for job definitions.

In direct mode `kube/driver.py` KubeDriver and `kube/schedules.py` KubeSchedules call the API;
in hub mode `gateway/client.py` GatewayDriver and GatewaySchedules ask the jobs gateway, which
calls them. Both raise the same errors: `NotFound` for what is not there or not the owner's,
`jobs.steps.JobFailed` and `kube.schedules.ScheduleError` for what will never work,
`kube.transfer.CommandFailed` when a command in the pod fails, and `kube.transfer.TransferError`
(or the API's own errors) for what may work if tried again. `modes.py` picks the pair;
tests/unit/test_pkg_kube_base.py checks that each class has every method, with these parameters.
"""
from typing import Callable, Iterable, Iterator, List, Optional, Protocol, Tuple, TypeVar

from . import names
from .watch import first_answer

T = TypeVar("T")


class NotFound(Exception):
    """No such job, volume or pod for this owner (it never was, it is gone, or it is not theirs)."""


class OverLimit(Exception):
    """The request would take its user past a per-user limit (values.yaml `limits`, K8sConfig);
    the message names the limit and its value, and nothing was created."""


class Driver(Protocol):
    """A one-off job's objects: its PVC and Job, the pod that runs it, the collector pod that
    reads its volume when that pod is gone, and the files in and out."""

    def create(self, job, profile: dict, timeout_seconds: int) -> bool:
        """The PVC and the Job of a jobs.steps.NotebookJob, and a pod that holds the PVC for
        send_inputs; True while the inputs are still to send. Objects that exist already and
        are the owner's count as made. OverLimit if the owner's queue is full."""

    def read_job(self, job_id: str):
        """The owner's Job (a V1Job), or None."""

    def volume_exists(self, job_id: str) -> bool:
        """The job's PVC exists and is not being deleted."""

    def warning_event(self, job_id: str) -> Optional[str]:
        """The newest warning event about the job's Job (a quota refusing its pod), if any."""

    def stop(self, job_id: str) -> None:
        """Deletes the Job gracefully: the notebook is saved as it is; the PVC stays."""

    def delete(self, job_id: str, keep_volume: bool = False, collector: bool = True) -> None:
        """The job's objects, gone (safe to repeat)."""

    def start_collector(self, job, hold_seconds: int = 300) -> None:
        """A pod on the job's PVC that holds it for collection (create() starts it for stage-in)."""

    def remove_collector(self, job_id: str) -> None:
        ...

    def pod_events(self, job_id: Optional[str] = None, component: str = names.COMPONENT_JOB,
                   tick: float = 5, stopped: Callable[[], bool] = lambda: False) -> Iterator[Tuple[str, object]]:
        """kube.watch.pod_events for the owner's genuine pods (one job's, or all)."""

    def wait_for_pod(self, job_id: str, component: str, decide: Callable[[Optional[object]], Optional[T]],
                     timeout: float, tick: float = 5) -> T:
        """decide(pod or None) on every change of the job's pod, until it returns an answer."""
        return first_answer(self.pod_events(job_id, component, min(tick, max(timeout, 1))), decide, timeout)

    def send_inputs(self, job_id: str, pod_name: str, root: str, files: Iterable[str]) -> None:
        """The files under root, onto the job's PVC through the pod that holds it (stage-in);
        then the Job is marked staged, and the queue may admit it."""

    def receive_outputs(self, job_id: str, pod_name: str, component: str, dest: str, size_limit: int):
        """The outputs, streamed into dest (kube.safe_tar); returns (result, written paths)."""

    def release(self, job_id: str, pod_name: str, component: str) -> None:
        """Lets the pod exit now that its outputs are in."""

    def log_tail(self, job_id: str, pod_name: str, limit: int) -> Optional[Tuple[bytes, int]]:
        """The last `limit` bytes of the pod's log, and how many were left out; None if it has none."""


class Schedules(Protocol):
    """A job definition's objects: its CronJob and volume, its runs (Jobs), and the holder pod
    through which its volume's files are read and written."""

    def create(self, definition, profile: dict) -> None:
        """The volume and the CronJob of a kube.schedules.Definition."""

    def update(self, definition, profile: dict) -> None:
        ...

    def delete(self, definition_id: str) -> None:
        """The CronJob (its runs go with it), the holder pod and the volume (safe to repeat)."""

    def run_now(self, definition_id: str, parameters: Optional[dict] = None):
        """A run now, from the CronJob's template; returns its Job."""

    def list_runs(self, definition_id: str = "") -> List:
        """The owner's run Jobs (of one definition, or all)."""

    def run_pod(self, definition_id: str, run_name: str):
        """The run's pod, if it is still there."""

    def delete_run(self, definition_id: str, run_name: str) -> None:
        ...

    def start_holder(self, definition_id: str, environment: Optional[str] = None) -> str:
        """The holder pod on the definition's volume, running; returns its name."""

    def remove_holder(self, definition_id: str) -> None:
        ...

    def snapshot(self, definition_id: str, environment: Optional[str], root: str, files: Iterable[str]) -> None:
        """The inputs, as the definition's new snapshot (runs already started keep theirs)."""

    def receive_run(self, definition_id: str, run_name: str, dest: str, size_limit: int):
        """A run's outputs from the volume, streamed into dest; returns (result, written paths)."""

    def forget_run(self, definition_id: str, run_name: str) -> None:
        """An imported run, removed from the volume."""


__all__ = ["Driver", "NotFound", "Schedules"]
