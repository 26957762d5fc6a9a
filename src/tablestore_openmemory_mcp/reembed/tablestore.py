"""Re-embedding a Tablestore table: a new vector column, a new search index on it, backfill, then switch.

Running servers keep searching the old index and column (they read the meta row, :mod:`..stores.
tablestore.embedding_meta`, at startup) until the switch rewrites that row. Each new vector is written
with a digest of (embedder, dimension, text) in ``<column>_digest``: that is the progress marker, so a
rerun embeds only what is missing or changed since (a memory edited by a running server meanwhile).
The switch waits until the new index has every row (an ExistsQuery count), so search never loses
memories; the old index is left, or dropped with ``--drop-old-index``. Servers still on the old settings
must be restarted after the switch: what they write goes to the old column only, and running
``reembed`` again once they are restarted re-embeds what was written since the switch.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import re
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from tablestore import (
    INF_MAX,
    INF_MIN,
    ColumnReturnType,
    ColumnsToGet,
    Condition,
    ExistsQuery,
    OTSServiceError,
    Row,
    RowExistenceExpectation,
    SearchQuery,
    UpdateRowItem,
)
from tablestore.retry import NoRetryPolicy

from tablestore_openmemory_mcp.memory.clock import now_iso
from tablestore_openmemory_mcp.reembed.summary import ReembedSummary
from tablestore_openmemory_mcp.settings import Settings
from tablestore_openmemory_mcp.stores.row_format import text_of
from tablestore_openmemory_mcp.stores.tablestore.maintenance import (
    COL_PAYLOAD,
    COL_VECTOR,
    DEDUP_SUFFIX,
    PK_ID,
    PK_USER,
    Batches,
    EmbeddingMeta,
    Retrier,
    TablestoreUnavailableError,
    chunks,
    client_from_settings,
    encode_vector,
    index_meta,
    item_bytes,
    normalize_metric,
    read_meta,
    write_meta,
)

logger = logging.getLogger(__name__)

Progress = Callable[[int, int | None], None]
_WRITE_ROWS = 100  # rows per GetRange page, so per BatchWriteRow (Tablestore allows 200; vectors make rows large)
_CATCH_UP_ROUNDS = 3
_CLOCK_MARGIN = 600.0  # seconds: servers' clocks may lag the one that ran the switch


class Embedder(Protocol):
    def embed_batch(self, texts: list[str], memory_action: str = "add") -> list[list[float]]: ...


def _next_names(index: str, column: str) -> tuple[str, str]:
    """The index and column of the next generation: ``<base>_v<n+1>`` and ``vector_v<n+1>``."""
    found = re.fullmatch(rf"{COL_VECTOR}_v(\d+)", column)
    version = int(found.group(1)) + 1 if found else 2
    base = re.sub(r"_v\d+$", "", index)
    return f"{base}_v{version}", f"{COL_VECTOR}_v{version}"


def _before(iso: str, seconds: float) -> str:
    return (datetime.fromisoformat(iso) - timedelta(seconds=seconds)).isoformat()


def _changed_since(payload: Any, since: str | None) -> bool:
    """Whether the memory was updated at or after ``since`` (unparsable times count as changed)."""
    if since is None:
        return True
    try:
        updated = datetime.fromisoformat(str(payload.get("updated_at") or payload.get("created_at")))
        if updated.tzinfo is None:
            updated = updated.replace(tzinfo=UTC)
        return updated >= datetime.fromisoformat(since)
    except (TypeError, ValueError):
        return True


def _is_memory_row(user: str) -> bool:
    return not user.startswith("#") and not user.endswith(DEDUP_SUFFIX)


class TablestoreReembed:
    """Rebuild every vector of ``table`` with ``embedder`` (``name``, ``dimension``)."""

    def __init__(
        self,
        client: Any,
        table: str,
        default_index: str,
        metric: str,
        embedder: Embedder,
        name: str,
        dimension: int,
        *,
        drop_old: bool = False,
        batch: int = _WRITE_ROWS,
        sync_timeout: float = 900.0,
        retry: Retrier | None = None,
    ) -> None:
        self.client, self.table, self.default_index = client, table, default_index
        # every call under the server's retry budget; rows of a batch that fail with a transient error are re-sent
        self.retry = retry or Retrier(table)
        self.batches = Batches(client, self.retry)
        self.metric = normalize_metric(metric)
        self.embedder, self.name, self.dimension = embedder, name, dimension
        self.drop_old, self.batch, self.sync_timeout = drop_old, max(1, batch), sync_timeout
        self.label = f"tablestore(table={table})"

    def _digest(self, text: str) -> str:
        return hashlib.sha256(f"{self.name}\x1f{self.dimension}\x1f{text}".encode()).hexdigest()[:32]

    # -- state ----------------------------------------------------------------------------------
    def _current(self) -> EmbeddingMeta | None:
        """The meta row, or one describing a table made before it existed; None: no table yet."""
        try:
            self.retry.call("DescribeTable", lambda: self.client.describe_table(self.table))
        except OTSServiceError as exc:
            if "not exist" in str(exc.message):
                return None
            raise
        meta = self.retry.call("GetRow", lambda: read_meta(self.client, self.table))
        if meta is not None:
            return meta
        index_meta_, _ = self.retry.call(
            "DescribeSearchIndex", lambda: self.client.describe_search_index(self.table, self.default_index, False)
        )
        fields = {f.field_name: f for f in index_meta_.fields or []}
        options = getattr(fields.get(COL_VECTOR), "vector_options", None)
        dims = int(options.dimension) if options is not None else None
        return EmbeddingMeta(None, dims, self.default_index, COL_VECTOR)

    def run(self, dry_run: bool = False, progress: Progress | None = None) -> ReembedSummary:
        summary = ReembedSummary(self.label, self.name, self.dimension)
        meta = self._current()
        if meta is None:
            summary.state = "empty"
            return summary
        if (meta.embedder, meta.dimension) == (self.name, self.dimension):
            summary.state = "already"
            if meta.switched_at and not dry_run:  # servers restarted late may have written old vectors only
                late = self._catch_up(meta.vector_column, _before(meta.switched_at, _CLOCK_MARGIN))
                summary.embedded = late
                if late:
                    summary.note = f"; {late} memories written since the switch were re-embedded"
            return summary
        pending = meta.next
        ours = (pending.get("embedder"), pending.get("dimension")) == (self.name, self.dimension)
        if pending and ours:
            index, column = str(pending["index_name"]), str(pending["vector_column"])
        else:
            index, column = _next_names(meta.index_name, meta.vector_column)
        if dry_run:
            summary.state = "dry-run"
            for rows, stale in self._pages(column):
                summary.total += rows
                summary.reused += rows - len(stale)
            return summary
        if pending and not ours and pending.get("index_name") == index:
            self._drop_index(index)  # an unfinished run for another embedder (its vectors fail the digest check)
        meta.next = {"embedder": self.name, "dimension": self.dimension, "index_name": index, "vector_column": column}
        self._write_meta(meta)
        self._create_index(index, column)
        expected = self._backfill(column, summary, progress)
        self._wait_synced(index, column, expected)
        old_index = meta.index_name
        switched = EmbeddingMeta(self.name, self.dimension, index, column, switched_at=now_iso())
        self._write_meta(switched)
        logger.info("switched %s to index %s, column %s", self.table, index, column)
        if self.drop_old and old_index != index:
            self._drop_index(old_index)
            summary.note = f"; dropped the old index {old_index}"
        else:
            summary.note = f"; old index {old_index} kept (drop it with --drop-old-index)"
        return summary

    def _write_meta(self, meta: EmbeddingMeta) -> None:
        self.retry.call("PutRow", lambda: write_meta(self.client, self.table, meta))

    # -- index ----------------------------------------------------------------------------------
    def _create_index(self, index: str, column: str) -> None:
        try:
            self.retry.call(
                "CreateSearchIndex",
                lambda: self.client.create_search_index(
                    self.table, index, index_meta(self.dimension, self.metric, column)
                ),
            )
        except OTSServiceError as exc:
            if "exist" not in str(exc.message).lower() or "not exist" in str(exc.message).lower():
                raise

    def _drop_index(self, index: str) -> None:
        try:
            self.retry.call("DeleteSearchIndex", lambda: self.client.delete_search_index(self.table, index))
        except OTSServiceError as exc:
            if "not exist" not in str(exc.message):
                raise

    def _indexed(self, index: str, column: str) -> int:
        query = SearchQuery(ExistsQuery(f"{column}_digest"), limit=0, get_total_count=True)
        response = self.retry.call(
            "Search",
            lambda: self.client.search(self.table, index, query, ColumnsToGet(return_type=ColumnReturnType.NONE)),
        )
        return int(response.total_count or 0)

    def _wait_synced(self, index: str, column: str, expected: int) -> None:
        """Until the new index holds every re-embedded row (a new index can take a minute to start)."""
        deadline = time.monotonic() + self.sync_timeout
        delay = 0.2
        while True:
            try:
                have = self._indexed(index, column)
            except OTSServiceError as exc:  # a brand-new index may refuse queries at first
                logger.debug("index %s not ready: %s", index, exc)
                have = -1
            if have >= expected:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"the new search index {index} holds {max(have, 0)} of {expected} memories after "
                    f"{self.sync_timeout:.0f} s; run reembed again to finish (nothing is lost)"
                )
            time.sleep(delay)
            delay = min(2.0, delay * 1.5)

    # -- backfill -------------------------------------------------------------------------------
    def _pages(self, column: str, since: str | None = None) -> Iterator[tuple[int, list[tuple[str, str, str]]]]:
        """Pages of the whole table: (memory rows seen, [(user, id, text) lacking a fresh vector]);
        with ``since``, only rows updated since then count as lacking one."""
        start: Any = [(PK_USER, INF_MIN), (PK_ID, INF_MIN)]
        end = [(PK_USER, INF_MAX), (PK_ID, INF_MAX)]
        while start is not None:
            read = functools.partial(
                self.client.get_range,
                self.table,
                "FORWARD",
                start,
                end,
                [COL_PAYLOAD, f"{column}_digest"],
                self.batch,
                max_version=1,
            )
            _, start, rows, _ = self.retry.call("GetRange", read)
            seen, stale = 0, []
            for row in rows or []:
                keys = {c[0]: c[1] for c in row.primary_key}
                attrs = {c[0]: c[1] for c in row.attribute_columns or []}
                user, memory_id = str(keys[PK_USER]), str(keys[PK_ID])
                if not _is_memory_row(user) or COL_PAYLOAD not in attrs:
                    continue
                try:
                    payload = json.loads(attrs[COL_PAYLOAD])
                except ValueError:
                    continue
                text = text_of(payload) if isinstance(payload, dict) else None
                if text is None:
                    continue
                seen += 1
                if attrs.get(f"{column}_digest") != self._digest(text) and _changed_since(payload, since):
                    stale.append((user, memory_id, text))
            yield seen, stale

    def _write(self, column: str, stale: list[tuple[str, str, str]]) -> None:
        vectors = self.embedder.embed_batch([text for _, _, text in stale], "add")
        items: list[Any] = []
        for (user, memory_id, text), vector in zip(stale, vectors, strict=True):
            put = [(column, encode_vector(vector, self.dimension)), (f"{column}_digest", self._digest(text))]
            row = Row([(PK_USER, user), (PK_ID, memory_id)], {"PUT": put})
            # a memory deleted meanwhile fails the condition: nothing to do for it (also when a retried
            # write's first try landed: the row exists, so the condition holds and the write repeats itself)
            items.append(UpdateRowItem(row, Condition(RowExistenceExpectation.EXPECT_EXIST)))
        for chunk in chunks(items, item_bytes):  # <= 200 rows and < 4 MB a request
            self._send(chunk)

    def _send(self, items: list[Any]) -> None:
        """One BatchWriteRow; rows failing with transient errors are re-sent within the retry budget."""
        rejected, pending = self.batches.write(self.table, items, [])
        for _, code, message in rejected:
            if code != "OTSConditionCheckFail":
                raise OSError(f"re-embedding {self.table}: {code}: {message}")
        if pending:
            raise TablestoreUnavailableError(
                f"re-embedding {self.table}: {len(pending)} row(s) kept failing for "
                f"{self.retry.max_seconds:g} s (TABLESTORE_MAX_RETRY_SECONDS); run reembed again to finish"
            )

    def _catch_up(self, column: str, since: str) -> int:
        """Re-embed rows updated since ``since`` without a fresh vector (written by a server on old settings)."""
        late = 0
        for _, stale in self._pages(column, since):
            if stale:
                self._write(column, stale)
                late += len(stale)
        return late

    def _backfill(self, column: str, summary: ReembedSummary, progress: Progress | None) -> int:
        """Embed what lacks a fresh vector, then catch up with writes made meanwhile; the memory count."""
        done = 0
        for seen, stale in self._pages(column):
            if stale:
                self._write(column, stale)
            summary.total += seen
            summary.embedded += len(stale)
            summary.reused += seen - len(stale)
            done += seen
            if progress is not None:
                progress(done, None)
        total = summary.total
        for _ in range(_CATCH_UP_ROUNDS):
            late, total = 0, 0
            for seen, stale in self._pages(column):
                total += seen
                if stale:
                    self._write(column, stale)
                    late += len(stale)
            summary.embedded += late
            if not late:
                break
        summary.total = total
        return total


def reembed_tablestore(settings: Settings, embedder: Any, dimension: int, drop_old: bool = False) -> TablestoreReembed:
    """The re-embedding of the configured table with ``embedder`` (its ``name`` is recorded)."""
    client = client_from_settings(
        settings,
        retry_policy=NoRetryPolicy(),  # our retrier: every API, transport errors too, for the configured budget
        logger_name=f"{__name__}.sdk",
        what="reembed",
    )
    retry = Retrier(str(settings.tablestore_endpoint), max_seconds=settings.tablestore_max_retry_seconds)
    table = settings.tablestore_table_name
    index = settings.tablestore_index_name or f"{table}_search_index"
    name = str(getattr(embedder, "name", type(embedder).__name__))
    metric = settings.tablestore_vector_metric
    return TablestoreReembed(client, table, index, metric, embedder, name, dimension, drop_old=drop_old, retry=retry)
