"""Fair share, as installed: what one user may have at once (values.yaml `limits`), enforced where
the Kubernetes rights are (the jobs gateway, as the chart's ServiceAccount; the user's server in
direct mode). Over a limit the request is refused with a message that names the limit and its
value, and nothing is created. (The session's install sets limits.definitionsPerUser to 2:
conftest.chart_values_for.)"""
import json
import urllib.error
import uuid

import pytest

from jupyter_scheduler_k8s.kube import names

from .conftest import DEFINITIONS_PER_USER, NEVER_SOON, leftovers, write_notebook
from .hub import call

pytestmark = pytest.mark.e2e


def _definition(name: str) -> dict:
    return {"definition": {"name": name, "input_file": "nap.ipynb", "outputs": {"ipynb": "nap.ipynb"},
                           "log_name": "nap.log", "schedule": NEVER_SOON, "timezone": "UTC", "active": False}}


def _theirs(batch, core, namespace, user: str) -> tuple:
    """(CronJobs, PVCs) of job definitions that the user owns, as the admin sees them."""
    selector = f"{names.definition_selector('', names.COMPONENT_SCHEDULE)},{names.LABEL_USERNAME}={names.safe_slug(user)}"
    return (sorted(c.metadata.name for c in batch.list_namespaced_cron_job(namespace, label_selector=selector).items),
            sorted(p.metadata.name for p in core.list_namespaced_persistent_volume_claim(
                namespace, label_selector=selector).items))


def test_definitions_over_the_users_limit_are_refused_and_nothing_is_made(
        gateway, hub, user_server, core, batch, jobs_namespace):
    """Dora's definitions, straight through the gateway's API and through her server: the one
    past the limit is a 429 without Retry-After (waiting lifts no limit), and in her server an
    error that JupyterLab shows; another user may still create hers."""
    dora = hub.user_token("dora")
    mine = [str(uuid.uuid4()) for _ in range(DEFINITIONS_PER_USER)]
    for number, definition_id in enumerate(mine):
        status, answer, _ = call(f"{gateway.api}definitions/{definition_id}", "PUT", dora, _definition(f"d{number}"))
        assert status == 201, answer
    made = _theirs(batch, core, jobs_namespace, "dora")
    assert len(made[0]) == len(made[1]) == DEFINITIONS_PER_USER, made

    status, answer, headers = call(f"{gateway.api}definitions/{uuid.uuid4()}", "PUT", dora, _definition("one more"))
    assert status == 429, answer
    assert "Retry-After" not in headers, dict(headers)
    assert f"limits.definitionsPerUser: {DEFINITIONS_PER_USER}" in answer["message"], answer
    assert answer["error"] == "over-limit", answer
    # A retried create of one she has is no new definition.
    assert call(f"{gateway.api}definitions/{mine[0]}", "PUT", dora, _definition("d0"))[0] == 201

    # Through her own server, as JupyterLab's "Create" does: a 400 with the gateway's message.
    server = user_server("dora", gateway)
    write_notebook(str(server.root / "nap.ipynb"), "print('nap')")
    with pytest.raises(urllib.error.HTTPError) as refused:
        server.create_definition("nap.ipynb", schedule=NEVER_SOON)
    assert refused.value.code == 400
    message = json.loads(refused.value.read())["message"]
    assert f"You have {DEFINITIONS_PER_USER} job definitions" in message, message
    assert f"limits.definitionsPerUser: {DEFINITIONS_PER_USER}" in message, message
    assert server.request("GET", "/scheduler/job_definitions")["job_definitions"] == []
    assert _theirs(batch, core, jobs_namespace, "dora") == made

    # The limit is hers alone: Erin creates one.
    erin = hub.user_token("erin")
    theirs = str(uuid.uuid4())
    assert call(f"{gateway.api}definitions/{theirs}", "PUT", erin, _definition("erin's"))[0] == 201

    for token, definition_id in [(dora, d) for d in mine] + [(erin, theirs)]:
        assert call(f"{gateway.api}definitions/{definition_id}", "DELETE", token)[0] == 204
    assert leftovers(core, batch, jobs_namespace) == []


def test_in_direct_mode_the_server_enforces_the_limit(make_server, core, batch, jobs_namespace):
    """Without a gateway the user's server holds the rights, and enforces the same limit."""
    server = make_server(name="limited", username="limited-user", definitions_per_user=1)
    write_notebook(str(server.root / "nap.ipynb"), "print('nap')")
    first = server.create_definition("nap.ipynb", schedule=NEVER_SOON)
    with pytest.raises(urllib.error.HTTPError) as refused:
        server.create_definition("nap.ipynb", schedule=NEVER_SOON)
    assert refused.value.code == 400
    message = json.loads(refused.value.read())["message"]
    assert "You have 1 job definition," in message and "limits.definitionsPerUser: 1" in message, message
    assert [d["job_definition_id"] for d in server.request("GET", "/scheduler/job_definitions")["job_definitions"]] == [first]
    assert len(_theirs(batch, core, jobs_namespace, "limited-user")[0]) == 1
    server.delete_definition(first)
    assert leftovers(core, batch, jobs_namespace) == []
