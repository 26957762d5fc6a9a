"""``TablestoreStore``: mem0's vector store on Alibaba Cloud Tablestore, on the ``tablestore`` SDK.

Layout (see ``schema``): primary key ``(user_id, memory_id)``, so one user's memories are one
contiguous range and every by-id or per-user operation is served by the table itself, which is
strongly consistent, instead of by the search index, which lags writes by seconds:

* ``get``/``update``/``delete`` = one GetRow / UpdateRow / DeleteRow on ``(scope user, id)``, where
  the user comes from :data:`~..base.ACTIVE_SCOPE`. Other scope keys (``agent_id``, ``run_id``)
  are enforced in the same RPC with column conditions (update/delete) or by checking the returned
  payload (get): a row outside the scope behaves exactly like a missing row.
  Without an active scope user (maintenance code) the row is located with a Search TermQuery on
  ``memory_id`` first, which only sees rows the index has synced.
* ``list``/``count`` = GetRange over the user's range (paged by ``next_start_primary_key``, without
  the vector column), post-filtered and sorted by ``created_at``: complete and read-your-writes.
  Without a user in scope or filters it scans the whole table.
* ``search`` = exactly one Search RPC (KnnVectorQuery with pushed-down filters) for up to 100
  results (more need ``next_token`` pages). ``keyword_search`` right after it is answered from that
  search's candidates without an RPC (see ``keyword``).
* ``insert`` validates everything first, then PutRow (one row) or BatchWriteRow (<= 200 rows and
  < 4 MB per call), retrying only failed rows; if rows still fail it deletes what landed and raises.

Every RPC goes through our own bounded retry (see ``retry``); the SDK's retry is disabled.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from tablestore import (
    INF_MAX,
    INF_MIN,
    BatchWriteRowRequest,
    BoolQuery,
    CapacityUnit,
    ColumnReturnType,
    ColumnsToGet,
    ComparatorType,
    CompositeColumnCondition,
    Condition,
    DeleteRowItem,
    KnnVectorQuery,
    LogicalOperator,
    MatchQuery,
    NoRetryPolicy,
    OTSClient,
    OTSClientError,
    OTSServiceError,
    PutRowItem,
    Query,
    ReservedThroughput,
    Row,
    RowExistenceExpectation,
    RowItem,
    ScoreSort,
    SearchQuery,
    SingleColumnCondition,
    Sort,
    SortOrder,
    TableInBatchWriteRowItem,
    TableMeta,
    TableOptions,
    TermQuery,
    TermsQuery,
)

from ..base import ACTIVE_SCOPE, MemoryStore, OutputData, in_active_scope
from ..filters import matches, split_identity
from ..tokenize import tokens
from . import query as qb
from .keyword import CandidateStash, bm25, filters_key
from .retry import Retrier, TablestoreUnavailableError, row_error_retryable
from .rows import (
    MAX_ROW_BYTES,
    EncodedRow,
    batches,
    decode_payload,
    encode_rows,
    encode_vector,
    partition_of,
    payload_columns,
)
from .schema import (
    ATTRIBUTE_COLUMNS,
    COL_DATA,
    COL_PAYLOAD,
    COL_VECTOR,
    KEYWORD_COLUMNS,
    PK_ID,
    PK_USER,
    PRIMARY_KEY,
    check_index,
    check_primary_key,
    index_meta,
    normalize_metric,
    validate_dimension,
    validate_name,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Rows per Search page. Tablestore caps ``limit`` at 100 when row columns are returned.
SEARCH_PAGE = 100
#: KnnVectorQuery's documented top_k maximum.
MAX_TOP_K = 1000
#: Rows per BatchWriteRow call (Tablestore's limit).
BATCH_ROWS = 200
_PAYLOAD_ONLY = ColumnsToGet([COL_PAYLOAD], ColumnReturnType.SPECIFIED)
_SCORE_DESC = Sort([ScoreSort(SortOrder.DESC)])
_CONDITION_FAILED = "OTSConditionCheckFail"
_AUTH_CODES = {"OTSAuthFailed", "OTSNoPermissionAccess", "OTSInvalidAccessKeyId"}


def _not_found(exc: BaseException) -> bool:
    if not isinstance(exc, OTSServiceError):
        return False
    return exc.code == "OTSObjectNotExist" or "does not exist" in (exc.message or "").lower()


def _already_exists(exc: BaseException) -> bool:
    if not isinstance(exc, OTSServiceError):
        return False
    return exc.code == "OTSObjectAlreadyExist" or "already exist" in (exc.message or "").lower()


def _row_parts(row: Any) -> tuple[Any, Any]:
    """(primary_key, attribute_columns) from a Row object or a (pk, attrs) tuple."""
    if hasattr(row, "primary_key"):
        return row.primary_key, row.attribute_columns
    return row[0], row[1]


def _created_key(row: OutputData) -> tuple[float, str, str]:
    """Sort key for "created order": parsed created_at (any offset), then the raw string, then id."""
    raw = (row.payload or {}).get("created_at")
    ts = float("inf")
    if isinstance(raw, str) and raw:
        try:
            dt = datetime.fromisoformat(raw)
            ts = (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp()
        except ValueError:
            pass
    return ts, raw if isinstance(raw, str) else "", row.id


class TablestoreStore(MemoryStore):
    """mem0 vector store on one Tablestore table plus one search index (see the module docstring)."""

    def __init__(
        self,
        collection_name: str = "mem0",
        endpoint: str | None = None,
        instance_name: str | None = None,
        access_key_id: str | None = None,
        access_key_secret: str | None = None,
        sts_token: str | None = None,
        embedding_model_dims: int = 1536,
        index_name: str | None = None,
        metric: str = "cosine",
        region: str | None = None,
        timeout: float = 10.0,
        max_retries: int = 4,
        max_connection: int = 32,
        **_ignored: Any,
    ) -> None:
        self.collection_name = validate_name("table", collection_name)
        self.index_name = validate_name("index", index_name or f"{collection_name}_search_index")
        self.embedding_model_dims = validate_dimension(embedding_model_dims)
        self.metric = normalize_metric(metric)
        missing = [
            name
            for name, value in (
                ("endpoint", endpoint),
                ("instance_name", instance_name),
                ("access_key_id", access_key_id),
                ("access_key_secret", access_key_secret),
            )
            if not value
        ]
        if missing:
            raise ValueError(f"Tablestore store needs {', '.join(missing)} (TABLESTORE_* settings)")
        assert endpoint is not None
        self.endpoint = endpoint.rstrip("/")
        self.instance_name = instance_name
        try:
            self.client = OTSClient(
                self.endpoint,
                access_key_id,
                access_key_secret,
                instance_name,
                sts_token=sts_token or None,
                region=region or None,
                socket_timeout=timeout,
                max_connection=max_connection,
                retry_policy=NoRetryPolicy(),
                logger_name=f"{__name__}.sdk",
            )
        except OTSClientError as exc:
            raise ValueError(f"Invalid Tablestore settings for endpoint {endpoint!r}: {exc}") from None
        # The SDK logs every failed request at ERROR, including the expected "does not exist" at
        # startup and transient errors we retry; our own logs say what matters. Overridable.
        sdk_logger = logging.getLogger(f"{__name__}.sdk")
        if sdk_logger.level == logging.NOTSET:
            sdk_logger.setLevel(logging.CRITICAL)
        self._retry = Retrier(self.endpoint, attempts=max_retries)
        self._stash = CandidateStash()
        self._ensure()

    # ------------------------------------------------------------------ plumbing

    def _call(self, api: str, fn: Callable[[], T]) -> T:
        """One SDK call under our retry policy."""
        return self._retry.call(api, fn)

    @staticmethod
    def _scope() -> dict[str, str] | None:
        return ACTIVE_SCOPE.get()

    @classmethod
    def _scope_user(cls) -> str | None:
        scope = cls._scope() or {}
        user = scope.get("user_id")
        return user if isinstance(user, str) and user else None

    @classmethod
    def _scope_condition(cls, expectation: str) -> Condition | None:
        """Row condition enforcing the non-user scope keys in the write itself.

        Returns None when a scope key has no column of its own (then callers read first).
        """
        scope = {k: v for k, v in (cls._scope() or {}).items() if k != "user_id"}
        if any(k not in KEYWORD_COLUMNS for k in scope):
            return None
        conds = [SingleColumnCondition(k, v, ComparatorType.EQUAL, pass_if_missing=False) for k, v in scope.items()]
        if not conds:
            return Condition(expectation)
        if len(conds) == 1:
            return Condition(expectation, conds[0])
        both = CompositeColumnCondition(LogicalOperator.AND)
        for c in conds:
            both.add_sub_condition(c)
        return Condition(expectation, both)

    @staticmethod
    def _pk(user: str, memory_id: Any) -> list[tuple[str, Any]]:
        return [(PK_USER, user), (PK_ID, memory_id)]

    # ------------------------------------------------------------------ startup / collections

    def _ensure(self) -> None:
        """Create the table and index if needed; 2 RPCs when both exist."""
        try:
            desc = self._call("DescribeTable", lambda: self.client.describe_table(self.collection_name))
        except OTSServiceError as exc:
            if not _not_found(exc):
                raise self._friendly(exc) from exc
            self._create_table()
            self._create_index()
            return
        check_primary_key(self.collection_name, desc.table_meta.schema_of_primary_key)
        try:
            meta, _ = self._call(
                "DescribeSearchIndex",
                lambda: self.client.describe_search_index(self.collection_name, self.index_name, False),
            )
        except OTSServiceError as exc:
            if not _not_found(exc):
                raise self._friendly(exc) from exc
            self._create_index()
            return
        self._check_index(meta)

    def _check_index(self, meta: Any) -> None:
        lacking = check_index(self.index_name, meta, self.embedding_model_dims, self.metric)
        if lacking:
            logger.warning(
                "Tablestore index %s lacks fields %s; filters on them run as post-filters",
                self.index_name,
                lacking,
            )

    def _friendly(self, exc: OTSServiceError) -> Exception:
        if exc.code in _AUTH_CODES or exc.http_status == 403:
            return PermissionError(
                f"Tablestore at {self.endpoint} (instance {self.instance_name}) rejected the credentials: "
                f"{exc.code}: {exc.message}"
            )
        return exc

    def _create_table(self) -> None:
        logger.info("Creating Tablestore table %s", self.collection_name)
        try:
            self._call(
                "CreateTable",
                lambda: self.client.create_table(
                    TableMeta(self.collection_name, list(PRIMARY_KEY)),
                    TableOptions(time_to_live=-1, max_version=1),
                    ReservedThroughput(CapacityUnit(0, 0)),
                ),
            )
        except OTSServiceError as exc:
            if not _already_exists(exc):  # another process won the race
                raise self._friendly(exc) from exc

    def _create_index(self) -> None:
        logger.info("Creating Tablestore search index %s on %s", self.index_name, self.collection_name)
        try:
            self._call(
                "CreateSearchIndex",
                lambda: self.client.create_search_index(
                    self.collection_name, self.index_name, index_meta(self.embedding_model_dims, self.metric)
                ),
            )
        except OTSServiceError as exc:
            if not _already_exists(exc):
                raise self._friendly(exc) from exc
            meta, _ = self._call(
                "DescribeSearchIndex",
                lambda: self.client.describe_search_index(self.collection_name, self.index_name, False),
            )
            self._check_index(meta)

    def create_col(self, name: str | None = None, vector_size: int | None = None, distance: str | None = None):
        """Ensure this store's table and index exist (mem0 calls it with its own config values)."""
        if name and name != self.collection_name:
            raise ValueError(f"this store serves table {self.collection_name}, not {name}")
        if vector_size is not None and vector_size != self.embedding_model_dims:
            raise ValueError(f"this store was configured for {self.embedding_model_dims} dimensions, not {vector_size}")
        if distance is not None and normalize_metric(distance) != self.metric:
            raise ValueError(f"this store was configured for metric {self.metric}, not {distance}")
        self._ensure()

    def list_cols(self) -> list[str]:
        """Table names in the instance (one ListTable)."""
        return list(self._call("ListTable", self.client.list_table))

    def delete_col(self) -> None:
        """Drop the search index, then the table (missing ones are fine)."""
        for api, fn in (
            (
                "DeleteSearchIndex",
                lambda: self.client.delete_search_index(self.collection_name, self.index_name),
            ),
            ("DeleteTable", lambda: self.client.delete_table(self.collection_name)),
        ):
            try:
                self._call(api, fn)
            except OTSServiceError as exc:
                if not _not_found(exc):
                    raise
        self._stash.clear()

    def col_info(self) -> dict[str, Any]:
        """Table/index names, vector settings and the index sync state (one DescribeSearchIndex)."""
        _, sync = self._call(
            "DescribeSearchIndex",
            lambda: self.client.describe_search_index(self.collection_name, self.index_name, True),
        )
        return {
            "name": self.collection_name,
            "index_name": self.index_name,
            "dimension": self.embedding_model_dims,
            "metric": self.metric,
            "endpoint": self.endpoint,
            "instance_name": self.instance_name,
            "sync_phase": getattr(getattr(sync, "sync_phase", None), "name", None),
        }

    def reset(self) -> None:
        """Delete the table and index and create them again (all memories are lost)."""
        logger.warning("Resetting Tablestore table %s", self.collection_name)
        self.delete_col()
        self._ensure()

    def close(self) -> None:
        """Release pooled connections."""
        try:
            self.client.connection.pool.clear()
        except Exception:  # pragma: no cover - best effort
            logger.debug("closing Tablestore connections failed", exc_info=True)

    # ------------------------------------------------------------------ writes

    def insert(
        self,
        vectors: Sequence[Any],
        payloads: Sequence[Mapping] | None = None,
        ids: Sequence[Any] | None = None,
    ):
        """Validate all rows, then write them all or raise (after removing any that landed)."""
        vectors = list(vectors)
        payloads = list(payloads) if payloads is not None else [{} for _ in vectors]
        ids = [str(i) for i in ids] if ids is not None else [str(uuid.uuid4()) for _ in vectors]
        for i, payload in enumerate(payloads):
            if not in_active_scope(payload):
                raise ValueError(f"memory {i} ({ids[i] if i < len(ids) else '?'}) is outside the caller's scope")
        rows = encode_rows(ids, vectors, payloads, self.embedding_model_dims)
        if not rows:
            return
        if len(rows) == 1:
            row = rows[0]
            self._call(
                "PutRow",
                lambda: self.client.put_row(
                    self.collection_name,
                    Row(row.primary_key, row.columns),
                    Condition(RowExistenceExpectation.IGNORE),
                ),
            )
            return
        done: list[RowItem] = []
        by_item: dict[int, EncodedRow] = {}
        try:
            for chunk in batches(rows, BATCH_ROWS):
                items: list[RowItem] = [
                    PutRowItem(Row(r.primary_key, r.columns), Condition(RowExistenceExpectation.IGNORE)) for r in chunk
                ]
                by_item.update({id(item): r for item, r in zip(items, chunk, strict=True)})
                rejected, pending = self._batch_write(items, done)
                if rejected or pending:
                    raise self._batch_error("insert", rejected, pending)
        except Exception:
            self._rollback([by_item[id(item)] for item in done])
            raise

    def _batch_error(self, what: str, rejected: list[tuple[RowItem, str, str]], pending: list[RowItem]) -> Exception:
        if rejected:
            _, code, message = rejected[0]
            return RuntimeError(
                f"Tablestore rejected {len(rejected)} row(s) during {what}: {code}: {message}; nothing was kept"
            )
        return TablestoreUnavailableError(
            f"Tablestore is busy after {self._retry.attempts} attempts: {len(pending)} row(s) of a "
            f"BatchWriteRow during {what} on {self.endpoint} kept failing; nothing was kept"
        )

    def _rollback(self, landed: Sequence[EncodedRow]) -> None:
        """Best effort: delete rows an insert wrote before it failed, so nothing is half-written."""
        if not landed:
            return
        logger.warning("Insert failed; removing %d row(s) that were already written", len(landed))
        try:
            for start in range(0, len(landed), BATCH_ROWS):
                items: list[RowItem] = [
                    DeleteRowItem(Row(r.primary_key), Condition(RowExistenceExpectation.IGNORE))
                    for r in landed[start : start + BATCH_ROWS]
                ]
                rejected, pending = self._batch_write(items, [])
                if rejected or pending:
                    logger.error("Could not remove %d partially inserted row(s)", len(rejected) + len(pending))
        except Exception:
            logger.exception("Could not remove partially inserted rows")

    def _batch_write(
        self, items: list[RowItem], done: list[RowItem]
    ) -> tuple[list[tuple[RowItem, str, str]], list[RowItem]]:
        """One BatchWriteRow (<= 200 items), re-sending only rows that failed with transient errors.

        Appends written items to ``done`` as they land (so a caller can undo them even when this
        raises) and returns (rejected with (code, message), still failing after every attempt).
        """
        assert len(items) <= BATCH_ROWS
        pending = list(items)
        rejected: list[tuple[RowItem, str, str]] = []
        for attempt in range(self._retry.attempts):
            request = BatchWriteRowRequest()
            request.add(TableInBatchWriteRowItem(self.collection_name, pending))
            response = self._call("BatchWriteRow", lambda req=request: self.client.batch_write_row(req))
            results = []
            for table_results in (response.table_of_put, response.table_of_update, response.table_of_delete):
                results.extend(table_results.get(self.collection_name, []))
            results.sort(key=lambda r: r.index)
            again: list[RowItem] = []
            for result in results:
                item = pending[result.index]
                if result.is_ok:
                    done.append(item)
                elif row_error_retryable(result.error_code, result.error_message):
                    again.append(item)
                else:
                    rejected.append((item, result.error_code or "", result.error_message or ""))
            if len(results) < len(pending):  # a malformed response: treat unanswered rows as failed
                answered = {r.index for r in results}
                again.extend(item for i, item in enumerate(pending) if i not in answered)
            pending = again
            if not pending:
                break
            if attempt + 1 < self._retry.attempts:
                time.sleep(self._retry.delay(attempt))
        return rejected, pending

    def update(self, vector_id: Any, vector: Sequence[float] | None = None, payload: Mapping | None = None):
        """One UpdateRow (expect the row to exist and be in scope); ``None`` parts are left as they are."""
        memory_id = str(vector_id)
        user = self._locate_user(memory_id, hint=payload)
        if user is None:
            raise ValueError(f"Memory with id {memory_id} not found")
        put: list[tuple[str, str]] = []
        clear: list[str] = []
        if payload is not None:
            if partition_of(payload) != user:
                raise ValueError("an update cannot move a memory to another user_id")
            if not in_active_scope(dict(payload)):
                raise ValueError("the updated payload is outside the caller's scope")
            put = payload_columns(payload)
            have = {name for name, _ in put}
            clear = [c for c in ATTRIBUTE_COLUMNS if c != COL_VECTOR and c not in have]
        if vector is not None:
            put.append((COL_VECTOR, encode_vector(vector, self.embedding_model_dims)))
        if sum(len(v.encode("utf-8")) for _, v in put) > MAX_ROW_BYTES:
            raise ValueError(f"memory row is above the {MAX_ROW_BYTES // 1024} KiB limit")
        if not put:
            return
        condition = self._scope_condition(RowExistenceExpectation.EXPECT_EXIST)
        if condition is None:  # scope keys without columns: check by reading first
            if self.get(memory_id) is None:
                raise ValueError(f"Memory with id {memory_id} not found")
            condition = Condition(RowExistenceExpectation.EXPECT_EXIST)
        columns: dict[str, list[Any]] = {"PUT": put}
        if clear:
            columns["DELETE_ALL"] = clear
        row = Row(self._pk(user, memory_id), columns)
        try:
            self._call("UpdateRow", lambda: self.client.update_row(self.collection_name, row, condition))
        except OTSServiceError as exc:
            if exc.code == _CONDITION_FAILED:
                raise ValueError(f"Memory with id {memory_id} not found") from None
            raise

    def delete(self, vector_id: Any) -> None:
        """One DeleteRow; a missing or out-of-scope row is left alone (deletes are idempotent)."""
        memory_id = str(vector_id)
        user = self._locate_user(memory_id)
        if user is None:
            return
        condition = self._scope_condition(RowExistenceExpectation.IGNORE)
        if condition is None:
            if self.get(memory_id) is None:
                return
            condition = Condition(RowExistenceExpectation.IGNORE)
        try:
            self._call(
                "DeleteRow",
                lambda: self.client.delete_row(self.collection_name, Row(self._pk(user, memory_id)), condition),
            )
        except OTSServiceError as exc:
            if exc.code != _CONDITION_FAILED:
                raise
            logger.debug("delete of %s skipped: outside the caller's scope", memory_id)

    def delete_many(self, ids: Iterable[Any]) -> int:
        """Delete ids in the caller's partition, ceil(N/200) BatchWriteRow; returns how many existed."""
        wanted = list(dict.fromkeys(str(i) for i in ids))
        if not wanted:
            return 0
        user = self._scope_user()
        if user is not None:
            targets = [(user, mid) for mid in wanted]
        else:
            targets = [(u, mid) for mid, (u, _) in self._find_by_ids(wanted).items()]
        condition = self._scope_condition(RowExistenceExpectation.EXPECT_EXIST)
        if condition is None:
            targets = [(u, mid) for u, mid in targets if self.get(mid) is not None]
            condition = Condition(RowExistenceExpectation.EXPECT_EXIST)
        deleted = 0
        for start in range(0, len(targets), BATCH_ROWS):
            items: list[RowItem] = [
                DeleteRowItem(Row(self._pk(u, mid)), condition) for u, mid in targets[start : start + BATCH_ROWS]
            ]
            done: list[RowItem] = []
            rejected, pending = self._batch_write(items, done)
            deleted += len(done)
            real = [r for r in rejected if r[1] != _CONDITION_FAILED]  # missing / out of scope: skip
            if real or pending:
                raise self._batch_error("delete_many", real, pending)
        return deleted

    # ------------------------------------------------------------------ reads

    def get(self, vector_id: Any) -> OutputData | None:
        """One GetRow in the caller's partition; None when missing or outside the scope."""
        memory_id = str(vector_id)
        user = self._scope_user()
        if user is None:
            found = self._find_by_ids([memory_id]).get(memory_id)
            if found is None:
                return None
            payload = found[1]
        else:
            _, row, _ = self._call(
                "GetRow",
                lambda: self.client.get_row(
                    self.collection_name,
                    self._pk(user, memory_id),
                    columns_to_get=[COL_PAYLOAD],
                    max_version=1,
                ),
            )
            if row is None or not row.primary_key:
                return None
            _, payload = decode_payload(row.primary_key, row.attribute_columns)
        if not in_active_scope(payload):
            return None
        return OutputData(id=memory_id, score=None, payload=payload)

    def _locate_user(self, memory_id: str, hint: Mapping | None = None) -> str | None:
        """The partition of ``memory_id``: the scope user, else the payload's, else found via Search."""
        user = self._scope_user()
        if user is not None:
            return user
        if hint is not None and isinstance(hint.get("user_id"), str) and hint.get("user_id"):
            return partition_of(hint)
        found = self._find_by_ids([memory_id]).get(memory_id)
        return found[0] if found else None

    def _find_by_ids(self, ids: Sequence[str]) -> dict[str, tuple[str, dict]]:
        """Locate rows by id through the search index (only used without a scope user; lags writes)."""
        out: dict[str, tuple[str, dict]] = {}
        scope_q = qb.scope_query(self._scope())
        for start in range(0, len(ids), SEARCH_PAGE):
            chunk = list(ids[start : start + SEARCH_PAGE])
            term: Query = TermQuery(PK_ID, chunk[0]) if len(chunk) == 1 else TermsQuery(PK_ID, chunk)
            for row, _ in self._search_pages(qb.combine(term, scope_q), len(chunk), sort=None):
                pk, attrs = _row_parts(row)
                mid, payload = decode_payload(pk, attrs)
                user = dict((c[0], c[1]) for c in pk).get(PK_USER)
                if isinstance(user, str):
                    out[mid] = (user, payload)
        return out

    def list(self, filters: Mapping | None = None, top_k: int | None = None) -> list[list[OutputData]]:
        """All rows in scope matching ``filters`` in created order, wrapped once (mem0 reads ``[0]``)."""
        rows = self._scan(filters)
        if top_k is not None and top_k >= 0:
            rows = rows[:top_k]
        return [rows]

    def count(self, filters: Mapping | None = None) -> int:
        """How many rows in scope match ``filters`` (a GetRange scan; strongly consistent)."""
        return len(self._scan(filters))

    def _scan(self, filters: Mapping | None) -> list[OutputData]:
        identity, _ = split_identity(dict(filters or {}))
        wanted = identity.get("user_id") if isinstance(identity, Mapping) else None
        scope_user = self._scope_user()
        if scope_user and isinstance(wanted, str) and wanted != scope_user:
            return []
        user = scope_user or (wanted if isinstance(wanted, str) and wanted else None)
        if user is not None:
            start: Any = self._pk(user, INF_MIN)
            end: Any = self._pk(user, INF_MAX)
        else:
            start, end = [(PK_USER, INF_MIN), (PK_ID, INF_MIN)], [(PK_USER, INF_MAX), (PK_ID, INF_MAX)]
        out: list[OutputData] = []
        while start is not None:
            _, next_pk, rows, _ = self._call(
                "GetRange",
                lambda s=start: self.client.get_range(
                    self.collection_name, "FORWARD", s, end, [COL_PAYLOAD], None, max_version=1
                ),
            )
            for row in rows or []:
                mid, payload = decode_payload(*_row_parts(row))
                if in_active_scope(payload) and (not filters or matches(dict(filters), payload)):
                    out.append(OutputData(id=mid, score=None, payload=payload))
            start = next_pk or None
        out.sort(key=_created_key)
        return out

    def _search_pages(self, query: Query, want: int, sort: Sort | None = _SCORE_DESC) -> list[tuple[Any, float | None]]:
        """Up to ``want`` (row, score) pairs; one Search RPC per 100 rows."""
        pairs: list[tuple[Any, float | None]] = []
        token: bytes | None = None
        while len(pairs) < want:
            limit = min(SEARCH_PAGE, want - len(pairs))
            search_query = SearchQuery(
                query, sort=None if token else sort, limit=limit, next_token=token, get_total_count=False
            )
            response = self._call(
                "Search",
                lambda sq=search_query: self.client.search(self.collection_name, self.index_name, sq, _PAYLOAD_ONLY),
            )
            hits = response.search_hits or []
            page = [(h.row, h.score) for h in hits] if hits else [(r, None) for r in response.rows or []]
            pairs.extend(page)
            token = response.next_token or None
            if not token or not page:
                break
        return pairs[:want]

    def _filtered(self, pairs: Iterable[tuple[Any, float | None]], filters: Mapping | None) -> list[OutputData]:
        out = []
        for row, score in pairs:
            mid, payload = decode_payload(*_row_parts(row))
            if in_active_scope(payload) and (not filters or matches(dict(filters), payload)):
                out.append(OutputData(id=mid, score=score, payload=payload))
        return out

    def search(self, query: str, vectors: Sequence[float], top_k: int = 5, filters: Mapping | None = None):
        """KNN search: one Search RPC (for top_k <= 100), filters pushed down where exact."""
        k = max(1, int(top_k or 5))
        vector = [float(x) for x in vectors]
        if len(vector) != self.embedding_model_dims:
            raise ValueError(
                f"query vector has {len(vector)} dimensions, the index expects {self.embedding_model_dims}"
            )
        scope = self._scope()
        push = qb.build(filters)
        fetch = k if push.exact else max(k * 4, k + 50)
        fetch = min(fetch, MAX_TOP_K)
        knn = KnnVectorQuery(
            COL_VECTOR,
            top_k=fetch,
            float32_query_vector=vector,
            filter=qb.combine(qb.scope_query(scope), push.query),
        )
        results = self._filtered(self._search_pages(knn, fetch), filters)
        results.sort(key=lambda r: r.score if r.score is not None else float("-inf"), reverse=True)
        results = results[:k]
        if isinstance(query, str):
            self._stash.put(filters_key(filters, scope), query, results)
        return results

    def keyword_search(self, query: str, top_k: int = 5, filters: Mapping | None = None):
        """BM25 keyword scores: from the preceding ``search``'s candidates (no RPC) or a MatchQuery."""
        k = max(1, int(top_k or 5))
        scope = self._scope()
        stashed = self._stash.take(filters_key(filters, scope), query) if isinstance(query, str) else None
        if stashed is not None:
            return bm25(query, stashed, k)
        if not isinstance(query, str) or not tokens(query):
            return []
        push = qb.build(filters)
        fetch = min(k if push.exact else max(k * 4, k + 50), MAX_TOP_K)
        flt = qb.combine(qb.scope_query(scope), push.query)
        match = MatchQuery(COL_DATA, query)
        full = BoolQuery(must_queries=[match], filter_queries=[flt]) if flt is not None else match
        results = self._filtered(self._search_pages(full, fetch), filters)
        if results and all(r.score is None for r in results):
            # Tablestore returns hit scores only for some query kinds: score the matches locally.
            return bm25(query, results, k)
        results.sort(key=lambda r: r.score or 0.0, reverse=True)
        return results[:k]


__all__ = ["TablestoreStore", "TablestoreUnavailableError"]
