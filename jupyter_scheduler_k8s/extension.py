"""The package's Jupyter server extension: a request that the backend refuses gets a 400.

jupyter-scheduler 2.x answers every SchedulerError with 500, so an unknown compute profile, time
zone or schedule, or a notebook without a kernel, looked like a server fault to API clients. The
backend raises `InvalidRequest` (a SchedulerError, so that the UI still shows its message) for
those; upstream's handler turns it into a 500 whose cause is ours, and the subclasses below answer
400 with the same message instead.

Enabled by the package's jupyter_server_config.d file and by the chart's server config. Server
extensions load in alphabetical order, so upstream's routes exist by the time this one loads; it
swaps their handler classes for these subclasses in place (the URL patterns stay upstream's).
"""
from jupyter_scheduler import handlers as upstream
from jupyter_scheduler.exceptions import SchedulerError
from tornado.web import HTTPError


class InvalidRequest(SchedulerError):
    """A request the backend refuses as given: the user can correct it (HTTP 400)."""


class _AnswersInvalidRequests:
    async def _answer(self, method, *args, **kwargs):
        try:
            return await method(*args, **kwargs)
        except HTTPError as e:
            if isinstance(e.__cause__, InvalidRequest):
                raise HTTPError(400, str(e.__cause__)) from e.__cause__
            raise

    async def post(self, *args, **kwargs):
        return await self._answer(super().post, *args, **kwargs)

    async def patch(self, *args, **kwargs):
        return await self._answer(super().patch, *args, **kwargs)


class JobHandler(_AnswersInvalidRequests, upstream.JobHandler):
    pass


class JobDefinitionHandler(_AnswersInvalidRequests, upstream.JobDefinitionHandler):
    pass


class JobFromDefinitionHandler(_AnswersInvalidRequests, upstream.JobFromDefinitionHandler):
    pass


OURS = {upstream.JobHandler: JobHandler, upstream.JobDefinitionHandler: JobDefinitionHandler,
        upstream.JobFromDefinitionHandler: JobFromDefinitionHandler}


def swap_handlers(web_app) -> int:
    """Replaces upstream's handler classes in the application's routes; returns how many."""
    swapped = 0
    for host_rule in web_app.default_router.rules:
        for rule in getattr(host_rule.target, "rules", []):
            if rule.target in OURS:
                rule.target = OURS[rule.target]
                swapped += 1
    return swapped


def _load_jupyter_server_extension(serverapp) -> None:
    swapped = swap_handlers(serverapp.web_app)
    if not swapped:
        serverapp.log.warning("jupyter_scheduler_k8s: jupyter_scheduler's routes were not found; "
                              "refused requests keep upstream's status 500")
