"""TablestoreStore (and the history log, reembed) against the strict emulator: the defects the documented rules
exposed (issue 20), each with the rule that caught it.

Each test fails on the code before its fix: lists read only ``payload`` while filtering on ``agent_id`` and
``state`` (rule filter_columns_read); bulk changes split by rows only (write_bytes); the retry gave up after
~0.7 s; startup wrote its meta row into a table that was not ready yet (table_not_ready); own writes expired from
search after 30 s while a new index still initialized (index_initializing); dimensions above 2,048 were refused
although the vector options page allows 4,096. Two reads check what the typed port can ask at most: the largest
narrowing (filter_conditions) and a long Chinese category (once a ``contains`` pattern: wildcard_pattern).
Every store call goes through the typed store port with the caller's scope.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tablestore_openmemory_mcp.memory.ports import State, StoredMemory
from tablestore_openmemory_mcp.memory.query_filters import EVERYTHING, build_query
from tablestore_openmemory_mcp.memory.store_port import NewRow, RowChange
from tablestore_openmemory_mcp.scope import Scope
from tablestore_openmemory_mcp.stores.tablestore import TablestoreStore, TablestoreUnavailableError
from tablestore_openmemory_mcp.stores.tablestore.batching import MAX_BYTES, item_bytes
from tablestore_openmemory_mcp.stores.tablestore.history import TablestoreHistoryLog
from tablestore_openmemory_mcp.stores.tablestore.recent import RecentWrites
from tablestore_openmemory_mcp.stores.tablestore.retry import Retrier
from tablestore_openmemory_mcp.stores.tablestore.schema import PRIMARY_KEY
from tests.fakes.port_rows import every_row
from tests.fakes.table_pool import TablePool
from tests.tablestore_emulator import TablestoreEmulator

AK, SK, INSTANCE = "test-ak", "test-secret", "strictinst"
DIMS = 8
U1 = Scope("cline", "u1", shared=True)
CLINE = Scope("cline", "u1")
ACTIVE: tuple[State, ...] = ("active",)
TABLES = TablePool("s_")  # new tables made ahead in batches, under the windows a test would make its own (see there)


@pytest.fixture(scope="module")
def emulator() -> Iterator[TablestoreEmulator]:
    """One strict emulator for the module (every test uses tables of its own)."""
    em = TablestoreEmulator(access_key_id=AK, access_key_secret=SK, instance_name=INSTANCE).start()
    yield em
    em.stop()


@pytest.fixture
def em(emulator: TablestoreEmulator) -> Iterator[TablestoreEmulator]:
    emulator.clear_faults()
    TABLES.top_up(emulator, lambda name: make(emulator, name))
    emulator.reset_counts()
    table_ready, index_ready = emulator.table_ready_seconds, emulator.index_ready_seconds
    yield emulator
    emulator.clear_faults()
    emulator.table_ready_seconds, emulator.index_ready_seconds = table_ready, index_ready
    assert not emulator.rules.relaxed  # strict throughout
    if emulator.last_internal_error is not None:
        raise AssertionError(f"tablestore emulator bug: {emulator.last_internal_error!r}")


def make(em: TablestoreEmulator, table: str | None = None, **kw: Any) -> TablestoreStore:
    if table is None and not kw:
        table = TABLES.take(em)
    args: dict[str, Any] = {
        "collection_name": table or f"s_{uuid.uuid4().hex[:10]}",
        "endpoint": em.endpoint,
        "instance_name": INSTANCE,
        "access_key_id": AK,
        "access_key_secret": SK,
        "embedding_model_dims": DIMS,
        **kw,
    }
    return TablestoreStore(**args)


def vec(i: int) -> list[float]:
    v = [0.01] * DIMS
    v[i % DIMS] = 1.0
    return v


def memory(memory_id: str, text: str, n: int = 0, **kw: Any) -> StoredMemory:
    created = f"2024-01-01T00:00:{n:02d}+00:00"
    return StoredMemory(
        id=memory_id, text=text, user_id="u1", client=kw.pop("client", None), created_at=created, updated_at=created,
        hash=uuid.uuid4().hex, **kw,
    )  # fmt: skip


def rows(ids: list[str], texts: list[str] | None = None, **kw: Any) -> list[NewRow]:
    """One row per id (its text: the id, unless given), vectors ``vec(0)``, ``vec(1)``, ..."""
    return [NewRow(memory(m, (texts or ids)[i], i, **kw), vec(i)) for i, m in enumerate(ids)]


# ------------------------------------------------------------------------------ reads: filter columns


def test_lists_counts_and_scans_read_the_columns_their_filters_use(em: TablestoreEmulator) -> None:
    """Before: list_page and list read only `payload` and filtered on agent_id/state: every row filtered out."""
    store = make(em)
    ids = [f"m{i}" for i in range(8)]
    store.put(CLINE, rows(ids, [f"t{i}" for i in range(8)], client="cline"))
    store.rewrite_many(CLINE, [RowChange(m, memory(m, m, client="cline", state="archived")) for m in ids[:3]])
    page = store.page(CLINE, states=ACTIVE, query=EVERYTHING, limit=3)
    assert [m.id for m in page.items] == ["m3", "m4", "m5"] and page.next_cursor is not None
    rest = store.page(CLINE, states=ACTIVE, query=EVERYTHING, limit=3, cursor=page.next_cursor)
    assert [m.id for m in rest.items] == ["m6", "m7"]
    assert store.page_total(CLINE, states=ACTIVE, query=EVERYTHING) == 5
    assert [m.id for m in every_row(store, CLINE, ACTIVE)] == ids[3:]
    assert [m.id for m in store.page(CLINE, states=("archived",), query=EVERYTHING, limit=10).items] == ids[:3]
    other = Scope("other", "u1")  # the scope's own condition: another client sees none of them
    none = store.page(other, states=ACTIVE, query=EVERYTHING, limit=10)
    assert (none.items, none.next_cursor) == ([], None)
    assert store.page_total(other, states=ACTIVE, query=EVERYTHING) == 0


def test_the_largest_narrowing_stays_within_the_documented_query_limits(em: TablestoreEmulator) -> None:
    """The most conditions a read can carry (client, category, event-time window, 16 tags, two states) on the
    strict emulator: list, total and search answer, none refused for too many conditions."""
    store = make(em)
    tags = {f"k{i}": f"v{i}" for i in range(16)}
    query = build_query(client="cline", category="c", since="2023-06-01", until="2025-01-01", metadata=tags)
    tagged = {"client": "cline", "categories": ("c",)}
    store.put(
        CLINE,
        [
            NewRow(memory("a", "a", **tagged, metadata={"metadata": tags}), vec(0)),
            NewRow(memory("b", "b", 1, **tagged, metadata={"metadata": {**tags, "k3": "x"}}), vec(1)),
        ],
    )
    states: tuple[State, ...] = ("active", "paused")
    em.flush_index()
    assert [m.id for m in store.page(CLINE, states=states, query=query, limit=10).items] == ["a"]
    assert store.page_total(CLINE, states=states, query=query) == 1
    assert [m.id for m in store.nearest(CLINE, vec(1), 5, states=states, query=query)] == ["a"]


# ------------------------------------------------------------------------------ writes: bytes per batch


def test_bulk_state_change_of_200_long_memories_is_split_by_bytes(em: TablestoreEmulator) -> None:
    """Before: update_many sent 200 rows of ~96 KB (the text as a column and in the JSON) in one request."""
    store = make(em)
    text = "长" * 16_000  # 16,000 characters, 48,000 bytes of UTF-8
    ids = [f"big{i:03d}" for i in range(200)]
    for start in range(0, 200, 50):  # inserts are split by bytes already
        chunk = ids[start : start + 50]
        store.put(U1, rows(chunk, [f"{text}{m}" for m in chunk]))
    em.reset_counts()
    changed = store.rewrite_many(U1, [RowChange(m, memory(m, f"{text}{m}", state="archived")) for m in ids])
    assert sorted(changed) == ids
    writes = em.calls_on(store.collection_name)["BatchWriteRow"]
    assert writes >= 6  # ~19 MB of rows in requests of at most 3.5 MB
    assert store.page_total(U1, states=("archived",), query=EVERYTHING) == 200


def test_batch_size_estimate_covers_the_encoded_request() -> None:
    """The estimate is on the high side of the plain-buffer encoding the emulator (and the service) measures."""
    from tablestore import Condition, PutRowItem, Row, RowExistenceExpectation
    from tablestore.plainbuffer.plain_buffer_builder import PlainBufferBuilder

    row = Row([("user_id", "u1"), ("memory_id", "m1")], [("data", "长" * 1000), ("payload", "{}"), ("state", "x")])
    item = PutRowItem(row, Condition(RowExistenceExpectation.IGNORE))
    encoded = len(PlainBufferBuilder.serialize_for_put_row(row.primary_key, row.attribute_columns))
    assert encoded <= item_bytes(item) < encoded + 200
    assert MAX_BYTES < 4 * 1024 * 1024 - 512 * 1024  # half a megabyte left for the request's own framing


# ------------------------------------------------------------------------------ retries


def test_a_throttling_burst_longer_than_the_old_retry_is_ridden_out(em: TablestoreEmulator) -> None:
    """Before: 4 attempts in ~0.7 s. Now retried for TABLESTORE_MAX_RETRY_SECONDS (default 20 s)."""
    store = make(em)
    store.put(U1, rows(["k"], ["kept"]))
    em.inject("GetRow", "OTSServerBusy", times=2)
    em.inject("GetRow", "http503", times=2)
    em.inject("GetRow", "OTSPartitionUnavailable", times=1)
    em.reset_counts()
    got = store.read_one(U1, "k")
    assert got is not None and got.text == "kept"
    assert em.counts["GetRow"] == 6


def test_an_exhausted_budget_fails_in_one_line_naming_the_operation(em: TablestoreEmulator) -> None:
    store = make(em, max_retry_seconds=0.5)
    em.inject("BatchWriteRow", "OTSOperationThrottled", rate=1.0, seed=1)
    with pytest.raises(TablestoreUnavailableError) as info:
        store.put(U1, rows(["a", "b"]))
    em.clear_faults()
    message = str(info.value)
    assert "\n" not in message and "BatchWriteRow" in message and "TABLESTORE_MAX_RETRY_SECONDS" in message
    assert store.read(U1, ["a", "b"]) == {}  # nothing half-done


def test_a_readiness_probe_gives_up_after_two_seconds_not_the_budget(em: TablestoreEmulator) -> None:
    store = make(em)  # 20 s for operations; /ready must answer sooner
    store.probe()
    em.inject("GetRow", "OTSServerUnavailable", rate=1.0, seed=2)
    try:
        with pytest.raises(TablestoreUnavailableError, match="readiness probe retries 2 s"):
            store.probe()
    finally:
        em.clear_faults()


def test_retry_waits_grow_with_jitter_and_longer_after_throttling() -> None:
    retry = Retrier("x")
    assert retry.max_seconds == 20.0
    for attempt in range(8):
        plain, slow = retry.delay(attempt), retry.delay(attempt, slow=True)
        cap_plain, cap_slow = min(3.0, 0.2 * 2**attempt), min(3.0, 0.5 * 2**attempt)
        assert cap_plain / 2 <= plain <= cap_plain and cap_slow / 2 <= slow <= cap_slow


def test_a_conditional_update_whose_first_try_landed_is_settled(em: TablestoreEmulator) -> None:
    """The answer is lost after the write applied: the retry's OTSConditionCheckFail is not a conflict."""
    store = make(em)
    store.put(U1, rows(["c0", "c1", "c2"]))
    em.inject("BatchWriteRow", "http503_after", times=1)
    changed = store.rewrite_many(U1, [RowChange(f"c{i}", memory(f"c{i}", f"c{i}", state="paused")) for i in range(3)])
    assert sorted(changed) == ["c0", "c1", "c2"]


def test_a_bulk_change_cut_by_the_budget_records_what_it_did_change(em: TablestoreEmulator) -> None:
    """The first request lands, then a storm outlasts the budget: the failure is reported in one line, and the
    rows that did change have their history (the store names them: PartiallyApplied), the others stay as they were."""
    from tablestore_openmemory_mcp.memory.ports import NewMemory, Origin
    from tablestore_openmemory_mcp.repository import StoreRepository
    from tablestore_openmemory_mcp.scope import Scope
    from tablestore_openmemory_mcp.stores.tablestore.retry import PartiallyApplied

    store = make(em, max_retry_seconds=0.5)
    history = TablestoreHistoryLog(store.client, f"{store.collection_name}_history", readiness=store.readiness)
    repo = Scope("cline", "u1"), StoreRepository(store, history)
    scope_, repository = repo
    added = repository.add(scope_, [NewMemory(text=f"{i:03d} " + "a" * 16_000, vector=vec(i)) for i in range(150)],
                           Origin())  # fmt: skip
    ids = [a.memory.id for a in added]
    sdk_write = store.client.batch_write_row
    calls: list[int] = []

    def first_lands_then_storm(request: Any) -> Any:
        """The SDK call, unchanged; after the first write of memory rows, the emulator throttles every later
        one (the history table stays reachable, so the history of what changed can be checked)."""
        if store.collection_name in request.items:
            if calls:
                em.inject("BatchWriteRow", "OTSServerBusy", times=1)
            calls.append(1)
        return sdk_write(request)

    store.client.batch_write_row = first_lands_then_storm  # type: ignore[method-assign]
    try:
        with pytest.raises(PartiallyApplied) as info:
            repository.set_state(scope_, ids, "archived", Origin())
    finally:
        em.clear_faults()
        store.client.batch_write_row = sdk_write  # type: ignore[method-assign]
    applied = set(info.value.applied)
    assert 0 < len(applied) < 150 and "\n" not in str(info.value)
    for memory_id in ids:
        events = [h.event for h in history.for_memory("u1", memory_id)]
        state = repository.get(Scope("cline", "u1"), memory_id)
        assert state is not None
        if memory_id in applied:
            assert (state.state, events) == ("archived", ["ADD", "STATE"])
        else:
            assert (state.state, events) == ("active", ["ADD"])


# ------------------------------------------------------------------------------ readiness


def test_a_new_table_and_index_are_waited_for_with_one_progress_line(
    em: TablestoreEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: the meta row's PutRow met OTSTableNotReady and startup gave up after ~0.7 s."""
    em.table_ready_seconds, em.index_ready_seconds = 2.0, 2.0
    caplog.set_level(logging.WARNING, logger="tablestore_openmemory_mcp.stores.tablestore.readiness")
    store = make(em)
    lines = [r.getMessage() for r in caplog.records if "Waiting up to" in r.getMessage()]
    assert len(lines) == 1 and store.collection_name in lines[0] and "TABLESTORE_READY_TIMEOUT" in lines[0]
    assert store.readiness.waited > 0
    store.put(U1, [NewRow(memory("f", "first"), vec(3))])  # the first add and search right after startup work
    assert [m.id for m in store.nearest(U1, vec(3), 1, states=ACTIVE, query=EVERYTHING)] == ["f"]


def test_a_second_replica_waits_for_tables_another_one_just_created(em: TablestoreEmulator) -> None:
    """Before: DescribeTable found the table, then its GetRow met OTSTableNotReady and startup failed."""
    em.table_ready_seconds = 2.0
    table = f"s_{uuid.uuid4().hex[:10]}"
    from tablestore import CapacityUnit, ReservedThroughput, TableMeta, TableOptions

    client = make(em).client  # another replica's client: it creates the tables, then this one starts
    for name, pk in ((table, PRIMARY_KEY), (f"{table}_history", [(n, "STRING") for n in ("user_id", "memory_id",
                                                                                          "event_id")])):  # fmt: skip
        client.create_table(TableMeta(name, pk), TableOptions(-1, 1), ReservedThroughput(CapacityUnit(0, 0)))
    store = make(em, table)
    history = TablestoreHistoryLog(store.client, f"{table}_history", readiness=store.readiness)
    store.put(U1, rows(["s"], ["second"]))
    assert history.for_memory("u1", "s") == []


def test_startup_that_stops_waiting_fails_in_one_line(em: TablestoreEmulator) -> None:
    em.table_ready_seconds = 30.0
    with pytest.raises(TablestoreUnavailableError) as info:
        make(em, ready_timeout=0.3)
    assert "\n" not in str(info.value) and "TABLESTORE_READY_TIMEOUT" in str(info.value)


def test_own_writes_stay_searchable_while_a_new_index_initializes(em: TablestoreEmulator) -> None:
    """Before: a process kept its own writes for 30 s, a new index may need a minute. With a tiny window the
    old code lost the row from search at once; now the rows are held until the index reports it has initialized."""
    em.table_ready_seconds, em.index_ready_seconds = 0.0, 5.0
    store = make(em, ready_timeout=0.2, recent_window=0.001)  # startup stops waiting for the index
    store.put(U1, [NewRow(memory("h", "held"), vec(5))])
    assert [m.id for m in store.nearest(U1, vec(5), 1, states=ACTIVE, query=EVERYTHING)] == ["h"]
    assert store._recent.held()
    em.ready_now()


def test_recent_rows_are_held_then_expire_a_window_after_release() -> None:
    recent = RecentWrites(window=1e-6)
    recent.hold()
    recent.note("u", ["a"], [[1.0, 0.0]])
    assert recent.ids("u") == ["a"]
    recent.release()
    unheld = RecentWrites(window=1e-6)
    unheld.note("u", ["a"], [[1.0, 0.0]])
    assert unheld.ids("u") == []  # no hold: gone after its window


# ------------------------------------------------------------------------------ index queries and schema


def test_a_long_chinese_category_narrows_by_its_term(em: TablestoreEmulator) -> None:
    """A category of 12 Chinese characters (36 bytes) is one index term: no wildcard pattern to outgrow."""
    store = make(em)
    needle = "长篇中文角色名字不能推下"  # 12 characters, 36 bytes
    store.put(U1, [NewRow(memory("x", "x", categories=(needle,)), vec(0)),
                   NewRow(memory("y", "y", categories=("other",)), vec(1))])  # fmt: skip
    em.flush_index()
    found = store.nearest(U1, vec(0), 2, states=ACTIVE, query=build_query(category=needle))
    assert [m.id for m in found] == ["x"]


def test_the_vector_dimension_cap_is_4096(em: TablestoreEmulator) -> None:
    store = make(em, embedding_model_dims=3000)
    assert store.embedding_model_dims == 3000
    with pytest.raises(ValueError, match="4096"):
        make(em, embedding_model_dims=4097)


# ------------------------------------------------------------------------------ reembed


class _Embedder:
    name = "embed-next"

    def embed_batch(self, texts: list[str], memory_action: str = "add") -> list[list[float]]:
        return [vec(len(t)) for t in texts]


def test_reembed_rides_out_throttling_and_5xx_bursts_in_every_call(em: TablestoreEmulator) -> None:
    """Before: reembed's SDK policy retried no 5xx on writes and no transport error at all."""
    from tablestore_openmemory_mcp.reembed.tablestore import TablestoreReembed

    store = make(em)
    store.put(U1, [NewRow(memory(f"r{i}", f"r{i}"), vec(i)) for i in range(30)])
    job = TablestoreReembed(
        store.client, store.collection_name, store.index_name, "cosine", _Embedder(), "embed-next", DIMS,
        retry=Retrier(em.endpoint, max_seconds=15),
    )  # fmt: skip
    for api, kind in (("GetRange", "http503"), ("BatchWriteRow", "OTSInternalServerError"), ("Search", "drop"),
                      ("PutRow", "OTSServerBusy"), ("CreateSearchIndex", "http502")):  # fmt: skip
        em.inject(api, kind, times=2)
    summary = job.run()
    assert (summary.total, summary.embedded) == (30, 30)
    assert store.client.describe_search_index(store.collection_name, f"{store.index_name}_v2")[0] is not None


def test_reembed_re_sends_rows_that_fail_with_a_transient_error(em: TablestoreEmulator) -> None:
    """Per-row errors inside a BatchWriteRow that succeeds as a call: each row answers OTSTableNotReady (the
    emulator's not-ready window reopened by the embedder, right before the write). Before: OSError at once."""
    import time

    from tablestore_openmemory_mcp.reembed.tablestore import TablestoreReembed

    store = make(em)
    store.put(U1, [NewRow(memory(f"w{i}", f"w{i}"), vec(i)) for i in range(10)])
    table = em.store.tables[store.collection_name]

    class Reopening(_Embedder):
        def embed_batch(self, texts: list[str], memory_action: str = "add") -> list[list[float]]:
            table.ready_at = time.monotonic() + 1.0  # the rows of the next write fail one by one for a second
            return super().embed_batch(texts, memory_action)

    job = TablestoreReembed(store.client, store.collection_name, store.index_name, "cosine", Reopening(), "embed-next",
                            DIMS, retry=Retrier(em.endpoint, max_seconds=15))  # fmt: skip
    em.reset_counts()
    summary = job.run()
    assert (summary.total, summary.embedded) == (10, 10)
    assert em.calls_on(store.collection_name)["BatchWriteRow"] >= 2  # the rows were re-sent
