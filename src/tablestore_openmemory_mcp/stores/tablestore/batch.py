"""Batched row reads and writes (BatchGetRow <= 100 rows, BatchWriteRow <= 200 rows a call).

Why a module of its own: both batch APIs succeed as a call while single rows inside them fail, so each
caller needs the same loop: re-send only the rows that failed with a transient error, raise on a row
error that is not transient, and give up when the retrier's time budget is spent (one budget covers the
call's own retries and its rows').
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from tablestore import BatchGetRowRequest, BatchWriteRowRequest, TableInBatchGetRowItem, TableInBatchWriteRowItem

from tablestore_openmemory_mcp.errors import StoreError

from .retry import Retrier, Schedule, TablestoreUnavailableError, row_error_retryable

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Rows per BatchGetRow call (Tablestore's limit).
GET_ROWS = 100
#: Rows per BatchWriteRow call (Tablestore's limit).
WRITE_ROWS = 200

PrimaryKey = list[tuple[str, Any]]
#: A row as read: (primary key columns, attribute columns), the SDK's shapes.
RawRow = tuple[Any, Any]


class RowRejected(StoreError):
    """Tablestore refused a row inside a batch with an error that retrying cannot fix."""

    def __init__(self, api: str, code: str, message: str) -> None:
        super().__init__(f"Tablestore rejected a row of {api}: {code}: {message}")
        self.code = code


class Batches:
    """BatchGetRow / BatchWriteRow for one client, under one retry policy."""

    def __init__(self, client: Any, retry: Retrier) -> None:
        self.client = client
        self.retry = retry

    def _call(self, api: str, fn: Callable[[], T], schedule: Schedule | None = None) -> T:
        return self.retry.call(api, fn, schedule)

    def get(self, table: str, keys: Sequence[PrimaryKey], columns: Sequence[str]) -> list[RawRow | None]:
        """Each key's row (None when missing), in order; ceil(len/100) calls when nothing fails."""
        out: list[RawRow | None] = [None] * len(keys)
        for start in range(0, len(keys), GET_ROWS):
            pending = list(range(start, min(len(keys), start + GET_ROWS)))
            plan = self.retry.schedule()  # one budget for the call and its rows' retries
            code: str | None = None
            while True:
                request = BatchGetRowRequest()
                request.add(
                    TableInBatchGetRowItem(
                        table, [keys[i] for i in pending], columns_to_get=list(columns), max_version=1
                    )
                )
                response = self._call("BatchGetRow", functools.partial(self.client.batch_get_row, request), plan)
                items = response.get_result_by_table(table) or []
                again = [i for i in pending[len(items) :]]  # unanswered rows (a malformed response)
                for i, item in zip(pending, items, strict=False):
                    if item.is_ok:
                        row = item.row
                        if row is not None and row.primary_key:
                            out[i] = (row.primary_key, row.attribute_columns)
                    elif row_error_retryable(item.error_code, item.error_message):
                        again.append(i)
                        code = item.error_code
                    else:
                        raise RowRejected("BatchGetRow", item.error_code or "", item.error_message or "")
                pending = sorted(again)
                if not pending or not plan.backoff(code):
                    break
            if pending:
                raise TablestoreUnavailableError(
                    f"Tablestore is busy ({code}): {len(pending)} row(s) of a BatchGetRow kept failing after "
                    f"{plan.spent()} on {self.retry.endpoint} (TABLESTORE_MAX_RETRY_SECONDS={self.retry.max_seconds:g})"
                )
        return out

    def write(self, table: str, items: list[Any], done: list[Any]) -> tuple[list[tuple[Any, str, str]], list[Any]]:
        """One BatchWriteRow (<= 200 items), re-sending only rows that failed with transient errors.

        Appends written items to ``done`` as they land (so a caller can undo them even when this raises)
        and returns (rejected as (item, code, message), still failing when the retry budget ran out). The
        call itself is retried by the retrier: use it only for writes whose repetition is harmless.
        """
        assert len(items) <= WRITE_ROWS
        pending = list(items)
        rejected: list[tuple[Any, str, str]] = []
        plan = self.retry.schedule()
        while True:
            request = BatchWriteRowRequest()
            request.add(TableInBatchWriteRowItem(table, pending))
            response = self._call("BatchWriteRow", functools.partial(self.client.batch_write_row, request), plan)
            again, landed, refused = split_write_results(response, table, pending)
            done.extend(landed)
            rejected.extend(refused)
            pending = again
            if not pending or not plan.backoff("OTSServerBusy"):
                break
        return rejected, pending


def split_write_results(
    response: Any, table: str, items: list[Any]
) -> tuple[list[Any], list[Any], list[tuple[Any, str, str]]]:
    """(to retry, landed, rejected with code and message) from a BatchWriteRow response."""
    results: list[Any] = []
    for table_results in (response.table_of_put, response.table_of_update, response.table_of_delete):
        results.extend(table_results.get(table, []))
    results.sort(key=lambda r: r.index)
    again: list[Any] = []
    landed: list[Any] = []
    refused: list[tuple[Any, str, str]] = []
    for result in results:
        item = items[result.index]
        if result.is_ok:
            landed.append(item)
        elif row_error_retryable(result.error_code, result.error_message):
            again.append(item)
        else:
            refused.append((item, result.error_code or "", result.error_message or ""))
    if len(results) < len(items):  # a malformed response: treat unanswered rows as failed
        answered = {r.index for r in results}
        again.extend(item for i, item in enumerate(items) if i not in answered)
    return again, landed, refused
