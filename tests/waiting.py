"""The one way tests wait: poll a condition with backoff until it holds, or fail saying what never happened.

Why one helper: fixed sleeps are either too short on a busy machine or waste time on a quiet one, and seven
hand-written loops each had their own interval and failure text. :func:`wait_for` (blocking) and
:func:`until` (async, for tests on the event loop) return the condition's first truthy value; on timeout they
raise ``AssertionError`` naming ``what`` and the last value seen (or the last exception the condition raised).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio

T = TypeVar("T")

#: Generous by default: a contended 2-core machine can be slow; a condition that holds returns at once.
DEFAULT_TIMEOUT = 60.0
FIRST_INTERVAL = 0.01
MAX_INTERVAL = 0.1  # a condition that turns true is seen within 0.1 s (server starts wait on this)


class _Backoff:
    """Intervals from 10 ms doubling up to :data:`MAX_INTERVAL`, and the deadline."""

    def __init__(self, timeout: float) -> None:
        self.deadline = time.monotonic() + timeout
        self.interval = FIRST_INTERVAL

    def next(self) -> float | None:
        """The next pause, or None when the deadline has passed."""
        left = self.deadline - time.monotonic()
        if left <= 0:
            return None
        pause = min(self.interval, left)
        self.interval = min(self.interval * 2, MAX_INTERVAL)
        return pause


def _failure(what: str, timeout: float, last: object, error: BaseException | None) -> AssertionError:
    seen = f"; last error: {error!r}" if error is not None else f"; last value: {last!r}"
    return AssertionError(f"timed out after {timeout:.0f} s waiting for {what}{seen}")


def wait_for(
    condition: Callable[[], T], what: str, timeout: float = DEFAULT_TIMEOUT, *, ignore: tuple[type[Exception], ...] = ()
) -> T:
    """Call ``condition`` until it returns something truthy and return that; exceptions in ``ignore`` count as
    "not yet" (e.g. ``httpx.HTTPError`` while a server starts)."""
    backoff = _Backoff(timeout)
    last: object = None
    error: BaseException | None = None
    while True:
        try:
            value = condition()
            if value:
                return value
            last, error = value, None
        except ignore as exc:
            error = exc
        pause = backoff.next()
        if pause is None:
            raise _failure(what, timeout, last, error)
        time.sleep(pause)  # the polling interval of a condition wait, not a synchronisation


async def until(
    condition: Callable[[], Awaitable[T]],
    what: str,
    timeout: float = DEFAULT_TIMEOUT,
    *,
    ignore: tuple[type[Exception], ...] = (),
) -> T:
    """:func:`wait_for` for an async condition, pausing without blocking the event loop."""
    backoff = _Backoff(timeout)
    last: object = None
    error: BaseException | None = None
    while True:
        try:
            value = await condition()
            if value:
                return value
            last, error = value, None
        except ignore as exc:
            error = exc
        pause = backoff.next()
        if pause is None:
            raise _failure(what, timeout, last, error)
        await anyio.sleep(pause)
