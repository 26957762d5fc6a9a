"""TablestoreStore against the local Tablestore emulator, through the real ``tablestore`` SDK."""

from __future__ import annotations

import contextvars
import math
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from mem0.utils.lemmatization import lemmatize_for_bm25
from tablestore import OTSClient

from tablestore_openmemory_mcp.stores.base import ACTIVE_SCOPE
from tablestore_openmemory_mcp.stores.filters import matches
from tablestore_openmemory_mcp.stores.tablestore import TablestoreStore, TablestoreUnavailableError
from tablestore_openmemory_mcp.stores.tablestore import query as qb
from tests.tablestore_emulator import TablestoreEmulator

AK, SK, INSTANCE = "test-ak", "test-secret", "testinst"
DIMS = 8


@pytest.fixture(scope="module")
def emulator() -> Iterator[TablestoreEmulator]:
    """One emulator for the module (tables are unique per test), unlike conftest's per-test one: faster."""
    em = TablestoreEmulator(access_key_id=AK, access_key_secret=SK, instance_name=INSTANCE).start()
    yield em
    em.stop()


@pytest.fixture
def em(emulator: TablestoreEmulator) -> Iterator[TablestoreEmulator]:
    emulator.clear_faults()
    emulator.index_delay = 0
    emulator.reset_counts()
    yield emulator
    emulator.clear_faults()
    emulator.index_delay = 0
    if emulator.last_internal_error is not None:  # an emulator bug answered as OTSInternalServerError
        raise AssertionError(f"tablestore emulator bug: {emulator.last_internal_error!r}")


def make(em: TablestoreEmulator, table: str | None = None, **kw: Any) -> TablestoreStore:
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
    assert api_counts(em) == {"DescribeTable": 1, "DescribeSearchIndex": 1}
    # mem0's second collection for entities works the same way
    make(em, f"{table}_entities")


def test_existing_table_without_index_gets_the_index(em: TablestoreEmulator) -> None:
    store = make(em)
    store.client.delete_search_index(store.collection_name, store.index_name)
    em.reset_counts()
    make(em, store.collection_name)
    assert api_counts(em) == {"DescribeTable": 1, "DescribeSearchIndex": 1, "CreateSearchIndex": 1}


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
        assert [r.payload["data"] for r in store.list()[0]] == ["alpha", "beta", "gamma"]
        assert store.list(top_k=2)[0][1].id == ids[1]
        assert store.count() == 3 and store.count({"data": "beta"}) == 1
        em.flush_index()
        hits = store.search("alpha", vec(0), top_k=2, filters={"user_id": "u1"})
        assert hits[0].id == ids[0] and len(hits) == 2 and hits[0].score >= hits[1].score
        store.update(ids[0], vector=vec(5), payload=payload("alpha two", n=1))
        assert store.get(ids[0]).payload["data"] == "alpha two"
        store.update(ids[0], payload={**store.get(ids[0]).payload, "role": "user"})  # vector kept
        em.flush_index()
        assert store.search("x", vec(5), top_k=1)[0].id == ids[0]
        store.delete(ids[2])
        assert store.get(ids[2]) is None
        store.delete(ids[2])  # idempotent
        assert store.delete_many([*ids, "missing"]) == 2
        assert store.list() == [[]]
        with pytest.raises(ValueError, match="not found"):
            store.update(ids[0], payload=payload("ghost"))
    assert store.collection_name in store.list_cols()
    info = store.col_info()
    assert info["dimension"] == DIMS and info["metric"] == "cosine"
    store.reset()
    with scope(user_id="u1"):
        assert store.list() == [[]]
    store.delete_col()
    assert store.collection_name not in store.list_cols()
    store.close()


def test_rows_without_user_and_no_scope_fall_back_to_search(em: TablestoreEmulator) -> None:
    store = make(em)
    store.insert([vec(0)], [{"data": "agent note", "agent_id": "bot"}], ["a1"])
    em.flush_index()
    assert store.get("a1").payload["agent_id"] == "bot"  # no scope: Search TermQuery on memory_id
    assert [r.id for r in store.list({"agent_id": "bot"})[0]] == ["a1"]
    store.update("a1", payload={"data": "agent note 2", "agent_id": "bot"})
    assert store.get("a1").payload["data"] == "agent note 2"
    store.delete("a1")
    assert store.list()[0] == []


# ------------------------------------------------------------------------------------ RPC budgets


def test_get_update_delete_are_one_rpc_each(em: TablestoreEmulator) -> None:
    store = make(em)
    with scope(user_id="u1", agent_id="cline"):
        store.insert([vec(1)], [payload("one", agent_id="cline")], ["m1"])
        for action, api in (
            (lambda: store.get("m1"), "GetRow"),
            (lambda: store.update("m1", vector=vec(2), payload=payload("two", agent_id="cline")), "UpdateRow"),
            (lambda: store.delete("m1"), "DeleteRow"),
        ):
            em.reset_counts()
            action()
            assert api_counts(em) == {api: 1}


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
        assert len(hits) == 4 and api_counts(em) == {"Search": 1}
        kw = store.keyword_search("乌龙茶", top_k=60, filters=flt)
        assert api_counts(em) == {"Search": 1}  # no second RPC
        assert {r.id for r in kw} == {"k0", "k2"} and all(r.score > 0 for r in kw)
        # the stash is used once; a later keyword_search is a real MatchQuery
        kw2 = store.keyword_search("乌龙茶", top_k=10, filters=flt)
        assert api_counts(em) == {"Search": 2} and {r.id for r in kw2} == {"k0", "k2"}


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
        assert api_counts(em) == {"Search": 1} and [r.id for r in out[0]] == ["c0"]


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
        assert api_counts(em) == {"Search": 1} and [r.id for r in kw] == ["l0"]


def test_chinese_keyword_search_via_index(em: TablestoreEmulator) -> None:
    store = make(em)
    texts = ["用户喜欢喝乌龙茶", "用户住在杭州", "The user likes oolong tea", "用户的猫叫小白"]
    store.insert([vec(i) for i in range(4)], [payload(t, n=i) for i, t in enumerate(texts)], ["c0", "c1", "c2", "c3"])
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
    store.insert([vec(i) for i in range(n)], [payload(f"memory {i}", n=i) for i in range(n)], ids)
    assert em.counts["BatchWriteRow"] == math.ceil(n / 200)
    with scope(user_id="u1"):
        rows = store.list()[0]
        assert [r.id for r in rows] == ids  # created order, nothing missing although the index lags
        assert "vector" not in rows[0].payload
        assert store.count() == n
        em.reset_counts()
        assert store.delete_many(ids[:450]) == 450
        assert api_counts(em) == {"BatchWriteRow": 3}
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
        assert {r.id for r in store.list(flt)[0]} == expected
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
    store.insert(
        [vec(0), vec(1), vec(2)],
        [payload("mine", agent_id="cline", n=0), payload("other agent", agent_id="cursor", n=1),
         payload("other user", user="u2", agent_id="cline", n=2)],
        ["mine", "other_agent", "other_user"],
    )  # fmt: skip
    em.flush_index()
    with scope(user_id="u1", agent_id="cline"):
        assert store.get("mine") is not None
        assert store.get("other_agent") is None and store.get("other_user") is None
        with pytest.raises(ValueError, match="not found"):
            store.update("other_agent", payload=payload("hijack", agent_id="cline"))
        store.delete("other_agent")  # silently nothing
        assert store.delete_many(["other_agent", "other_user", "mine"]) == 1
        assert store.list()[0] == []
        assert store.search("q", vec(1), top_k=10) == []
        assert store.list({"user_id": "u2"})[0] == []
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
    with pytest.raises(ValueError, match="vector"):
        store.insert([vec(0), bad], [payload("ok"), payload("bad")], ["ok", "bad"])
    assert sum(em.counts.values()) == 0
    with scope(user_id="u1"):
        assert store.list()[0] == []


def test_oversized_text_is_rejected(em: TablestoreEmulator) -> None:
    store = make(em)
    em.reset_counts()
    with pytest.raises(ValueError, match="KiB"):
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
        em.inject("GetRow", "hang", times=1)
        started = time.monotonic()
        assert store.get("h1") is not None
        assert time.monotonic() - started < 5


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
