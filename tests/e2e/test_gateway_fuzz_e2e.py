"""schemathesis over every endpoint of the jobs gateway, as the chart installs it, from the
gateway's own OpenAPI document, with a real user's token: whatever it is sent (data that fits the
document and data that does not), the gateway answers below 500, logs no traceback, and leaves
nothing in the jobs namespace. (Driven with hypothesis directly: schemathesis' pytest plugin does
not run under the pytest this suite uses.)"""
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable

from .conftest import leftovers

pytestmark = pytest.mark.e2e
MODES = (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE)


def test_no_request_makes_the_gateway_fail(gateway, hub, core, batch, jobs_namespace):
    token = hub.user_token("fuzzer")
    schema = schemathesis.openapi.from_url(gateway.api + "openapi.json")
    answers, failures = {}, []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 25, [op.label for op in operations]
    for operation in operations:
        for mode in MODES:
            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
                      database=None)
            def fuzz(case):
                # The pod watch streams for minutes: its status line is the answer.
                kwargs = case.as_transport_kwargs(headers={"Authorization": f"token {token}"})
                response = requests.request(**kwargs, timeout=60, stream=True)
                try:
                    answers[response.status_code] = answers.get(response.status_code, 0) + 1
                    if response.status_code >= 500:
                        failures.append((case.method, case.formatted_path, case.query, response.status_code,
                                         response.text[:300]))
                finally:
                    response.close()
            try:
                fuzz()
            except Unsatisfiable:  # nothing to make invalid (no parameters): the positive cases cover it
                assert mode is schemathesis.GenerationMode.NEGATIVE, operation.label
    print(f"schemathesis: {sum(answers.values())} requests over {len(operations)} operations, by status: "
          f"{dict(sorted(answers.items()))}")
    assert not failures, failures[:20]
    assert sum(count for status, count in answers.items() if 400 <= status < 500) > 0  # it did reach the checks
    log = gateway.log_tail(100000)
    assert "Traceback" not in log, log[-5000:]
    assert gateway.restarts() == 0
    assert leftovers(core, batch, jobs_namespace) == []
