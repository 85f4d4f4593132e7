"""Pure parts of job definitions as CronJobs: names, the CronJob, "Run now", the gateway's reading
of a definition."""
import json
import uuid

import pytest
from jupyter_scheduler_k8s.kube import manifests, names
from jupyter_scheduler_k8s.gateway.base import Refusal
from jupyter_scheduler_k8s.gateway.schedules import definition_from_request
from jupyter_scheduler_k8s.kube.schedules import ScheduleError, check_timezone

DEFINITION_ID = str(uuid.UUID(int=7))


def cronjob(**overrides):
    args = dict(
        run_labels=names.definition_labels(DEFINITION_ID, names.COMPONENT_SCHEDULED_RUN, "alice"),
        schedule="*/5 * * * *", time_zone="Europe/Paris", suspend=False, concurrency_policy="Forbid",
        starting_deadline_seconds=300, history_limit=20, image="executor:1", pull_policy="IfNotPresent",
        spec={"input": "a.ipynb", "outputs": {"ipynb": "a-out.ipynb"}, "collect_hold_seconds": 0},
        retention={"runs_kept": 20, "log_name": "a.log"}, container_resources=manifests.resources("1", None, "1Gi", "1Gi"),
        timeout_seconds=600, ttl_seconds=3600)
    args.update(overrides)
    name = names.definition_name(DEFINITION_ID)
    return manifests.make_cronjob(name, "jobs", names.definition_labels(DEFINITION_ID, names.COMPONENT_SCHEDULE, "alice"),
                                  names.annotations("alice"), **args)


def test_names_fit_the_cronjob_limit_and_its_jobs():
    name = names.definition_name(DEFINITION_ID)
    assert name == "jsk8s-d-" + DEFINITION_ID and len(name) == 44 <= names.CRONJOB_NAME_LIMIT
    assert len(names.definition_name("x" * 300)) <= names.CRONJOB_NAME_LIMIT
    assert names.definition_name("A") != names.definition_name("a_")  # slugs keep distinct inputs distinct
    manual = names.manual_run_name(DEFINITION_ID, "abcdef")
    assert len(manual) <= 63 and manual.startswith(name + "-m")


def test_the_cronjob_carries_the_schedule_and_the_limits():
    spec = cronjob().spec
    assert (spec.schedule, spec.time_zone, spec.suspend, spec.concurrency_policy) == ("*/5 * * * *", "Europe/Paris",
                                                                                      False, "Forbid")
    assert spec.starting_deadline_seconds == 300
    assert spec.successful_jobs_history_limit == spec.failed_jobs_history_limit == 20
    job = spec.job_template.spec
    assert job.backoff_limit == 0 and job.ttl_seconds_after_finished == 3600
    assert spec.job_template.metadata.labels[names.LABEL_COMPONENT] == names.COMPONENT_SCHEDULED_RUN
    pod = job.template.spec
    assert pod.automount_service_account_token is False and pod.restart_policy == "Never"
    assert pod.volumes[0].persistent_volume_claim.claim_name == names.definition_name(DEFINITION_ID)
    container = pod.containers[0]
    assert container.command == ["jsk8s-executor", "scheduled-run"] and container.readiness_probe is None
    env = {e.name: e for e in container.env}
    assert env["JSK8S_RUN_NAME"].value_from.field_ref.field_path == "metadata.labels['batch.kubernetes.io/job-name']"
    assert json.loads(env["JSK8S_SCHEDULE"].value) == {"runs_kept": 20, "log_name": "a.log"}
    assert json.loads(env["JSK8S_SPEC"].value)["collect_hold_seconds"] == 0


def test_run_now_is_a_job_from_the_template_owned_by_the_cronjob():
    template = cronjob()
    template.metadata.uid = "cj-uid"
    job = manifests.job_from_cronjob(template, "run-now-1")
    assert job.metadata.name == "run-now-1" and job.metadata.namespace == "jobs"
    ref = job.metadata.owner_references[0]
    assert (ref.kind, ref.name, ref.uid, ref.controller) == ("CronJob", template.metadata.name, "cj-uid", True)
    assert job.metadata.annotations["cronjob.kubernetes.io/instantiate"] == "manual"
    assert job.spec == template.spec.job_template.spec
    manifests.set_spec_parameters(job, {"n": "2"})
    spec = json.loads(next(e.value for e in job.spec.template.spec.containers[0].env if e.name == "JSK8S_SPEC"))
    assert spec["parameters"] == {"n": "2"} and spec["input"] == "a.ipynb"
    # The CronJob's own template is untouched.
    original = next(e.value for e in template.spec.job_template.spec.template.spec.containers[0].env
                    if e.name == "JSK8S_SPEC")
    assert "parameters" not in json.loads(original)


def test_time_zones_are_iana_names():
    assert check_timezone("America/New_York") == "America/New_York"
    assert check_timezone(None) is None and check_timezone("") is None
    for bad in ("Mars/Olympus_Mons", "../etc/passwd", "UTC+1"):
        with pytest.raises(ScheduleError, match="Unknown time zone"):
            check_timezone(bad)


GOOD = {"name": "daily", "input_file": "a.ipynb", "outputs": {"ipynb": "a-1.ipynb"}, "log_name": "a-1.log",
        "schedule": "0 8 * * *", "timezone": "UTC", "active": True, "parameters": {"n": 1},
        "compute_type": None, "environment": None}


def test_the_gateway_reads_a_definition_by_names_and_values():
    definition = definition_from_request(DEFINITION_ID, {"definition": GOOD})
    assert (definition.definition_id, definition.schedule, definition.outputs) == (DEFINITION_ID, "0 8 * * *",
                                                                                   {"ipynb": "a-1.ipynb"})


@pytest.mark.parametrize("change", [
    {"input_file": "../a.ipynb"}, {"outputs": {"ipynb": "x/y.ipynb"}}, {"log_name": ""}, {"schedule": None},
    {"schedule": 5}, {"active": "yes"}, {"parameters": {"n": {"nested": 1}}},
    {"parameters": ["n"]}, {"timezone": "x" * 300},
])
def test_the_gateway_refuses_a_malformed_definition(change):
    with pytest.raises(Refusal) as refused:
        definition_from_request(DEFINITION_ID, {"definition": {**GOOD, **change}})
    assert refused.value.status_code == 400


def test_the_gateway_refuses_a_body_without_a_definition():
    for body in (None, [], {"job": GOOD}):
        with pytest.raises(Refusal):
            definition_from_request(DEFINITION_ID, body)


# ---- who may read a definition's runs and its holder: objects recorded from a cluster ----------

def _schedules(owner, *objects):
    from jupyter_scheduler_k8s.config import K8sConfig
    from jupyter_scheduler_k8s.kube.driver import KubeDriver
    from jupyter_scheduler_k8s.kube.schedules import KubeSchedules
    from .data_pkg.recorded import NAMESPACE, RecordedCluster
    return KubeSchedules(KubeDriver(K8sConfig(namespace=NAMESPACE), RecordedCluster(*objects), owner=owner))


def test_a_run_is_alices_alone_and_only_through_the_definition_that_made_it():
    from .data_pkg.recorded import DEFINITION_ID as MINE, recorded
    cronjob, run = recorded("definition-cronjob"), recorded("definition-run-job")
    name = run.metadata.name
    assert _schedules("alice", cronjob, run).read_run(MINE, name).metadata.uid == run.metadata.uid
    assert [job.metadata.name for job in _schedules("alice", cronjob, run).list_runs(MINE)] == [name]
    # Bob, asking for it by its real name under alice's definition id.
    assert _schedules("bob", cronjob, run).read_run(MINE, name) is None
    assert _schedules("bob", cronjob, run).list_runs() == []
    # Alice's other definition (its own CronJob): the run was not made by it.
    other = str(uuid.UUID(int=9))
    others = recorded("definition-cronjob", name=names.definition_name(other), uid=str(uuid.UUID(int=10)))
    assert _schedules("alice", cronjob, others, run).read_run(other, name) is None
    # A Job with the run's labels and annotations that no CronJob made (owner references are
    # set by the controller; labels can be written by anyone with create rights).
    forged = recorded("definition-run-job", ownerReferences=None, uid=str(uuid.UUID(int=11)))
    assert _schedules("alice", cronjob, forged).read_run(MINE, name) is None
    assert _schedules("alice", cronjob, forged).list_runs(MINE) == []


def test_the_holder_is_alices_alone_and_must_be_owned_by_her_volume():
    from jupyter_scheduler_k8s.kube.base import NotFound
    from .data_pkg.recorded import DEFINITION_ID as MINE, recorded
    volume, holder = recorded("definition-volume"), recorded("definition-holder-pod")
    assert _schedules("alice", volume, holder).holder(MINE) == holder.metadata.name
    with pytest.raises(NotFound):
        _schedules("bob", volume, holder).holder(MINE)
    forged = recorded("definition-holder-pod", ownerReferences=[
        {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "name": volume.metadata.name, "uid": str(uuid.UUID(int=12))}])
    with pytest.raises(NotFound):
        _schedules("alice", volume, forged).holder(MINE)
