"""TablestoreStore against the local Tablestore emulator, through the real ``tablestore`` SDK and the typed port
(:class:`~tablestore_openmemory_mcp.memory.store_port.StorePort`: the scope passed to every call).

The emulator's search index lags writes by ``INDEX_DELAY`` (like the service); tests that need the index to
have caught up call ``flush_index()``. Everything else must hold while the index lags.
"""

from __future__ import annotations

import math
import multiprocessing
import socket
import threading
import uuid
from collections.abc import Collection, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from mem0.utils.lemmatization import lemmatize_for_bm25
from tablestore import OTSClient, Row

from tablestore_openmemory_mcp.errors import (
    ConflictError,
    InvalidIdentity,
    MemoryNotFound,
    ScopeMissing,
    UserInputError,
)
from tablestore_openmemory_mcp.memory.ports import ALL_STATES, State, StoredMemory
from tablestore_openmemory_mcp.memory.query_filters import EVERYTHING, MemoryQuery, build_query
from tablestore_openmemory_mcp.memory.store_port import NewRow, RowChange
from tablestore_openmemory_mcp.scope import Scope
from tablestore_openmemory_mcp.stores.tablestore import TablestoreStore, TablestoreUnavailableError
from tablestore_openmemory_mcp.stores.tablestore.schema import index_meta
from tests.fakes.port_rows import every_row
from tests.fakes.table_pool import TablePool
from tests.fakes.tablestore_fixture import INDEX_DELAY
from tests.tablestore_emulator import TablestoreEmulator

AK, SK, INSTANCE = "test-ak", "test-secret", "testinst"
DIMS = 8
TABLES = TablePool()  # new tables made ahead in batches: a test's store needs no wait for its table (see there)
U1 = Scope("cline", "u1", shared=True)  # every memory of u1, whatever its client
CLINE = Scope("cline", "u1")  # u1's memories written by cline only
ALL = ALL_STATES
ACTIVE: tuple[State, ...] = ("active",)


@pytest.fixture(scope="module")
def emulator() -> Iterator[TablestoreEmulator]:
    """One emulator for the module (tables are unique per test), unlike conftest's per-test one: faster."""
    em = TablestoreEmulator(access_key_id=AK, access_key_secret=SK, instance_name=INSTANCE).start()
    yield em
    em.stop()


@pytest.fixture
def em(emulator: TablestoreEmulator) -> Iterator[TablestoreEmulator]:
    emulator.clear_faults()
    emulator.index_delay = INDEX_DELAY
    TABLES.top_up(emulator, lambda name: make(emulator, name))
    emulator.reset_counts()
    yield emulator
    emulator.clear_faults()
    emulator.index_delay = INDEX_DELAY
    if emulator.last_internal_error is not None:  # an emulator bug answered as OTSInternalServerError
        raise AssertionError(f"tablestore emulator bug: {emulator.last_internal_error!r}")


def make(em: TablestoreEmulator, table: str | None = None, **kw: Any) -> TablestoreStore:
    if table is None and not kw:
        table = TABLES.take(em)
    args: dict[str, Any] = {
        "collection_name": f"t_{uuid.uuid4().hex[:10]}" if table is None else table,
        "endpoint": em.endpoint,
        "instance_name": INSTANCE,
        "access_key_id": AK,
        "access_key_secret": SK,
        "embedding_model_dims": DIMS,
    }
    args.update(kw)
    return TablestoreStore(**args)


def vec(i: int) -> list[float]:
    """A distinct unit-ish vector per i."""
    v = [0.01] * DIMS
    v[i % DIMS] = 1.0
    v[(i // DIMS) % DIMS] += 0.5
    return v


def memory(
    memory_id: str,
    text: str,
    *,
    user: str = "u1",
    n: int = 0,
    client: str | None = None,
    state: State = "active",
    updated_at: str | None = None,
    categories: tuple[str, ...] = (),
    **metadata: Any,
) -> StoredMemory:
    """A memory as the repository builds one; ``n`` orders creation times (one second apart)."""
    created = f"2024-01-01T00:{n // 60:02d}:{n % 60:02d}+00:00"
    return StoredMemory(
        id=memory_id,
        text=text,
        user_id=user,
        client=client,
        created_at=created,
        updated_at=updated_at or created,
        hash=uuid.uuid4().hex,
        state=state,
        categories=categories,
        metadata=metadata,
    )


def new(memory_id: str, text: str, vector: list[float], key: str | None = None, **kw: Any) -> NewRow:
    """A row to :meth:`put` (``key``: its dedup key)."""
    return NewRow(memory(memory_id, text, **kw), vector, key)


def _created(m: StoredMemory) -> tuple[float, str, str]:
    try:
        stamp = datetime.fromisoformat(m.created_at)
        ts = (stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)).timestamp()
    except ValueError:
        ts = float("inf")
    return ts, m.created_at, m.id


def listed(
    store: TablestoreStore, scope: Scope, states: Collection[State] = ALL, query: MemoryQuery = EVERYTHING
) -> list[StoredMemory]:
    """Every memory in scope, read page by page (strongly consistent), oldest first."""
    return sorted(every_row(store, scope, states, query), key=_created)


def nearest(store: TablestoreStore, scope: Scope, vector: list[float], limit: int, **kw: Any) -> list[StoredMemory]:
    """:meth:`nearest` over every state and no narrowing unless given (what a bare search saw)."""
    return store.nearest(scope, vector, limit, states=kw.pop("states", ALL), query=kw.pop("query", EVERYTHING))


def keyword(store: TablestoreStore, scope: Scope, text: str, limit: int, **kw: Any) -> list[str]:
    """The ids :meth:`keyword_hits` scores, best first (every state, no narrowing unless given)."""
    hits = store.keyword_hits(scope, text, limit, states=kw.pop("states", ALL), query=kw.pop("query", EVERYTHING), **kw)
    assert hits is not None and all(h.score > 0 for h in hits)
    return [h.memory_id for h in hits]


def total(store: TablestoreStore, scope: Scope, states: Collection[State] = ALL) -> int:
    return store.page_total(scope, states=states, query=EVERYTHING)


def api_counts(em: TablestoreEmulator) -> dict[str, int]:
    return {k: v for k, v in em.counts.items() if v}


# ---------------------------------------------------------------------------------------- startup


def test_startup_creates_then_reuses_with_few_rpcs(em: TablestoreEmulator) -> None:
    table = f"t_{uuid.uuid4().hex[:10]}"
    make(em, table)
    assert em.counts["CreateTable"] == 1 and em.counts["CreateSearchIndex"] == 1
    em.reset_counts()
    make(em, table)
    assert sum(em.counts.values()) <= 3
    # GetRow: the meta row naming the embedder, index and vector column (see reembed)
    assert api_counts(em) == {"DescribeTable": 1, "GetRow": 1, "DescribeSearchIndex": 1}
    # mem0's second collection for entities works the same way
    make(em, f"{table}_entities")


def test_existing_table_without_index_gets_the_index(em: TablestoreEmulator) -> None:
    store = make(em)
    store.client.delete_search_index(store.collection_name, store.index_name)
    em.reset_counts()
    make(em, store.collection_name)
    counts = api_counts(em)
    # then DescribeSearchIndex until the new index has initialized (readiness)
    assert counts.pop("DescribeSearchIndex") >= 2
    assert counts == {"DescribeTable": 1, "GetRow": 1, "CreateSearchIndex": 1}


@pytest.mark.parametrize(("dims", "metric"), [(DIMS * 2, "cosine"), (DIMS, "euclidean")])
def test_index_mismatch_names_both_settings(em: TablestoreEmulator, dims: int, metric: str) -> None:
    store = make(em)
    with pytest.raises(ValueError) as info:
        make(em, store.collection_name, embedding_model_dims=dims, metric=metric)
    msg = str(info.value)
    assert f"{DIMS}/cosine" in msg and f"{dims}/{metric}" in msg
    assert "TABLESTORE_VECTOR_DIMENSION" in msg and store.index_name in msg


@pytest.mark.parametrize("name", ["1abc", "has-dash", "", "x" * 256, "中文"])
def test_bad_table_name_fails_before_any_rpc(em: TablestoreEmulator, name: str) -> None:
    with pytest.raises(ValueError, match="table name"):
        make(em, name)
    assert sum(em.counts.values()) == 0


def test_unreachable_endpoint_names_it() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    endpoint = f"http://127.0.0.1:{port}"
    with pytest.raises(ConnectionError, match=f"127.0.0.1:{port}"):
        TablestoreStore(
            endpoint=endpoint, instance_name=INSTANCE, access_key_id=AK, access_key_secret=SK,
            embedding_model_dims=DIMS, max_retries=2, unknown_option="ignored",
        )  # fmt: skip


def test_wrong_credentials_are_reported(em: TablestoreEmulator) -> None:
    with pytest.raises(PermissionError, match="credentials"):
        make(em, access_key_secret="wrong")


# ------------------------------------------------------------------------------------- round trip


def test_every_method_round_trip(em: TablestoreEmulator) -> None:
    store = make(em)
    ids = [str(uuid.uuid4()) for _ in range(3)]
    store.put(
        U1, [new(ids[0], "alpha", vec(0), n=1), new(ids[1], "beta", vec(1), n=2), new(ids[2], "gamma", vec(2), n=3)]
    )
    got = store.read_one(U1, ids[1])
    assert got is not None and got.id == ids[1] and got.text == "beta"
    assert [m.text for m in listed(store, U1)] == ["alpha", "beta", "gamma"]
    assert listed(store, U1)[:2][1].id == ids[1]
    assert total(store, U1) == 3
    em.flush_index()
    hits = nearest(store, U1, vec(0), 2)
    assert hits[0].id == ids[0] and len(hits) == 2 and hits[0].score >= hits[1].score  # type: ignore[operator]
    store.rewrite(U1, RowChange(ids[0], memory(ids[0], "alpha two", n=1), vec(5)))
    current = store.read_one(U1, ids[0])
    assert current is not None and current.text == "alpha two"
    store.rewrite(U1, RowChange(ids[0], replace(current, metadata={**current.metadata, "role": "user"})))  # vector kept
    em.flush_index()
    assert nearest(store, U1, vec(5), 1)[0].id == ids[0]
    store.remove(U1, [ids[2]])
    assert store.read_one(U1, ids[2]) is None
    store.remove(U1, [ids[2]])  # idempotent
    assert sorted(store.remove(U1, [*ids, "missing"])) == sorted(ids[:2])
    assert listed(store, U1) == []
    with pytest.raises(MemoryNotFound, match="not found"):
        store.rewrite(U1, RowChange(ids[0], memory(ids[0], "ghost")))
    store.close()


def _forged(user: str) -> Scope:
    """A Scope that skipped its own validation (an empty user id must still never reach the table)."""
    forged = object.__new__(Scope)
    for name, value in (("client_name", "cline"), ("user_id", user), ("shared", True)):
        object.__setattr__(forged, name, value)
    return forged


def test_every_call_outside_a_scope_fails_closed(em: TablestoreEmulator) -> None:
    """No user is never "everything": a scope without one cannot be made, and each port method given one
    anyway raises ScopeMissing before any RPC."""
    store = make(em)
    store.put(U1, [new("a1", "mine", vec(0))])
    with pytest.raises(InvalidIdentity):
        Scope("cline", "")
    nobody = _forged("")
    em.reset_counts()
    calls = [
        lambda: store.put(nobody, [new("a2", "x", vec(1), user="")]),
        lambda: store.read_one(nobody, "a1"),
        lambda: store.read(nobody, ["a1"]),
        lambda: store.read_vectors(nobody, ["a1"]),
        lambda: store.holder(nobody, "k"),
        lambda: store.rewrite(nobody, RowChange("a1", memory("a1", "y", user=""))),
        lambda: store.rewrite_many(nobody, [RowChange("a1", memory("a1", "y", user=""))]),
        lambda: store.remove(nobody, ["a1"]),
        lambda: store.page(nobody, states=ALL, query=EVERYTHING, limit=10),
        lambda: store.page_total(nobody, states=ALL, query=EVERYTHING),
        lambda: store.created_window(nobody, states=ALL, newest_first=True, offset=0, limit=10),
        lambda: store.tallies(nobody),
        lambda: store.nearest(nobody, vec(0), 5, states=ALL, query=EVERYTHING),
        lambda: store.keyword_hits(nobody, "q", 5, states=ALL, query=EVERYTHING),
    ]
    for call in calls:
        with pytest.raises(ScopeMissing):
            call()
    assert sum(em.counts.values()) == 0
    assert store.read_one(U1, "a1") is not None


# ------------------------------------------------------------------------------------ RPC budgets


def test_get_and_update_are_one_rpc_each_and_delete_two(em: TablestoreEmulator) -> None:
    """A delete reads the row's dedup key first, so it can release it (see test_purge_releases_the_key)."""
    store = make(em)
    store.put(CLINE, [new("m1", "one", vec(1), client="cline")])
    for action, apis in (
        (lambda: store.read_one(CLINE, "m1"), {"GetRow": 1}),
        (lambda: store.rewrite(CLINE, RowChange("m1", memory("m1", "two", client="cline"), vec(2))), {"UpdateRow": 1}),
        (lambda: store.remove(CLINE, ["m1"]), {"BatchGetRow": 1, "BatchWriteRow": 1}),
    ):
        em.reset_counts()
        action()
        assert api_counts(em) == apis


def test_search_is_one_rpc_and_keyword_scoring_of_its_hits_reuses_it(em: TablestoreEmulator) -> None:
    store = make(em)
    texts = ["我喜欢喝乌龙茶", "I like green tea", "乌龙茶和红茶", "coffee every morning"]
    store.put(U1, [new(f"k{i}", t, vec(i), n=i) for i, t in enumerate(texts)])
    em.flush_index()
    em.reset_counts()
    hits = nearest(store, U1, vec(0), 60)
    assert len(hits) == 4 and api_counts(em) == {"Search": 1, "BatchGetRow": 1}  # hits checked on the table
    kw = keyword(store, U1, "乌龙茶", 60, candidates=[h.id for h in hits])
    assert api_counts(em) == {"Search": 1, "BatchGetRow": 1}  # no second RPC: the search's rows are scored
    assert set(kw) == {"k0", "k2"}
    # without candidates, keyword scoring is a MatchQuery of its own
    assert set(keyword(store, U1, "乌龙茶", 10)) == {"k0", "k2"}
    assert api_counts(em) == {"Search": 2, "BatchGetRow": 2}


def test_keyword_scoring_after_a_search_from_another_thread(em: TablestoreEmulator) -> None:
    """The service runs the vector and the keyword half in worker threads (maybe different ones)."""
    store = make(em)
    store.put(U1, [new("c0", "乌龙茶", vec(0), n=0), new("c1", "tea", vec(1), n=1)])
    em.flush_index()
    em.reset_counts()
    hits = nearest(store, U1, vec(0), 5)
    out: list[list[str]] = []
    t = threading.Thread(target=lambda: out.append(keyword(store, U1, "乌龙茶", 5, candidates=[h.id for h in hits])))
    t.start()
    t.join()
    assert api_counts(em) == {"Search": 1, "BatchGetRow": 1} and out == [["c0"]]


def test_keyword_scoring_accepts_mem0s_lemmatized_query(em: TablestoreEmulator) -> None:
    store = make(em)
    query = "What drinks was the user meeting friends for?"
    store.put(U1, [new("l0", "meeting friends for drinks", vec(0), n=0), new("l1", "tea", vec(1), n=1)])
    em.flush_index()
    em.reset_counts()
    hits = nearest(store, U1, vec(0), 5)
    kw = keyword(store, U1, lemmatize_for_bm25(query), 5, candidates=[h.id for h in hits])
    assert api_counts(em) == {"Search": 1, "BatchGetRow": 1} and kw == ["l0"]


def test_chinese_keyword_search_via_index(em: TablestoreEmulator) -> None:
    store = make(em)
    texts = ["用户喜欢喝乌龙茶", "用户住在杭州", "The user likes oolong tea", "用户的猫叫小白"]
    store.put(U1, [new(f"c{i}", t, vec(i), n=i) for i, t in enumerate(texts)])
    store._recent.clear()  # only the index answers here (another process's writes look like this)
    em.flush_index()
    assert keyword(store, U1, "乌龙茶", 5) == ["c0"]
    assert keyword(store, U1, "杭州", 5) == ["c1"]
    assert keyword(store, U1, "oolong", 5) == ["c2"]
    assert keyword(store, U1, "", 5) == []


def test_list_is_complete_and_ordered_right_after_insert(em: TablestoreEmulator) -> None:
    store = make(em)
    em.index_delay = 3
    n = 2100
    ids = [str(uuid.uuid4()) for _ in range(n)]
    store.put(U1, [new(ids[i], f"memory {i}", vec(i), n=i) for i in range(n)])
    assert em.counts["BatchWriteRow"] == math.ceil(n / 200)
    rows = listed(store, U1)
    assert [r.id for r in rows] == ids  # created order, nothing missing although the index lags
    assert "vector" not in rows[0].metadata
    # 2,100 own writes are more than the index's count can reconcile: the total comes from the table
    assert store.page_total(U1, states=ALL, query=EVERYTHING) == n
    em.reset_counts()
    assert store.remove(U1, ids[:450]) == ids[:450]
    assert api_counts(em) == {"BatchGetRow": 5, "BatchWriteRow": 3}  # keys read per 100, rows deleted per 200
    assert store.page_total(U1, states=ALL, query=EVERYTHING) == n - 450
    assert len(listed(store, U1)) == n - 450  # strongly consistent


# ----------------------------------------------------------------------------------- narrowing


QUERY_CASES: list[MemoryQuery] = [
    build_query(client="a1"),
    build_query(category="food"),
    build_query(since="2024-01-01T00:00:02+00:00"),
    build_query(since="2024-01-01T00:00:02+00:00", until="2024-01-01T00:00:04+00:00"),
    build_query(until="2024-01-01T00:00:02+00:00"),
    build_query(client="a2", category="food"),
    build_query(metadata={"role": "assistant"}),
    build_query(metadata={"role": "assistant", "run": "r1"}, match_any=True),
]


@pytest.fixture(scope="module")
def query_store(emulator: TablestoreEmulator) -> tuple[TablestoreStore, list[StoredMemory]]:
    store = make(emulator)
    memories = [
        memory(
            f"f{i}",
            ["green tea", "oolong", "coffee", "Tea time"][i % 4],
            n=i,
            client=f"a{i % 3 + 1}",
            categories=("food",) if i % 2 else ("work",),
            metadata={"role": "assistant" if i % 4 == 0 else "user", **({"run": "r1"} if i % 3 == 0 else {})},
        )
        for i in range(8)
    ]
    store.put(U1, [NewRow(m, vec(i)) for i, m in enumerate(memories)])
    emulator.flush_index()
    return store, memories


@pytest.mark.parametrize("query", QUERY_CASES, ids=[repr(q)[:70] for q in QUERY_CASES])
def test_narrowing_matches_what_the_query_accepts(
    em: TablestoreEmulator, query_store: tuple[TablestoreStore, list[StoredMemory]], query: MemoryQuery
) -> None:
    """Search, list and total narrowed by a MemoryQuery return exactly the rows :meth:`MemoryQuery.accepts` keeps."""
    store, memories = query_store
    expected = {m.id for m in memories if query.accepts(m)}
    em.reset_counts()
    assert {m.id for m in nearest(store, U1, vec(0), 20, query=query)} == expected
    assert em.counts["Search"] == 1
    assert {m.id for m in listed(store, U1, query=query)} == expected
    assert store.page_total(U1, states=ALL, query=query) == len(expected)


# ------------------------------------------------------------------------------------- scope


def test_scope_is_enforced_by_id(em: TablestoreEmulator) -> None:
    store = make(em)
    store.put(U1, [new("mine", "mine", vec(0), client="cline", n=0),
                   new("other_agent", "other agent", vec(1), client="cursor", n=1)])  # fmt: skip
    u2 = Scope("cline", "u2", shared=True)
    store.put(u2, [new("other_user", "other user", vec(2), user="u2", client="cline", n=2)])
    em.flush_index()
    assert store.read_one(CLINE, "mine") is not None
    assert store.read_one(CLINE, "other_agent") is None and store.read_one(CLINE, "other_user") is None
    assert store.read(CLINE, ["mine", "other_agent", "other_user"]).keys() == {"mine"}
    with pytest.raises(MemoryNotFound, match="not found"):
        store.rewrite(CLINE, RowChange("other_agent", memory("other_agent", "hijack", client="cline")))
    store.remove(CLINE, ["other_agent"])  # silently nothing
    assert store.remove(CLINE, ["other_agent", "other_user", "mine"]) == ["mine"]
    assert listed(store, CLINE) == []
    assert nearest(store, CLINE, vec(1), 10) == []
    with pytest.raises(ValueError, match="scope"):
        store.put(CLINE, [new("x", "sneaky", vec(3), user="u2", client="cline")])
    other_agent = store.read_one(U1, "other_agent")
    assert other_agent is not None and other_agent.text == "other agent"
    other_user = store.read_one(u2, "other_user")
    assert other_user is not None and other_user.text == "other user"


# ------------------------------------------------------------------------------------ validation


@pytest.mark.parametrize(
    "bad",
    [[float("nan")] * DIMS, [1.0] * (DIMS - 1), [float("inf")] + [0.0] * (DIMS - 1), [1e39] * DIMS],
)
def test_bad_vectors_write_nothing(em: TablestoreEmulator, bad: list[float]) -> None:
    store = make(em)
    em.reset_counts()
    with pytest.raises(ValueError, match="vector"):
        store.put(U1, [new("ok", "ok", vec(0)), new("bad", "bad", bad)])
    assert sum(em.counts.values()) == 0
    assert listed(store, U1) == []


def test_oversized_text_is_rejected(em: TablestoreEmulator) -> None:
    store = make(em)
    em.reset_counts()
    with pytest.raises(ValueError, match="KiB"):
        store.put(U1, [new("big", "x" * (64 * 1024 + 1), vec(0))])
    assert sum(em.counts.values()) == 0


# ---------------------------------------------------------------------------------------- faults


def test_transient_faults_are_retried(em: TablestoreEmulator) -> None:
    store = make(em)
    em.inject("PutRow", "drop", times=1)
    store.put(U1, [new("d1", "dropped once", vec(0))])
    assert store.read_one(U1, "d1") is not None
    em.flush_index()
    em.inject("Search", "OTSServerBusy", times=2)
    assert [m.id for m in nearest(store, U1, vec(0), 5)] == ["d1"]
    em.inject("UpdateRow", "http503", times=2)
    store.rewrite(U1, RowChange("d1", memory("d1", "updated")))
    updated = store.read_one(U1, "d1")
    assert updated is not None and updated.text == "updated"
    em.inject("BatchWriteRow", "OTSOperationThrottled", times=1)
    store.put(U1, [new("b1", "b1", vec(1)), new("b2", "b2", vec(2))])
    em.inject("GetRange", "OTSTimeout", times=1)
    assert len(listed(store, U1)) == 3


def test_hang_is_cut_by_timeout_and_retried(em: TablestoreEmulator) -> None:
    store = make(em, timeout=0.5)
    store.put(U1, [new("h1", "x", vec(0))])
    em.hang_seconds = 3600.0  # only the client's timeout can end the first attempt (a count, not a clock)
    em.inject("GetRow", "hang", times=1)
    em.reset_counts()
    pool = ThreadPoolExecutor(1)
    try:  # the bound only stops a regression from hanging the suite
        got = pool.submit(store.read_one, U1, "h1").result(timeout=120)
    finally:
        pool.shutdown(wait=False)
    assert got is not None and em.counts["GetRow"] == 2, "the hung attempt was cut and retried"


def test_exhausted_retries_raise_clearly(em: TablestoreEmulator) -> None:
    store = make(em, max_retries=3)
    em.inject("Search", "OTSServerBusy", times=3)
    with pytest.raises(TablestoreUnavailableError, match=r"busy \(OTSServerBusy\) after 3 attempts"):
        nearest(store, U1, vec(0), 5)
    em.inject("PutRow", "http500", times=3)
    with pytest.raises(TablestoreUnavailableError, match="after 3 attempts"):
        store.put(U1, [new("n1", "never", vec(0))])
    assert store.read_one(U1, "n1") is None
    em.inject("UpdateRow", "OTSParameterInvalid", times=1)  # not retryable: raised at once
    store.put(U1, [new("p1", "p", vec(0))])
    em.reset_counts()
    with pytest.raises(Exception, match="OTSParameterInvalid"):
        store.rewrite(U1, RowChange("p1", memory("p1", "q")))
    assert em.counts["UpdateRow"] == 1


def test_failed_batch_insert_leaves_nothing_behind(em: TablestoreEmulator) -> None:
    store = make(em, max_retries=3)
    original = store.client.batch_write_row
    calls = {"n": 0}

    def first_batch_then_busy(request: Any) -> Any:
        # Wraps the SDK (not our code): after the first batch lands, the next 3 calls are busy.
        response = original(request)
        calls["n"] += 1
        if calls["n"] == 1:
            em.inject("BatchWriteRow", "OTSServerBusy", times=3)
        return response

    store.client.batch_write_row = first_batch_then_busy  # type: ignore[method-assign]
    n = 450
    with pytest.raises(TablestoreUnavailableError, match="OTSServerBusy"):
        store.put(U1, [new(f"r{i}", f"m{i}", vec(i), n=i) for i in range(n)])
    assert listed(store, U1) == []  # the 200 rows that landed were removed again


def test_concurrent_calls_from_many_threads(em: TablestoreEmulator) -> None:
    store = make(em)
    errors: list[BaseException] = []

    def worker(w: int) -> None:
        try:
            mine = Scope("cline", f"user{w}", shared=True)
            for i in range(5):
                store.put(mine, [new(f"w{w}-{i}", f"w{w} {i}", vec(i), user=f"user{w}", n=i)])
            assert len(listed(store, mine)) == 5
            assert store.read_one(mine, f"w{w}-3") is not None
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_v4_signing_and_sts_token_are_accepted(em: TablestoreEmulator) -> None:
    store = make(em, region="cn-hangzhou", sts_token="sts-token")
    store.put(U1, [new("s1", "signed", vec(0))])
    assert store.read_one(U1, "s1") is not None
    assert isinstance(store.client, OTSClient)


# ------------------------------------------------------------------------- consistency (issue 9)
# Every test below runs with the index lagging (INDEX_DELAY) and never flushes unless it says why.


def key_for(text: str, user: str = "u1") -> str:
    return f"{user}:{text}"


def held_by(store: TablestoreStore, key: str) -> str | None:
    """The id of the live memory holding ``key`` (None: none does)."""
    found = store.holder(U1, key)
    return found.id if found is not None else None


def test_delete_then_readd_stores_the_text_again(em: TablestoreEmulator) -> None:
    store = make(em)
    key = key_for("likes tea")
    assert store.put(U1, [new("m1", "likes tea", vec(0), key)]) == ["m1"]
    assert held_by(store, key) == "m1"
    assert store.put(U1, [new("m2", "likes tea", vec(0), key)]) == ["m1"]  # duplicate
    assert len(listed(store, U1)) == 1
    assert store.remove(U1, ["m1"]) == ["m1"]
    assert held_by(store, key) is None  # its claim was released with the row
    assert store.put(U1, [new("m3", "likes tea", vec(0), key)]) == ["m3"]
    assert [m.id for m in listed(store, U1)] == ["m3"]
    assert held_by(store, key) == "m3"
    assert [m.id for m in nearest(store, U1, vec(0), 5)] == ["m3"]  # read-your-writes while the index lags


def test_update_then_readd_of_the_old_text(em: TablestoreEmulator) -> None:
    store = make(em)
    tabs, spaces = key_for("uses tabs"), key_for("uses spaces")
    store.put(U1, [new("m1", "uses tabs", vec(0), tabs)])
    store.rewrite(U1, RowChange("m1", memory("m1", "uses spaces"), vec(1), dedup_key=spaces))
    assert held_by(store, tabs) is None
    assert held_by(store, spaces) == "m1"
    assert store.put(U1, [new("m2", "uses tabs", vec(0), tabs)]) == ["m2"]
    assert store.put(U1, [new("m3", "uses spaces", vec(1), spaces)]) == ["m1"]
    assert sorted(m.text for m in listed(store, U1)) == ["uses spaces", "uses tabs"]
    hits = nearest(store, U1, vec(1), 5)
    assert hits[0].id == "m1" and hits[0].text == "uses spaces"  # current text, not the index's
    # an update to a text another memory holds keeps the row without a key: never two holders
    store.rewrite(U1, RowChange("m2", memory("m2", "uses spaces"), dedup_key=spaces))
    assert held_by(store, spaces) == "m1"


def claim_row(store: TablestoreStore, key: str, user: str = "u1") -> str | None:
    """The memory id the dedup row of ``key`` names, read straight from the table (None: no claim)."""
    _, row, _ = store.client.get_row(
        store.collection_name, [("user_id", f"{user}#dedup"), ("memory_id", key)], max_version=1
    )
    if row is None or not row.primary_key:
        return None
    return dict((c[0], c[1]) for c in row.attribute_columns).get("memory")


def put_claim(store: TablestoreStore, key: str, target: str, user: str = "u1") -> None:
    """A dedup claim written and nothing else: the state a writer killed between its two writes leaves."""
    store.client.put_row(
        store.collection_name, Row([("user_id", f"{user}#dedup"), ("memory_id", key)], [("memory", target)])
    )


def test_an_orphan_claim_is_completed_under_its_id_never_duplicated(em: TablestoreEmulator) -> None:
    """A claim naming a missing row (its writer died between claim and row): a re-add stores that row, once."""
    store = make(em)
    key = key_for("said once")
    put_claim(store, key, "cut")
    assert held_by(store, key) is None  # not readable until its row exists
    em.reset_counts()
    assert store.put(U1, [new("retry1", "said once", vec(0), key)]) == ["cut"]
    # PutRow claim (exists), read claim + its row (missing), PutRow of the row under the claim's id
    assert api_counts(em) == {"PutRow": 2, "BatchGetRow": 2}
    assert store.put(U1, [new("retry2", "said once", vec(0), key)]) == ["cut"]
    assert [(m.id, m.text) for m in listed(store, U1)] == [("cut", "said once")]
    assert held_by(store, key) == "cut"
    assert [m.id for m in nearest(store, U1, vec(0), 5)] == ["cut"]  # read-your-writes while the index lags
    assert claim_row(store, key) == "cut"


def test_an_orphan_claim_whose_writer_finishes_late_stays_one_memory(em: TablestoreEmulator) -> None:
    """Completing an orphan never clobbers its writer's row, and the writer finishing late writes the same row."""
    store = make(em)
    key = key_for("slow writer")
    put_claim(store, key, "slow")
    assert store.put(U1, [new("other", "slow writer", vec(1), key, n=1)]) == ["slow"]
    # the original writer's own call goes on: its claim is its own, its row lands over the same text
    assert store.put(U1, [new("slow", "slow writer", vec(0), key, n=2)]) == ["slow"]
    assert [m.id for m in listed(store, U1)] == ["slow"]
    slow = store.read_one(U1, "slow")
    assert slow is not None and slow.created_at.endswith("00:02+00:00")
    # and a completion that finds the row already written leaves it as it is
    put_claim(store, key_for("written"), "w")
    store.put(U1, [new("w", "written", vec(0), key_for("written"), n=3)])
    assert store.put(U1, [new("w2", "written", vec(1), key_for("written"), n=4)]) == ["w"]
    written = store.read_one(U1, "w")
    assert written is not None and written.created_at.endswith("00:03+00:00")
    assert len(listed(store, U1)) == 2


def cut_insert(endpoint: str, table: str, memory_id: str, text: str) -> None:
    """Child process body: an insert killed (os._exit, no cleanup) right after its claim, before its row."""
    import os

    store = TablestoreStore(
        collection_name=table, endpoint=endpoint, instance_name=INSTANCE, access_key_id=AK, access_key_secret=SK,
        embedding_model_dims=DIMS,
    )  # fmt: skip
    original = store.client.put_row

    def die_before_memory_rows(table_name: str, row: Any, *args: Any, **kwargs: Any) -> Any:
        if not dict(row.primary_key)["user_id"].endswith("#dedup"):
            os._exit(17)  # the replica dies: no undo, no answer
        return original(table_name, row, *args, **kwargs)

    store.client.put_row = die_before_memory_rows  # type: ignore[method-assign]
    store.put(U1, [new(memory_id, text, vec(0), key_for(text))])
    os._exit(0)  # not reached when the cut works


def test_an_add_killed_between_its_claim_and_its_row_is_stored_once_by_the_retry(em: TablestoreEmulator) -> None:
    store = make(em)
    text = "said once, retried after its process died"
    proc = multiprocessing.get_context("spawn").Process(
        target=cut_insert, args=(em.endpoint, store.collection_name, "first-try", text)
    )
    try:
        proc.start()
        proc.join(timeout=120)
        assert proc.exitcode == 17  # killed between the claim and the row
    finally:
        if proc.is_alive():
            proc.kill()
            proc.join(timeout=10)
    assert claim_row(store, key_for(text)) == "first-try"
    assert listed(store, U1) == []  # the cut left no memory row
    assert store.put(U1, [new("second-try", text, vec(0), key_for(text))]) == ["first-try"]
    assert [(m.id, m.text) for m in listed(store, U1)] == [("first-try", text)]


def test_stale_claims_are_taken_over(em: TablestoreEmulator) -> None:
    """A claim naming a row that exists without the key (key released, text changed) blocks nothing."""
    store = make(em)
    key = key_for("stale")
    store.put(U1, [new("m0", "stale", vec(0), key)])
    store.rewrite(U1, RowChange("m0", memory("m0", "stale", state="deleted"), dedup_key=""))
    assert claim_row(store, key) == "m0" and held_by(store, key) is None
    em.reset_counts()
    assert store.put(U1, [new("m1", "stale", vec(0), key)]) == ["m1"]
    # PutRow claim (exists), read claim + its row (no key), UpdateRow takeover, PutRow memory
    assert api_counts(em) == {"PutRow": 2, "BatchGetRow": 2, "UpdateRow": 1}
    assert held_by(store, key) == "m1"
    assert sorted(m.id for m in listed(store, U1)) == ["m0", "m1"]


def test_hard_deletes_and_failed_writes_leave_no_orphan_claim(em: TablestoreEmulator) -> None:
    """Every path we control releases its claim, so a later add of the text gets its own id."""
    store = make(em, max_retries=2)
    store.put(U1, [new("p1", "purged", vec(0), key_for("purged"))])
    assert store.remove(U1, ["p1"]) == ["p1"]
    assert claim_row(store, key_for("purged")) is None
    with pytest.raises(MemoryNotFound):
        store.rewrite(U1, RowChange("ghost", memory("ghost", "ghost text"), dedup_key=key_for("ghost text")))
    assert claim_row(store, key_for("ghost text")) is None
    assert (
        store.rewrite_many(U1, [RowChange("ghost", memory("ghost", "ghost 2"), None, None, key_for("ghost 2"))]) == []
    )
    assert claim_row(store, key_for("ghost 2")) is None
    original = store.client.put_row
    calls = {"n": 0}

    def claim_then_busy(*args: Any, **kwargs: Any) -> Any:
        # Wraps the SDK (not our code): the claim lands, then every memory-row write is busy.
        calls["n"] += 1
        if calls["n"] == 2:
            em.inject("PutRow", "OTSServerBusy", times=10)
        return original(*args, **kwargs)

    store.client.put_row = claim_then_busy  # type: ignore[method-assign]
    with pytest.raises(TablestoreUnavailableError):
        store.put(U1, [new("f1", "failed", vec(0), key_for("failed"))])
    em.clear_faults()
    store.client.put_row = original  # type: ignore[method-assign]
    assert claim_row(store, key_for("failed")) is None and store.read_one(U1, "f1") is None
    for text, new_id in (("purged", "p2"), ("ghost text", "g1"), ("ghost 2", "g2"), ("failed", "f2")):
        assert store.put(U1, [new(new_id, text, vec(0), key_for(text))]) == [new_id]


def test_retried_claim_whose_answer_was_lost_is_ours(em: TablestoreEmulator) -> None:
    store = make(em)
    store.put(U1, [new("w", "warm", vec(0))])
    em.inject("PutRow", "drop_after", times=1)  # the claim (written first) lands, its answer is lost: retried
    assert store.put(U1, [new("m1", "once", vec(0), key_for("once"))]) == ["m1"]
    em.inject("PutRow", "OTSServerBusy", times=1)
    assert store.put(U1, [new("m2", "twice", vec(0), key_for("twice"))]) == ["m2"]
    em.inject("PutRow", "drop_after", times=2)  # the claim's and the row's answers are both lost
    assert store.put(U1, [new("m3", "thrice", vec(0), key_for("thrice"))]) == ["m3"]
    assert len(listed(store, U1)) == 4


def test_several_rows_and_duplicates_within_one_insert(em: TablestoreEmulator) -> None:
    store = make(em)
    store.put(U1, [new("old", "a", vec(0), key_for("a"))])
    em.reset_counts()
    got = store.put(
        U1,
        [
            new("n0", "a", vec(0), key_for("a")),
            new("n1", "b", vec(1), key_for("b")),
            new("n2", "b", vec(2), key_for("b")),
            new("n3", "c", vec(3)),
        ],
    )
    assert got == ["old", "n1", "n1", "n3"]
    assert sorted(m.id for m in listed(store, U1)) == ["n1", "n3", "old"]


def test_concurrent_same_text_adds_in_threads_store_one(em: TablestoreEmulator) -> None:
    store = make(em)
    workers = 8
    for round_ in range(3):
        text = f"same text {round_}"
        barrier = threading.Barrier(workers)
        results: list[str] = []
        errors: list[BaseException] = []

        def add(
            w: int,
            text: str = text,
            barrier: threading.Barrier = barrier,
            results: list[str] = results,
            errors: list[BaseException] = errors,
        ) -> None:
            try:
                barrier.wait(timeout=60)
                results.extend(store.put(U1, [new(f"{text}-{w}", text, vec(w), key_for(text))]))
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=add, args=(w,)) for w in range(workers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert not errors and len(results) == workers and len(set(results)) == 1, (errors, results)
    assert sorted(m.text for m in listed(store, U1)) == [f"same text {i}" for i in range(3)]


def race_insert(endpoint: str, table: str, text: str, n: int, barrier: Any, out: Any) -> None:
    """Child process body: open the store, wait for the other process, insert ``text`` once."""
    store = TablestoreStore(
        collection_name=table, endpoint=endpoint, instance_name=INSTANCE, access_key_id=AK, access_key_secret=SK,
        embedding_model_dims=DIMS,
    )  # fmt: skip
    try:
        for round_ in range(n):
            barrier.wait(timeout=90)
            said = f"{text} {round_}"
            got = store.put(U1, [new(uuid.uuid4().hex, said, vec(round_), key_for(said))])
            out.put(got[0])
    finally:
        store.close()


def test_concurrent_same_text_adds_in_two_processes_store_one(em: TablestoreEmulator) -> None:
    store = make(em)
    ctx = multiprocessing.get_context("spawn")
    rounds = 5
    barrier = ctx.Barrier(2)
    out = ctx.Queue()
    procs = [
        ctx.Process(target=race_insert, args=(em.endpoint, store.collection_name, "race", rounds, barrier, out))
        for _ in range(2)
    ]
    try:
        for p in procs:
            p.start()
        got = [out.get(timeout=120) for _ in range(2 * rounds)]
        for p in procs:
            p.join(timeout=60)
            assert p.exitcode == 0
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join(timeout=10)
    rows = listed(store, U1)
    assert sorted(m.text for m in rows) == [f"race {i}" for i in range(rounds)]  # exactly one each
    assert {m.id for m in rows} == set(got)


def test_search_right_after_delete_all_and_its_rpc_count(em: TablestoreEmulator) -> None:
    store = make(em)
    store.put(U1, [new(f"d{i}", f"fact {i}", vec(i), n=i) for i in range(30)])
    em.flush_index()  # the index has every row ...
    em.reset_counts()
    assert len(nearest(store, U1, vec(3), 10)) == 10
    assert api_counts(em) == {"Search": 1, "BatchGetRow": 1}
    ids = [m.id for m in store.page(U1, states=ALL, query=EVERYTHING, limit=100).items]
    assert len(store.remove(U1, ids)) == 30
    em.reset_counts()  # ... and still has them: the deletes are not synced yet
    # The table drops every hit the index returns, and the index had more (10 of 30): each read widens once
    # (top_k 10 -> 40, narrowed.py) and then knows the index has nothing else, instead of giving up after one
    # bounded over-fetch as the row methods did (1 Search + 1 BatchGetRow each).
    assert nearest(store, U1, vec(3), 10) == []
    assert api_counts(em) == {"Search": 2, "BatchGetRow": 3}  # 10 rows checked, then the other 20 (12 + 8)
    em.reset_counts()
    assert keyword(store, U1, "fact 3", 10) == []  # a MatchQuery of its own
    assert api_counts(em) == {"Search": 2, "BatchGetRow": 2}


def test_search_reads_its_own_adds_and_updates(em: TablestoreEmulator) -> None:
    store = make(em)
    store.put(U1, [new("t", "green tea", vec(0)), new("c", "black coffee", vec(1))])
    assert nearest(store, U1, vec(0), 1)[0].id == "t"  # not in the index yet
    assert keyword(store, U1, "coffee", 5) == ["c"]
    em.flush_index()
    store.rewrite(U1, RowChange("t", memory("t", "oolong tea"), vec(2)))
    hit = nearest(store, U1, vec(2), 1)[0]
    assert (hit.id, hit.text) == ("t", "oolong tea") and hit.score == pytest.approx(1.0, abs=1e-6)


@pytest.fixture(scope="module")
def limits_store(emulator: TablestoreEmulator) -> TablestoreStore:
    store = make(emulator)
    store.put(U1, [new(f"r{i}", f"row {i}", vec(i), n=i, categories=("a",) if i % 2 else ("b",)) for i in range(150)])
    emulator.flush_index()
    return store


@pytest.mark.parametrize("limit", [1, 2, 10, 25, 26, 50, 99, 100])
def test_every_limit_answers(em: TablestoreEmulator, limits_store: TablestoreStore, limit: int) -> None:
    """Including limits whose over-fetch passes 100 rows (the old second page lost its sort)."""
    em.reset_counts()
    hits = nearest(limits_store, U1, vec(0), limit)
    assert len(hits) == limit and len({h.id for h in hits}) == limit
    assert api_counts(em) == {"Search": 1, "BatchGetRow": 1}
    narrowed = nearest(limits_store, U1, vec(0), limit, query=build_query(category="a"))
    assert len(narrowed) == min(limit, 75) and all(h.categories == ("a",) for h in narrowed)
    assert len(keyword(limits_store, U1, "row", limit)) == limit
    assert len(nearest(limits_store, U1, vec(0), 1001)) == 150  # KNN's top_k maximum is 1000: clamped
    with pytest.raises(UserInputError):
        nearest(limits_store, U1, vec(0), 0)


def test_every_limit_from_1_to_100(em: TablestoreEmulator, limits_store: TablestoreStore) -> None:
    for limit in range(1, 101):
        assert len(nearest(limits_store, U1, vec(limit), limit)) == limit


def test_many_ids_are_batched(em: TablestoreEmulator) -> None:
    store = make(em)
    unknown = [str(uuid.uuid4()) for _ in range(1000)]
    em.reset_counts()
    assert store.read(U1, unknown) == {}
    assert api_counts(em) == {"BatchGetRow": 10}
    em.reset_counts()
    assert store.remove(U1, unknown) == []
    assert api_counts(em) == {"BatchGetRow": 10}  # nothing exists: nothing to write


@pytest.mark.parametrize("fault", ["drop_after", "http503_after", "OTSTimeout_after", "drop", "OTSServerBusy"])
def test_delete_counts_are_exact_under_faults(em: TablestoreEmulator, fault: str) -> None:
    store = make(em)
    ids = [f"x{i}" for i in range(450)]
    store.put(U1, [new(ids[i], f"m{i}", vec(i), n=i) for i in range(450)])
    em.inject("BatchWriteRow", fault, times=2)
    deleted = store.remove(U1, [*ids, "never-existed"])
    assert sorted(deleted) == sorted(ids)
    assert listed(store, U1) == [] and store.remove(U1, ids) == []


def test_update_is_conditional(em: TablestoreEmulator) -> None:
    store = make(em)
    store.put(U1, [new("m1", "v1", vec(0), updated_at="t1")])
    with pytest.raises(ConflictError):
        store.rewrite(U1, RowChange("m1", memory("m1", "v2", updated_at="t2"), expected_updated_at="t0"))
    store.rewrite(U1, RowChange("m1", memory("m1", "v2", updated_at="t2"), expected_updated_at="t1"))
    got = store.read_one(U1, "m1")
    assert got is not None and got.text == "v2"
    with pytest.raises(MemoryNotFound):
        store.rewrite(U1, RowChange("nope", memory("nope", "x", updated_at="t3"), expected_updated_at="t2"))
    with pytest.raises(MemoryNotFound):
        store.rewrite(U1, RowChange("nope", vector=vec(1)))


def test_list_page_is_stable_across_writes(em: TablestoreEmulator) -> None:
    store = make(em)
    ids = [f"p{i:03d}" for i in range(250)]
    store.put(CLINE, [new(ids[i], f"m{i}", vec(i), n=i, client="cline") for i in range(250)])
    store.put(Scope("other", "u1"), [new("p050x", "not mine", vec(0), client="other")])
    em.reset_counts()
    page1 = store.page(CLINE, states=ALL, query=EVERYTHING, limit=100)
    assert [m.id for m in page1.items] == ids[:100] and page1.next_cursor and api_counts(em) == {"GetRange": 1}
    store.remove(CLINE, [ids[100], ids[10]])  # one on the next page, one already seen
    store.put(CLINE, [new("p000a", "late", vec(0), client="cline")])  # sorts before the cursor
    page2 = store.page(CLINE, states=ALL, query=EVERYTHING, limit=100, cursor=page1.next_cursor)
    page3 = store.page(CLINE, states=ALL, query=EVERYTHING, limit=100, cursor=page2.next_cursor)
    assert [m.id for m in page2.items + page3.items] == ids[101:] and page3.next_cursor is None
    u2 = store.page(Scope("cline", "u2", shared=True), states=ALL, query=EVERYTHING, limit=10)
    assert (u2.items, u2.next_cursor) == ([], None)
    with pytest.raises(UserInputError, match="cursor"):
        store.page(CLINE, states=ALL, query=EVERYTHING, limit=10, cursor="not-a-cursor")


def test_keyword_search_over_given_candidates(em: TablestoreEmulator) -> None:
    store = make(em)
    store.put(U1, [new("g", "green tea", vec(0)), new("t", "tea time", vec(1)), new("c", "coffee", vec(2))])
    hits = nearest(store, U1, vec(0), 3)
    em.reset_counts()
    assert set(keyword(store, U1, "tea", 3, candidates=[h.id for h in hits])) == {"g", "t"}
    assert api_counts(em) == {}  # the search's rows: no RPC
    other = make(em, store.collection_name)
    em.reset_counts()
    assert keyword(other, U1, "coffee", 3, candidates=["c", "g", "missing"]) == ["c"]
    assert api_counts(em) == {"BatchGetRow": 1}


def test_startup_races_other_replicas(em: TablestoreEmulator) -> None:
    table = f"t_{uuid.uuid4().hex[:10]}"
    errors: list[BaseException] = []
    stores: list[TablestoreStore] = []
    barrier = threading.Barrier(4)

    def start() -> None:
        try:
            barrier.wait(timeout=60)
            stores.append(make(em, table))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors and len(stores) == 4
    assert em.counts["CreateTable"] >= 1 and len(em.store.tables[table].indexes) == 1


def test_count_after_a_whole_list_page_is_free_and_asks_the_index_otherwise(em: TablestoreEmulator) -> None:
    store = make(em)
    store.put(CLINE, [new(f"c{i}", f"m{i}", vec(i), client="cline") for i in range(5)])
    store.put(Scope("cursor", "u1"), [new("o1", "other client", vec(0), client="cursor")])
    em.reset_counts()
    page = store.page(CLINE, states=ALL, query=EVERYTHING, limit=10)
    assert len(page.items) == 5 and page.next_cursor is None and total(store, CLINE) == 5
    assert api_counts(em) == {"GetRange": 1}
    em.reset_counts()
    assert total(store, CLINE) == 5  # the memo is used once: then the index's count (this process's writes
    assert "GetRange" not in api_counts(em) and em.counts["Search"] >= 1  # reconciled), no scan of the range
    store.page(CLINE, states=ALL, query=EVERYTHING, limit=10)
    store.remove(CLINE, ["c0"])  # a write in between: no stale count
    assert total(store, CLINE) == 4
    assert total(store, U1) == 5


def test_update_with_an_empty_key_frees_the_text(em: TablestoreEmulator) -> None:
    """How a soft delete (state change) releases the text: the row stays, its key goes."""
    store = make(em)
    key = key_for("archived fact")
    store.put(U1, [new("m1", "archived fact", vec(0), key)])
    store.rewrite(U1, RowChange("m1", memory("m1", "archived fact", state="deleted"), dedup_key=""))
    assert held_by(store, key) is None
    assert store.put(U1, [new("m2", "archived fact", vec(0), key)]) == ["m2"]


def test_conditional_update_retried_after_a_lost_answer_succeeds(em: TablestoreEmulator) -> None:
    store = make(em)
    store.put(U1, [new("m1", "v1", vec(0), updated_at="t1")])
    em.inject("UpdateRow", "drop_after", times=1)  # applied; the retry then fails its own condition
    store.rewrite(U1, RowChange("m1", memory("m1", "v2", updated_at="t2"), expected_updated_at="t1"))
    got = store.read_one(U1, "m1")
    assert got is not None and got.text == "v2"


@pytest.mark.parametrize("fault", [None, "drop_after", "OTSTimeout_after", "drop", "OTSServerBusy"])
def test_update_many_is_batched_and_exact(em: TablestoreEmulator, fault: str | None) -> None:
    store = make(em)
    n = 250
    ids = [f"u{i:03d}" for i in range(n)]
    store.put(U1, [new(ids[i], f"t{i}", vec(i), key_for(f"t{i}"), updated_at="t1") for i in range(n)])
    changes = [
        RowChange(i, memory(i, f"t{k}", updated_at="t2", state="deleted"), expected_updated_at="t1", dedup_key="")
        for k, i in enumerate(ids)
    ]
    changes[0] = replace(changes[0], expected_updated_at="stale")  # lost to another writer: left out
    changes.append(RowChange("missing", memory("missing", "x"), dedup_key=""))
    if fault:
        em.inject("BatchWriteRow", fault, times=2)
    em.reset_counts()
    updated = store.rewrite_many(U1, changes)
    assert sorted(updated) == ids[1:]
    if fault is None:
        assert api_counts(em) == {"BatchWriteRow": math.ceil(len(changes) / 200)}
    changed, kept = store.read_one(U1, ids[5]), store.read_one(U1, ids[0])
    assert changed is not None and changed.state == "deleted" and kept is not None and kept.state == "active"
    # the texts were released: they can be added again, except t0 (its update lost)
    assert store.put(U1, [new("again5", "t5", vec(0), key_for("t5"))]) == ["again5"]
    assert store.put(U1, [new("again0", "t0", vec(0), key_for("t0"))]) == [ids[0]]


def test_state_filter_runs_on_the_table_and_the_index(em: TablestoreEmulator) -> None:
    """Soft-deleted rows stay in the table: list, count and search filter them where the data lives."""
    store = make(em)
    store.put(CLINE, [new(f"s{i}", f"s{i}", vec(i), client="cline") for i in range(6)])
    store.rewrite_many(CLINE, [RowChange(f"s{i}", memory(f"s{i}", f"s{i}", client="cline", state="deleted"))
                               for i in range(4)])  # fmt: skip
    em.reset_counts()
    page = store.page(CLINE, states=ACTIVE, query=EVERYTHING, limit=10)
    assert [m.id for m in page.items] == ["s4", "s5"] and api_counts(em) == {"GetRange": 1}
    assert total(store, CLINE, ACTIVE) == 2
    assert {m.id for m in nearest(store, CLINE, vec(0), 2, states=ACTIVE)} == {
        "s4",
        "s5",
    }  # the index still says active
    em.flush_index()
    em.reset_counts()
    assert {m.id for m in nearest(store, CLINE, vec(0), 2, states=ACTIVE)} == {"s4", "s5"}
    assert api_counts(em) == {"Search": 1, "BatchGetRow": 1}  # state pushed down: no over-fetch


def test_an_index_from_before_the_state_column_still_answers(em: TablestoreEmulator) -> None:
    store = make(em)
    meta = index_meta(DIMS, "cosine")
    meta.fields = [f for f in meta.fields if f.field_name != "state"]
    store.client.delete_search_index(store.collection_name, store.index_name)
    store.client.create_search_index(store.collection_name, store.index_name, meta)
    older = make(em, store.collection_name)  # warns, and keeps `state` filters out of its queries
    older.put(U1, [new("a", "live", vec(0)), new("b", "gone", vec(1), state="deleted")])
    em.flush_index()
    assert [m.id for m in nearest(older, U1, vec(1), 5, states=ACTIVE)] == ["a"]
