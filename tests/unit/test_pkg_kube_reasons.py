"""kube/reasons.py: pod and Job states (hand-written, and recorded from a cluster) turned into the user's status_message."""
import pytest

from jupyter_scheduler_k8s.kube import reasons

from .data_pkg import helpers as h

NEVER_PULL = 'Container image "localhost/jupyter-scheduler-k8s-executor:0.1.0" is not present with pull policy of Never'


# ---- image problems ---------------------------------------------------------------------------------

def test_image_pull_backoff_names_the_image():
    image = "registry.example.org/does-not-exist:1.0"
    pod = h.pod(h.waiting_status("ImagePullBackOff", f'Back-off pulling image "{image}"', image=image), image=image)
    message = reasons.image_problem(pod)
    assert message.startswith("ImagePullBackOff: image 'registry.example.org/does-not-exist:1.0' could not be pulled")
    assert f'Back-off pulling image "{image}"' in message


def test_err_image_never_pull_names_the_image_and_the_fix():
    image = "localhost/jupyter-scheduler-k8s-executor:0.1.0"
    pod = h.pod(h.waiting_status("ErrImageNeverPull", NEVER_PULL, image=image), image=image)
    message = reasons.image_problem(pod)
    assert f"image '{image}'" in message
    assert message.startswith("ErrImageNeverPull:")
    assert "pull policy Never: load the image into the cluster's nodes" in message


def test_invalid_image_name():
    pod = h.pod(h.waiting_status("InvalidImageName", 'Failed to apply default image tag "UPPER:x"', image="UPPER:x"),
                image="UPPER:x")
    assert "image 'UPPER:x'" in reasons.image_problem(pod)


def test_create_container_config_error():
    pod = h.pod(h.waiting_status("CreateContainerConfigError", 'secret "creds" not found'))
    assert reasons.image_problem(pod) == 'CreateContainerConfigError: secret "creds" not found'


@pytest.mark.parametrize("status", [
    h.waiting_status("ContainerCreating", ""),
    h.waiting_status("ErrImagePull", "transient, retried by the kubelet"),
    h.running_status(),
    h.unschedulable_status(),
    h.terminated_status(0, "Completed"),
])
def test_no_image_problem(status):
    assert reasons.image_problem(h.pod(status)) is None


def test_no_image_problem_for_a_pod_without_status():
    assert reasons.image_problem(None) is None
    assert reasons.image_problem(h.pod({"phase": "Pending"})) is None


# ---- scheduling -------------------------------------------------------------------------------------

def test_unschedulable_returns_the_schedulers_message():
    assert reasons.unschedulable(h.pod(h.unschedulable_status())) == h.UNSCHEDULABLE_MESSAGE


def test_scheduled_pods_are_not_unschedulable():
    assert reasons.unschedulable(h.pod(h.running_status())) is None
    assert reasons.unschedulable(h.pod({"phase": "Pending"})) is None
    assert reasons.unschedulable(None) is None


# ---- terminated pods --------------------------------------------------------------------------------

def test_oom_killed_names_the_memory_limit():
    pod = h.pod(h.terminated_status(137, "OOMKilled"), memory_limit="512Mi")
    assert reasons.terminated_problem(pod) == "OOMKilled: the notebook exceeded its memory limit of 512Mi"


def test_oom_killed_in_last_state():
    status = h.running_status()
    status["containerStatuses"][0]["lastState"] = {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}
    status["containerStatuses"][0]["state"] = {"waiting": {"reason": "CrashLoopBackOff"}}
    assert "OOMKilled" in reasons.terminated_problem(h.pod(status))


def test_deadline_exceeded_says_timed_out_after_n_s():
    status = h.terminated_status(137, "Error", pod_reason="DeadlineExceeded",
                                 pod_message="Pod was active on the node longer than the specified deadline")
    assert reasons.terminated_problem(h.pod(status), 3600) == "timed out after 3600 s"
    assert reasons.terminated_problem(h.pod(status)) == "timed out (activeDeadlineSeconds)"


def test_evicted():
    message = ("The node was low on resource: ephemeral-storage. Threshold quantity: 1Gi, available: 512Mi. "
               "Container executor was using 3Gi, request is 0, has larger consumption of ephemeral-storage.")
    pod = h.pod(h.terminated_status(143, "Error", pod_reason="Evicted", pod_message=message))
    assert reasons.terminated_problem(pod) == "Evicted: " + message


def test_evicted_without_message():
    pod = h.pod({"phase": "Failed", "reason": "Evicted"})
    assert reasons.terminated_problem(pod) == "Evicted: the node ran out of resources"


def test_other_exit_code_includes_the_termination_message():
    log = ("jsk8s-executor run: waiting for inputs\n"
           "jsk8s-executor run: inputs were never staged (/job/.staged missing after 600 s)\n")
    pod = h.pod(h.terminated_status(2, "Error", message=log))
    assert reasons.terminated_problem(pod) == (
        "the executor exited with code 2 (Error): jsk8s-executor run: waiting for inputs | "
        "jsk8s-executor run: inputs were never staged (/job/.staged missing after 600 s)")


def test_other_exit_code_keeps_the_last_five_lines():
    log = "\n".join(f"line {i}" for i in range(20))
    message = reasons.terminated_problem(h.pod(h.terminated_status(139, "Error", message=log)))
    assert message == "the executor exited with code 139 (Error): line 15 | line 16 | line 17 | line 18 | line 19"


def test_other_exit_code_without_message():
    assert reasons.terminated_problem(h.pod(h.terminated_status(255, "Error"))) == \
        "the executor exited with code 255 (Error)"


def test_long_termination_message_is_capped():
    log = "x" * 5000
    message = reasons.terminated_problem(h.pod(h.terminated_status(2, "Error", message=log)))
    assert len(message) == 1024
    assert message.endswith("…")


@pytest.mark.parametrize("code,reason", [(0, "Completed"), (1, "Error")])
def test_exit_0_and_1_are_not_problems(code, reason):
    # The executor wrote result.json first: the result says what happened.
    assert reasons.terminated_problem(h.pod(h.terminated_status(code, reason))) is None


def test_no_terminated_problem_while_running():
    assert reasons.terminated_problem(h.pod(h.running_status())) is None
    assert reasons.terminated_problem(None) is None


# ---- Job conditions ---------------------------------------------------------------------------------

def test_job_problem_deadline_exceeded():
    job = h.job([
        {"type": "FailureTarget", "status": "True", "reason": "DeadlineExceeded",
         "message": "Job was active longer than specified deadline", "lastTransitionTime": h.CREATED},
        {"type": "Failed", "status": "True", "reason": "DeadlineExceeded",
         "message": "Job was active longer than specified deadline", "lastTransitionTime": h.CREATED},
    ])
    assert reasons.job_problem(job, 600) == "timed out after 600 s"
    assert reasons.job_problem(job) == "timed out (activeDeadlineSeconds)"


def test_job_problem_backoff_limit_defers_to_the_pod():
    job = h.job([{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded",
                  "message": "Job has reached the specified backoff limit", "lastTransitionTime": h.CREATED}])
    assert reasons.job_problem(job) is None


def test_job_problem_other_reason():
    job = h.job([{"type": "Failed", "status": "True", "reason": "PodFailurePolicy",
                  "message": "Container executor for pod x failed with exit code 2", "lastTransitionTime": h.CREATED}])
    assert reasons.job_problem(job) == "PodFailurePolicy: Container executor for pod x failed with exit code 2"


def test_no_job_problem():
    assert reasons.job_problem(h.job([])) is None
    assert reasons.job_problem(h.job([{"type": "Complete", "status": "True", "lastTransitionTime": h.CREATED}])) is None
    assert reasons.job_problem(None) is None


# ---- result.json ------------------------------------------------------------------------------------

FAILED = {"status": "failed",
          "error": {"ename": "ValueError", "evalue": "boom", "message": "ValueError: boom (cell 3)"},
          "outputs": ["a.ipynb"], "side_effects": [], "kernels": ["python3"]}


def test_result_problem_uses_the_results_message():
    assert reasons.result_problem(FAILED) == "ValueError: boom (cell 3)"
    assert reasons.result_problem(FAILED, h.pod(h.terminated_status(1, "Error"))) == "ValueError: boom (cell 3)"


def test_result_problem_without_message():
    result = dict(FAILED, error={"ename": "KeyError", "evalue": "'x'"})
    assert reasons.result_problem(result) == "KeyError: 'x'"
    assert reasons.result_problem(dict(FAILED, error=None)).startswith("Error")


def test_result_problem_prefers_oom_killed():
    result = dict(FAILED, error={"ename": "DeadKernelError", "evalue": "Kernel died",
                                 "message": "The kernel died (probably out of memory, limit 1Gi)"})
    pod = h.pod(h.terminated_status(137, "OOMKilled"), memory_limit="1Gi")
    assert reasons.result_problem(result, pod) == "OOMKilled: the notebook exceeded its memory limit of 1Gi"


def test_result_problem_completed_or_missing():
    assert reasons.result_problem(dict(FAILED, status="completed", error=None)) is None
    assert reasons.result_problem(None) is None
    assert reasons.result_problem({}) is None


def test_result_problem_is_short():
    result = dict(FAILED, error={"ename": "E", "evalue": "", "message": "line\n" * 1000})
    message = reasons.result_problem(result)
    assert len(message) == 1024
    assert "\n" not in message


# ---- short() ----------------------------------------------------------------------------------------

def test_short():
    assert reasons.short("  a\n b\t c  ") == "a b c"
    assert reasons.short("x" * 1024) == "x" * 1024
    capped = reasons.short("x" * 1025)
    assert len(capped) == 1024 and capped == "x" * 1023 + "…"
    assert len(reasons.short("ü" * 5000)) == 1024
    assert reasons.short("abcdef", 4) == "abc…"
    assert reasons.short(ValueError("boom")) == "boom"
