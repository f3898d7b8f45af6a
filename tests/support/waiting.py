"""Polling for what arrives on its own clock: a scrape, a worker's counter, a container's state."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx

# What a poll may meet while a server or a scrape is still on its way: retried until the deadline.
TRANSIENT = (httpx.HTTPError, KeyError, IndexError, ValueError)


def wait_until(predicate, timeout: float, what: str, *, interval: float = 0.5,
               retry_on: tuple[type[BaseException], ...] = TRANSIENT,
               diagnostics: Callable[[], str] | None = None):
    """``predicate()``'s first truthy value, polled every ``interval`` s; AssertionError naming
    ``what`` (and the last value or exception, plus ``diagnostics()``) after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
            if last:
                return last
        except retry_on as exc:
            last = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})"
                         + (f"\n{diagnostics()}" if diagnostics else ""))
