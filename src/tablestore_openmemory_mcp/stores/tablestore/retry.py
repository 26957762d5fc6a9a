"""Our own bounded retry around every Tablestore call.

Why not the SDK's retry policy: it never retries Search or UpdateRow (a typo, 'UpdatRow'), never
retries connection errors, and retries reads for up to 20 attempts. All our writes are idempotent
(same primary key, same content), so one policy for every API is safe: retry throttling, busy,
5xx, timeouts and transport failures with exponential backoff and jitter; raise at once on anything
else (bad parameters, auth, condition checks) so callers see the real error.
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


class Retrier:
    """Call a function up to ``attempts`` times, backing off ``base * 2**n`` (capped) with jitter."""

    def __init__(self, endpoint: str, attempts: int = 4, base_delay: float = 0.1, max_delay: float = 2.0) -> None:
        self.endpoint = endpoint
        self.attempts = max(1, int(attempts))
        self.base_delay = base_delay
        self.max_delay = max_delay

    def delay(self, attempt: int) -> float:
        """Backoff before attempt ``attempt + 1`` (0-based): full range jitter in [d/2, d]."""
        d = min(self.max_delay, self.base_delay * (2.0**attempt))
        return d * (0.5 + random.random() / 2)

    def call(self, api: str, fn: Callable[[], T]) -> T:
        """Run ``fn``; retry transient failures; raise a message a user can act on when they persist."""
        last: BaseException | None = None
        for attempt in range(self.attempts):
            try:
                return fn()
            except Exception as exc:
                if not is_retryable(exc):
                    raise
                last = exc
                if attempt + 1 < self.attempts:
                    pause = self.delay(attempt)
                    logger.info(
                        "Tablestore %s failed (%s), retrying in %.2fs (attempt %d/%d)",
                        api,
                        describe(exc),
                        pause,
                        attempt + 1,
                        self.attempts,
                    )
                    time.sleep(pause)
        assert last is not None
        raise self.exhausted(api, last) from last

    def exhausted(self, api: str, exc: BaseException) -> TablestoreUnavailableError:
        """The error raised when every attempt failed."""
        label = describe(exc)
        if isinstance(exc, OTSServiceError | OTSClientError):
            kind = "busy" if "Busy" in label or "Throttl" in label or "Capacity" in label else "unavailable"
            return TablestoreUnavailableError(
                f"Tablestore is {kind} ({label}) after {self.attempts} attempts: {api} on {self.endpoint}: {exc}"
            )
        return TablestoreUnavailableError(
            f"Cannot reach Tablestore at {self.endpoint} ({label}) after {self.attempts} attempts during {api}: {exc}"
        )
