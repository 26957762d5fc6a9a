"""EmbeddedStore on real SQLite files, through the typed store port: round trips, narrowing, scope, keyword
search, concurrency."""

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
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest

# Importing mem0 writes to $MEM0_DIR; keep it out of the home directory.
os.environ.setdefault("MEM0_DIR", tempfile.mkdtemp(prefix="mem0-test-"))
os.environ.setdefault("MEM0_TELEMETRY", "False")

from tablestore_openmemory_mcp.errors import InvalidIdentity, MemoryNotFound, ScopeMissing, UserInputError
from tablestore_openmemory_mcp.memory.ports import ALL_STATES, StoredMemory
from tablestore_openmemory_mcp.memory.query_filters import EVERYTHING, MemoryQuery, build_query
from tablestore_openmemory_mcp.memory.store_port import KeywordHit, NewRow, RowChange
from tablestore_openmemory_mcp.scope import Scope
from tablestore_openmemory_mcp.stores import row_format
from tablestore_openmemory_mcp.stores.embedded import EmbeddedStore
from tests.fakes.port_rows import count, every_row, memory, user_scope

DIMS = 8
SRC = str(Path(__file__).resolve().parents[1] / "src")
U1 = user_scope("u1")
U2 = user_scope("u2")
A1 = Scope("a1", "u1")
ALL = ALL_STATES
EVERY_HIT = 100_000  # a limit above any test's row count: "no cap"


def vec(seed: int, dims: int = DIMS) -> list[float]:
    return np.random.default_rng(seed).standard_normal(dims).tolist()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[EmbeddedStore]:
    s = EmbeddedStore(collection_name="mem0", path=str(tmp_path), embedding_model_dims=DIMS, unknown_option=1)
    yield s
    s.close()


def ids_of(rows: Sequence[StoredMemory]) -> list[str]:
    return [r.id for r in rows]


def nearest(
    store: EmbeddedStore,
    scope: Scope,
    vector: Sequence[float],
    limit: int = EVERY_HIT,
    *,
    query: MemoryQuery = EVERYTHING,
) -> list[StoredMemory]:
    """Nearest memories in every state (the row methods' search saw every state too)."""
    return store.nearest(scope, vector, limit, states=ALL, query=query)


def keywords(
    store: EmbeddedStore,
    scope: Scope,
    text: str,
    limit: int = 10,
    *,
    query: MemoryQuery = EVERYTHING,
    candidates: Sequence[str] | None = None,
) -> list[KeywordHit]:
    hits = store.keyword_hits(scope, text, limit, states=ALL, query=query, candidates=candidates)
    assert hits is not None  # the embedded store always answers keyword reads
    return hits


def hit_ids(hits: Sequence[KeywordHit]) -> list[str]:
    return [h.memory_id for h in hits]


M1 = memory("m1", "我喜欢喝乌龙茶", "u1", "a1", n=1)
M2 = memory("m2", "I like hiking in the Alps", "u1", "a2", created_at="2025-01-02T00:00:00.000000+00:00", n=2)
M4 = memory("m4", "Works at Alibaba Cloud", "u1", created_at="2025-01-04T00:00:00.000000+00:00", n=4)
M3 = memory(
    "m3", "Allergic to peanuts", "u2", created_at="2025-01-03T00:00:00.000000+00:00", categories=("health",), n=3
)


def fill(store: EmbeddedStore) -> None:
    """Three memories of u1 (clients a1, a2 and none) and one of u2, each written in its own scope."""
    assert store.put(U1, [NewRow(M1, vec(1)), NewRow(M2, vec(2)), NewRow(M4, vec(4))]) == ["m1", "m2", "m4"]
    assert store.put(U2, [NewRow(M3, vec(3))]) == ["m3"]


# ---------------------------------------------------------------------- round trips


def test_round_trip_every_method(store: EmbeddedStore, tmp_path: Path) -> None:
    fill(store)
    got = store.read_one(U1, "m1")
    assert got == M1 and got.score is None  # every field as written: text, client, times, hash, metadata
    assert store.read_one(U1, "nope") is None

    hits = nearest(store, U1, vec(2), 2)
    assert hits[0].id == "m2" and hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert len(hits) == 2 and all(0.0 <= h.score <= 1.0 for h in hits)
    assert hits[0].score >= hits[1].score

    skiing = memory("m2", "I like skiing", "u1")
    assert store.rewrite(U1, RowChange("m2", skiing, vec(9))) is None
    assert store.read_one(U1, "m2") == skiing  # the whole memory replaced (its client too)
    assert nearest(store, U1, vec(9), 1)[0].id == "m2"
    assert hit_ids(keywords(store, U1, "skiing", 5)) == ["m2"]
    assert keywords(store, U1, "hiking", 5) == []
    store.rewrite(U1, RowChange("m2", memory("m2", "I like skiing a lot", "u1")))
    assert nearest(store, U1, vec(9), 1)[0].id == "m2"  # vector kept
    with pytest.raises(MemoryNotFound):
        store.rewrite(U1, RowChange("missing", vector=vec(1)))

    assert count(store, U1) == 3 and store.page_total(U1, states=ALL, query=MemoryQuery(client="a1")) == 1
    assert count(store, U2) == 1
    assert store.remove(U2, ["m3"]) == ["m3"] and store.remove(U2, ["m3"]) == []
    assert store.read_one(U2, "m3") is None and count(store, U2) == 0
    assert store.remove(U1, ["m1", "m4", "m1", "zzz"]) == ["m1", "m4"]
    assert ids_of(every_row(store, U1)) == ["m2"]
    assert store.read(U1, ["m2", "m1", "m3"]).keys() == {"m2"}

    store.put(U1, [NewRow(memory("x", "again", "u1"), vec(1))])
    assert store.read_one(U1, "x") is not None
    assert (tmp_path / "memories.sqlite3").exists()
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("memories.sqlite3")) == []


def test_put_overwrites_an_existing_id(store: EmbeddedStore) -> None:
    rows = [NewRow(memory("p1", "first", "u1"), vec(1)), NewRow(memory("p2", "second", "u1"), vec(2))]
    assert store.put(U1, rows) == ["p1", "p2"] and count(store, U1) == 2
    replaced = memory("p1", "replaced", "u1", created_at="2025-02-01T00:00:00.000000+00:00")
    assert store.put(U1, [NewRow(replaced, vec(3))]) == ["p1"]
    assert count(store, U1) == 2 and store.read_one(U1, "p1") == replaced
    assert nearest(store, U1, vec(3), 1)[0].id == "p1"
    assert store.put(U1, []) == []


def test_shapes_match_what_the_repository_consumes(store: EmbeddedStore) -> None:
    fill(store)
    page = store.page(U1, states=ALL, query=EVERYTHING, limit=100)
    assert page.next_cursor is None and all(isinstance(m, StoredMemory) for m in page.items)
    found = nearest(store, U1, vec(1), 60)
    assert all(isinstance(m, StoredMemory) and isinstance(m.score, float) for m in found)
    assert [m.score for m in found] == sorted((m.score for m in found), reverse=True)
    hits = keywords(store, U1, "乌龙", 60)
    assert hits and all(isinstance(h, KeywordHit) and isinstance(h.score, float) and h.score > 0 for h in hits)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_list_order_limit_and_no_cap(store: EmbeddedStore) -> None:
    n = 2500
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((n, DIMS)).tolist()
    rows = [
        NewRow(memory(f"id{i:05d}", f"memory {i}", "u1", metadata={"band": "top" if i >= 2400 else "low"}), vectors[i])
        for i in range(n)
    ]
    store.put(U1, rows)
    assert ids_of(every_row(store, U1)) == [f"id{i:05d}" for i in range(n)]  # same time: id order
    first = store.page(U1, states=ALL, query=EVERYTHING, limit=100)
    assert len(first.items) == 100 and first.next_cursor is not None
    top = build_query(metadata={"band": "top"})
    assert len(every_row(store, U1, query=top)) == 100
    assert len(store.page(U1, states=ALL, query=top, limit=7).items) == 7
    assert len(nearest(store, U1, vectors[0], query=top)) == 100
    assert len(nearest(store, U1, vectors[0], 7, query=top)) == 7
    assert nearest(store, U1, vectors[0], 0) == []
    assert len(nearest(store, U1, vectors[0])) == n


def test_list_is_ordered_by_created_at_then_id(store: EmbeddedStore) -> None:
    store.put(
        U1,
        [
            NewRow(memory("c", "late", "u1", created_at="2025-03-01T10:00:00+08:00"), vec(1)),  # 02:00 UTC
            NewRow(memory("b", "early", "u1", created_at="2025-03-01T03:00:00+00:00"), vec(2)),
            NewRow(memory("a", "tie", "u1", created_at="2025-03-01T02:00:00Z"), vec(3)),
        ],
    )
    assert ids_of(every_row(store, U1)) == ["a", "c", "b"]


# ---------------------------------------------------------------------- narrowing


def test_narrowing_in_search_list_keyword(store: EmbeddedStore) -> None:
    """What a MemoryQuery narrows by (client, category) on every read; mem0's generic operators are
    evaluated by the mem0 provider (tests/test_filters.py, tests/test_mem0_provider.py)."""
    fill(store)
    health = MemoryQuery(category="health")
    assert ids_of(every_row(store, U2, query=health)) == ["m3"]
    assert every_row(store, U1, query=health) == []  # never outside the scope
    assert ids_of(nearest(store, U1, vec(1), 10, query=MemoryQuery(client="a2"))) == ["m2"]
    assert ids_of(nearest(store, user_scope("nobody"), vec(1), 10)) == []
    assert hit_ids(keywords(store, U1, "hiking alibaba", query=MemoryQuery(client="a2"))) == ["m2"]
    assert sorted(hit_ids(keywords(store, U1, "hiking alibaba"))) == ["m2", "m4"]
    assert store.page_total(U1, states=ALL, query=MemoryQuery(client="a1")) == 1


# ---------------------------------------------------------------------- scope


def test_scope_enforcement(store: EmbeddedStore) -> None:
    fill(store)
    assert store.read_one(U2, "m1") is None and store.read_one(U2, "m3") is not None
    with pytest.raises(MemoryNotFound):
        store.rewrite(U2, RowChange("m1", memory("m1", "hijack", "u2")))
    assert store.remove(U2, ["m1"]) == []
    assert store.remove(U2, ["m1", "m2", "m4"]) == []
    assert ids_of(every_row(store, U2)) == ["m3"]
    assert ids_of(nearest(store, U2, vec(1), 10)) == ["m3"]
    assert keywords(store, U2, "乌龙茶") == []
    assert keywords(store, U2, "乌龙茶", candidates=["m1", "m2"]) == []
    assert store.read(U2, ["m1", "m3"]).keys() == {"m3"}
    assert store.read_vectors(U2, ["m1", "m3"]).keys() == {"m3"}
    assert count(store, U2) == 1
    with pytest.raises(ValueError, match="scope"):
        store.put(U2, [NewRow(memory("new", "x", "u1"), vec(5))])
    with pytest.raises(ValueError, match="conflicts"):
        store.put(U2, [NewRow(memory("m1", "x", "u2"), vec(5))])
    with pytest.raises(ValueError, match="scope"):
        store.rewrite(U2, RowChange("m3", memory("m3", "moved", "u1")))
    assert store.remove(U2, ["m3"]) == ["m3"]
    assert sorted(ids_of(every_row(store, U1))) == ["m1", "m2", "m4"]
    assert store.read_one(U1, "m1") == M1


def test_scope_with_client_narrows_rows(store: EmbeddedStore) -> None:
    fill(store)
    assert ids_of(every_row(store, A1)) == ["m1"]
    assert ids_of(nearest(store, A1, vec(2), 10)) == ["m1"]
    assert store.read_one(A1, "m2") is None
    with pytest.raises(ValueError, match="scope"):  # a client scope writes only its own client's rows
        store.put(A1, [NewRow(memory("m9", "x", "u1", "a2"), vec(5))])


def _userless(client: str = "a1") -> Scope:
    """A Scope whose user is empty, past the checks a real one gets (``Scope(client, "")`` raises)."""
    scope = object.__new__(Scope)
    for name, value in (("client_name", client), ("user_id", ""), ("shared", False)):
        object.__setattr__(scope, name, value)
    return scope


def test_every_method_fails_closed_without_a_user(store: EmbeddedStore) -> None:
    fill(store)
    with pytest.raises(InvalidIdentity):
        Scope("a1", "")
    nobody = _userless()
    row = NewRow(memory("x", "x", ""), vec(1))
    calls = {
        "put": lambda: store.put(nobody, [row]),
        "read_one": lambda: store.read_one(nobody, "m1"),
        "read": lambda: store.read(nobody, ["m1"]),
        "read_vectors": lambda: store.read_vectors(nobody, ["m1"]),
        "holder": lambda: store.holder(nobody, "k"),
        "rewrite": lambda: store.rewrite(nobody, RowChange("m1", vector=vec(2))),
        "rewrite_many": lambda: store.rewrite_many(nobody, [RowChange("m1", vector=vec(2))]),
        "remove": lambda: store.remove(nobody, ["m1", "m3"]),
        "page": lambda: store.page(nobody, states=ALL, query=EVERYTHING, limit=10),
        "page_total": lambda: store.page_total(nobody, states=ALL, query=EVERYTHING),
        "created_window": lambda: store.created_window(nobody, states=ALL, newest_first=True, offset=0, limit=5),
        "tallies": lambda: store.tallies(nobody),
        "nearest": lambda: store.nearest(nobody, vec(1), 5, states=ALL, query=EVERYTHING),
        "nearest narrowed": lambda: store.nearest(nobody, vec(1), 5, states=ALL, query=MemoryQuery(client="a1")),
        "keyword_hits": lambda: store.keyword_hits(nobody, "乌龙茶", 5, states=ALL, query=EVERYTHING),
    }
    for name, call in calls.items():
        with pytest.raises(ScopeMissing):
            call()
            pytest.fail(name)
    assert count(store, U1) == 3  # nothing was changed by the refused calls
    assert count(store, U2) == 1
    assert store.read_vectors(U1, ["m1"]).keys() == {"m1"}


# ---------------------------------------------------------------------- keyword search


def test_chinese_keyword_search(store: EmbeddedStore) -> None:
    fill(store)
    store.put(U1, [NewRow(memory("m5", "他喜欢喝咖啡", "u1"), vec(7))])
    hits = keywords(store, U1, "乌龙茶", 5)
    assert hits[0].memory_id == "m1" and hits[0].score > 0
    assert "m5" not in hit_ids(hits)
    assert hit_ids(keywords(store, U1, "喝咖啡", 5))[0] == "m5"
    assert hit_ids(keywords(store, U1, "ALIBABA", 5)) == ["m4"]
    assert set(hit_ids(keywords(store, U1, "喜欢", 5))) == {"m1", "m5"}


def test_keyword_search_uses_mem0_lemmatized_text(store: EmbeddedStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """With spaCy installed (the ``[mem0]`` extra), rows hold mem0's lemmatized text, and keywords match it."""
    monkeypatch.setattr(row_format, "lemmatize", lambda text: "run daily" if "running" in text else text)
    store.put(U1, [NewRow(memory("r", "She was running daily", "u1"), vec(1))])
    assert hit_ids(keywords(store, U1, "run", 5)) == ["r"]
    assert hit_ids(keywords(store, U1, "running", 5)) == ["r"]


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
def test_fts_injection_is_harmless(store: EmbeddedStore, query: str) -> None:
    fill(store)
    store.put(U2, [NewRow(memory("f", "foo bar", "u2"), vec(8))])
    assert set(hit_ids(keywords(store, U1, query))) <= {"m1", "m2", "m4"}


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
def test_bad_vectors_rejected_and_nothing_written(store: EmbeddedStore, bad: list[float]) -> None:
    a, b = memory("ok", "a", "u1"), memory("bad", "b", "u1")
    with pytest.raises(ValueError, match="vector"):
        store.put(U1, [NewRow(a, vec(1)), NewRow(b, bad)])
    assert count(store, U1) == 0 and store.read_one(U1, "ok") is None
    store.put(U1, [NewRow(a, vec(1))])
    with pytest.raises(ValueError, match="vector"):
        store.rewrite(U1, RowChange("ok", vector=bad))
    with pytest.raises(ValueError):
        nearest(store, U1, bad, 5)
    assert nearest(store, U1, vec(1), 1)[0].score == pytest.approx(1.0, abs=1e-5)


def test_argument_validation(tmp_path: Path) -> None:
    for name in ("1abc", "a-b", "a b", "x" * 65, "a__fts", ""):
        with pytest.raises(ValueError, match="collection name"):
            EmbeddedStore(collection_name=name, path=str(tmp_path), embedding_model_dims=4)
    with pytest.raises(ValueError, match="path"):
        EmbeddedStore(collection_name="c", embedding_model_dims=4)
    s = EmbeddedStore(collection_name="c", path=str(tmp_path), embedding_model_dims=4)
    with pytest.raises(ValueError, match="same id"):
        s.put(U1, [NewRow(memory("a", "x", "u1"), [1, 0, 0, 0]), NewRow(memory("a", "y", "u1"), [0, 1, 0, 0])])
    with pytest.raises(UserInputError, match="limit"):
        s.page(U1, states=ALL, query=EVERYTHING, limit=0)
    for cursor in ("nope", "W10", "WyJhIl0", "!!"):
        with pytest.raises(UserInputError, match="cursor"):
            s.page(U1, states=ALL, query=EVERYTHING, limit=5, cursor=cursor)
    s.close()
    with pytest.raises(ValueError, match="4-dimensional"):
        EmbeddedStore(collection_name="c", path=str(tmp_path), embedding_model_dims=8)
    with pytest.raises(RuntimeError, match="closed"):
        s.read_one(U1, "a")


# ---------------------------------------------------------------------- durability, processes, threads


def test_durable_across_reopen_and_entities_collection(tmp_path: Path) -> None:
    a = EmbeddedStore(collection_name="mem0", path=str(tmp_path), embedding_model_dims=DIMS)
    ent = EmbeddedStore(collection_name="mem0_entities", path=str(tmp_path), embedding_model_dims=DIMS)
    tea = memory("k", "茶", "u1")
    a.put(U1, [NewRow(tea, vec(1))])
    ent.put(U1, [NewRow(memory("e", "tea", "u1", linked_memory_ids=["k"]), vec(2))])
    a.close()
    ent.close()
    b = EmbeddedStore(collection_name="mem0", path=str(tmp_path), embedding_model_dims=DIMS)
    assert b.read_one(U1, "k") == tea
    assert b.read_one(U1, "e") is None
    b.close()


_CHILD = textwrap.dedent(
    """
    import os, sys, time, zlib
    sys.path.insert(0, {src!r})
    import numpy as np
    from tablestore_openmemory_mcp.memory.ports import StoredMemory
    from tablestore_openmemory_mcp.memory.query_filters import MemoryQuery
    from tablestore_openmemory_mcp.memory.store_port import NewRow
    from tablestore_openmemory_mcp.scope import Scope
    from tablestore_openmemory_mcp.stores.embedded import EmbeddedStore
    path, tag, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    s = EmbeddedStore(collection_name="mem0", path=path, embedding_model_dims={dims})
    rng = np.random.default_rng(zlib.crc32(tag.encode()))  # hash() of a str varies per process
    scope, stamp, active = Scope("owner", "u", shared=True), "2025-01-01T00:00:00+00:00", ("active",)
    for i in range(n):
        text = f"{{tag}} {{i}}"
        memory = StoredMemory(f"{{tag}}-{{i}}", text, "u", None, stamp, stamp, "h")
        s.put(scope, [NewRow(memory, rng.standard_normal({dims}).tolist())])
        s.nearest(scope, rng.standard_normal({dims}).tolist(), 5, states=active, query=MemoryQuery())
        s.keyword_hits(scope, tag, 5, states=active, query=MemoryQuery())
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
    u = user_scope("u")
    parent.put(u, [NewRow(memory("p-0", "parent", "u"), vec(0))])
    assert len(nearest(parent, u, vec(0))) == 1  # warm the cache
    procs = [_child(tmp_path, "alpha", "150"), _child(tmp_path, "beta", "150")]
    try:
        for i in range(1, 50):  # the parent writes concurrently too
            parent.put(u, [NewRow(memory(f"p-{i}", f"parent {i}", "u"), vec(i))])
    finally:
        outs = _finish(procs)
    assert all("done" in out for out in outs)
    expected = {f"p-{i}" for i in range(50)} | {f"{t}-{i}" for t in ("alpha", "beta") for i in range(150)}
    assert set(ids_of(every_row(parent, u))) == expected
    # the warm cache noticed the other processes' writes
    assert set(ids_of(nearest(parent, u, vec(0)))) == expected
    assert hit_ids(keywords(parent, u, "beta", 1000))[0].startswith("beta")
    parent.close()
    fresh = EmbeddedStore(collection_name="mem0", path=str(tmp_path / "db"), embedding_model_dims=DIMS)
    assert count(fresh, u) == len(expected)
    fresh.close()


def test_acknowledged_write_survives_kill_9(tmp_path: Path) -> None:
    proc = _child(tmp_path, "killed", "3", "sleep")
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "done"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    s = EmbeddedStore(collection_name="mem0", path=str(tmp_path / "db"), embedding_model_dims=DIMS)
    assert sorted(ids_of(every_row(s, user_scope("u")))) == ["killed-0", "killed-1", "killed-2"]
    s.close()


def test_threads_read_and_write_concurrently(store: EmbeddedStore) -> None:
    errors: list[BaseException] = []

    def writer(t: int) -> None:
        user = f"u{t % 2}"
        scope = user_scope(user)
        try:
            for i in range(40):
                store.put(scope, [NewRow(memory(f"{t}-{i}", f"t{t} {i}", user), vec(t * 1000 + i))])
                if i % 5 == 0:
                    store.remove(scope, [f"{t}-{i}"])
                if i % 7 == 0 and i > 0 and (i - 1) % 5 != 0:
                    store.rewrite(scope, RowChange(f"{t}-{i - 1}", vector=vec(i)))
        except BaseException as exc:
            errors.append(exc)

    def reader() -> None:
        try:
            for i in range(80):
                nearest(store, user_scope("u0"), vec(i), 10)
                keywords(store, user_scope("u1"), "t1", 10)
                store.page(user_scope("u1"), states=ALL, query=EVERYTHING, limit=5)
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
        in_db = set(ids_of(every_row(store, user_scope(user))))
        via_cache = set(ids_of(nearest(store, user_scope(user), vec(0))))
        assert in_db == via_cache and len(in_db) == 2 * 32


def test_cache_patched_in_place_matches_fresh_load(store: EmbeddedStore, tmp_path: Path) -> None:
    fill(store)
    scopes = (U1, Scope("a2", "u1"), U2, A1)
    for sc in scopes:
        nearest(store, sc, vec(0), 10)  # warm the slabs
    store.put(U1, [NewRow(memory("m6", "new", "u1", "a2"), vec(11))])
    store.rewrite(U1, RowChange("m2", memory("m2", "moved", "u1", "a9")))  # leaves a slab
    store.rewrite(U1, RowChange("m4", vector=vec(12)))
    store.remove(U1, ["m1"])
    fresh = EmbeddedStore(collection_name="mem0", path=str(tmp_path), embedding_model_dims=DIMS)
    for sc in scopes:
        for q in (vec(11), vec(12), vec(2)):
            mine = [(r.id, round(r.score, 5)) for r in nearest(store, sc, q)]
            theirs = [(r.id, round(r.score, 5)) for r in nearest(fresh, sc, q)]
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
    active = ("active",)
    t0 = time.perf_counter()
    for start in range(0, n, 1000):
        vecs = rng.standard_normal((1000, dims)).astype(np.float32)
        s.put(
            U1,
            [
                NewRow(
                    memory(
                        f"n{start + i:06d}",
                        " ".join(rng.choice(words, 6)) + f" note {start + i}",
                        "u1",
                        categories=("work",) if i % 10 == 0 else (),
                    ),
                    vecs[i].tolist(),
                )
                for i in range(1000)
            ],
        )
    insert_s = time.perf_counter() - t0
    s.put(U2, [NewRow(memory(f"o{i}", "other user", "u2"), rng.standard_normal(dims).tolist()) for i in range(500)])

    def p50(fn, reps: int = 50) -> float:
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t) * 1000)
        return statistics.median(times)

    def search(q: list[float], query: MemoryQuery = EVERYTHING) -> None:
        s.nearest(U1, q, 60, states=active, query=query)

    def keyword(text: str) -> None:
        s.keyword_hits(U1, text, 60, states=active, query=EVERYTHING)

    t = time.perf_counter()
    search(rng.standard_normal(dims).tolist())
    cold = (time.perf_counter() - t) * 1000
    q = rng.standard_normal(dims).tolist()
    sem = p50(lambda: search(q))
    sem_f = p50(lambda: search(q, MemoryQuery(category="work")))
    kw_en = p50(lambda: keyword("coffee hiking"))
    kw_zh = p50(lambda: keyword("我喜欢乌龙茶"))
    kw_rare = p50(lambda: keyword("note 4321"))
    both = p50(lambda: (search(q), keyword("喜欢 tea")))
    t = time.perf_counter()
    s.put(U1, [NewRow(memory("one-more", "one more", "u1"), rng.standard_normal(dims).tolist())])
    search(q)
    incr = (time.perf_counter() - t) * 1000
    print(
        f"\n[embedded bench] {n} rows x {dims} dims, insert {n / insert_s:,.0f} rows/s; cold load+search "
        f"{cold:.1f} ms; p50 search(top 60) {sem:.2f} ms, narrowed to a 10% category {sem_f:.2f} ms; keyword en "
        f"{kw_en:.2f} ms, zh {kw_zh:.2f} ms, rare word {kw_rare:.2f} ms; "
        f"search+keyword {both:.2f} ms; insert+search (cache patched) "
        f"{incr:.2f} ms"
    )
    s.close()
