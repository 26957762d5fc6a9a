"""EmbeddedStore on real SQLite files: round trips, filters, scope, keyword search, concurrency."""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

# Importing mem0 writes to $MEM0_DIR; keep it out of the home directory.
os.environ.setdefault("MEM0_DIR", tempfile.mkdtemp(prefix="mem0-test-"))
os.environ.setdefault("MEM0_TELEMETRY", "False")

from tablestore_openmemory_mcp.errors import MemoryNotFound, ScopeMissing, UserInputError
from tablestore_openmemory_mcp.stores.base import ACTIVE_SCOPE, OutputData, scoped
from tablestore_openmemory_mcp.stores.embedded import EmbeddedStore
from tests.fakes.store_rows import all_rows

DIMS = 8
SRC = str(Path(__file__).resolve().parents[1] / "src")
U1 = {"user_id": "u1"}
U2 = {"user_id": "u2"}


def vec(seed: int, dims: int = DIMS) -> list[float]:
    return np.random.default_rng(seed).standard_normal(dims).tolist()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[EmbeddedStore]:
    s = EmbeddedStore(collection_name="mem0", path=str(tmp_path), embedding_model_dims=DIMS, unknown_option=1)
    yield s
    s.close()


@pytest.fixture
def scope() -> Iterator[object]:
    """Enter a caller scope for the rest of the test (stores fail closed without one)."""

    def enter(value: dict[str, str]) -> None:
        tokens.append(ACTIVE_SCOPE.set(dict(value)))

    tokens: list = []
    yield enter
    for token in reversed(tokens):
        ACTIVE_SCOPE.reset(token)


def ids_of(rows: list[OutputData]) -> list[str]:
    return [r.id for r in rows]


def fill(store: EmbeddedStore) -> None:
    """Three memories of u1 (clients a1, a2 and a run) and one of u2, each written in its own scope."""
    with scoped(U1):
        store.insert(
            [vec(1), vec(2), vec(4)],
            [
                {
                    "data": "我喜欢喝乌龙茶",
                    "user_id": "u1",
                    "agent_id": "a1",
                    "n": 1,
                    "created_at": "2025-01-01T00:00:00Z",
                },
                {"data": "I like hiking in the Alps", "user_id": "u1", "agent_id": "a2", "n": 2},
                {"data": "Works at Alibaba Cloud", "user_id": "u1", "run_id": "r1", "n": 4},
            ],
            ["m1", "m2", "m4"],
        )
    with scoped(U2):
        store.insert(
            [vec(3)], [{"data": "Allergic to peanuts", "user_id": "u2", "n": 3, "categories": ["health"]}], ["m3"]
        )


# ---------------------------------------------------------------------- round trips


def test_round_trip_every_method(store: EmbeddedStore, tmp_path: Path, scope) -> None:
    fill(store)
    scope(U1)
    got = store.get("m1")
    assert isinstance(got, OutputData) and got.id == "m1" and got.score is None
    assert got.payload["data"] == "我喜欢喝乌龙茶"
    assert store.get("nope") is None

    hits = store.search("q", vec(2), top_k=2, filters={"user_id": "u1"})
    assert hits[0].id == "m2" and hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert len(hits) == 2 and all(0.0 <= h.score <= 1.0 for h in hits)
    assert hits[0].score >= hits[1].score

    assert store.update("m2", vector=vec(9), payload={"data": "I like skiing", "user_id": "u1"}) is None
    assert store.get("m2").payload == {"data": "I like skiing", "user_id": "u1"}
    assert store.search("q", vec(9), top_k=1)[0].id == "m2"
    assert ids_of(store.keyword_search("skiing", 5)) == ["m2"]
    assert store.keyword_search("hiking", 5) == []
    store.update("m2", payload={"data": "I like skiing a lot", "user_id": "u1"})
    assert store.search("q", vec(9), top_k=1)[0].id == "m2"  # vector kept
    with pytest.raises(MemoryNotFound):
        store.update("missing", vector=vec(1))

    assert store.count() == 3 and store.count({"agent_id": "a1"}) == 1
    with scoped(U2):
        assert store.count() == 1
        assert store.delete_many(["m3"]) == ["m3"] and store.delete_many(["m3"]) == []
        assert store.get("m3") is None and store.count() == 0
    assert store.delete_many(["m1", "m4", "m1", "zzz"]) == ["m1", "m4"]
    assert ids_of(all_rows(store)) == ["m2"]
    assert store.get_many(["m2", "m1", "m3"]).keys() == {"m2"}

    store.insert([vec(1)], [{"data": "again", "user_id": "u1"}], ["x"])
    assert store.get("x") is not None
    assert (tmp_path / "memories.sqlite3").exists()
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("memories.sqlite3")) == []


def test_insert_without_ids_and_upsert(store: EmbeddedStore, scope) -> None:
    scope(U1)
    ids = store.insert([vec(1), vec(2)], [U1, U1])
    assert len(ids) == 2 and store.count() == 2
    store.insert([vec(3)], [{"data": "replaced", "user_id": "u1"}], [ids[0]])
    assert store.count() == 2 and store.get(ids[0]).payload == {"data": "replaced", "user_id": "u1"}
    assert store.search("q", vec(3), top_k=1)[0].id == ids[0]
    assert store.insert([], [], []) == []


def test_shapes_match_what_the_repository_consumes(store: EmbeddedStore, scope) -> None:
    fill(store)
    scope(U1)
    memories, _ = store.list_page({"user_id": "u1"}, 100)
    assert isinstance(memories, list)
    assert all(hasattr(m, "id") and hasattr(m, "payload") for m in memories)
    for rows in (
        store.search("q", vec(1), top_k=60, filters={"user_id": "u1"}),
        store.keyword_search("乌龙", 60),
    ):
        assert isinstance(rows, list)
        assert all(isinstance(r.id, str) and isinstance(r.score, float) and isinstance(r.payload, dict) for r in rows)
        assert [r.score for r in rows] == sorted((r.score for r in rows), reverse=True)
    assert all(r.score > 0 for r in store.keyword_search("乌龙", 60))


def test_list_order_top_k_and_no_cap(store: EmbeddedStore, scope) -> None:
    scope(U1)
    n = 2500
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((n, DIMS)).tolist()
    payloads = [{"data": f"memory {i}", "user_id": "u1", "i": i} for i in range(n)]
    store.insert(vectors, payloads, [f"id{i:05d}" for i in range(n)])
    everything = all_rows(store, filters={"user_id": "u1"})
    assert len(everything) == n
    assert len(all_rows(store, filters={"user_id": "u1"}, top_k=None)) == n
    assert len(all_rows(store, filters={"user_id": "u1"}, top_k=100)) == 100
    assert len(all_rows(store, filters={"user_id": "u1", "i": {"gte": 2400}}, top_k=None)) == 100
    assert len(all_rows(store, filters={"user_id": "u1", "i": {"gte": 2400}}, top_k=7)) == 7
    assert all_rows(store, top_k=0) == []
    assert len(store.search("q", vectors[0], top_k=None, filters={"user_id": "u1"})) == n


def test_list_is_ordered_by_created_at_then_id(store: EmbeddedStore, scope) -> None:
    scope(U1)
    store.insert(
        [vec(1), vec(2), vec(3)],
        [
            {"data": "late", "user_id": "u1", "created_at": "2025-03-01T10:00:00+08:00"},  # 02:00 UTC
            {"data": "early", "user_id": "u1", "created_at": "2025-03-01T03:00:00+00:00"},
            {"data": "tie", "user_id": "u1", "created_at": "2025-03-01T02:00:00Z"},
        ],
        ["c", "b", "a"],
    )
    assert ids_of(all_rows(store)) == ["a", "c", "b"]


# ---------------------------------------------------------------------- filters


def test_filter_operators_in_search_list_keyword(store: EmbeddedStore, scope) -> None:
    fill(store)
    scope(U1)
    assert sorted(ids_of(all_rows(store, {"n": {"gt": 1, "lte": 3}}))) == ["m2"]
    assert sorted(ids_of(all_rows(store, {"user_id": {"in": ["u2"]}}))) == []  # never outside the scope
    assert sorted(ids_of(all_rows(store, {"user_id": {"in": ["u1", "u2"]}}))) == ["m1", "m2", "m4"]
    assert sorted(ids_of(all_rows(store, {"agent_id": {"ne": "a1"}}))) == ["m2", "m4"]
    assert sorted(ids_of(all_rows(store, {"run_id": "*"}))) == ["m4"]
    assert sorted(ids_of(all_rows(store, {"OR": [{"agent_id": "a1"}, {"run_id": "r1"}]}))) == ["m1", "m4"]
    assert sorted(ids_of(all_rows(store, {"user_id": "u1", "NOT": [{"agent_id": "a1"}]}))) == ["m2", "m4"]
    assert sorted(ids_of(all_rows(store, {"data": {"icontains": "ALPS"}}))) == ["m2"]
    with scoped(U2):
        assert sorted(ids_of(all_rows(store, {"categories": {"contains": "health"}}))) == ["m3"]
        assert sorted(ids_of(all_rows(store, {"n": {"gt": 1, "lte": 3}}))) == ["m3"]
    assert sorted(ids_of(store.search("q", vec(1), 10, {"user_id": "u1", "n": {"in": [1, 4]}}))) == [
        "m1",
        "m4",
    ]
    assert ids_of(store.search("q", vec(1), 10, {"user_id": "u1", "agent_id": "a2"})) == ["m2"]
    assert ids_of(store.search("q", vec(1), 10, {"user_id": "nobody"})) == []
    assert ids_of(store.keyword_search("hiking alibaba", 10, {"user_id": "u1", "n": {"gte": 3}})) == ["m4"]
    assert store.count({"n": {"lt": 3}}) == 2


# ---------------------------------------------------------------------- scope


def test_scope_enforcement(store: EmbeddedStore, scope) -> None:
    fill(store)
    scope({"user_id": "u2"})
    assert store.get("m1") is None and store.get("m3") is not None
    with pytest.raises(MemoryNotFound):
        store.update("m1", payload={"data": "hijack", "user_id": "u2"})
    assert store.delete_many(["m1"]) == []
    assert store.delete_many(["m1", "m2", "m4"]) == []
    assert ids_of(all_rows(store)) == ["m3"]
    assert ids_of(all_rows(store, {"user_id": "u1"})) == []  # contradicts the scope
    assert ids_of(store.search("q", vec(1), 10)) == ["m3"]
    assert ids_of(store.search("q", vec(1), 10, {"user_id": "u1"})) == []
    assert store.keyword_search("乌龙茶", 10) == []
    assert store.keyword_search("乌龙茶", 10, candidates=["m1", "m2"]) == []
    assert store.get_many(["m1", "m3"]).keys() == {"m3"}
    assert store.count() == 1
    with pytest.raises(ValueError, match="scope"):
        store.insert([vec(5)], [{"data": "x", "user_id": "u1"}], ["new"])
    with pytest.raises(ValueError, match="conflicts"):
        store.insert([vec(5)], [{"data": "x", "user_id": "u2"}], ["m1"])
    with pytest.raises(ValueError, match="scope"):
        store.update("m3", payload={"data": "moved", "user_id": "u1"})
    assert store.delete_many(["m3"]) == ["m3"]
    with scoped(U1):
        assert sorted(ids_of(all_rows(store))) == ["m1", "m2", "m4"]
        assert store.get("m1").payload["data"] == "我喜欢喝乌龙茶"


def test_scope_with_agent_narrows_rows(store: EmbeddedStore, scope) -> None:
    fill(store)
    scope({"user_id": "u1", "agent_id": "a1"})
    assert ids_of(all_rows(store)) == ["m1"]
    assert ids_of(store.search("q", vec(2), 10)) == ["m1"]
    assert store.get("m2") is None


def test_every_method_fails_closed_without_a_scope(store: EmbeddedStore) -> None:
    fill(store)
    calls = {
        "insert": lambda: store.insert([vec(1)], [{"data": "x", "user_id": "u1"}], ["x"]),
        "search": lambda: store.search("q", vec(1), 5),
        "search with filters": lambda: store.search("q", vec(1), 5, {"user_id": "u1"}),
        "keyword_search": lambda: store.keyword_search("乌龙茶", 5, {"user_id": "u1"}),
        "get": lambda: store.get("m1"),
        "get_many": lambda: store.get_many(["m1"]),
        "find_by_dedup_key": lambda: store.find_by_dedup_key("k"),
        "update": lambda: store.update("m1", vector=vec(2)),
        "delete_many": lambda: store.delete_many(["m1", "m3"]),
        "list_page": lambda: store.list_page({"user_id": "u1"}, 10),
        "count": lambda: store.count({"user_id": "u1"}),
    }
    for name, call in calls.items():
        with pytest.raises(ScopeMissing):
            call()
            pytest.fail(name)
    with pytest.raises(ScopeMissing), scoped({"agent_id": "a1"}):  # a scope needs the user
        pass
    with scoped(U1):
        assert store.count() == 3  # nothing was changed by the refused calls
    with scoped(U2):
        assert store.count() == 1


# ---------------------------------------------------------------------- keyword search


def test_chinese_keyword_search(store: EmbeddedStore, scope) -> None:
    fill(store)
    scope(U1)
    store.insert([vec(7)], [{"data": "他喜欢喝咖啡", "user_id": "u1"}], ["m5"])
    hits = store.keyword_search("乌龙茶", top_k=5, filters={"user_id": "u1"})
    assert hits[0].id == "m1" and hits[0].score > 0
    assert "m5" not in ids_of(hits)
    assert ids_of(store.keyword_search("喝咖啡", 5))[0] == "m5"
    assert ids_of(store.keyword_search("ALIBABA", 5)) == ["m4"]
    assert set(ids_of(store.keyword_search("喜欢", 5))) == {"m1", "m5"}


def test_keyword_search_uses_mem0_lemmatized_text(store: EmbeddedStore, scope) -> None:
    scope(U1)
    store.insert([vec(1)], [{"data": "She was running daily", "text_lemmatized": "run daily", "user_id": "u1"}], ["r"])
    assert ids_of(store.keyword_search("run", 5)) == ["r"]
    assert ids_of(store.keyword_search("running", 5)) == ["r"]


@pytest.mark.parametrize(
    "query",
    [
        '"foo" OR *',
        "*",
        '"',
        "'",
        "NEAR(a b)",
        "a AND",
        "OR",
        "user_id:u2",
        "^start",
        "-x",
        ")(",
        '乌龙"茶',
        "",
        "  ",
    ],
)
def test_fts_injection_is_harmless(store: EmbeddedStore, query: str, scope) -> None:
    fill(store)
    with scoped(U2):
        store.insert([vec(8)], [{"data": "foo bar", "user_id": "u2"}], ["f"])
    scope(U1)
    hits = store.keyword_search(query, 10, {"user_id": "u1"})
    assert all(h.payload["user_id"] == "u1" for h in hits)


# ---------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "bad",
    [
        [0.1] * (DIMS - 1),
        [0.1] * (DIMS + 1),
        [float("nan")] + [0.1] * (DIMS - 1),
        [float("inf")] * DIMS,
        [0.0] * DIMS,
    ],
)
def test_bad_vectors_rejected_and_nothing_written(store: EmbeddedStore, bad: list[float], scope) -> None:
    scope(U1)
    a, b = {"data": "a", "user_id": "u1"}, {"data": "b", "user_id": "u1"}
    with pytest.raises(ValueError, match="vector"):
        store.insert([vec(1), bad], [a, b], ["ok", "bad"])
    assert store.count() == 0 and store.get("ok") is None
    store.insert([vec(1)], [a], ["ok"])
    with pytest.raises(ValueError, match="vector"):
        store.update("ok", vector=bad)
    with pytest.raises(ValueError):
        store.search("q", bad, 5)
    assert store.search("q", vec(1), 1)[0].score == pytest.approx(1.0, abs=1e-5)


def test_argument_validation(tmp_path: Path) -> None:
    for name in ("1abc", "a-b", "a b", "x" * 65, "a__fts", ""):
        with pytest.raises(ValueError, match="collection name"):
            EmbeddedStore(collection_name=name, path=str(tmp_path), embedding_model_dims=4)
    with pytest.raises(ValueError, match="path"):
        EmbeddedStore(collection_name="c", embedding_model_dims=4)
    s = EmbeddedStore(collection_name="c", path=str(tmp_path), embedding_model_dims=4)
    with scoped(U1):
        with pytest.raises(ValueError, match="one payload and one id"):
            s.insert([[1, 0, 0, 0]], [U1, U1], ["a"])
        with pytest.raises(ValueError, match="same id"):
            s.insert([[1, 0, 0, 0], [0, 1, 0, 0]], [U1, U1], ["a", "a"])
        with pytest.raises(ValueError, match="dedup keys"):
            s.insert([[1, 0, 0, 0]], [U1], ["a"], ["k", "k"])
        with pytest.raises(UserInputError, match="limit"):
            s.list_page(None, 0)
        for cursor in ("nope", "W10", "WyJhIl0", "!!"):
            with pytest.raises(UserInputError, match="cursor"):
                s.list_page(None, 5, cursor)
    s.close()
    with pytest.raises(ValueError, match="4-dimensional"):
        EmbeddedStore(collection_name="c", path=str(tmp_path), embedding_model_dims=8)
    with scoped(U1), pytest.raises(RuntimeError, match="closed"):
        s.get("a")


# ---------------------------------------------------------------------- durability, processes, threads


def test_durable_across_reopen_and_entities_collection(tmp_path: Path) -> None:
    a = EmbeddedStore(collection_name="mem0", path=str(tmp_path), embedding_model_dims=DIMS)
    ent = EmbeddedStore(collection_name="mem0_entities", path=str(tmp_path), embedding_model_dims=DIMS)
    with scoped(U1):
        a.insert([vec(1)], [{"data": "茶", "user_id": "u1"}], ["k"])
        ent.insert([vec(2)], [{"data": "tea", "user_id": "u1", "linked_memory_ids": ["k"]}], ["e"])
    a.close()
    ent.close()
    b = EmbeddedStore(collection_name="mem0", path=str(tmp_path), embedding_model_dims=DIMS)
    with scoped(U1):
        assert b.get("k").payload == {"data": "茶", "user_id": "u1"}
        assert b.get("e") is None
    b.close()


_CHILD = textwrap.dedent(
    """
    import os, sys, time, zlib
    sys.path.insert(0, {src!r})
    import numpy as np
    from tablestore_openmemory_mcp.stores.base import scoped
    from tablestore_openmemory_mcp.stores.embedded import EmbeddedStore
    path, tag, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    s = EmbeddedStore(collection_name="mem0", path=path, embedding_model_dims={dims})
    rng = np.random.default_rng(zlib.crc32(tag.encode()))  # hash() of a str varies per process
    with scoped({{"user_id": "u"}}):
        for i in range(n):
            payload = {{"data": f"{{tag}} {{i}}", "user_id": "u"}}
            s.insert([rng.standard_normal({dims}).tolist()], [payload], [f"{{tag}}-{{i}}"])
            s.search("q", rng.standard_normal({dims}).tolist(), 5, {{"user_id": "u"}})
            s.keyword_search(tag, 5, {{"user_id": "u"}})
    print("done", flush=True)
    if len(sys.argv) > 4:
        time.sleep(60)
    """
)


def _run_child(tmp_path: Path, script_text: str, *args: str) -> subprocess.Popen:
    script = tmp_path / f"child-{len(list(tmp_path.glob('child-*.py')))}.py"
    script.write_text(script_text)
    return subprocess.Popen(
        [sys.executable, str(script), str(tmp_path / "db"), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "MEM0_TELEMETRY": "False"},
    )


def _child(tmp_path: Path, *args: str) -> subprocess.Popen:
    return _run_child(tmp_path, _CHILD.format(src=SRC, dims=DIMS), *args)


def _finish(procs: list[subprocess.Popen], timeout: float = 120) -> list[str]:
    """Wait for every child; kill all of them if one fails or hangs."""
    outs = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=timeout)
            assert p.returncode == 0, err
            outs.append(out)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)
    return outs


def test_two_processes_share_one_directory(tmp_path: Path) -> None:
    parent = EmbeddedStore(collection_name="mem0", path=str(tmp_path / "db"), embedding_model_dims=DIMS)
    u = {"user_id": "u"}
    with scoped(u):
        parent.insert([vec(0)], [{"data": "parent", "user_id": "u"}], ["p-0"])
        assert len(parent.search("q", vec(0), None, u)) == 1  # warm the cache
        procs = [_child(tmp_path, "alpha", "150"), _child(tmp_path, "beta", "150")]
        try:
            for i in range(1, 50):  # the parent writes concurrently too
                parent.insert([vec(i)], [{"data": f"parent {i}", "user_id": "u"}], [f"p-{i}"])
        finally:
            outs = _finish(procs)
        assert all("done" in out for out in outs)
        expected = {f"p-{i}" for i in range(50)} | {f"{t}-{i}" for t in ("alpha", "beta") for i in range(150)}
        assert {r.id for r in all_rows(parent, u)} == expected
        # the warm cache noticed the other processes' writes
        assert {r.id for r in parent.search("q", vec(0), None, u)} == expected
        assert ids_of(parent.keyword_search("beta", 1000, u))[:1][0].startswith("beta")
    parent.close()
    fresh = EmbeddedStore(collection_name="mem0", path=str(tmp_path / "db"), embedding_model_dims=DIMS)
    with scoped(u):
        assert fresh.count(u) == len(expected)
    fresh.close()


def test_acknowledged_write_survives_kill_9(tmp_path: Path) -> None:
    proc = _child(tmp_path, "killed", "3", "sleep")
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "done"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    s = EmbeddedStore(collection_name="mem0", path=str(tmp_path / "db"), embedding_model_dims=DIMS)
    with scoped({"user_id": "u"}):
        assert sorted(ids_of(all_rows(s))) == ["killed-0", "killed-1", "killed-2"]
    s.close()


def test_threads_read_and_write_concurrently(store: EmbeddedStore) -> None:
    errors: list[BaseException] = []

    def writer(t: int) -> None:
        user = {"user_id": f"u{t % 2}"}
        try:
            with scoped(user):
                for i in range(40):
                    store.insert([vec(t * 1000 + i)], [{"data": f"t{t} {i}", **user}], [f"{t}-{i}"])
                    if i % 5 == 0:
                        store.delete_many([f"{t}-{i}"])
                    if i % 7 == 0 and i > 0 and (i - 1) % 5 != 0:
                        store.update(f"{t}-{i - 1}", vector=vec(i))
        except BaseException as exc:
            errors.append(exc)

    def reader() -> None:
        try:
            for i in range(80):
                with scoped({"user_id": "u0"}):
                    store.search("q", vec(i), 10)
                with scoped({"user_id": "u1"}):
                    store.keyword_search("t1", 10)
                    all_rows(store, top_k=5)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(4)]
    threads += [threading.Thread(target=reader) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for user in ("u0", "u1"):
        with scoped({"user_id": user}):
            in_db = {r.id for r in all_rows(store)}
            via_cache = {r.id for r in store.search("q", vec(0), None)}
        assert in_db == via_cache and len(in_db) == 2 * 32


def test_cache_patched_in_place_matches_fresh_load(store: EmbeddedStore, tmp_path: Path) -> None:
    fill(store)
    scopes = (U1, {"user_id": "u1", "agent_id": "a2"}, U2, {"user_id": "u1", "run_id": "r1"})
    for sc in scopes:
        with scoped(sc):
            store.search("q", vec(0), 10)  # warm the slabs
    with scoped(U1):
        store.insert([vec(11)], [{"data": "new", "user_id": "u1", "agent_id": "a2"}], ["m6"])
        store.update("m2", payload={"data": "moved", "user_id": "u1", "agent_id": "a9"})  # leaves a slab
        store.update("m4", vector=vec(12))
        store.delete_many(["m1"])
    fresh = EmbeddedStore(collection_name="mem0", path=str(tmp_path), embedding_model_dims=DIMS)
    for sc in scopes:
        for q in (vec(11), vec(12), vec(2)):
            with scoped(sc):
                mine = [(r.id, round(r.score, 5)) for r in store.search("q", q, None)]
                theirs = [(r.id, round(r.score, 5)) for r in fresh.search("q", q, None)]
            assert mine == theirs, sc
    fresh.close()


# ---------------------------------------------------------------------- benchmark (printed, not asserted)


@pytest.mark.slow
def test_benchmark_search_10k(tmp_path: Path) -> None:
    n, dims = 10_000, 384
    s = EmbeddedStore(collection_name="bench", path=str(tmp_path), embedding_model_dims=dims)
    rng = np.random.default_rng(1)
    words = [
        "tea",
        "coffee",
        "hiking",
        "python",
        "rust",
        "music",
        "乌龙茶",
        "咖啡",
        "喜欢",
        "工作",
        "北京",
        "猫",
    ]
    token = ACTIVE_SCOPE.set({"user_id": "u1"})
    t0 = time.perf_counter()
    for start in range(0, n, 1000):
        vecs = rng.standard_normal((1000, dims)).astype(np.float32)
        payloads = [
            {"data": " ".join(rng.choice(words, 6)) + f" note {start + i}", "user_id": "u1", "hash": "x" * 32}
            for i in range(1000)
        ]
        s.insert(vecs, payloads)
    insert_s = time.perf_counter() - t0
    with scoped(U2):
        s.insert(rng.standard_normal((500, dims)), [{"data": "other user", "user_id": "u2"}] * 500)

    def p50(fn, reps: int = 50) -> float:
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t) * 1000)
        return statistics.median(times)

    t = time.perf_counter()
    s.search("q", rng.standard_normal(dims), 60, {"user_id": "u1"})
    cold = (time.perf_counter() - t) * 1000
    q = rng.standard_normal(dims).tolist()
    sem = p50(lambda: s.search("q", q, 60, {"user_id": "u1"}))
    sem_f = p50(lambda: s.search("q", q, 60, {"user_id": "u1", "hash": {"ne": "y"}}))
    kw_en = p50(lambda: s.keyword_search("coffee hiking", 60, {"user_id": "u1"}))
    kw_zh = p50(lambda: s.keyword_search("我喜欢乌龙茶", 60, {"user_id": "u1"}))
    kw_rare = p50(lambda: s.keyword_search("note 4321", 60, {"user_id": "u1"}))
    both = p50(lambda: (s.search("q", q, 60, {"user_id": "u1"}), s.keyword_search("喜欢 tea", 60, {"user_id": "u1"})))
    t = time.perf_counter()
    s.insert([rng.standard_normal(dims)], [{"data": "one more", "user_id": "u1"}])
    s.search("q", q, 60, {"user_id": "u1"})
    incr = (time.perf_counter() - t) * 1000
    print(
        f"\n[embedded bench] {n} rows x {dims} dims, insert {n / insert_s:,.0f} rows/s; cold load+search "
        f"{cold:.1f} ms; p50 search(top 60) {sem:.2f} ms, with post-filter {sem_f:.2f} ms; keyword en "
        f"{kw_en:.2f} ms, zh {kw_zh:.2f} ms, rare word {kw_rare:.2f} ms; "
        f"search+keyword {both:.2f} ms; insert+search (cache patched) "
        f"{incr:.2f} ms"
    )
    ACTIVE_SCOPE.reset(token)
    s.close()
