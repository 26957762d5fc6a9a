"""``TablestoreStore``: the memory store on Alibaba Cloud Tablestore, on the ``tablestore`` SDK.

Layout (see ``schema``): primary key ``(user_id, memory_id)``, so one user's memories are one contiguous
range. Every decision is made on the table, which is strongly consistent; the search index, which lags
writes by seconds, only proposes candidates. Every call names the caller's scope (``scope=``; scope fails
closed) and the PK user comes from it; other scope keys (``agent_id``) are column conditions on
writes and column filters or checks on reads, so a row outside the scope behaves like a missing row.

RPCs per operation (nothing failing):

* ``insert`` = the dedup claims first (``dedup``): one conditional PutRow/BatchWriteRow, then PutRow
  (1 row) or BatchWriteRow (<= 200 rows a call) for the rows; a duplicate costs 2 BatchGetRow and writes
  no row; a claim whose writer died before its row (orphan) costs the same and gets that row written.
* ``get`` = GetRow; ``get_many`` = BatchGetRow per 100 ids; ``find_by_dedup_key`` = 2 GetRow.
* ``update`` = UpdateRow with a row condition (exists, in scope, ``updated_at`` unchanged), +1 PutRow
  when it claims a new dedup key; ``update_many`` = the same as BatchWriteRow per 200 rows or 3.5 MB.
* ``delete_many`` = per 200 ids, BatchGetRow per 100 (which exist, their dedup keys) + BatchWriteRow of
  the existing rows + BatchWriteRow releasing their keys (when any held one); exact under faults
  (``_write_exact``). Unknown ids cost the reads only.
* ``list_page`` = GetRange (limit + 1 rows); ``count`` = a keys-only GetRange scan (free right after a
  ``list_page`` that covered the whole range).
* ``search`` = 1 Search (KNN, primary keys only, so up to 1000 hits in one page: no paging tokens) +
  1 BatchGetRow that checks the best hits against the table: deleted rows dropped, current text
  returned. This process's own writes of the last seconds (``recent``) join the candidates, so a search
  right after an add finds it. ``keyword_search`` on the search's hits costs no RPC (``keyword``).

Every RPC goes through our own time-bounded retry (see ``retry``); the SDK's retry is disabled. Startup waits
until a new table and index can be used (see ``readiness``).
"""

from __future__ import annotations

import base64
import binascii
import builtins
import functools
import json
import logging
import threading
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

from tablestore import (
    INF_MAX,
    INF_MIN,
    BoolQuery,
    ColumnReturnType,
    ColumnsToGet,
    ComparatorType,
    CompositeColumnCondition,
    Condition,
    DeleteRowItem,
    KnnVectorQuery,
    LogicalOperator,
    MatchQuery,
    OTSServiceError,
    PutRowItem,
    Query,
    Row,
    RowExistenceExpectation,
    ScoreSort,
    SearchQuery,
    SingleColumnCondition,
    Sort,
    SortOrder,
    TableInBatchWriteRowItem,
    UpdateRowItem,
)

from tablestore_openmemory_mcp.errors import ConflictError, MemoryNotFound, StoreError, UserInputError
from tablestore_openmemory_mcp.memory.ports import State, StoredMemory
from tablestore_openmemory_mcp.memory.query_filters import MemoryQuery
from tablestore_openmemory_mcp.memory.store_port import KeywordHit, RowPage
from tablestore_openmemory_mcp.scope import Scope

from ..base import MemoryStore, OutputData, RowUpdate, Who, require_scope
from ..filters import matches, split_identity
from ..port import EVERYTHING
from ..tokenize import tokens
from . import batching
from . import query as qb
from .batch import GET_ROWS, WRITE_ROWS, Batches, PrimaryKey, RawRow, RowRejected, split_write_results
from .client import make_client
from .colfilter import range_filter
from .dedup import CONDITION_FAILED, Claims, DedupKeys, check_key
from .dedup_sweep import drop_if_stale, sweep
from .embedding_meta import EmbeddingMeta, read_meta, write_meta
from .index_reads import IndexReads
from .keyword import CandidateStash, bm25, filters_key
from .narrowed import NarrowedReads
from .narrowing import NARROWING_COLUMNS
from .readiness import Readiness, index_initialized
from .recent import WINDOW, RecentWrites
from .retry import PartiallyApplied, Retrier, TablestoreUnavailableError, is_retryable
from .rows import (
    MAX_ROW_BYTES,
    EncodedRow,
    attr_dict,
    batches,
    decode_payload,
    encode_rows,
    encode_vector,
    payload_columns,
)
from .schema import (
    ATTRIBUTE_COLUMNS,
    COL_DATA,
    COL_DEDUP,
    COL_PAYLOAD,
    COL_VECTOR,
    DEDUP_SUFFIX,
    KEYWORD_COLUMNS,
    KEYWORD_FIELDS,
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
from .switch_watch import OnSwitch, SwitchWatch
from .tables import already_exists, close_client, create_table, credentials_rejected, describe_primary_key, not_found
from .vectors import read_vectors

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Seconds a readiness probe retries at most.
PROBE_SECONDS = 2.0
#: KnnVectorQuery's documented top_k maximum, and Search's limit when only primary keys are returned.
MAX_TOP_K = 1000
_PK_ONLY = ColumnsToGet(return_type=ColumnReturnType.NONE)
_SCORE_DESC = Sort([ScoreSort(SortOrder.DESC)])
_ROW_COLUMNS = [COL_PAYLOAD]


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


def _encode_cursor(memory_id: str) -> str:
    return base64.urlsafe_b64encode(json.dumps({"v": 1, "next": memory_id}).encode()).decode()


def _decode_cursor(cursor: str) -> str:
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        memory_id = data["next"]
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise UserInputError("invalid cursor: pass back the cursor a previous page returned") from None
    if not isinstance(memory_id, str) or not memory_id:
        raise UserInputError("invalid cursor: pass back the cursor a previous page returned")
    return memory_id


def _in_scope(scope: Mapping[str, str], payload: Mapping[str, Any] | None) -> bool:
    """Whether a row's payload belongs to ``scope`` (every scope key equal)."""
    if not payload:
        return False
    return all(payload.get(key) == value for key, value in scope.items())


def _chunks(items: Sequence[T], size: int) -> Iterable[list[T]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


class TablestoreStore(MemoryStore):
    """Memories on one Tablestore table plus one search index (see the module docstring)."""

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
        max_retries: int | None = None,
        max_connection: int = 32,
        recent_window: float = WINDOW,
        embedder_name: str | None = None,
        max_retry_seconds: float | None = None,
        ready_timeout: float | None = None,
        also_create: Sequence[tuple[str, Sequence[tuple[str, str]]]] = (),
        **_ignored: Any,
    ) -> None:
        self.collection_name = validate_name("table", collection_name)
        self.index_name = validate_name("index", index_name or f"{collection_name}_search_index")
        self.embedding_model_dims = validate_dimension(embedding_model_dims)
        self.metric = normalize_metric(metric)
        self.client = make_client(
            endpoint=endpoint,
            instance_name=instance_name,
            access_key_id=access_key_id,
            access_key_secret=access_key_secret,
            sts_token=sts_token,
            region=region,
            timeout=timeout,
            max_connection=max_connection,
            logger_name=f"{__name__}.sdk",
        )
        assert endpoint is not None
        self.endpoint = endpoint.rstrip("/")
        self.instance_name = instance_name
        self._retry = Retrier(self.endpoint, max_seconds=max_retry_seconds, attempts=max_retries)
        self._batches = Batches(self.client, self._retry)
        self._dedup = DedupKeys(self.client, self.collection_name, self._retry, self._batches)
        self._recent = RecentWrites(window=recent_window)
        self.readiness = Readiness(self.endpoint, ready_timeout)
        self._stash = CandidateStash()
        self._local = threading.local()  # per thread: the count of the last whole-range list_page
        # the index's filterable fields, narrowed by _check_index when an older index lacks some
        self._indexed = KEYWORD_FIELDS | frozenset(NARROWING_COLUMNS)
        self.embedder_name = embedder_name  # recorded in the meta row; another one is refused (see reembed)
        self.vector_column = COL_VECTOR  # the meta row may name another (after a reembed)
        self._index_reads = IndexReads(self)  # totals, pages by time and counts from the index
        self._narrowed = NarrowedReads(self)  # the port's reads with a MemoryQuery pushed into the index
        self._switch = SwitchWatch(self)  # a reembed switch is picked up while running
        self._also_create = also_create  # the server's other tables (history logs): created with a new table
        self._ensure()

    # ------------------------------------------------------------------ plumbing

    def _call(self, api: str, fn: Callable[[], T]) -> T:
        """One SDK call under our retry policy."""
        return self._retry.call(api, fn)

    @staticmethod
    def _user(given: Who = None) -> tuple[dict[str, str], str]:
        """(the caller's scope, its user): ``given``, else the one ``scoped()`` opened; raises ScopeMissing
        without one (scope fails closed)."""
        scope = require_scope(given)
        user = scope["user_id"]
        if user.endswith(DEDUP_SUFFIX):
            raise UserInputError(f"a user id cannot end with {DEDUP_SUFFIX!r}")
        return scope, user

    @staticmethod
    def _scope_conditions(scope: Mapping[str, str]) -> builtins.list[SingleColumnCondition]:
        """Column conditions for the non-user scope keys (each has a column of its own)."""
        conds = []
        for key, value in scope.items():
            if key == "user_id":
                continue
            if key not in KEYWORD_COLUMNS:
                raise UserInputError(f"scope key {key!r} is not stored as a column; scope by user_id/agent_id/run_id")
            conds.append(SingleColumnCondition(key, value, ComparatorType.EQUAL, pass_if_missing=False))
        return conds

    @staticmethod
    def _condition(expectation: str, conds: Sequence[SingleColumnCondition]) -> Condition:
        if not conds:
            return Condition(expectation)
        if len(conds) == 1:
            return Condition(expectation, conds[0])
        both = CompositeColumnCondition(LogicalOperator.AND)
        for c in conds:
            both.add_sub_condition(c)
        return Condition(expectation, both)

    @staticmethod
    def _pk(user: str, memory_id: Any) -> PrimaryKey:
        return [(PK_USER, user), (PK_ID, memory_id)]

    def _score(self, raw: float | None) -> float | None:
        """The index's score as cosine similarity in [-1, 1] (stored vectors are unit vectors).

        Tablestore scores cosine and dot product as (1 + s) / 2 and euclidean as 1 / (1 + d^2).
        """
        if raw is None:
            return None
        if self.metric == "euclidean":
            d2 = (1.0 / raw - 1.0) if raw > 0 else 4.0
            similarity = 1.0 - d2 / 2.0
        else:
            similarity = 2.0 * raw - 1.0
        return max(-1.0, min(1.0, similarity))

    # ------------------------------------------------------------------ startup / collections

    def _ensure(self) -> None:
        """Create what is missing, then wait until it can be used (``readiness``); 3 RPCs when the table and
        index exist and are ready (table, meta row, index).

        A new table gets its index and ``also_create``'s tables before anything is waited for, so one wait covers
        them all: each new table or index takes seconds (up to a minute) on the service, one after another
        they add up (the search-index quick start also creates the index right after the table)."""
        self.readiness.begin()
        have = describe_primary_key(self.client, self._retry, self.collection_name, self._table_error)
        created_index = None
        if have is None:
            self._create_table()
            for name, key in self._also_create:
                create_table(self.client, self._retry, name, key, self._table_error)
            created_index = self.index_name  # a new table has no meta row naming another index
            self._create_index()
        else:
            check_primary_key(self.collection_name, have)
        self._also_create = ()
        # the first read of a new table (ours, or another replica's) waits until the table is usable
        what = f"table {self.collection_name}"
        meta = self.readiness.call(what, "GetRow", lambda: read_meta(self.client, self.collection_name))
        if meta is None:
            self._record_embedder()
        else:
            self._follow(meta)
        if created_index == self.index_name:
            initialized = False  # just created (or checked, when another replica won the race): wait below
        else:
            try:
                meta, sync = self._call(
                    "DescribeSearchIndex",
                    lambda: self.client.describe_search_index(self.collection_name, self.index_name, True),
                )
            except OTSServiceError as exc:
                if not not_found(exc):
                    raise self._friendly(exc) from exc
                self._create_index()
                initialized = False
            else:
                self._check_index(meta)
                initialized = index_initialized(sync)
        if not initialized and not self.readiness.index(self.client, self.collection_name, self.index_name)[1]:
            self._recent.hold()  # searches miss what this process writes until the index has initialized

    def _record_embedder(self) -> None:
        """Record which embedder fills this table (a table without the meta row: new, or made before it)."""
        if self.embedder_name is None:
            return
        meta = EmbeddingMeta(self.embedder_name, self.embedding_model_dims, self.index_name, self.vector_column)
        self._call("PutRow", lambda: write_meta(self.client, self.collection_name, meta, only_if_missing=True))

    def _follow(self, meta: EmbeddingMeta) -> None:
        """Use the index and vector column the meta row names; refuse another embedder in one line."""
        self.index_name = validate_name("index", meta.index_name or self.index_name)
        self.vector_column = validate_name("column", meta.vector_column)
        wanted = (self.embedder_name, self.embedding_model_dims)
        if self.embedder_name is not None and meta.embedder is not None and (meta.embedder, meta.dimension) != wanted:
            raise ValueError(
                f"Tablestore table {self.collection_name} was embedded with {meta.embedder} ({meta.dimension} "
                f"dimensions) but this server would use {self.embedder_name} ({self.embedding_model_dims}); "
                "run `tablestore-openmemory-mcp reembed` with the new settings to rebuild its vectors, or set "
                "EMBEDDER_MODEL / TABLESTORE_VECTOR_DIMENSION back"
            )

    def _check_index(self, meta: Any) -> None:
        lacking = check_index(self.index_name, meta, self.embedding_model_dims, self.metric, self.vector_column)
        self._indexed = (KEYWORD_FIELDS | frozenset(NARROWING_COLUMNS)) - frozenset(lacking)
        if lacking:
            logger.warning(
                "Tablestore index %s lacks fields %s; filters on them run as post-filters",
                self.index_name,
                lacking,
            )

    def _friendly(self, exc: OTSServiceError) -> Exception:
        """A credentials error names the endpoint and instance; any other error stays the SDK's own."""
        rejected = credentials_rejected(exc, f"{self.endpoint} (instance {self.instance_name})")
        return rejected if rejected is not None else cast(Exception, exc)

    def _table_error(self, api: str, exc: OTSServiceError) -> Exception:
        """The error hook of the shared table bootstrap (``tables``): :meth:`_friendly`, whatever the API."""
        return self._friendly(exc)

    def _create_table(self) -> None:
        logger.info("Creating Tablestore table %s", self.collection_name)
        create_table(self.client, self._retry, self.collection_name, PRIMARY_KEY, self._table_error)

    def _create_index(self) -> None:
        logger.info("Creating Tablestore search index %s on %s", self.index_name, self.collection_name)
        try:
            self._call(
                "CreateSearchIndex",
                lambda: self.client.create_search_index(
                    self.collection_name,
                    self.index_name,
                    index_meta(self.embedding_model_dims, self.metric, self.vector_column),
                ),
            )
        except OTSServiceError as exc:
            if not already_exists(exc):
                raise self._friendly(exc) from exc
            meta, _ = self._call(
                "DescribeSearchIndex",
                lambda: self.client.describe_search_index(self.collection_name, self.index_name, False),
            )
            self._check_index(meta)

    def close(self) -> None:
        """Release pooled connections."""
        close_client(self.client)

    def probe(self) -> None:
        """One GetRow outside every user's range, retried for at most 2 s: a readiness probe (``/ready``) must
        answer within seconds, not after the full retry budget of an operation."""
        seconds = min(PROBE_SECONDS, self._retry.max_seconds)
        quick = Retrier(self.endpoint, max_seconds=seconds, note=f"a readiness probe retries {seconds:g} s")
        key = [(PK_USER, "#ready"), (PK_ID, "probe")]
        quick.call("GetRow", lambda: self.client.get_row(self.collection_name, key, [COL_PAYLOAD], None, 1))

    # ------------------------------------------------------------------ writes

    def insert(
        self,
        vectors: Sequence[Sequence[float]],
        payloads: Sequence[Mapping[str, Any]],
        ids: Sequence[str],
        dedup_keys: Sequence[str | None] | None = None,
        *,
        scope: Who = None,
    ) -> builtins.list[str]:
        """Claim the rows' dedup keys, then write the rows; return per row the id that now holds it.

        A row whose key a live memory holds is not written; that memory's id is returned. A row whose key an
        orphan claim holds (its writer died between the claim and the row, or is there right now) is written
        under the claim's id, only if that row is still missing, and the claim's id is returned. If anything
        fails, the rows and then the claims this call made are removed before the error is raised (a row
        written for an orphan claim stays: it is that claim's memory, possibly rewritten by its own writer).
        """
        scope, user = self._user(scope)
        self._switch.check()
        self._local.count = None
        ids = [str(i) for i in ids]
        keys = list(dedup_keys) if dedup_keys is not None else [None] * len(ids)
        if len(keys) != len(ids):
            raise ValueError(f"insert got {len(ids)} ids but {len(keys)} dedup keys")
        for i, payload in enumerate(payloads):
            if not _in_scope(scope, payload):
                raise ValueError(f"memory {i} ({ids[i] if i < len(ids) else '?'}) is outside the caller's scope")
        rows = encode_rows(ids, list(vectors), list(payloads), self.embedding_model_dims, self.vector_column)
        first_of: dict[str, EncodedRow] = {}  # dedup key -> the first row of this call carrying it
        plain: builtins.list[EncodedRow] = []
        for row, key in zip(rows, keys, strict=True):
            if key is None:
                plain.append(row)
            elif check_key(key) not in first_of:
                first_of[key] = row
        if not plain and not first_of:
            return []
        wanted = {k: r.memory_id for k, r in first_of.items()}
        try:
            claims = self._dedup.claim(user, wanted) if wanted else Claims({}, frozenset())
        except BaseException:
            self._release(user, wanted)
            raise
        holders = claims.holders
        own = [*plain, *(self._keyed(r, k) for k, r in first_of.items() if holders[k] == r.memory_id)]
        orphan_keys = sorted(claims.orphans)
        orphans = [self._keyed(first_of[k], k, holders[k]) for k in orphan_keys]
        try:
            self._put_rows([*own, *orphans], frozenset(holders[k] for k in orphan_keys))
        except BaseException:
            # rows first: a claim left behind is an orphan (completed by a re-add); a row left behind keeps its claim
            if self._remove(own):
                self._release(user, {k: r.memory_id for k, r in first_of.items() if holders[k] == r.memory_id})
            raise
        vec_of = dict(zip(ids, vectors, strict=True))
        noted = [(r.memory_id, vec_of[r.memory_id]) for r in own]
        noted += [(holders[k], vec_of[first_of[k].memory_id]) for k in orphan_keys]
        self._recent.note(user, [m for m, _ in noted], [v for _, v in noted])
        del scope
        return [holders[k] if k is not None else mid for mid, k in zip(ids, keys, strict=True)]

    @staticmethod
    def _keyed(row: EncodedRow, key: str, memory_id: str | None = None) -> EncodedRow:
        """``row`` holding ``key`` (COL_DEDUP), optionally under another id (an orphan claim's)."""
        mid = memory_id or row.memory_id
        size = row.size + len(key) + len(mid) - len(row.memory_id)
        return EncodedRow(row.user, mid, [*row.columns, (COL_DEDUP, key)], size)

    def _release(self, user: str, claims: Mapping[str, str]) -> None:
        """Release claims (best effort, logged: a claim left behind is an orphan, completed by the next add)."""
        try:
            self._dedup.release(user, dict(claims))
        except Exception:
            logger.exception("Could not release %d dedup claim(s) of a failed write", len(claims))

    def _put_rows(self, rows: Sequence[EncodedRow], if_missing: frozenset[str] = frozenset()) -> None:
        """PutRow (one row) or BatchWriteRow; repeating a put is harmless, so every call is retried.

        Rows whose id is in ``if_missing`` are written only where no row exists yet (EXPECT_NOT_EXIST;
        "already there" is success): completing an orphan claim never clobbers its own writer's row.
        """
        ignore = Condition(RowExistenceExpectation.IGNORE)
        absent = Condition(RowExistenceExpectation.EXPECT_NOT_EXIST)
        if not rows:
            return
        if len(rows) == 1:
            row = rows[0]
            condition = absent if row.memory_id in if_missing else ignore
            try:
                self._call(
                    "PutRow",
                    lambda: self.client.put_row(self.collection_name, Row(row.primary_key, row.columns), condition),
                )
            except OTSServiceError as exc:
                if exc.code != CONDITION_FAILED or row.memory_id not in if_missing:
                    raise
            return
        for chunk in batches(rows, WRITE_ROWS):
            items = [
                PutRowItem(Row(r.primary_key, r.columns), absent if r.memory_id in if_missing else ignore)
                for r in chunk
            ]
            by_item = {id(item): r.memory_id for item, r in zip(items, chunk, strict=True)}
            rejected, pending = self._batches.write(self.collection_name, items, [])
            rejected = [
                (item, code, message)
                for item, code, message in rejected
                if code != CONDITION_FAILED or by_item[id(item)] not in if_missing
            ]
            if rejected or pending:
                raise self._batch_error("insert", rejected, pending)

    def _batch_error(
        self, what: str, rejected: builtins.list[tuple[Any, str, str]], pending: builtins.list[Any]
    ) -> Exception:
        if rejected:
            _, code, message = rejected[0]
            return RowRejected("BatchWriteRow", code, f"{message} ({len(rejected)} row(s) during {what})")
        return TablestoreUnavailableError(
            f"Tablestore is busy: {len(pending)} row(s) of a BatchWriteRow during {what} on {self.endpoint} kept "
            f"failing for {self._retry.max_seconds:g} s (TABLESTORE_MAX_RETRY_SECONDS); nothing was kept"
        )

    def _remove(self, rows: Sequence[EncodedRow]) -> bool:
        """Delete rows this call wrote (undo); False (logged) when that failed: the caller raises its own error."""
        ignore = Condition(RowExistenceExpectation.IGNORE)
        try:
            for chunk in _chunks(list(rows), WRITE_ROWS):
                items = [DeleteRowItem(Row(r.primary_key), ignore) for r in chunk]
                rejected, pending = self._batches.write(self.collection_name, items, [])
                if rejected or pending:
                    raise self._batch_error("undo", rejected, pending)
        except Exception:
            logger.exception("Could not remove %d row(s) written by a failed insert", len(rows))
            return False
        return True

    def update(
        self,
        vector_id: str,
        vector: Sequence[float] | None = None,
        payload: Mapping[str, Any] | None = None,
        *,
        expected_updated_at: str | None = None,
        dedup_key: str | None = None,
        scope: Who = None,
    ) -> None:
        """One UpdateRow conditioned on: the row exists, is in scope, and (if given) has ``updated_at``.

        A new ``dedup_key`` is claimed first (a claim naming an existing row that does not hold the key is
        stale, and the claim of a row found missing is released, so a failed update blocks nobody); when a
        live memory or an orphan claim holds it, the row keeps no key. ``dedup_key=""`` drops the row's key
        (its text can then be added again).
        Missing or outside the scope -> MemoryNotFound; another writer's change -> ConflictError. A retry
        whose first attempt landed unseen is recognised (the row already is what we wrote): success.
        """
        scope, user = self._user(scope)
        if vector is not None:
            self._switch.check()
        self._local.count = None
        change = RowUpdate(str(vector_id), vector, payload, expected_updated_at, dedup_key)
        holders = self._claim_for([change], user)
        put, clear, condition = self._plan(scope, change, holders)
        memory_id = change.id
        if not put and not clear:
            if self.get(memory_id, scope=scope) is None:
                raise MemoryNotFound(f"Memory with id {memory_id} not found")
            return
        columns: dict[str, builtins.list[Any]] = {"PUT": put} if put else {}
        if clear:
            columns["DELETE_ALL"] = clear
        row = Row(self._pk(user, memory_id), columns)
        try:
            self._call("UpdateRow", lambda: self.client.update_row(self.collection_name, row, condition))
        except OTSServiceError as exc:
            if exc.code != CONDITION_FAILED:
                raise
            if memory_id not in self._applied(user, {memory_id: (put, clear)}):
                if self.get(memory_id, scope=scope) is None:
                    self._release_missing(user, holders, [memory_id])
                    raise MemoryNotFound(f"Memory with id {memory_id} not found") from None
                raise ConflictError(f"memory {memory_id} was changed by another writer; read it again") from None
        self._stash.forget({memory_id})
        self._recent.note(user, [memory_id], [vector])

    def update_many(self, changes: Sequence[RowUpdate], *, scope: Who = None) -> builtins.list[str]:
        """Several conditional updates in BatchWriteRow calls (<= 200 rows, < 4 MB); return the ids updated.

        Each change is applied only if its row exists, is in scope and (if given) still has
        ``expected_updated_at``; the others are left out of the answer (nothing raised). Exact under
        faults like :meth:`delete_many`: a lost answer is settled by re-reading the rows.
        """
        scope, user = self._user(scope)
        if any(c.vector is not None for c in changes):
            self._switch.check()
        self._local.count = None
        by_id = {c.id: c for c in changes}
        if len(by_id) != len(changes):
            raise ValueError("update_many got the same id twice")
        holders = self._claim_for(list(changes), user)
        plans = {c.id: self._plan(scope, c, holders) for c in changes}
        effects = {mid: (put, clear) for mid, (put, clear, _) in plans.items()}
        updated: builtins.list[str] = []

        def item_for(mid: str) -> Any:
            put, clear, condition = plans[mid]
            columns: dict[str, builtins.list[Any]] = {"PUT": put} if put else {}
            if clear:
                columns["DELETE_ALL"] = clear
            return UpdateRowItem(Row(self._pk(user, mid), columns), condition)

        try:  # <= 200 rows and < 4 MB a request: rows of long memories are large (200 of 16k characters: 6 MB)
            for chunk in batching.chunks([c.id for c in changes], lambda mid: batching.item_bytes(item_for(mid))):
                updated += self._write_exact(
                    chunk, item_for, lambda pending: self._applied(user, {m: effects[m] for m in pending})
                )
        except PartiallyApplied as exc:  # earlier chunks landed: say which, so the caller records them
            done = [*updated, *exc.applied]
            self._stash.forget(set(done))
            self._recent.note(user, done, [by_id[m].vector for m in done])
            raise PartiallyApplied(str(exc), done) from exc
        claimed_for = {mid for mid in holders.values() if mid in by_id and mid not in updated}
        if claimed_for:  # a key claimed for a row that is missing must not stay behind as an orphan claim
            check = sorted(claimed_for)
            rows = self._batches.get(self.collection_name, [self._pk(user, m) for m in check], _ROW_COLUMNS)
            self._release_missing(user, holders, [m for m, raw in zip(check, rows, strict=True) if raw is None])
        if updated:
            self._stash.forget(set(updated))
            self._recent.note(user, updated, [by_id[m].vector for m in updated])
        return updated

    def _claim_for(self, changes: Sequence[RowUpdate], user: str) -> dict[str, str]:
        """Claim the new dedup keys of ``changes`` (one batched claim); key -> the id holding it."""
        wanted: dict[str, str] = {}
        for change in changes:
            if change.dedup_key:
                wanted.setdefault(check_key(change.dedup_key), change.id)
        return self._dedup.claim(user, wanted).holders if wanted else {}

    def _release_missing(self, user: str, holders: Mapping[str, str], ids: Iterable[str]) -> None:
        """Release the keys claimed for rows of ``ids`` that turned out not to exist (no orphan claim stays)."""
        missing = set(ids)
        claims = {k: mid for k, mid in holders.items() if mid in missing}
        if claims:
            self._release(user, claims)

    def _plan(
        self, scope: Mapping[str, str], change: RowUpdate, holders: Mapping[str, str]
    ) -> tuple[builtins.list[tuple[str, str]], builtins.list[str], Condition]:
        """(columns to put, columns to clear, row condition) for one update."""
        put: builtins.list[tuple[str, str]] = []
        clear: builtins.list[str] = []
        if change.payload is not None:
            if not _in_scope(scope, change.payload):
                raise ValueError("the updated payload is outside the caller's scope")
            put = payload_columns(change.payload)
            have = {name for name, _ in put}
            clear = [c for c in ATTRIBUTE_COLUMNS if c != self.vector_column and c not in have]
        if change.vector is not None:
            put.append((self.vector_column, encode_vector(change.vector, self.embedding_model_dims)))
        if sum(len(v.encode("utf-8")) for _, v in put) > MAX_ROW_BYTES:
            raise UserInputError(f"memory row is above the {MAX_ROW_BYTES // 1024} KiB limit")
        if change.dedup_key == "":  # the row gives up its key (e.g. no longer active): its claim turns stale
            clear.append(COL_DEDUP)
        elif change.dedup_key is not None:
            if holders.get(change.dedup_key) == change.id:
                put.append((COL_DEDUP, change.dedup_key))
            else:  # a live memory holds this text: this row keeps no key
                clear.append(COL_DEDUP)
        conds = self._scope_conditions(scope)
        if change.expected_updated_at is not None:
            conds.append(SingleColumnCondition("updated_at", change.expected_updated_at, ComparatorType.EQUAL, False))
        return put, clear, self._condition(RowExistenceExpectation.EXPECT_EXIST, conds)

    def _applied(self, user: str, effects: Mapping[str, tuple[Sequence[tuple[str, str]], Sequence[str]]]) -> set[str]:
        """Ids whose row already holds exactly the columns an update puts, and none it clears."""
        ids = list(effects)
        # the payload column too: a row is returned only with at least one of the columns asked for
        columns = sorted({COL_PAYLOAD, *(c for put, clear in effects.values() for c in [*(n for n, _ in put), *clear])})
        rows = self._batches.get(self.collection_name, [self._pk(user, i) for i in ids], columns)
        done: set[str] = set()
        for mid, raw in zip(ids, rows, strict=True):
            if raw is None:
                continue
            attrs = attr_dict(raw[1])
            put, clear = effects[mid]
            if all(attrs.get(n) == v for n, v in put) and not any(c in attrs for c in clear):
                done.add(mid)
        return done

    def delete_many(self, ids: Iterable[str], *, scope: Who = None) -> builtins.list[str]:
        """Delete rows in scope; return exactly the ids this call deleted, and release their dedup keys.

        Per 200 ids: BatchGetRow (<= 100 rows a call) of the rows' keys, one BatchWriteRow deleting the rows
        that exist, and one releasing the keys they held (only when some did). Each row is deleted with
        EXPECT_EXIST + the scope condition, so the answer says which existed. When a call fails in a way
        that may have applied it (timeout, dropped connection, 5xx), the ids still pending are re-read
        before the retry: those gone were deleted by the lost attempt. Keys are released after their rows
        (conditioned on still naming them), so a claim never outlives its row except when this process dies
        in between (an orphan claim: the next add of that text stores it under the deleted id, once).
        """
        scope, user = self._user(scope)
        self._local.count = None
        wanted = [i for i in dict.fromkeys(str(i) for i in ids) if i and len(i.encode("utf-8")) <= 1000]
        condition = self._condition(RowExistenceExpectation.EXPECT_EXIST, self._scope_conditions(scope))
        deleted: builtins.list[str] = []
        for chunk in _chunks(wanted, WRITE_ROWS):
            pks = [self._pk(user, i) for i in chunk]
            rows = self._batches.get(self.collection_name, pks, [COL_DEDUP, COL_PAYLOAD])
            key_of = {i: attr_dict(raw[1]).get(COL_DEDUP) for i, raw in zip(chunk, rows, strict=True) if raw}
            gone = self._delete_chunk(user, [i for i in chunk if i in key_of], condition)
            deleted += gone
            self._release(user, {k: i for i in gone if isinstance(k := key_of[i], str) and k})
        if deleted:
            self._recent.forget(user, deleted)
            self._stash.forget(set(deleted))
        return deleted

    def _delete_chunk(self, user: str, ids: builtins.list[str], condition: Condition) -> builtins.list[str]:
        def gone(pending: builtins.list[str]) -> set[str]:
            rows = self._batches.get(self.collection_name, [self._pk(user, i) for i in pending], _ROW_COLUMNS)
            return {i for i, raw in zip(pending, rows, strict=True) if raw is None}

        if not ids:
            return []
        return self._write_exact(ids, lambda i: DeleteRowItem(Row(self._pk(user, i)), condition), gone)

    def _write_exact(
        self,
        ids: builtins.list[str],
        item_for: Callable[[str], Any],
        landed: Callable[[builtins.list[str]], set[str]],
    ) -> builtins.list[str]:
        """One BatchWriteRow of conditional items (<= 200); return the ids this call changed, exactly.

        A failed row condition means "not changed" (missing, outside the scope, or changed by another
        writer). A call that failed in a way that may have applied it (timeout, dropped connection,
        5xx) is not blindly re-sent: ``landed(pending)`` re-reads which of them already took effect.
        """
        pending = list(ids)
        changed: builtins.list[str] = []
        uncertain = False
        last: BaseException | None = None
        plan = self._retry.schedule()
        while True:
            if uncertain:  # the last call may have applied without telling us: re-read what is left
                done = landed(pending)
                changed += [i for i in pending if i in done]
                pending = [i for i in pending if i not in done]
                uncertain = False
            if not pending:
                break
            items = [item_for(i) for i in pending]
            by_item = {id(item): mid for item, mid in zip(items, pending, strict=True)}
            try:
                response = self.client.batch_write_row(self._write_request(items))
            except Exception as exc:
                if not is_retryable(exc):
                    raise
                last, uncertain = exc, True
                if not plan.backoff(exc):
                    done = landed(pending)  # settle the last attempt before reporting
                    changed += [i for i in pending if i in done]
                    pending = [i for i in pending if i not in done]
                    break
                continue
            again, ok, refused = split_write_results(response, self.collection_name, items)
            changed += [by_item[id(item)] for item in ok]
            for _, code, message in refused:
                if code != CONDITION_FAILED:
                    raise RowRejected("BatchWriteRow", code, message)
            pending = [by_item[id(item)] for item in again]
            if pending and not plan.backoff("OTSServerBusy"):
                break
        if pending:
            cause = last or StoreError(f"{len(pending)} row(s) kept failing")
            raise PartiallyApplied(str(self._retry.exhausted("BatchWriteRow", cause, plan)), changed) from last
        return changed

    def _write_request(self, items: builtins.list[Any]) -> Any:
        from tablestore import BatchWriteRowRequest

        request = BatchWriteRowRequest()
        request.add(TableInBatchWriteRowItem(self.collection_name, items))
        return request

    # ------------------------------------------------------------------ reads by id

    @staticmethod
    def _output(scope: Mapping[str, str], raw: RawRow | None, score: float | None = None) -> OutputData | None:
        """A row as OutputData when it exists and is in ``scope``."""
        if raw is None:
            return None
        memory_id, payload = decode_payload(*raw)
        if not _in_scope(scope, payload):
            return None
        return OutputData(id=memory_id, score=score, payload=payload)

    def get(self, vector_id: str, *, scope: Who = None) -> OutputData | None:
        """One GetRow in the caller's partition; None when missing or outside the scope."""
        scope, user = self._user(scope)
        memory_id = str(vector_id)
        if not memory_id or len(memory_id.encode("utf-8")) > 1000:
            return None
        _, row, _ = self._call(
            "GetRow",
            lambda: self.client.get_row(
                self.collection_name, self._pk(user, memory_id), columns_to_get=_ROW_COLUMNS, max_version=1
            ),
        )
        if row is None or not row.primary_key:
            return None
        return self._output(scope, (row.primary_key, row.attribute_columns))

    def get_many(self, ids: Sequence[str], *, scope: Who = None) -> dict[str, OutputData]:
        """Rows by id in scope (missing ones absent); one BatchGetRow per 100 ids."""
        scope, user = self._user(scope)
        wanted = [i for i in dict.fromkeys(str(i) for i in ids) if i and len(i.encode("utf-8")) <= 1000]
        rows = self._batches.get(self.collection_name, [self._pk(user, i) for i in wanted], _ROW_COLUMNS)
        out: dict[str, OutputData] = {}
        for raw in rows:
            found = self._output(scope, raw)
            if found is not None:
                out[found.id] = found
        return out

    def find_by_dedup_key(self, key: str, *, scope: Who = None) -> OutputData | None:
        """The live row in scope holding ``key``: the dedup row's target, verified (2 GetRow)."""
        scope, user = self._user(scope)
        target = self._dedup.lookup(user, check_key(key))
        if target is None:
            return None
        _, row, _ = self._call(
            "GetRow",
            lambda: self.client.get_row(
                self.collection_name, self._pk(user, target), columns_to_get=[COL_PAYLOAD, COL_DEDUP], max_version=1
            ),
        )
        if row is None or not row.primary_key:
            return None  # an orphan claim (its writer died, or is between its writes): the add completes it
        if attr_dict(row.attribute_columns).get(COL_DEDUP) != key:
            self._drop_stale(user, key, target)  # the memory no longer has this text
            return None
        return self._output(scope, (row.primary_key, row.attribute_columns))

    def _drop_stale(self, user: str, key: str, target: str) -> None:
        """Remove a stale claim found on the way (``dedup_sweep``); best effort: a failure only leaves it."""
        try:
            drop_if_stale(self, user, key, target)
        except Exception:
            logger.warning("could not remove a stale dedup row; the next sweep will", exc_info=True)

    def follow_switches(self, on_switch: OnSwitch, fresh: Callable[[], bool] | None = None) -> None:
        """Let a running server adopt a ``reembed`` switch (``switch_watch``): ``on_switch(meta)`` makes its
        embedder the one the meta row names (True when done); ``fresh()`` fences vectors embedded before."""
        self._switch.on_switch = on_switch
        self._switch.fresh = fresh

    def sweep_dedup(self, *, scope: Who = None) -> int:
        """Remove the scope user's stale dedup rows (maintenance; see ``dedup_sweep``); returns how many."""
        _, user = self._user(scope)
        return sweep(self, user)

    # ------------------------------------------------------------------ scans

    def count(self, filters: Mapping[str, Any] | None = None, *, scope: Who = None) -> int:
        """How many rows in scope match ``filters``; strongly consistent.

        Right after a ``list_page`` (same thread, scope and filters) that read the whole range, its
        count (no RPC). Identity-only filters scan primary keys only; other filters read payloads.
        """
        scope = require_scope(scope)
        key = self._memo_key(filters, scope)
        memo = getattr(self._local, "count", None)
        self._local.count = None
        if memo is not None and memo[0] == key:
            return int(memo[1])
        user = self._range_user(filters, scope)
        if user is None:
            return 0
        rf = range_filter(scope, filters)
        if not rf.exact:
            return len(self._scan(filters, scope))
        total = 0
        start: Any = INF_MIN
        while start is not None:  # primary keys and the filtered columns only
            rows, start = self._get_range(user, start, None, rf.condition, [PK_ID, *rf.checks])
            total += sum(matches(rf.checks, attr_dict(_row_parts(row)[1])) for row in rows)
        return total

    @staticmethod
    def _memo_key(filters: Mapping[str, Any] | None, scope: Mapping[str, str]) -> str:
        return filters_key(filters, scope)

    def _range_user(self, filters: Mapping[str, Any] | None, scope: Mapping[str, str]) -> str | None:
        """The user whose range to scan; None when the filters name another user (nothing matches)."""
        _, user = self._user(scope)
        identity, _ = split_identity(dict(filters or {}))
        wanted = identity.get("user_id")
        return None if wanted is not None and wanted != user else user

    def _get_range(
        self, user: str, start_id: Any, limit: int | None, column_filter: Any, columns: Sequence[str] = _ROW_COLUMNS
    ) -> tuple[builtins.list[Any], Any]:
        start = self._pk(user, start_id)
        end = self._pk(user, INF_MAX)
        _, next_pk, rows, _ = self._call(
            "GetRange",
            lambda: self.client.get_range(
                self.collection_name, "FORWARD", start, end, list(columns), limit, column_filter, max_version=1
            ),
        )
        next_id = dict((c[0], c[1]) for c in next_pk).get(PK_ID) if next_pk else None
        return list(rows or []), next_id

    def _scan(self, filters: Mapping[str, Any] | None, scope: Mapping[str, str]) -> builtins.list[OutputData]:
        user = self._range_user(filters, scope)
        if user is None:
            return []
        out: builtins.list[OutputData] = []
        start: Any = INF_MIN
        rf = range_filter(scope, filters)
        while start is not None:  # the filter's columns are read too, or the service filters every row out
            rows, start = self._get_range(user, start, None, rf.condition, [*_ROW_COLUMNS, *rf.columns])
            for row in rows:
                found = self._output(scope, _row_parts(row))
                if found is not None and (not filters or matches(dict(filters), found.payload)):
                    out.append(found)
        out.sort(key=_created_key)
        return out

    def list_page(
        self, filters: Mapping[str, Any] | None, limit: int, cursor: str | None = None, *, scope: Who = None
    ) -> tuple[builtins.list[OutputData], str | None]:
        """Up to ``limit`` rows in primary-key order from ``cursor``, and the cursor of the next page.

        The cursor is the id the next page starts at, so rows added or deleted between pages never make
        another row repeat or vanish. GetRange pages of limit + 1 rows: usually one RPC per page.
        """
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise UserInputError("limit must be a positive integer")
        self._local.count = None
        scope = require_scope(scope)
        user = self._range_user(filters, scope)
        start: Any = _decode_cursor(cursor) if cursor else INF_MIN
        if user is None:
            return [], None
        rf = range_filter(scope, filters)
        columns = [*_ROW_COLUMNS, *rf.columns]  # the filter's columns too, or the service filters every row out
        page: builtins.list[OutputData] = []
        while start is not None:
            rows, start = self._get_range(user, start, limit - len(page) + 1, rf.condition, columns)
            for row in rows:
                found = self._output(scope, _row_parts(row))
                if found is None or (filters and not matches(dict(filters), found.payload)):
                    continue
                if len(page) == limit:
                    return page, _encode_cursor(found.id)
                page.append(found)
        if cursor is None:  # the whole range: a count right after this needs no scan of its own
            self._local.count = (self._memo_key(filters, scope), len(page))
        return page, None

    # ------------------------------------------------------------------ search

    def _index_settled(self) -> None:
        """While the index is still initializing (startup stopped waiting), ask at most every few seconds
        whether it is done; then this process's writes expire from ``recent`` as usual."""
        if not self._recent.held() or not self._recent.recheck_due():
            return
        try:
            _, sync = self._call(
                "DescribeSearchIndex",
                lambda: self.client.describe_search_index(self.collection_name, self.index_name, True),
            )
        except Exception:  # the search itself reports a real outage
            logger.debug("index state check failed", exc_info=True)
            return
        if index_initialized(sync):
            logger.info("Tablestore search index %s has initialized", self.index_name)
            self._recent.release()

    def _search_hits(
        self, query: Query, want: int, sort: Sort | None = _SCORE_DESC
    ) -> builtins.list[tuple[str, float | None]]:
        """Up to ``want`` (id, raw score) pairs, primary keys only: one Search RPC for up to 1000 hits.

        Later pages (only past 1000) repeat the query and its sort with the token, as Tablestore requires.
        """
        pairs: builtins.list[tuple[str, float | None]] = []
        token: bytes | None = None
        while len(pairs) < want:
            limit = min(MAX_TOP_K, want - len(pairs))
            search_query = SearchQuery(query, sort=sort, limit=limit, next_token=token, get_total_count=False)
            response = self._call(
                "Search",
                functools.partial(self.client.search, self.collection_name, self.index_name, search_query, _PK_ONLY),
            )
            hits = response.search_hits or []
            page = [(h.row, h.score) for h in hits] if hits else [(r, None) for r in response.rows or []]
            for row, score in page:
                memory_id = str(attr_dict(_row_parts(row)[0]).get(PK_ID, ""))
                if memory_id:
                    pairs.append((memory_id, score))
            token = response.next_token or None
            if not token or not page:
                break
        return pairs[:want]

    def _verified(
        self,
        scope: Mapping[str, str],
        ranked: Sequence[tuple[str, float | None]],
        k: int,
        filters: Mapping[str, Any] | None,
    ) -> builtins.list[OutputData]:
        """The first ``k`` candidates (in order) that exist, are in scope and match ``filters``.

        Candidates are read back from the table 100 at a time (BatchGetRow), so a deleted row never
        comes back and an updated one comes back with its current text.
        """
        _, user = self._user(scope)
        out: builtins.list[OutputData] = []
        pending = list(ranked)
        while pending:
            # First just what is needed plus a margin (most hits are live), then 100 at a time.
            size = (
                min(GET_ROWS, (k - len(out)) + max(2, k // 4)) if not out and len(pending) == len(ranked) else GET_ROWS
            )
            chunk, pending = pending[:size], pending[size:]
            rows = self._batches.get(self.collection_name, [self._pk(user, mid) for mid, _ in chunk], _ROW_COLUMNS)
            for (_, score), raw in zip(chunk, rows, strict=True):
                found = self._output(scope, raw, score)
                if found is not None and (not filters or matches(dict(filters), found.payload)):
                    out.append(found)
                    if len(out) == k:
                        return out
        return out

    def search(
        self,
        query: str,
        vectors: Sequence[float],
        top_k: int = 5,
        filters: Mapping[str, Any] | None = None,
        *,
        scope: Who = None,
    ) -> builtins.list[OutputData]:
        """KNN: 1 Search (scope and filters pushed down) + 1 BatchGetRow checking the hits."""
        scope, user = self._user(scope)
        self._index_settled()
        self._switch.check()  # a reembed switch is followed, or refused in one line (switch_watch)
        k = min(5 if top_k is None else int(top_k), MAX_TOP_K)  # KNN's top_k limit; more is never useful
        if k < 1:
            raise UserInputError("top_k must be at least 1")
        vector = [float(x) for x in vectors]
        if len(vector) != self.embedding_model_dims:
            raise ValueError(
                f"query vector has {len(vector)} dimensions, the index expects {self.embedding_model_dims}"
            )
        push = qb.build(filters, self._indexed)
        fetch = min(k if push.exact else max(k * 4, k + 50), MAX_TOP_K)
        knn = KnnVectorQuery(
            self.vector_column,
            top_k=fetch,
            float32_query_vector=vector,
            filter=qb.combine(qb.scope_query(scope), push.query),
        )
        scores: dict[str, float | None] = {mid: self._score(raw) for mid, raw in self._search_hits(knn, fetch)}
        # Rows this process wrote lately: the index may lack them (or their new vector). The index did not
        # filter them, so more of them are taken; the check against the table drops what does not match.
        for mid, similarity in self._recent.nearest(user, vector, max(fetch, GET_ROWS)):
            scores[mid] = similarity
        ranked = sorted(scores.items(), key=lambda kv: kv[1] if kv[1] is not None else float("-inf"), reverse=True)
        results = self._verified(scope, ranked, k, filters)
        if isinstance(query, str):
            self._stash.put(filters_key(filters, scope), query, results)
        return results

    def keyword_search(
        self,
        query: str,
        top_k: int = 5,
        filters: Mapping[str, Any] | None = None,
        candidates: Sequence[str] | None = None,
        *,
        scope: Who = None,
    ) -> builtins.list[OutputData] | None:
        """BM25 keyword scores over rows checked against the table, statistics from those rows only.

        ``candidates`` (ids): score only those, from the preceding search's rows when it has them (no
        RPC), else one BatchGetRow. Without: the preceding search's rows for this query (no RPC), else
        1 Search (MatchQuery) + 1 BatchGetRow, plus this process's recent writes.
        """
        scope, user = self._user(scope)
        k = max(1, int(top_k or 5))
        key = filters_key(filters, scope)
        if candidates is not None:
            known = self._stash.rows(key)
            wanted = [str(c) for c in dict.fromkeys(candidates)]
            missing = [c for c in wanted if c not in known]
            fetched = self.get_many(missing, scope=scope) if missing else {}
            rows = [r for c in wanted if (r := known.get(c) or fetched.get(c)) is not None]
            rows = [r for r in rows if not filters or matches(dict(filters), r.payload)]
            return bm25(query, rows, k)
        stashed = self._stash.take(key, query) if isinstance(query, str) else None
        if stashed is not None:
            return bm25(query, stashed, k)
        if not isinstance(query, str) or not tokens(query):
            return []
        push = qb.build(filters, self._indexed)
        fetch = min(k if push.exact else max(k * 4, k + 50), MAX_TOP_K)
        flt = qb.combine(qb.scope_query(scope), push.query)
        match = MatchQuery(COL_DATA, query)
        full = BoolQuery(must_queries=[match], filter_queries=[flt]) if flt is not None else match
        hits = dict.fromkeys([mid for mid, _ in self._search_hits(full, fetch)])
        hits.update(dict.fromkeys(self._recent.ids(user)[:GET_ROWS]))
        rows = self._verified(scope, [(mid, None) for mid in hits], len(hits), filters)
        return bm25(query, rows, k)

    # ------------------------------------------------------------------ the port's narrowed reads (narrowed)

    def nearest(
        self,
        scope: Scope,
        vector: Sequence[float],
        limit: int,
        *,
        states: Collection[State],
        query: MemoryQuery = EVERYTHING,
    ) -> builtins.list[StoredMemory]:
        """KNN with the scope, states and query inside the vector query's filter: top-k among matching rows."""
        return self._narrowed.nearest(scope, vector, limit, states, query)

    def keyword_hits(
        self,
        scope: Scope,
        text: str,
        limit: int,
        *,
        states: Collection[State],
        query: MemoryQuery = EVERYTHING,
        candidates: Sequence[str] | None = None,
    ) -> builtins.list[KeywordHit] | None:
        return self._narrowed.keyword_hits(scope, text, limit, states, query, candidates)

    def page(
        self,
        scope: Scope,
        *,
        states: Collection[State],
        query: MemoryQuery = EVERYTHING,
        limit: int,
        cursor: str | None = None,
    ) -> RowPage:
        """A narrowed page from the index (``narrowed``); else the GetRange pages of the whole range."""
        found = self._narrowed.page(scope, states, query, limit, cursor)
        if found is not None:
            return found
        return super().page(scope, states=states, query=query, limit=limit, cursor=cursor)

    def page_total(self, scope: Scope, *, states: Collection[State], query: MemoryQuery = EVERYTHING) -> int:
        found = self._narrowed.page_total(scope, states, query)
        return found if found is not None else super().page_total(scope, states=states, query=query)

    def created_window(
        self,
        scope: Scope,
        *,
        states: Collection[State],
        newest_first: bool,
        offset: int,
        limit: int,
        since: str | None = None,
        until: str | None = None,
        query: MemoryQuery = EVERYTHING,
    ) -> tuple[builtins.list[StoredMemory], int]:
        found = self._narrowed.created_window(
            scope, states, query, newest_first=newest_first, offset=offset, limit=limit, since=since, until=until
        )
        if found is not None:
            return found
        return super().created_window(
            scope,
            states=states,
            newest_first=newest_first,
            offset=offset,
            limit=limit,
            since=since,
            until=until,
            query=query,
        )

    # ------------------------------------------------------------------ owner's views and export (index_reads)

    def total(self, filters: Mapping[str, Any] | None = None, *, scope: Who = None) -> int:
        """A page's total: the index's count with this process's recent writes reconciled (``index_reads``);
        :meth:`count` when the index cannot answer exactly, or right after a page that read the whole range."""
        scope = require_scope(scope)
        memo = getattr(self._local, "count", None)
        if memo is None or memo[0] != self._memo_key(filters, scope):
            found = self._index_reads.total(scope, filters)
            if found is not None:
                return found
        return self.count(filters, scope=scope)

    def created_page(
        self,
        filters: Mapping[str, Any] | None,
        *,
        newest_first: bool,
        offset: int,
        limit: int,
        since: str | None = None,
        until: str | None = None,
        scope: Who = None,
    ) -> tuple[builtins.list[OutputData], int]:
        """The owner's page by creation time from the index (``index_reads``); else every row is read."""
        scope = require_scope(scope)
        found = self._index_reads.created_page(
            scope, filters, newest_first=newest_first, offset=offset, limit=limit, since=since, until=until
        )
        if found is not None:
            return found
        return super().created_page(
            filters, newest_first=newest_first, offset=offset, limit=limit, since=since, until=until, scope=scope
        )

    def tally(self, filters: Mapping[str, Any] | None, *, scope: Who = None) -> dict[tuple[str | None, str, str], int]:
        """Counts per (client, state, day) from the index's group-bys (``aggregations``); else every row is read."""
        scope = require_scope(scope)
        found = self._index_reads.tally(scope, filters)
        return found if found is not None else super().tally(filters, scope=scope)

    def get_vectors(self, ids: Sequence[str], *, scope: Who = None) -> dict[str, builtins.list[float]]:
        """Stored vectors by id (export): one BatchGetRow per 100 ids, rows outside the scope absent."""
        return read_vectors(self, ids, require_scope(scope))


__all__ = ["RowUpdate", "TablestoreStore", "TablestoreUnavailableError"]
