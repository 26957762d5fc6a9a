"""TablestoreStore against the local Tablestore emulator, through the real ``tablestore`` SDK.

The emulator's search index lags writes by ``INDEX_DELAY`` (like the service); tests that need the index to
have caught up call ``flush_index()``. Everything else must hold while the index lags.
"""

from __future__ import annotations

import contextvars
import math
import multiprocessing
import socket
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import pytest
from mem0.utils.lemmatization import lemmatize_for_bm25
from tablestore import OTSClient, Row

from tablestore_openmemory_mcp.errors import ConflictError, MemoryNotFound, ScopeMissing, UserInputError
from tablestore_openmemory_mcp.stores.base import ACTIVE_SCOPE, scoped
from tablestore_openmemory_mcp.stores.filters import matches
from tablestore_openmemory_mcp.stores.tablestore import RowUpdate, TablestoreStore, TablestoreUnavailableError
from tablestore_openmemory_mcp.stores.tablestore import query as qb
from tablestore_openmemory_mcp.stores.tablestore.schema import index_meta
from tests.fakes.store_rows import all_rows
from tests.fakes.table_pool import TablePool
from tests.fakes.tablestore_fixture import INDEX_DELAY
from tests.tablestore_emulator import TablestoreEmulator

AK, SK, INSTANCE = "test-ak", "test-secret", "testinst"
DIMS = 8
TABLES = TablePool()  # new tables made ahead in batches: a test's store needs no wait for its table (see there)


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


@contextmanager
def scope(**ids: str) -> Iterator[None]:
    token = ACTIVE_SCOPE.set(dict(ids))
    try:
        yield
    finally:
        ACTIVE_SCOPE.reset(token)


def vec(i: int) -> list[float]:
    """A distinct unit-ish vector per i."""
    v = [0.01] * DIMS
    v[i % DIMS] = 1.0
    v[(i // DIMS) % DIMS] += 0.5
    return v


def payload(text: str, user: str = "u1", n: int = 0, **extra: Any) -> dict[str, Any]:
    return {
        "data": text,
        "user_id": user,
        "hash": uuid.uuid4().hex,
        "created_at": f"2024-01-01T00:{n // 60:02d}:{n % 60:02d}+00:00",
        **extra,
    }


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
    with scope(user_id="u1"):
        store.insert(
            [vec(0), vec(1), vec(2)], [payload("alpha", n=1), payload("beta", n=2), payload("gamma", n=3)], ids
        )
        got = store.get(ids[1])
        assert got is not None and got.id == ids[1] and got.payload["data"] == "beta"
        assert [r.payload["data"] for r in all_rows(store)] == ["alpha", "beta", "gamma"]
        assert all_rows(store, top_k=2)[1].id == ids[1]
        assert store.count() == 3 and store.count({"data": "beta"}) == 1
        em.flush_index()
        hits = store.search("alpha", vec(0), top_k=2, filters={"user_id": "u1"})
        assert hits[0].id == ids[0] and len(hits) == 2 and hits[0].score >= hits[1].score
        store.update(ids[0], vector=vec(5), payload=payload("alpha two", n=1))
        assert store.get(ids[0]).payload["data"] == "alpha two"
        store.update(ids[0], payload={**store.get(ids[0]).payload, "role": "user"})  # vector kept
        em.flush_index()
        assert store.search("x", vec(5), top_k=1)[0].id == ids[0]
        store.delete_many([ids[2]])
        assert store.get(ids[2]) is None
        store.delete_many([ids[2]])  # idempotent
        assert sorted(store.delete_many([*ids, "missing"])) == sorted(ids[:2])
        assert all_rows(store) == []
        with pytest.raises(MemoryNotFound, match="not found"):
            store.update(ids[0], payload=payload("ghost"))
    store.close()


def test_every_call_outside_a_scope_fails_closed(em: TablestoreEmulator) -> None:
    """No scope is never "everything": each store method raises ScopeMissing before any RPC."""
    store = make(em)
    with scope(user_id="u1"):
        store.insert([vec(0)], [payload("mine")], ["a1"])
    em.reset_counts()
    calls = [
        lambda: store.insert([vec(1)], [payload("x")], ["a2"]),
        lambda: store.get("a1"),
        lambda: store.get_many(["a1"]),
        lambda: store.find_by_dedup_key("k"),
        lambda: store.update("a1", payload=payload("y")),
        lambda: store.delete_many(["a1"]),
        lambda: store.list_page(None, 10),
        lambda: store.count(),
        lambda: store.search("q", vec(0), 5),
        lambda: store.keyword_search("q", 5),
    ]
    for call in calls:
        with pytest.raises(ScopeMissing):
            call()
    assert sum(em.counts.values()) == 0
    with scope(user_id="u1"):
        assert store.get("a1") is not None


# ------------------------------------------------------------------------------------ RPC budgets


def test_get_and_update_are_one_rpc_each_and_delete_two(em: TablestoreEmulator) -> None:
    """A delete reads the row's dedup key first, so it can release it (see test_purge_releases_the_key)."""
    store = make(em)
    with scope(user_id="u1", agent_id="cline"):
        store.insert([vec(1)], [payload("one", agent_id="cline")], ["m1"])
        for action, apis in (
            (lambda: store.get("m1"), {"GetRow": 1}),
            (lambda: store.update("m1", vector=vec(2), payload=payload("two", agent_id="cline")), {"UpdateRow": 1}),
            (lambda: store.delete_many(["m1"]), {"BatchGetRow": 1, "BatchWriteRow": 1}),
        ):
            em.reset_counts()
            action()
            assert api_counts(em) == apis


def test_search_is_one_rpc_and_keyword_search_reuses_it(em: TablestoreEmulator) -> None:
    store = make(em)
    with scope(user_id="u1"):
        store.insert([vec(i) for i in range(4)], [payload(t, n=i) for i, t in enumerate(
            ["我喜欢喝乌龙茶", "I like green tea", "乌龙茶和红茶", "coffee every morning"])],
            [f"k{i}" for i in range(4)])  # fmt: skip
        em.flush_index()
        em.reset_counts()
        flt = {"user_id": "u1"}
        hits = store.search("乌龙茶", vec(0), top_k=60, filters=flt)
        assert len(hits) == 4 and api_counts(em) == {"Search": 1, "BatchGetRow": 1}  # hits checked on the table
        kw = store.keyword_search("乌龙茶", top_k=60, filters=flt)
        assert api_counts(em) == {"Search": 1, "BatchGetRow": 1}  # no second RPC
        assert {r.id for r in kw} == {"k0", "k2"} and all(r.score > 0 for r in kw)
        # the stash is used once; a later keyword_search is a real MatchQuery
        kw2 = store.keyword_search("乌龙茶", top_k=10, filters=flt)
        assert api_counts(em) == {"Search": 2, "BatchGetRow": 2} and {r.id for r in kw2} == {"k0", "k2"}


def test_keyword_search_after_search_from_another_thread(em: TablestoreEmulator) -> None:
    """AsyncMemory runs search and keyword_search via asyncio.to_thread (maybe different threads)."""
    store = make(em)
    with scope(user_id="u1"):
        store.insert([vec(0), vec(1)], [payload("乌龙茶", n=0), payload("tea", n=1)], ["c0", "c1"])
        em.flush_index()
        em.reset_counts()
        store.search("乌龙茶", vec(0), top_k=5, filters={"user_id": "u1"})
        out: list[Any] = []
        ctx = contextvars.copy_context()  # what asyncio.to_thread does

        def run() -> None:
            out.append(ctx.run(store.keyword_search, "乌龙茶", 5, {"user_id": "u1"}))

        t = threading.Thread(target=run)
        t.start()
        t.join()
        assert api_counts(em) == {"Search": 1, "BatchGetRow": 1} and [r.id for r in out[0]] == ["c0"]


def test_keyword_search_accepts_mem0s_lemmatized_query(em: TablestoreEmulator) -> None:
    store = make(em)
    query = "What drinks was the user meeting friends for?"
    with scope(user_id="u1"):
        store.insert([vec(0), vec(1)], [payload("meeting friends for drinks", n=0), payload("tea", n=1)],
                     ["l0", "l1"])  # fmt: skip
        em.flush_index()
        em.reset_counts()
        store.search(query, vec(0), top_k=5, filters={"user_id": "u1"})
        kw = store.keyword_search(lemmatize_for_bm25(query), 5, {"user_id": "u1"})
        assert api_counts(em) == {"Search": 1, "BatchGetRow": 1} and [r.id for r in kw] == ["l0"]


def test_chinese_keyword_search_via_index(em: TablestoreEmulator) -> None:
    store = make(em)
    texts = ["用户喜欢喝乌龙茶", "用户住在杭州", "The user likes oolong tea", "用户的猫叫小白"]
    with scope(user_id="u1"):
        store.insert(
            [vec(i) for i in range(4)], [payload(t, n=i) for i, t in enumerate(texts)], ["c0", "c1", "c2", "c3"]
        )
    store._recent.clear()  # only the index answers here (another process's writes look like this)
    em.flush_index()
    with scope(user_id="u1"):
        assert [r.id for r in store.keyword_search("乌龙茶", 5, {"user_id": "u1"})] == ["c0"]
        assert [r.id for r in store.keyword_search("杭州", 5, {"user_id": "u1"})] == ["c1"]
        assert [r.id for r in store.keyword_search("oolong", 5, {"user_id": "u1"})] == ["c2"]
        assert store.keyword_search("", 5, {"user_id": "u1"}) == []


def test_list_is_complete_and_ordered_right_after_insert(em: TablestoreEmulator) -> None:
    store = make(em)
    em.index_delay = 3
    n = 2100
    ids = [str(uuid.uuid4()) for _ in range(n)]
    with scope(user_id="u1"):
        store.insert([vec(i) for i in range(n)], [payload(f"memory {i}", n=i) for i in range(n)], ids)
    assert em.counts["BatchWriteRow"] == math.ceil(n / 200)
    with scope(user_id="u1"):
        rows = all_rows(store)
        assert [r.id for r in rows] == ids  # created order, nothing missing although the index lags
        assert "vector" not in rows[0].payload
        assert store.count() == n
        em.reset_counts()
        assert store.delete_many(ids[:450]) == ids[:450]
        assert api_counts(em) == {"BatchGetRow": 5, "BatchWriteRow": 3}  # keys read per 100, rows deleted per 200
        assert store.count() == n - 450


# ----------------------------------------------------------------------------------- filters


FILTER_CASES: list[dict[str, Any]] = [
    {"agent_id": "a1"},
    {"agent_id": {"eq": "a1"}},
    {"agent_id": {"ne": "a1"}},
    {"agent_id": {"in": ["a1", "a2"]}},
    {"agent_id": ["a2", "a3"]},
    {"agent_id": {"nin": ["a1"]}},
    {"created_at": {"gt": "2024-01-01T00:00:02+00:00"}},
    {"created_at": {"gte": "2024-01-01T00:00:02+00:00", "lt": "2024-01-01T00:00:04+00:00"}},
    {"created_at": {"lte": "2024-01-01T00:00:01+00:00"}},
    {"run_id": "*"},
    {"role": {"contains": "ssist"}},
    {"AND": [{"agent_id": "a1"}, {"run_id": "r1"}]},
    {"OR": [{"agent_id": "a2"}, {"run_id": "r1"}]},
    {"NOT": [{"agent_id": "a1"}]},
    {"category": "food"},  # not indexed: post-filter
    {"data": {"icontains": "TEA"}},  # not pushable: post-filter
    {"OR": [{"category": "food"}, {"agent_id": "a3"}]},  # partly unpushable OR
    {"AND": [{"agent_id": {"in": ["a1", "a2"]}}, {"category": {"ne": "food"}}]},
]


@pytest.fixture(scope="module")
def filter_store(emulator: TablestoreEmulator) -> tuple[TablestoreStore, list[dict[str, Any]]]:
    store = make(emulator)
    payloads = []
    for i in range(8):
        extra: dict[str, Any] = {"agent_id": f"a{i % 3 + 1}", "category": "food" if i % 2 else "work"}
        if i % 3 == 0:
            extra["run_id"] = "r1"
        extra["role"] = "assistant" if i % 4 == 0 else "user"
        payloads.append(payload(["green tea", "oolong", "coffee", "Tea time"][i % 4], n=i, **extra))
    with scope(user_id="u1"):
        store.insert([vec(i) for i in range(8)], payloads, [f"f{i}" for i in range(8)])
    emulator.flush_index()
    return store, payloads


@pytest.mark.parametrize("flt", FILTER_CASES, ids=[str(f) for f in FILTER_CASES])
def test_filter_pushdown_matches_python_semantics(
    em: TablestoreEmulator, filter_store: tuple[TablestoreStore, list[dict[str, Any]]], flt: dict[str, Any]
) -> None:
    store, payloads = filter_store
    expected = {f"f{i}" for i, p in enumerate(payloads) if matches(flt, p)}
    full = {"AND": [{"user_id": "u1"}, flt]}
    with scope(user_id="u1"):
        em.reset_counts()
        found = {r.id for r in store.search("q", vec(0), top_k=20, filters=full)}
        assert em.counts["Search"] == 1
        assert found == expected
        assert {r.id for r in all_rows(store, flt)} == expected
        assert store.count(flt) == len(expected)


def test_pushdown_is_exact_only_for_indexed_fields() -> None:
    assert qb.build({"agent_id": {"in": ["a"]}, "created_at": {"gte": "2024"}}).exact
    assert qb.build({"OR": [{"agent_id": "a"}, {"run_id": "*"}]}).exact
    assert not qb.build({"category": "x"}).exact
    assert not qb.build({"OR": [{"agent_id": "a"}, {"category": "x"}]}).exact
    assert qb.build({"OR": [{"agent_id": "a"}, {"category": "x"}]}).query is None
    partial = qb.build({"AND": [{"agent_id": "a"}, {"category": "x"}]})
    assert partial.query is not None and not partial.exact
    assert qb.build(None).query is None and qb.build(None).exact


# ------------------------------------------------------------------------------------- scope


def test_scope_is_enforced_by_id(em: TablestoreEmulator) -> None:
    store = make(em)
    with scope(user_id="u1"):
        store.insert(
            [vec(0), vec(1)], [payload("mine", agent_id="cline", n=0), payload("other agent", agent_id="cursor", n=1)],
            ["mine", "other_agent"],
        )  # fmt: skip
    with scope(user_id="u2"):
        store.insert([vec(2)], [payload("other user", user="u2", agent_id="cline", n=2)], ["other_user"])
    em.flush_index()
    with scope(user_id="u1", agent_id="cline"):
        assert store.get("mine") is not None
        assert store.get("other_agent") is None and store.get("other_user") is None
        assert store.get_many(["mine", "other_agent", "other_user"]).keys() == {"mine"}
        with pytest.raises(MemoryNotFound, match="not found"):
            store.update("other_agent", payload=payload("hijack", agent_id="cline"))
        store.delete_many(["other_agent"])  # silently nothing
        assert store.delete_many(["other_agent", "other_user", "mine"]) == ["mine"]
        assert all_rows(store) == []
        assert store.search("q", vec(1), top_k=10) == []
        assert all_rows(store, {"user_id": "u2"}) == []
        with pytest.raises(ValueError, match="scope"):
            store.insert([vec(3)], [payload("sneaky", user="u2", agent_id="cline")], ["x"])
    with scope(user_id="u1"):
        assert store.get("other_agent").payload["data"] == "other agent"
    with scope(user_id="u2"):
        assert store.get("other_user").payload["data"] == "other user"


# ------------------------------------------------------------------------------------ validation


@pytest.mark.parametrize(
    "bad",
    [[float("nan")] * DIMS, [1.0] * (DIMS - 1), [float("inf")] + [0.0] * (DIMS - 1), [1e39] * DIMS],
)
def test_bad_vectors_write_nothing(em: TablestoreEmulator, bad: list[float]) -> None:
    store = make(em)
    em.reset_counts()
    with scope(user_id="u1"), pytest.raises(ValueError, match="vector"):
        store.insert([vec(0), bad], [payload("ok"), payload("bad")], ["ok", "bad"])
    assert sum(em.counts.values()) == 0
    with scope(user_id="u1"):
        assert all_rows(store) == []


def test_oversized_text_is_rejected(em: TablestoreEmulator) -> None:
    store = make(em)
    em.reset_counts()
    with scope(user_id="u1"), pytest.raises(ValueError, match="KiB"):
        store.insert([vec(0)], [payload("x" * (64 * 1024 + 1))], ["big"])
    assert sum(em.counts.values()) == 0


# ---------------------------------------------------------------------------------------- faults


def test_transient_faults_are_retried(em: TablestoreEmulator) -> None:
    store = make(em)
    with scope(user_id="u1"):
        em.inject("PutRow", "drop", times=1)
        store.insert([vec(0)], [payload("dropped once")], ["d1"])
        assert store.get("d1") is not None
        em.flush_index()
        em.inject("Search", "OTSServerBusy", times=2)
        assert [r.id for r in store.search("q", vec(0), 5)] == ["d1"]
        em.inject("UpdateRow", "http503", times=2)
        store.update("d1", payload=payload("updated"))
        assert store.get("d1").payload["data"] == "updated"
        em.inject("BatchWriteRow", "OTSOperationThrottled", times=1)
        store.insert([vec(1), vec(2)], [payload("b1"), payload("b2")], ["b1", "b2"])
        em.inject("GetRange", "OTSTimeout", times=1)
        assert store.count() == 3


def test_hang_is_cut_by_timeout_and_retried(em: TablestoreEmulator) -> None:
    store = make(em, timeout=0.5)
    with scope(user_id="u1"):
        store.insert([vec(0)], [payload("x")], ["h1"])
        em.hang_seconds = 3600.0  # only the client's timeout can end the first attempt (a count, not a clock)
        em.inject("GetRow", "hang", times=1)
        em.reset_counts()
        pool = ThreadPoolExecutor(1)
        try:  # the bound only stops a regression from hanging the suite
            got = pool.submit(contextvars.copy_context().run, store.get, "h1").result(timeout=120)
        finally:
            pool.shutdown(wait=False)
        assert got is not None and em.counts["GetRow"] == 2, "the hung attempt was cut and retried"


def test_exhausted_retries_raise_clearly(em: TablestoreEmulator) -> None:
    store = make(em, max_retries=3)
    with scope(user_id="u1"):
        em.inject("Search", "OTSServerBusy", times=3)
        with pytest.raises(TablestoreUnavailableError, match=r"busy \(OTSServerBusy\) after 3 attempts"):
            store.search("q", vec(0), 5)
        em.inject("PutRow", "http500", times=3)
        with pytest.raises(TablestoreUnavailableError, match="after 3 attempts"):
            store.insert([vec(0)], [payload("never")], ["n1"])
        assert store.get("n1") is None
        em.inject("UpdateRow", "OTSParameterInvalid", times=1)  # not retryable: raised at once
        store.insert([vec(0)], [payload("p")], ["p1"])
        em.reset_counts()
        with pytest.raises(Exception, match="OTSParameterInvalid"):
            store.update("p1", payload=payload("q"))
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
    with scope(user_id="u1"), pytest.raises(TablestoreUnavailableError, match="OTSServerBusy"):
        store.insert([vec(i) for i in range(n)], [payload(f"m{i}", n=i) for i in range(n)],
                     [f"r{i}" for i in range(n)])  # fmt: skip
    with scope(user_id="u1"):
        assert store.count() == 0  # the 200 rows that landed were removed again


def test_concurrent_calls_from_many_threads(em: TablestoreEmulator) -> None:
    store = make(em)
    errors: list[BaseException] = []

    def worker(w: int) -> None:
        try:
            with scope(user_id=f"user{w}"):
                for i in range(5):
                    store.insert([vec(i)], [payload(f"w{w} {i}", user=f"user{w}", n=i)], [f"w{w}-{i}"])
                assert store.count() == 5
                assert store.get(f"w{w}-3") is not None
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
    with scope(user_id="u1"):
        store.insert([vec(0)], [payload("signed")], ["s1"])
        assert store.get("s1") is not None
    assert isinstance(store.client, OTSClient)


# ------------------------------------------------------------------------- consistency (issue 9)
# Every test below runs with the index lagging (INDEX_DELAY) and never flushes unless it says why.


def key_for(text: str, user: str = "u1") -> str:
    return f"{user}:{text}"


def test_delete_then_readd_stores_the_text_again(em: TablestoreEmulator) -> None:
    store = make(em)
    with scope(user_id="u1"):
        assert store.insert([vec(0)], [payload("likes tea")], ["m1"], [key_for("likes tea")]) == ["m1"]
        assert store.find_by_dedup_key(key_for("likes tea")).id == "m1"
        assert store.insert([vec(0)], [payload("likes tea")], ["m2"], [key_for("likes tea")]) == ["m1"]  # duplicate
        assert store.count() == 1
        assert store.delete_many(["m1"]) == ["m1"]
        assert store.find_by_dedup_key(key_for("likes tea")) is None  # its claim was released with the row
        assert store.insert([vec(0)], [payload("likes tea")], ["m3"], [key_for("likes tea")]) == ["m3"]
        assert [r.id for r in all_rows(store)] == ["m3"]
        assert store.find_by_dedup_key(key_for("likes tea")).id == "m3"
        assert [r.id for r in store.search("tea", vec(0), 5)] == ["m3"]  # read-your-writes while the index lags


def test_update_then_readd_of_the_old_text(em: TablestoreEmulator) -> None:
    store = make(em)
    with scope(user_id="u1"):
        store.insert([vec(0)], [payload("uses tabs")], ["m1"], [key_for("uses tabs")])
        store.update("m1", vec(1), payload("uses spaces"), dedup_key=key_for("uses spaces"))
        assert store.find_by_dedup_key(key_for("uses tabs")) is None
        assert store.find_by_dedup_key(key_for("uses spaces")).id == "m1"
        assert store.insert([vec(0)], [payload("uses tabs")], ["m2"], [key_for("uses tabs")]) == ["m2"]
        assert store.insert([vec(1)], [payload("uses spaces")], ["m3"], [key_for("uses spaces")]) == ["m1"]
        assert sorted(r.payload["data"] for r in all_rows(store)) == ["uses spaces", "uses tabs"]
        hits = store.search("q", vec(1), 5)
        assert hits[0].id == "m1" and hits[0].payload["data"] == "uses spaces"  # current text, not the index's
        # an update to a text another memory holds keeps the row without a key: never two holders
        store.update("m2", payload=payload("uses spaces"), dedup_key=key_for("uses spaces"))
        assert store.find_by_dedup_key(key_for("uses spaces")).id == "m1"


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
    with scope(user_id="u1"):
        assert store.find_by_dedup_key(key) is None  # not readable until its row exists
        em.reset_counts()
        assert store.insert([vec(0)], [payload("said once")], ["retry1"], [key]) == ["cut"]
        # PutRow claim (exists), read claim + its row (missing), PutRow of the row under the claim's id
        assert api_counts(em) == {"PutRow": 2, "BatchGetRow": 2}
        assert store.insert([vec(0)], [payload("said once")], ["retry2"], [key]) == ["cut"]
        rows = all_rows(store)
        assert [(r.id, r.payload["data"]) for r in rows] == [("cut", "said once")]
        assert store.find_by_dedup_key(key).id == "cut"
        assert [r.id for r in store.search("q", vec(0), 5)] == ["cut"]  # read-your-writes while the index lags
    assert claim_row(store, key) == "cut"


def test_an_orphan_claim_whose_writer_finishes_late_stays_one_memory(em: TablestoreEmulator) -> None:
    """Completing an orphan never clobbers its writer's row, and the writer finishing late writes the same row."""
    store = make(em)
    key = key_for("slow writer")
    put_claim(store, key, "slow")
    with scope(user_id="u1"):
        assert store.insert([vec(1)], [payload("slow writer", n=1)], ["other"], [key]) == ["slow"]
        # the original writer's own call goes on: its claim is its own, its row lands over the same text
        assert store.insert([vec(0)], [payload("slow writer", n=2)], ["slow"], [key]) == ["slow"]
        assert [r.id for r in all_rows(store)] == ["slow"]
        assert store.get("slow").payload["created_at"].endswith("00:02+00:00")
        # and a completion that finds the row already written leaves it as it is
        put_claim(store, key_for("written"), "w")
        store.insert([vec(0)], [payload("written", n=3)], ["w"], [key_for("written")])
        assert store.insert([vec(1)], [payload("written", n=4)], ["w2"], [key_for("written")]) == ["w"]
        assert store.get("w").payload["created_at"].endswith("00:03+00:00")
        assert store.count() == 2


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
    with scoped({"user_id": "u1"}):
        store.insert([vec(0)], [payload(text)], [memory_id], [key_for(text)])
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
    with scope(user_id="u1"):
        assert all_rows(store) == []  # the cut left no memory row
        assert store.insert([vec(0)], [payload(text)], ["second-try"], [key_for(text)]) == ["first-try"]
        assert [(r.id, r.payload["data"]) for r in all_rows(store)] == [("first-try", text)]


def test_stale_claims_are_taken_over(em: TablestoreEmulator) -> None:
    """A claim naming a row that exists without the key (key released, text changed) blocks nothing."""
    store = make(em)
    key = key_for("stale")
    with scope(user_id="u1"):
        store.insert([vec(0)], [payload("stale")], ["m0"], [key])
        store.update("m0", payload=payload("stale", state="deleted"), dedup_key="")
        assert claim_row(store, key) == "m0" and store.find_by_dedup_key(key) is None
        em.reset_counts()
        assert store.insert([vec(0)], [payload("stale")], ["m1"], [key]) == ["m1"]
        # PutRow claim (exists), read claim + its row (no key), UpdateRow takeover, PutRow memory
        assert api_counts(em) == {"PutRow": 2, "BatchGetRow": 2, "UpdateRow": 1}
        assert store.find_by_dedup_key(key).id == "m1"
        assert sorted(r.id for r in all_rows(store)) == ["m0", "m1"]


def test_hard_deletes_and_failed_writes_leave_no_orphan_claim(em: TablestoreEmulator) -> None:
    """Every path we control releases its claim, so a later add of the text gets its own id."""
    store = make(em, max_retries=2)
    with scope(user_id="u1"):
        store.insert([vec(0)], [payload("purged")], ["p1"], [key_for("purged")])
        assert store.delete_many(["p1"]) == ["p1"]
        assert claim_row(store, key_for("purged")) is None
        with pytest.raises(MemoryNotFound):
            store.update("ghost", payload=payload("ghost text"), dedup_key=key_for("ghost text"))
        assert claim_row(store, key_for("ghost text")) is None
        assert store.update_many([RowUpdate("ghost", None, payload("ghost 2"), None, key_for("ghost 2"))]) == []
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
            store.insert([vec(0)], [payload("failed")], ["f1"], [key_for("failed")])
        em.clear_faults()
        store.client.put_row = original  # type: ignore[method-assign]
        assert claim_row(store, key_for("failed")) is None and store.get("f1") is None
        for text, new_id in (("purged", "p2"), ("ghost text", "g1"), ("ghost 2", "g2"), ("failed", "f2")):
            assert store.insert([vec(0)], [payload(text)], [new_id], [key_for(text)]) == [new_id]


def test_retried_claim_whose_answer_was_lost_is_ours(em: TablestoreEmulator) -> None:
    store = make(em)
    with scope(user_id="u1"):
        store.insert([vec(0)], [payload("warm")], ["w"])
        em.inject("PutRow", "drop_after", times=1)  # the claim (written first) lands, its answer is lost: retried
        assert store.insert([vec(0)], [payload("once")], ["m1"], [key_for("once")]) == ["m1"]
        em.inject("PutRow", "OTSServerBusy", times=1)
        assert store.insert([vec(0)], [payload("twice")], ["m2"], [key_for("twice")]) == ["m2"]
        em.inject("PutRow", "drop_after", times=2)  # the claim's and the row's answers are both lost
        assert store.insert([vec(0)], [payload("thrice")], ["m3"], [key_for("thrice")]) == ["m3"]
        assert store.count() == 4


def test_several_rows_and_duplicates_within_one_insert(em: TablestoreEmulator) -> None:
    store = make(em)
    with scope(user_id="u1"):
        store.insert([vec(0)], [payload("a")], ["old"], [key_for("a")])
        em.reset_counts()
        got = store.insert(
            [vec(i) for i in range(4)],
            [payload("a"), payload("b"), payload("b"), payload("c")],
            ["n0", "n1", "n2", "n3"],
            [key_for("a"), key_for("b"), key_for("b"), None],
        )
        assert got == ["old", "n1", "n1", "n3"]
        assert sorted(r.id for r in all_rows(store)) == ["n1", "n3", "old"]


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
                with scope(user_id="u1"):
                    barrier.wait(timeout=60)
                    results.extend(store.insert([vec(w)], [payload(text)], [f"{text}-{w}"], [key_for(text)]))
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=add, args=(w,)) for w in range(workers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert not errors and len(results) == workers and len(set(results)) == 1, (errors, results)
    with scope(user_id="u1"):
        assert sorted(r.payload["data"] for r in all_rows(store)) == [f"same text {i}" for i in range(3)]


def race_insert(endpoint: str, table: str, text: str, n: int, barrier: Any, out: Any) -> None:
    """Child process body: open the store, wait for the other process, insert ``text`` once."""
    store = TablestoreStore(
        collection_name=table, endpoint=endpoint, instance_name=INSTANCE, access_key_id=AK, access_key_secret=SK,
        embedding_model_dims=DIMS,
    )  # fmt: skip
    try:
        for round_ in range(n):
            barrier.wait(timeout=90)
            with scoped({"user_id": "u1"}):
                got = store.insert([vec(round_)], [payload(f"{text} {round_}")], [uuid.uuid4().hex],
                                   [key_for(f"{text} {round_}")])  # fmt: skip
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
    with scope(user_id="u1"):
        rows = all_rows(store)
        assert sorted(r.payload["data"] for r in rows) == [f"race {i}" for i in range(rounds)]  # exactly one each
        assert {r.id for r in rows} == set(got)


def test_search_right_after_delete_all_and_its_rpc_count(em: TablestoreEmulator) -> None:
    store = make(em)
    with scope(user_id="u1"):
        store.insert([vec(i) for i in range(30)], [payload(f"fact {i}", n=i) for i in range(30)],
                     [f"d{i}" for i in range(30)])  # fmt: skip
        em.flush_index()  # the index has every row ...
        em.reset_counts()
        assert len(store.search("fact", vec(3), 10)) == 10
        assert api_counts(em) == {"Search": 1, "BatchGetRow": 1}
        ids = [r.id for r in store.list_page(None, 100)[0]]
        assert len(store.delete_many(ids)) == 30
        em.reset_counts()  # ... and still has them: the deletes are not synced yet
        assert store.search("fact", vec(3), 10) == []
        assert store.keyword_search("fact 3", 10) == []  # not the search's query: a MatchQuery of its own
        assert api_counts(em) == {"Search": 2, "BatchGetRow": 2}


def test_search_reads_its_own_adds_and_updates(em: TablestoreEmulator) -> None:
    store = make(em)
    with scope(user_id="u1"):
        store.insert([vec(0), vec(1)], [payload("green tea"), payload("black coffee")], ["t", "c"])
        assert store.search("tea", vec(0), 1)[0].id == "t"  # not in the index yet
        assert [r.id for r in store.keyword_search("coffee", 5)] == ["c"]
        em.flush_index()
        store.update("t", vec(2), payload("oolong tea"))
        hit = store.search("tea", vec(2), 1)[0]
        assert (hit.id, hit.payload["data"]) == ("t", "oolong tea") and hit.score == pytest.approx(1.0, abs=1e-6)


@pytest.fixture(scope="module")
def limits_store(emulator: TablestoreEmulator) -> TablestoreStore:
    store = make(emulator)
    with scope(user_id="u1"):
        store.insert([vec(i) for i in range(150)], [payload(f"row {i}", n=i, category="a" if i % 2 else "b")
                                                    for i in range(150)], [f"r{i}" for i in range(150)])  # fmt: skip
    emulator.flush_index()
    return store


@pytest.mark.parametrize("limit", [1, 2, 10, 25, 26, 50, 99, 100])
def test_every_limit_answers(em: TablestoreEmulator, limits_store: TablestoreStore, limit: int) -> None:
    """Including limits whose over-fetch passes 100 rows (the old second page lost its sort)."""
    with scope(user_id="u1"):
        em.reset_counts()
        hits = limits_store.search("q", vec(0), limit)
        assert len(hits) == limit and len({h.id for h in hits}) == limit
        assert api_counts(em) == {"Search": 1, "BatchGetRow": 1}
        post = limits_store.search("q", vec(0), limit, filters={"category": "a"})  # not pushable: over-fetched
        assert len(post) == min(limit, 75) and all(h.payload["category"] == "a" for h in post)
        assert len(limits_store.keyword_search("row", limit)) == limit
    with scope(user_id="u1"):
        assert len(limits_store.search("q", vec(0), 1001)) == 150  # KNN's top_k maximum is 1000: clamped
        with pytest.raises(UserInputError):
            limits_store.search("q", vec(0), 0)


def test_every_limit_from_1_to_100(em: TablestoreEmulator, limits_store: TablestoreStore) -> None:
    with scope(user_id="u1"):
        for limit in range(1, 101):
            assert len(limits_store.search("q", vec(limit), limit)) == limit


def test_many_ids_are_batched(em: TablestoreEmulator) -> None:
    store = make(em)
    unknown = [str(uuid.uuid4()) for _ in range(1000)]
    with scope(user_id="u1"):
        em.reset_counts()
        assert store.get_many(unknown) == {}
        assert api_counts(em) == {"BatchGetRow": 10}
        em.reset_counts()
        assert store.delete_many(unknown) == []
        assert api_counts(em) == {"BatchGetRow": 10}  # nothing exists: nothing to write


@pytest.mark.parametrize("fault", ["drop_after", "http503_after", "OTSTimeout_after", "drop", "OTSServerBusy"])
def test_delete_counts_are_exact_under_faults(em: TablestoreEmulator, fault: str) -> None:
    store = make(em)
    ids = [f"x{i}" for i in range(450)]
    with scope(user_id="u1"):
        store.insert([vec(i) for i in range(450)], [payload(f"m{i}", n=i) for i in range(450)], ids)
        em.inject("BatchWriteRow", fault, times=2)
        deleted = store.delete_many([*ids, "never-existed"])
        assert sorted(deleted) == sorted(ids)
        assert store.count() == 0 and store.delete_many(ids) == []


def test_update_is_conditional(em: TablestoreEmulator) -> None:
    store = make(em)
    with scope(user_id="u1"):
        store.insert([vec(0)], [payload("v1", updated_at="t1")], ["m1"])
        with pytest.raises(ConflictError):
            store.update("m1", payload=payload("v2", updated_at="t2"), expected_updated_at="t0")
        store.update("m1", payload=payload("v2", updated_at="t2"), expected_updated_at="t1")
        assert store.get("m1").payload["data"] == "v2"
        with pytest.raises(MemoryNotFound):
            store.update("nope", payload=payload("x", updated_at="t3"), expected_updated_at="t2")
        with pytest.raises(MemoryNotFound):
            store.update("nope", vector=vec(1))


def test_list_page_is_stable_across_writes(em: TablestoreEmulator) -> None:
    store = make(em)
    with scope(user_id="u1", agent_id="cline"):
        ids = [f"p{i:03d}" for i in range(250)]
        store.insert([vec(i) for i in range(250)], [payload(f"m{i}", n=i, agent_id="cline") for i in range(250)], ids)
    with scope(user_id="u1", agent_id="other"):
        store.insert([vec(0)], [payload("not mine", agent_id="other")], ["p050x"])
    with scope(user_id="u1", agent_id="cline"):
        em.reset_counts()
        page1, cursor = store.list_page(None, 100)
        assert [r.id for r in page1] == ids[:100] and cursor and api_counts(em) == {"GetRange": 1}
        store.delete_many([ids[100], ids[10]])  # one on the next page, one already seen
        store.insert([vec(0)], [payload("late", agent_id="cline")], ["p000a"])  # sorts before the cursor
        page2, cursor = store.list_page(None, 100, cursor)
        page3, end = store.list_page(None, 100, cursor)
        assert [r.id for r in page2 + page3] == ids[101:] and end is None
        assert store.list_page({"user_id": "u2"}, 10) == ([], None)
        with pytest.raises(UserInputError, match="cursor"):
            store.list_page(None, 10, "not-a-cursor")


def test_keyword_search_over_given_candidates(em: TablestoreEmulator) -> None:
    store = make(em)
    with scope(user_id="u1"):
        store.insert([vec(0), vec(1), vec(2)], [payload("green tea"), payload("tea time"), payload("coffee")],
                     ["g", "t", "c"])  # fmt: skip
        hits = store.search("tea", vec(0), 3)
        em.reset_counts()
        kw = store.keyword_search("tea", 3, candidates=[h.id for h in hits])
        assert {r.id for r in kw} == {"g", "t"} and api_counts(em) == {}  # the search's rows: no RPC
        other = make(em, store.collection_name)
        em.reset_counts()
        kw = other.keyword_search("coffee", 3, candidates=["c", "g", "missing"])
        assert [r.id for r in kw] == ["c"] and api_counts(em) == {"BatchGetRow": 1}


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


def test_count_after_a_whole_list_page_is_free_and_scans_keys_otherwise(em: TablestoreEmulator) -> None:
    store = make(em)
    with scope(user_id="u1", agent_id="cline"):
        store.insert([vec(i) for i in range(5)], [payload(f"m{i}", agent_id="cline") for i in range(5)],
                     [f"c{i}" for i in range(5)])  # fmt: skip
    with scope(user_id="u1", agent_id="cursor"):
        store.insert([vec(0)], [payload("other client", agent_id="cursor")], ["o1"])
    flt = {"user_id": "u1", "agent_id": "cline"}
    with scope(**flt):
        em.reset_counts()
        rows, cursor = store.list_page(flt, 10)
        assert len(rows) == 5 and cursor is None and store.count(flt) == 5
        assert api_counts(em) == {"GetRange": 1}
        assert store.count(flt) == 5 and api_counts(em) == {"GetRange": 2}  # the memo is used once
        store.list_page(flt, 10)
        store.delete_many(["c0"])  # a write in between: no stale count
        assert store.count(flt) == 4
        assert store.count({"user_id": "u1", "agent_id": "cline", "role": "x"}) == 0  # payload filter: full scan
    with scope(user_id="u1"):
        assert store.count() == 5


def test_update_with_an_empty_key_frees_the_text(em: TablestoreEmulator) -> None:
    """How a soft delete (state change) releases the text: the row stays, its key goes."""
    store = make(em)
    with scope(user_id="u1"):
        store.insert([vec(0)], [payload("archived fact")], ["m1"], [key_for("archived fact")])
        store.update("m1", payload=payload("archived fact", state="deleted"), dedup_key="")
        assert store.find_by_dedup_key(key_for("archived fact")) is None
        assert store.insert([vec(0)], [payload("archived fact")], ["m2"], [key_for("archived fact")]) == ["m2"]


def test_conditional_update_retried_after_a_lost_answer_succeeds(em: TablestoreEmulator) -> None:
    store = make(em)
    with scope(user_id="u1"):
        store.insert([vec(0)], [payload("v1", updated_at="t1")], ["m1"])
        em.inject("UpdateRow", "drop_after", times=1)  # applied; the retry then fails its own condition
        store.update("m1", payload=payload("v2", updated_at="t2"), expected_updated_at="t1")
        assert store.get("m1").payload["data"] == "v2"


@pytest.mark.parametrize("fault", [None, "drop_after", "OTSTimeout_after", "drop", "OTSServerBusy"])
def test_update_many_is_batched_and_exact(em: TablestoreEmulator, fault: str | None) -> None:
    store = make(em)
    n = 250
    with scope(user_id="u1"):
        ids = [f"u{i:03d}" for i in range(n)]
        store.insert([vec(i) for i in range(n)], [payload(f"t{i}", updated_at="t1") for i in range(n)], ids,
                     [key_for(f"t{i}") for i in range(n)])  # fmt: skip
        changes = [
            RowUpdate(i, payload=payload(f"t{k}", updated_at="t2", state="deleted"), expected_updated_at="t1",
                      dedup_key="")
            for k, i in enumerate(ids)
        ]  # fmt: skip
        changes[0] = changes[0]._replace(expected_updated_at="stale")  # lost to another writer: left out
        changes.append(RowUpdate("missing", payload=payload("x"), dedup_key=""))
        if fault:
            em.inject("BatchWriteRow", fault, times=2)
        em.reset_counts()
        updated = store.update_many(changes)
        assert sorted(updated) == ids[1:]
        if fault is None:
            assert api_counts(em) == {"BatchWriteRow": math.ceil(len(changes) / 200)}
        assert store.get(ids[5]).payload["state"] == "deleted" and store.get(ids[0]).payload.get("state") is None
        # the texts were released: they can be added again, except t0 (its update lost)
        assert store.insert([vec(0)], [payload("t5")], ["again5"], [key_for("t5")]) == ["again5"]
        assert store.insert([vec(0)], [payload("t0")], ["again0"], [key_for("t0")]) == [ids[0]]


ACTIVE = {"state": {"nin": ["paused", "archived", "deleted"]}}


def test_state_filter_runs_on_the_table_and_the_index(em: TablestoreEmulator) -> None:
    """Soft-deleted rows stay in the table: list, count and search filter them where the data lives."""
    store = make(em)
    flt = {"user_id": "u1", "agent_id": "cline", **ACTIVE}
    with scope(user_id="u1", agent_id="cline"):
        store.insert([vec(i) for i in range(6)], [payload(f"s{i}", agent_id="cline") for i in range(6)],
                     [f"s{i}" for i in range(6)])  # fmt: skip
        store.update_many([RowUpdate(f"s{i}", payload=payload(f"s{i}", agent_id="cline", state="deleted"))
                           for i in range(4)])  # fmt: skip
        em.reset_counts()
        assert store.count(flt) == 2 and api_counts(em) == {"GetRange": 1}
        assert [r.id for r in store.list_page(flt, 10)[0]] == ["s4", "s5"]
        assert {r.id for r in store.search("q", vec(0), 2, flt)} == {"s4", "s5"}  # the index still says active
        em.flush_index()
        em.reset_counts()
        assert {r.id for r in store.search("q", vec(0), 2, flt)} == {"s4", "s5"}
        assert api_counts(em) == {"Search": 1, "BatchGetRow": 1}  # state pushed down: no over-fetch


def test_an_index_from_before_the_state_column_still_answers(em: TablestoreEmulator) -> None:
    store = make(em)
    meta = index_meta(DIMS, "cosine")
    meta.fields = [f for f in meta.fields if f.field_name != "state"]
    store.client.delete_search_index(store.collection_name, store.index_name)
    store.client.create_search_index(store.collection_name, store.index_name, meta)
    older = make(em, store.collection_name)  # warns, and keeps `state` filters out of its queries
    flt = {"user_id": "u1", **ACTIVE}
    with scope(user_id="u1"):
        older.insert([vec(0), vec(1)], [payload("live"), payload("gone", state="deleted")], ["a", "b"])
        em.flush_index()
        assert [r.id for r in older.search("q", vec(1), 5, flt)] == ["a"]
