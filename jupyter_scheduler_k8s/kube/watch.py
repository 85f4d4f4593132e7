"""Pod changes from the Watch API, made dependable.

Lists, then watches from the list's resourceVersion; resumes from the last event's version when a
watch ends; re-lists after 410 Gone; falls back to polling (a fresh list) with doubling backoff
when the watch errors. A watch that ends or times out is never taken as an answer: callers decide
only from pod states, and get a TICK now and then so time-based rules fire without changes.
"""
import logging
import time
from typing import Callable, Iterator, Optional, Tuple, TypeVar

import urllib3
from kubernetes import watch
from kubernetes.client.rest import ApiException

T = TypeVar("T")
log = logging.getLogger(__name__)

TICK_SECONDS = 5
LIST, TICK = "LIST", "TICK"


class WaitTimeout(Exception):
    pass


def pod_events(core, namespace: str, selector: str, tick: float = TICK_SECONDS,
               stopped: Callable[[], bool] = lambda: False) -> Iterator[Tuple[str, object]]:
    """Yields (LIST, [pods]) after every (re)list, (ADDED|MODIFIED|DELETED, pod) for each change,
    and (TICK, None) whenever a watch ends, until `stopped()` is true."""
    version, backoff = None, 0.5
    while not stopped():
        try:
            if version is None:
                listed = core.list_namespaced_pod(namespace, label_selector=selector)
                version = listed.metadata.resource_version
                yield LIST, listed.items
            for event in watch.Watch().stream(
                    core.list_namespaced_pod, namespace, label_selector=selector, resource_version=version,
                    allow_watch_bookmarks=True, timeout_seconds=max(1, int(tick))):
                if event["type"] == "ERROR":  # 410 Gone arrives as an event: our version is too old
                    version = None
                    break
                obj = event["object"]
                if isinstance(obj, dict):  # bookmarks and unknown kinds come undecoded
                    version = obj.get("metadata", {}).get("resourceVersion", version)
                    continue
                version = obj.metadata.resource_version
                if event["type"] != "BOOKMARK":
                    yield event["type"], obj
            backoff = 0.5
            yield TICK, None
        except ApiException as e:
            if e.status in (401, 403, 404):
                raise
            version = None
            if e.status != 410:
                backoff = _pause(e, backoff)
                yield TICK, None  # callers' deadlines hold while the API server fails
        except (urllib3.exceptions.HTTPError, OSError) as e:
            version = None
            backoff = _pause(e, backoff)
            yield TICK, None


def _pause(error, backoff: float) -> float:
    log.warning("pod watch failed (%s); listing again in %.1fs", error, backoff)
    time.sleep(backoff)
    return min(backoff * 2, 10)


def first_answer(events: Iterator[Tuple[str, object]], decide: Callable[[Optional[object]], Optional[T]],
                 timeout: float) -> T:
    """Calls decide(pod or None) for the single pod that `events` (from pod_events) follow, on
    every change and tick, until it returns something other than None, which is returned."""
    deadline = time.monotonic() + timeout
    pod = None
    for kind, obj in events:
        if kind == LIST:
            pod = obj[0] if obj else None
        elif kind == "DELETED":
            pod = None
        elif kind != TICK:
            pod = obj
        answer = decide(pod)
        if answer is not None:
            return answer
        if time.monotonic() > deadline:
            raise WaitTimeout(f"no answer after {timeout:.0f}s")
    raise WaitTimeout("the pod events ended")
