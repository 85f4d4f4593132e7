"""Waiting on pods with the Watch API.

Lists, then watches from the list's resourceVersion; resumes from the last event's version when a
watch ends; re-lists after 410 Gone; falls back to polling (a fresh list) with backoff when the
watch errors. A watch that ends or times out is never taken as an answer: only `decide` answers.
"""
import logging
import time
from typing import Callable, Optional, TypeVar

import urllib3
from kubernetes import watch
from kubernetes.client.rest import ApiException

T = TypeVar("T")
log = logging.getLogger(__name__)

# How often `decide` is asked again with no new event, so time-based rules (scheduling timeouts)
# fire even when nothing changes.
TICK_SECONDS = 5


class WaitTimeout(Exception):
    pass


def wait_for_pod(core, namespace: str, selector: str, decide: Callable[[Optional[object]], Optional[T]],
                 timeout: float, tick: float = TICK_SECONDS) -> T:
    """Calls decide(pod or None) on every change of the (single) pod matching `selector` and on
    each tick, until it returns something other than None, which is returned."""
    deadline = time.monotonic() + timeout
    version, pod, backoff = None, None, 0.5
    while True:
        try:
            if version is None:
                listed = core.list_namespaced_pod(namespace, label_selector=selector)
                version = listed.metadata.resource_version
                pod = listed.items[0] if listed.items else None
            answer = decide(pod)
            if answer is not None:
                return answer
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise WaitTimeout(f"no answer after {timeout:.0f}s")
            stream = watch.Watch().stream(
                core.list_namespaced_pod, namespace, label_selector=selector, resource_version=version,
                allow_watch_bookmarks=True, timeout_seconds=max(1, int(min(remaining, tick))))
            for event in stream:
                obj = event["object"]
                if event["type"] == "ERROR":
                    # 410 Gone arrives as an ERROR event: our version is too old, list again.
                    version = None
                    break
                version = obj.metadata.resource_version
                if event["type"] == "BOOKMARK":
                    continue
                pod = None if event["type"] == "DELETED" else obj
                answer = decide(pod)
                if answer is not None:
                    return answer
            backoff = 0.5
        except ApiException as e:
            if e.status == 410:
                version = None
                continue
            if e.status in (401, 403, 404):
                raise
            version = _after_error(e, backoff)
            backoff = min(backoff * 2, 10)
        except (urllib3.exceptions.HTTPError, OSError) as e:
            version = _after_error(e, backoff)
            backoff = min(backoff * 2, 10)


def _after_error(error, backoff: float):
    log.warning("watch failed (%s); polling again in %.1fs", error, backoff)
    time.sleep(backoff)
    return None  # forces a fresh list: the polling fallback
