"""Our own bounded retry around every Tablestore call: a time budget, exponential backoff with jitter.

Why not the SDK's retry policy: it never retries Search or UpdateRow (a typo, 'UpdatRow') nor connection
errors. Its guidance is ours though: throttling and partition-split 5xx are normal on the service (support/
why-do-5xx-related-errors-occur-when-i-use-tablestore), so they are retried for a while, not a few tries:
its default retries about 20 times, waiting up to 3 s. We retry for a *time* (``TABLESTORE_MAX_RETRY_SECONDS``,
default :data:`DEFAULT_MAX_SECONDS`), waiting 0.5 s x 2^n after throttling and 0.2 s x 2^n after other
transient errors (the SDK's factors), each capped at 3 s and jittered to [d/2, d]; the last wait is cut to
the budget and one more attempt follows, so a transient error is retried for the whole budget.
Writes are safe to repeat (same primary key, same content), or conditional and settled by their callers
(OTSConditionCheckFail on a retry whose first try landed). Anything else (bad parameters, auth, condition
checks) is raised at once so callers see the real error.
"""

from __future__ import annotations

import http.client
import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

import urllib3.exceptions
from tablestore.error import OTSClientError, OTSServiceError

from tablestore_openmemory_mcp.errors import StoreError

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Error codes Tablestore documents as transient (server side busy, throttled, not ready, 5xx).
RETRYABLE_CODES = frozenset(
    {
        "OTSRowOperationConflict",
        "OTSNotEnoughCapacityUnit",
        "OTSTableNotReady",
        "OTSPartitionUnavailable",
        "OTSServerBusy",
        "OTSOperationConflict",
        "OTSOperationThrottled",
        "OTSTimeout",
        "OTSInternalServerError",
        "OTSServerUnavailable",
    }
)

#: Transport failures (refused, reset, dropped, timed out). OSError covers ConnectionError/TimeoutError.
_TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (
    urllib3.exceptions.HTTPError,
    http.client.HTTPException,
    OSError,
)


class TablestoreUnavailableError(StoreError, ConnectionError):
    """Tablestore stayed busy, throttled or unreachable for every attempt."""


class PartiallyApplied(TablestoreUnavailableError):
    """The budget ran out after some rows of a multi-row write had been applied; ``applied`` names them, so the
    caller can record what did happen (history) before it reports the failure."""

    def __init__(self, message: str, applied: list[str]) -> None:
        super().__init__(message)
        self.applied = list(applied)


def is_retryable(exc: BaseException) -> bool:
    """True for errors a later attempt may not hit: throttling, busy, 5xx, timeouts, transport."""
    if isinstance(exc, OTSServiceError):
        if exc.code in RETRYABLE_CODES:
            return True
        if exc.code == "OTSQuotaExhausted" and "Too frequent" in (exc.message or ""):
            return True
        return exc.http_status in (500, 502, 503, 504)
    if isinstance(exc, OTSClientError):
        # A 5xx whose body is not a Tablestore error (a proxy/load balancer page) lands here.
        status = exc.get_http_status()
        return isinstance(status, int) and status >= 500
    return isinstance(exc, _TRANSPORT_ERRORS)


def describe(exc: BaseException) -> str:
    """A short label for messages: the Tablestore code, the HTTP status, or the exception type."""
    if isinstance(exc, OTSServiceError):
        return exc.code or f"HTTP {exc.http_status}"
    if isinstance(exc, OTSClientError) and exc.get_http_status():
        return f"HTTP {exc.get_http_status()}"
    return type(exc).__name__


def row_error_retryable(code: str | None, message: str | None = None) -> bool:
    """Same rule as :func:`is_retryable` for a per-row error inside a batch response."""
    if code in RETRYABLE_CODES:
        return True
    return code == "OTSQuotaExhausted" and "Too frequent" in (message or "")


#: Seconds an operation keeps retrying transient errors by default (the SDK's default policy retries ~20
#: times with waits up to 3 s; an add must survive a throttling burst or a partition split).
DEFAULT_MAX_SECONDS = 20.0
#: First waits after throttling and after other transient errors, the growth factor and the cap (the SDK's).
THROTTLED_DELAY = 0.5
TRANSIENT_DELAY = 0.2
MAX_DELAY = 3.0

_THROTTLING = frozenset({"OTSServerBusy", "OTSNotEnoughCapacityUnit", "OTSOperationThrottled", "OTSQuotaExhausted"})


def throttled(exc: BaseException | str | None) -> bool:
    """True when an error (or a per-row error code) means "too much load": wait longer before retrying."""
    code = exc if isinstance(exc, str) else exc.code if isinstance(exc, OTSServiceError) else None
    return code in _THROTTLING


class Schedule:
    """The retries of one operation: waits until its deadline (shared by the calls the operation makes)."""

    def __init__(self, retrier: Retrier) -> None:
        self.retrier = retrier
        self.started = time.monotonic()
        self.deadline = self.started + retrier.max_seconds
        self.failures = 0

    @property
    def attempts(self) -> int:
        """Attempts made so far that failed (for messages)."""
        return self.failures

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def backoff(self, why: BaseException | str | None = None) -> bool:
        """After a failed attempt: wait, then True; False when the budget (or attempt cap) is spent."""
        self.failures += 1
        cap = self.retrier.max_attempts
        remaining = self.left()
        if remaining <= 0 or (cap is not None and self.failures >= cap):
            return False
        time.sleep(min(self.retrier.delay(self.failures - 1, throttled(why)), remaining))
        return True

    def spent(self) -> str:
        """ "N attempts in S s" for messages."""
        plural = "" if self.failures == 1 else "s"
        return f"{self.failures} attempt{plural} in {time.monotonic() - self.started:.1f} s"


class Retrier:
    """Retry transient failures for ``max_seconds`` (optionally at most ``attempts`` tries) with backoff."""

    def __init__(
        self,
        endpoint: str,
        max_seconds: float | None = None,
        attempts: int | None = None,
        base_delay: float = TRANSIENT_DELAY,
        max_delay: float = MAX_DELAY,
        note: str | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.max_seconds = DEFAULT_MAX_SECONDS if max_seconds is None else max(0.0, float(max_seconds))
        #: What set the budget, for messages.
        self.note = note or f"TABLESTORE_MAX_RETRY_SECONDS={self.max_seconds:g}"
        self.max_attempts = None if attempts is None else max(1, int(attempts))
        self.base_delay = base_delay
        self.max_delay = max_delay

    def schedule(self) -> Schedule:
        """A new operation's retry budget."""
        return Schedule(self)

    def delay(self, attempt: int, slow: bool = False) -> float:
        """Wait before attempt ``attempt + 1`` (0-based): jittered to [d/2, d]; longer after throttling."""
        base = max(self.base_delay, THROTTLED_DELAY) if slow else self.base_delay
        d = min(self.max_delay, base * (2.0 ** min(attempt, 30)))
        return d * (0.5 + random.random() / 2)

    def call(self, api: str, fn: Callable[[], T], schedule: Schedule | None = None) -> T:
        """Run ``fn``; retry transient failures within the budget (``schedule``'s when given); then raise
        one line naming the operation."""
        plan = schedule or self.schedule()
        while True:
            try:
                return fn()
            except Exception as exc:
                if not is_retryable(exc):
                    raise
                if not plan.backoff(exc):
                    raise self.exhausted(api, exc, plan) from exc
                logger.info("Tablestore %s failed (%s), retrying (%s)", api, describe(exc), plan.spent())

    def exhausted(self, api: str, exc: BaseException, plan: Schedule | None = None) -> TablestoreUnavailableError:
        """The error raised when the budget is spent."""
        label = describe(exc)
        spent = plan.spent() if plan is not None else "every attempt"
        if isinstance(exc, OTSServiceError | OTSClientError):
            kind = "busy" if throttled(exc) or "Busy" in label else "unavailable"
            return TablestoreUnavailableError(
                f"Tablestore is {kind} ({label}) after {spent}: {api} on {self.endpoint} gave up ({self.note}): {exc}"
            )
        return TablestoreUnavailableError(
            f"Cannot reach Tablestore at {self.endpoint} ({label}) after {spent} during {api} ({self.note}): {exc}"
        )
