"""``TablestoreHistoryLog``: memory history in a Tablestore table beside the memories.

Why: with history in each replica's local file, a memory's history depended on which replica
answered. Here every replica reads and writes one table, ``<memories table>_history``:

* primary key ``(user_id, memory_id, event_id)``: one memory's events are one contiguous range
  of its owner's partition, so reads are a strongly consistent GetRange (1 RPC for up to 5000 events
  or 4 MB) and no call can reach another user's rows;
* ``event_id`` is time-ordered and deterministic (see :mod:`..history_events`): the range is oldest
  first, and a retried append rewrites the same rows (PutRow semantics, no duplicates);
* append = ceil(N/200) BatchWriteRow (fewer than 4 MB each), re-sending only rows that failed with a
  transient error; erase = GetRange of the keys + BatchWriteRow deletes;
* startup = 1 DescribeTable + 1 GetRow (is it usable yet?) when the table exists, else CreateTable, where
  "already exists" (another replica won the race) is success, then GetRow until the new table is usable.

Every RPC goes through the same bounded :class:`~.retry.Retrier` as the memories store; the SDK's
own retry is off.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, TypeVar

from tablestore import (
    INF_MAX,
    INF_MIN,
    BatchWriteRowRequest,
    Condition,
    DeleteRowItem,
    OTSClient,
    OTSClientError,
    OTSServiceError,
    PutRowItem,
    Row,
    RowExistenceExpectation,
    RowItem,
    TableInBatchWriteRowItem,
    TableOptions,
)

from tablestore_openmemory_mcp.errors import StoreError
from tablestore_openmemory_mcp.memory.ports import HistoryRecord

from ..history_events import check_user, columns_of, event_ids, record_from, unique_ids
from .client import make_client
from .readiness import Readiness
from .retry import Retrier, Schedule, TablestoreUnavailableError, row_error_retryable
from .schema import validate_name
from .tables import close_client, create_table, credentials_rejected, describe_primary_key

logger = logging.getLogger(__name__)

T = TypeVar("T")

PK_USER = "user_id"
PK_MEMORY = "memory_id"
PK_EVENT = "event_id"
PRIMARY_KEY = [(PK_USER, "STRING"), (PK_MEMORY, "STRING"), (PK_EVENT, "STRING")]
#: Tablestore's BatchWriteRow limits: 200 rows and 4 MB a request (we stay under 3.5 MB).
BATCH_ROWS = 200
BATCH_BYTES = 3_500_000
_ROW_OVERHEAD = 64  # approximate per-row and per-cell encoding overhead, in bytes


def history_table_name(memories_table: str) -> str:
    """The history table that goes with a memories table."""
    return f"{memories_table}_history"


def _row_size(primary_key: Sequence[tuple[str, str]], columns: Sequence[tuple[str, str]]) -> int:
    cells = [*primary_key, *columns]
    return sum(len(n) + len(v.encode("utf-8")) + _ROW_OVERHEAD for n, v in cells) + _ROW_OVERHEAD


class TablestoreHistoryLog:
    """:class:`~tablestore_openmemory_mcp.memory.ports.HistoryLog` on one Tablestore table (see the module docstring).

    Pass the memories store's ``client`` to share its connection pool (then :meth:`close` leaves the
    client open), or use :meth:`connect` to build one from settings.
    """

    def __init__(
        self,
        client: OTSClient,
        table_name: str,
        *,
        endpoint: str = "tablestore",
        max_retries: int | None = None,
        max_retry_seconds: float | None = None,
        ready_timeout: float | None = None,
        readiness: Readiness | None = None,
        owns_client: bool = False,
        ensure_table: bool = True,
    ) -> None:
        self.client = client
        self.table_name = validate_name("table", table_name)
        self.endpoint = endpoint
        self._owns_client = owns_client
        self._retry = Retrier(endpoint, max_seconds=max_retry_seconds, attempts=max_retries)
        self.readiness = readiness or Readiness(endpoint, ready_timeout)  # shared: one wait for every table
        if ensure_table:
            self.ensure_table()

    @classmethod
    def connect(
        cls,
        table_name: str,
        *,
        endpoint: str,
        instance_name: str,
        access_key_id: str,
        access_key_secret: str,
        sts_token: str | None = None,
        region: str | None = None,
        timeout: float = 10.0,
        max_retries: int | None = None,
        max_retry_seconds: float | None = None,
        max_connection: int = 32,
    ) -> TablestoreHistoryLog:
        """A log with its own client (closed by :meth:`close`)."""
        client = make_client(
            what="Tablestore history",
            logger_name=f"{__name__}.sdk",
            endpoint=endpoint,
            instance_name=instance_name,
            access_key_id=access_key_id,
            access_key_secret=access_key_secret,
            sts_token=sts_token,
            region=region,
            timeout=timeout,
            max_connection=max_connection,
        )
        try:
            return cls(
                client,
                table_name,
                endpoint=endpoint.rstrip("/"),
                max_retries=max_retries,
                max_retry_seconds=max_retry_seconds,
                owns_client=True,
            )
        except BaseException:
            client.connection.pool.clear()
            raise

    # ------------------------------------------------------------------ plumbing

    def _call(self, api: str, fn: Callable[[], T], schedule: Schedule | None = None) -> T:
        try:
            return self._retry.call(api, fn, schedule)
        except OTSServiceError as exc:
            raise self._store_error(api, exc) from exc
        except OTSClientError as exc:
            raise StoreError(f"Tablestore {api} on history table {self.table_name} failed: {exc}") from exc

    def _store_error(self, api: str, exc: OTSServiceError) -> Exception:
        rejected = credentials_rejected(exc, self.endpoint, api)
        if rejected is not None:
            return rejected
        return StoreError(f"Tablestore {api} on history table {self.table_name} failed: {exc.code}: {exc.message}")

    # ------------------------------------------------------------------ startup

    def ensure_table(self) -> None:
        """Create the table unless it exists; safe when several replicas start at once."""
        have = describe_primary_key(self.client, self._retry, self.table_name, self._store_error)
        if have is None:
            self._create_table()
        elif have != PRIMARY_KEY:
            raise StoreError(
                f"Tablestore table {self.table_name} exists with primary key {have}, but history needs "
                f"{PRIMARY_KEY}; drop or rename that table"
            )
        try:  # new (ours or another replica's): wait until it can be used (1 GetRow when it can)
            self.readiness.table(self.client, self.table_name, PRIMARY_KEY)
        except OTSServiceError as exc:
            raise self._store_error("GetRow", exc) from exc

    def _create_table(self) -> None:
        logger.info("Creating Tablestore history table %s", self.table_name)
        create_table(self.client, self._retry, self.table_name, PRIMARY_KEY, self._store_error)

    # ------------------------------------------------------------------ HistoryLog

    def append(self, user_id: str, records: Sequence[HistoryRecord]) -> None:
        """Write events in ceil(N/200) BatchWriteRow (more only for rows above 3.5 MB a batch)."""
        user = check_user(user_id)
        ids = event_ids(records)
        rows: dict[tuple[str, str], tuple[list[tuple[str, str]], list[tuple[str, str]]]] = {}
        for record, event_id in zip(records, ids, strict=True):
            pk = [(PK_USER, user), (PK_MEMORY, record.memory_id), (PK_EVENT, event_id)]
            rows[(record.memory_id, event_id)] = (pk, columns_of(record))
        batch: list[RowItem] = []
        size = 0
        for pk, columns in rows.values():
            row_size = _row_size(pk, columns)
            if batch and (len(batch) >= BATCH_ROWS or size + row_size > BATCH_BYTES):
                self._write(batch, "append")
                batch, size = [], 0
            batch.append(PutRowItem(Row(pk, columns), Condition(RowExistenceExpectation.IGNORE)))
            size += row_size
        if batch:
            self._write(batch, "append")

    def for_memory(self, user_id: str, memory_id: str) -> list[HistoryRecord]:
        """The user's events for one memory, oldest first (GetRange: 1 RPC per 5000 events or 4 MB)."""
        user = check_user(user_id)
        (memory,) = unique_ids([memory_id])
        out: list[HistoryRecord] = []
        for _, columns in self._range(user, memory, None):
            out.append(record_from(memory, {c[0]: c[1] for c in columns}))
        return out

    def for_memories(self, user_id: str, memory_ids: Sequence[str]) -> dict[str, list[HistoryRecord]]:
        """The user's events for several memories (export): one range from the lowest id to the highest,
        1 GetRange per 5000 events or 4 MB, instead of one GetRange per memory. Ids listed in key order
        (the memories table's own order) make that range hold little else."""
        user = check_user(user_id)
        wanted = unique_ids(memory_ids)
        out: dict[str, list[HistoryRecord]] = {m: [] for m in wanted}
        if not wanted:
            return out
        start: Any = [(PK_USER, user), (PK_MEMORY, min(wanted)), (PK_EVENT, INF_MIN)]
        end = [(PK_USER, user), (PK_MEMORY, max(wanted)), (PK_EVENT, INF_MAX)]
        while start:
            call = partial(self.client.get_range, self.table_name, "FORWARD", start, end, None, None, max_version=1)
            _, start, page, _ = self._call("GetRange", call)
            for row in page or []:
                memory = str(dict((c[0], c[1]) for c in row.primary_key).get(PK_MEMORY))
                if memory in out:
                    out[memory].append(record_from(memory, {c[0]: c[1] for c in row.attribute_columns or []}))
        return out

    def erase(self, user_id: str, memory_ids: Sequence[str]) -> int:
        """Delete the user's events of these memories: a GetRange of keys each, then batched deletes."""
        user = check_user(user_id)
        erased = 0
        for memory in unique_ids(memory_ids):
            keys = [pk for pk, _ in self._range(user, memory, [PK_EVENT])]
            for start in range(0, len(keys), BATCH_ROWS):
                items: list[RowItem] = [
                    DeleteRowItem(Row(pk), Condition(RowExistenceExpectation.IGNORE))
                    for pk in keys[start : start + BATCH_ROWS]
                ]
                self._write(items, "erase")
            erased += len(keys)
        return erased

    def close(self) -> None:
        """Release the connection pool when this log built the client."""
        if self._owns_client:
            close_client(self.client)

    # ------------------------------------------------------------------ reads and writes

    def _range(self, user: str, memory: str, columns: list[str] | None) -> list[tuple[Any, Any]]:
        """Every (primary key, columns) of one memory's events, following ``next_start_primary_key``."""
        start: Any = [(PK_USER, user), (PK_MEMORY, memory), (PK_EVENT, INF_MIN)]
        end = [(PK_USER, user), (PK_MEMORY, memory), (PK_EVENT, INF_MAX)]
        rows: list[tuple[Any, Any]] = []
        while start:
            call = partial(self.client.get_range, self.table_name, "FORWARD", start, end, columns, None, max_version=1)
            _, next_start, page, _ = self._call("GetRange", call)
            rows.extend((row.primary_key, row.attribute_columns or []) for row in page or [])
            start = next_start
        return rows

    def _write(self, items: list[RowItem], what: str) -> None:
        """One BatchWriteRow, re-sending only rows that failed with transient errors; raise if any never land."""
        pending = items
        plan = self._retry.schedule()
        while True:
            request = BatchWriteRowRequest()
            request.add(TableInBatchWriteRowItem(self.table_name, pending))
            response = self._call("BatchWriteRow", partial(self.client.batch_write_row, request), plan)
            results = []
            for by_table in (response.table_of_put, response.table_of_update, response.table_of_delete):
                results.extend(by_table.get(self.table_name, []))
            answered = {r.index for r in results}
            again = [item for i, item in enumerate(pending) if i not in answered]  # unanswered: treat as failed
            for result in results:
                if result.is_ok:
                    continue
                if not row_error_retryable(result.error_code, result.error_message):
                    raise StoreError(
                        f"Tablestore rejected a history row during {what} on {self.table_name}: "
                        f"{result.error_code}: {result.error_message}"
                    )
                again.append(pending[result.index])
            if not again:
                return
            pending = again
            if not plan.backoff("OTSServerBusy"):
                break
        raise TablestoreUnavailableError(
            f"Tablestore is busy after {plan.spent()}: {len(pending)} history row(s) during {what} on "
            f"{self.table_name} kept failing (TABLESTORE_MAX_RETRY_SECONDS={self._retry.max_seconds:g})"
        )


__all__ = ["PRIMARY_KEY", "TablestoreHistoryLog", "history_table_name"]


def set_retention(client: OTSClient, table_name: str, days: int) -> None:
    """Let Tablestore expire rows after ``days`` (the access log's retention; the service deletes them)."""
    options = TableOptions(time_to_live=days * 86400, max_version=1)
    try:  # retried: replicas starting together meet "Too frequent table operations" (OTSQuotaExhausted)
        Retrier(table_name).call("UpdateTable", lambda: client.update_table(table_name, options))
    except Exception as exc:  # retention is housekeeping: never a reason not to start
        logger.warning("could not set a %d-day retention on %s: %s", days, table_name, exc)
