"""Startup waits until new Tablestore tables and search indexes can be used: bounded, with one progress line.

Why: a new table "is not usable for several seconds, in most cases within one minute"
(developer-reference/create-table-by-python-sdk), and a new search index answers nothing until it has
initialized (product-overview/limits-on-search-index). A server that wrote its meta row right after
CreateTable exited with OTSTableNotReady; a second replica starting while the first creates the tables finds
them existing but not ready. Both now wait here, up to ``TABLESTORE_READY_TIMEOUT`` (default
:data:`DEFAULT_TIMEOUT`) for the whole startup, and say once on stderr what they wait for.

A table is ready when a read answers (the error while it is not is undocumented; the SDK's retry list names
OTSTableNotReady, and any transient error is waited out the same way). An index is ready when
DescribeSearchIndex reports its sync phase past the initial full sync (``INCR``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from tablestore.error import OTSServiceError

from .retry import TablestoreUnavailableError, describe, is_retryable

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Seconds a startup waits at most by default (the documentation: "in most cases within one minute").
DEFAULT_TIMEOUT = 90.0
#: Poll interval while waiting: short at first (most waits are seconds), growing by GROWTH to MAX_POLL.
FIRST_POLL = 0.1
GROWTH = 1.3
MAX_POLL = 1.0


def not_ready(exc: BaseException) -> bool:
    """True for errors that mean "not usable yet, try again": not ready, or any transient error."""
    if isinstance(exc, OTSServiceError) and exc.code == "OTSTableNotReady":
        return True
    return is_retryable(exc)


def index_initialized(sync_stat: Any) -> bool:
    """True when a DescribeSearchIndex sync state says the initial full sync is over (or says nothing)."""
    phase = getattr(sync_stat, "sync_phase", None)
    if phase is None:
        return True
    return str(getattr(phase, "name", phase)).upper().endswith("INCR")


class Readiness:
    """One startup's wait: a deadline shared by every table and index, and one progress line."""

    def __init__(self, endpoint: str, timeout: float | None = None, say: Callable[[str], None] | None = None) -> None:
        self.endpoint = endpoint
        self.timeout = DEFAULT_TIMEOUT if timeout is None else max(0.0, float(timeout))
        self._say = say or logger.warning
        self._deadline: float | None = None
        self._announced = False
        self.waited = 0.0  # seconds spent waiting (for tests and the closing log)

    def begin(self) -> None:
        """Start a new wait (a startup, or a reset): a fresh deadline and a fresh progress line."""
        self._deadline = None
        self._announced = False

    def _left(self) -> float:
        if self._deadline is None:
            self._deadline = time.monotonic() + self.timeout
        return self._deadline - time.monotonic()

    def _announce(self, what: str, exc: BaseException | None) -> None:
        if self._announced:
            logger.debug("still waiting for %s (%s)", what, describe(exc) if exc else "initializing")
            return
        self._announced = True
        why = f" ({describe(exc)})" if exc is not None else ""
        self._say(
            f"Waiting up to {self._left():.0f} s for Tablestore {what} to become ready{why}: new tables and search "
            f"indexes take up to a minute (TABLESTORE_READY_TIMEOUT)"
        )

    def _pause(self, poll: float) -> float:
        """Sleep before the next poll (cut to the deadline); the next poll interval."""
        pause = min(poll, max(0.0, self._left()))
        time.sleep(pause)
        self.waited += pause
        return min(MAX_POLL, poll * GROWTH)

    def call(self, what: str, api: str, fn: Callable[[], T]) -> T:
        """``fn`` (a read or write on a table that may be new), repeated while the table is not ready."""
        poll = FIRST_POLL
        while True:
            try:
                return fn()
            except Exception as exc:
                if not not_ready(exc):
                    raise
                if self._left() <= 0:
                    raise TablestoreUnavailableError(
                        f"Tablestore {what} on {self.endpoint} is still not ready after waiting {self.timeout:g} s "
                        f"(TABLESTORE_READY_TIMEOUT) during {api}: {describe(exc)}"
                    ) from exc
                self._announce(what, exc)
                poll = self._pause(poll)

    def table(self, client: Any, table: str, primary_key: Sequence[tuple[str, str]]) -> None:
        """Until a GetRow on ``table`` answers (a key no row uses: the answer is empty)."""
        probe = [(name, "#ready") for name, _ in primary_key]
        self.call(f"table {table}", "GetRow", lambda: client.get_row(table, probe, None, None, 1))

    def index(self, client: Any, table: str, index: str) -> tuple[Any, bool]:
        """Until ``index`` has initialized; (its meta, True when it has). On timeout: warn and (meta, False),
        since the table still answers every read and this process keeps its own writes searchable meanwhile."""
        poll = FIRST_POLL
        what = f"search index {index} of {table}"
        while True:
            meta, sync = self.call(
                what, "DescribeSearchIndex", lambda: client.describe_search_index(table, index, True)
            )
            if index_initialized(sync):
                return meta, True
            if self._left() <= 0:
                logger.warning(
                    "Tablestore %s is still initializing after %g s (TABLESTORE_READY_TIMEOUT); starting anyway: "
                    "searches find memories written before it finishes once it has",
                    what,
                    self.timeout,
                )
                return meta, False
            self._announce(what, None)
            poll = self._pause(poll)


__all__ = ["DEFAULT_TIMEOUT", "Readiness", "index_initialized", "not_ready"]
