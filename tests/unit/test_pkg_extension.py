"""The server extension: jupyter-scheduler's routes keep their URL patterns and get the handlers
that answer a refused request with 400 and its message (upstream 2.x answers 500). The requests
themselves, through a real server, are in tests/e2e/test_z2jh_browser_e2e.py."""
import asyncio

import pytest
from jupyter_scheduler import handlers as upstream
from jupyter_scheduler.exceptions import SchedulerError
from jupyter_scheduler.extension import SchedulerApp
from tornado.web import Application, HTTPError

from jupyter_scheduler_k8s import _jupyter_server_extension_points, extension


def test_swaps_upstreams_job_and_definition_handlers_in_place():
    app = Application()
    app.add_handlers(".*$", [(f"/base/{pattern}", handler) for pattern, handler in SchedulerApp.handlers])
    before = [r.matcher.regex.pattern for host in app.default_router.rules for r in getattr(host.target, "rules", [])]
    assert extension.swap_handlers(app) == 5  # jobs, jobs/{id}, job_definitions, .../{id}, .../{id}/jobs
    after = [(r.matcher.regex.pattern, r.target) for host in app.default_router.rules for r in getattr(host.target, "rules", [])]
    assert [p for p, _ in after] == before
    assert not {t for _, t in after} & set(extension.OURS)
    assert extension.swap_handlers(app) == 0, "a second load changes nothing"
    assert _jupyter_server_extension_points() == [{"module": "jupyter_scheduler_k8s.extension"}]


class _Upstream:
    """What upstream's post does with an error from the scheduler."""
    def __init__(self, error):
        self.error = error

    async def post(self):
        try:
            raise self.error
        except SchedulerError as e:
            raise HTTPError(500, str(e)) from e


class _Handler(extension._AnswersInvalidRequests, _Upstream):
    pass


def test_an_invalid_request_is_a_400_with_its_message_and_other_errors_stay_500():
    with pytest.raises(HTTPError) as refused:
        asyncio.run(_Handler(extension.InvalidRequest("Unknown compute type 'huge'; valid: small")).post())
    assert refused.value.status_code == 400 and refused.value.log_message == "Unknown compute type 'huge'; valid: small"
    with pytest.raises(HTTPError) as failed:
        asyncio.run(_Handler(SchedulerError("the API server is down")).post())
    assert failed.value.status_code == 500
    assert issubclass(extension.InvalidRequest, SchedulerError), "the UI shows upstream errors' messages"
    assert issubclass(extension.JobHandler, upstream.JobHandler)
