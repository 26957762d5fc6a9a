"""EmbeddedStore and the store contract of the typed port (memory/store_port.py): dedup keys, conditional
updates, keyset pages, per-scope keyword statistics, incremental cache catch-up across processes, migration of
old files."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from collections import Counter
from collections.abc import Collection, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tablestore_openmemory_mcp.errors import ConflictError, MemoryNotFound
from tablestore_openmemory_mcp.memory.ports import ALL_STATES, VISIBLE_STATES, State, StoredMemory
from tablestore_openmemory_mcp.memory.query_filters import EVERYTHING, MemoryQuery, build_query
from tablestore_openmemory_mcp.memory.store_port import NewRow, RowChange, RowPage
from tablestore_openmemory_mcp.scope import Scope
from tablestore_openmemory_mcp.stores.embedded import EmbeddedStore
from tests.fakes.port_rows import count, every_row, memory, user_scope

DIMS = 8
SRC = str(Path(__file__).resolve().parents[1] / "src")
A = Scope("cline", "alice")
B = Scope("cline", "bob")
CURSOR = Scope("cursor", "alice")
ALICE = user_scope("alice")  # both of alice's clients
ALL = ALL_STATES
EVERY_HIT = 100_000


def vec(seed: int) -> list[float]:
    return np.random.default_rng(seed).standard_normal(DIMS).tolist()


def row(memory_id: str, text: str, scope: Scope = A, **extra: Any) -> StoredMemory:
    """A memory of ``scope``'s user written by its client."""
    return memory(memory_id, text, scope.user_id, scope.client_name, **extra)


def nearest(store: EmbeddedStore, scope: Scope, vector: Sequence[float], limit: int = EVERY_HIT) -> list[StoredMemory]:
    return store.nearest(scope, vector, limit, states=ALL, query=EVERYTHING)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[EmbeddedStore]:
    s = EmbeddedStore(collection_name="memories", path=str(tmp_path), embedding_model_dims=DIMS)
    yield s
    s.close()


# ---------------------------------------------------------------------- dedup keys


def test_dedup_key_returns_the_holder_and_frees_on_delete(store: EmbeddedStore) -> None:
    got = store.put(
        A,
        [
            NewRow(row("a", "tea"), vec(1), "k-tea"),
            NewRow(row("b", "coffee"), vec(2), "k-coffee"),
            NewRow(row("c", "tea"), vec(3), "k-tea"),
        ],
    )
    assert got == ["a", "b", "a"] and count(store, A) == 2  # the batch's own duplicate is folded
    assert store.put(A, [NewRow(row("d", "tea"), vec(4), "k-tea")]) == ["a"]
    holder = store.holder(A, "k-tea")
    assert holder is not None and holder.id == "a"
    assert store.put(A, [NewRow(row("e", "no key"), vec(4))]) == ["e"]
    assert store.remove(A, ["a"]) == ["a"]
    assert store.holder(A, "k-tea") is None
    assert store.put(A, [NewRow(row("f", "tea"), vec(4), "k-tea")]) == ["f"]  # delete -> re-add stores it
    assert store.holder(B, "k-tea") is None  # another user's key is invisible
    assert store.put(B, [NewRow(row("g", "tea", B), vec(5), "k-tea")]) == ["g"]
    assert store.holder(CURSOR, "k-tea") is None
    with pytest.raises(ConflictError):  # held by the same user's other client: never leaked
        store.put(CURSOR, [NewRow(row("h", "tea", CURSOR), vec(6), "k-tea")])
    assert store.read_one(CURSOR, "h") is None


def _holder_id(store: EmbeddedStore, key: str, scope: Scope = A) -> str | None:
    found = store.holder(scope, key)
    return found.id if found is not None else None


def test_update_moves_the_key_and_drops_it_when_taken(store: EmbeddedStore) -> None:
    store.put(A, [NewRow(row("a", "tea"), vec(1), "k-tea"), NewRow(row("b", "coffee"), vec(2), "k-coffee")])
    store.rewrite(A, RowChange("a", row("a", "green tea"), vec(3), dedup_key="k-green"))
    assert _holder_id(store, "k-green") == "a" and _holder_id(store, "k-tea") is None
    assert store.put(A, [NewRow(row("c", "tea"), vec(1), "k-tea")]) == ["c"]  # update -> re-add stores it
    store.rewrite(A, RowChange("b", row("b", "tea"), dedup_key="k-tea"))  # c holds it: b's key is dropped
    assert _holder_id(store, "k-tea") == "c" and _holder_id(store, "k-coffee") is None
    store.rewrite(A, RowChange("c", vector=vec(9)))  # no dedup_key: the key stays
    assert _holder_id(store, "k-tea") == "c"


_DEDUP_CHILD = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {src!r})
    from tablestore_openmemory_mcp.memory.ports import StoredMemory
    from tablestore_openmemory_mcp.memory.store_port import NewRow
    from tablestore_openmemory_mcp.scope import Scope
    from tablestore_openmemory_mcp.stores.embedded import EmbeddedStore
    path, tag = sys.argv[1], sys.argv[2]
    s = EmbeddedStore(collection_name="memories", path=path, embedding_model_dims={dims})
    scope, stamp = Scope("cline", "alice"), "2025-01-01T00:00:00+00:00"
    print("ready", flush=True)
    sys.stdin.readline()
    for i in range(60):
        memory = StoredMemory(f"{{tag}}-{{i}}", f"same text {{i}}", "alice", "cline", stamp, stamp, "h")
        got = s.put(scope, [NewRow(memory, [1.0] + [0.5] * {rest}, f"key-{{i}}")])
        print(got[0], flush=True)
    """
)


def test_two_processes_adding_the_same_text_store_one_row(tmp_path: Path) -> None:
    db = tmp_path / "db"
    EmbeddedStore(collection_name="memories", path=str(db), embedding_model_dims=DIMS).close()
    script = tmp_path / "child.py"
    script.write_text(_DEDUP_CHILD.format(src=SRC, dims=DIMS, rest=DIMS - 1))
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), str(db), tag],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "MEM0_TELEMETRY": "False"},
        )
        for tag in ("p", "q")
    ]
    try:
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        for p in procs:  # both start inserting at once
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        outs = []
        for p in procs:
            out, err = p.communicate(timeout=120)
            assert p.returncode == 0, err
            outs.append(out.split())
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)
    s = EmbeddedStore(collection_name="memories", path=str(db), embedding_model_dims=DIMS)
    assert count(s, A) == 60
    for i in range(60):  # both processes were told the id of the one row holding the text
        assert outs[0][i] == outs[1][i] == _holder_id(s, f"key-{i}")
    s.close()


# ---------------------------------------------------------------------- conditional update, delete


def test_update_with_expected_updated_at(store: EmbeddedStore) -> None:
    store.put(A, [NewRow(row("a", "v1", updated_at="t1"), vec(1))])
    store.rewrite(A, RowChange("a", row("a", "v2", updated_at="t2"), expected_updated_at="t1"))
    with pytest.raises(ConflictError):
        store.rewrite(A, RowChange("a", row("a", "v3", updated_at="t3"), expected_updated_at="t1"))
    got = store.read_one(A, "a")
    assert got is not None and got.text == "v2"
    with pytest.raises(MemoryNotFound):
        store.rewrite(A, RowChange("zzz", row("zzz", "x"), expected_updated_at="t1"))
    with pytest.raises(MemoryNotFound):
        store.rewrite(B, RowChange("a", vector=vec(2)))


def test_delete_many_reports_exactly_what_it_deleted(store: EmbeddedStore) -> None:
    store.put(A, [NewRow(row(f"a{i}", f"t{i}"), vec(i)) for i in range(5)])
    store.put(B, [NewRow(row("b0", "b", B), vec(9))])
    assert store.remove(B, ["a0", "a1", "b0", "b0", "nope"]) == ["b0"]
    assert store.remove(A, ["a3", "a1", "b0", "a3"]) == ["a3", "a1"]
    assert store.remove(A, ["a3", "a1"]) == []  # a retry deletes nothing more
    assert store.remove(A, []) == []
    assert sorted(r.id for r in every_row(store, A)) == ["a0", "a2", "a4"]


# ---------------------------------------------------------------------- keyset pages


def test_list_page_keyset_is_stable_under_concurrent_changes(store: EmbeddedStore) -> None:
    ids = [f"m{i:03d}" for i in range(50)]
    stamps = [f"2025-01-01T00:00:{i // 2:02d}Z" for i in range(50)]  # pairs share created_at: id breaks ties
    picked = {3, 30, 31}
    store.put(
        A,
        [
            NewRow(row(ids[i], f"t{i}", created_at=c, **({"metadata": {"pick": "yes"}} if i in picked else {})), vec(i))
            for i, c in enumerate(stamps)
        ],
    )
    store.put(B, [NewRow(row("bob", "bob", B, created_at="2025-01-01T00:00:05Z"), vec(99))])
    assert count(store, A) == 50
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        page = store.page(A, states=ALL, query=EVERYTHING, limit=7, cursor=cursor)
        seen += [r.id for r in page.items]
        cursor = page.next_cursor
        pages += 1
        if pages == 2:  # between pages: delete an unseen row and one already seen, add a late one
            assert store.remove(A, ["m040", "m001"]) == ["m040", "m001"]
            store.put(A, [NewRow(row("late", "late", created_at="2030-01-01T00:00:00Z"), vec(100))])
        if cursor is None:
            break
    assert len(seen) == len(set(seen))
    assert seen == [i for i in ids if i != "m040"] + ["late"]
    assert pages == 8
    pick = build_query(metadata={"pick": "yes"})  # a narrowed list pages the same way
    page = store.page(A, states=ALL, query=pick, limit=2)
    assert [r.id for r in page.items] == ["m003", "m030"] and page.next_cursor is not None
    page = store.page(A, states=ALL, query=pick, limit=2, cursor=page.next_cursor)
    assert [r.id for r in page.items] == ["m031"] and page.next_cursor is None
    assert store.page(ALICE, states=ALL, query=MemoryQuery(client="cursor"), limit=5) == RowPage([], None)


# ---------------------------------------------------------------------- per-scope keyword statistics


def _scores(store: EmbeddedStore, query: str, candidates: Sequence[str] | None = None) -> list[tuple[str, float]]:
    hits = store.keyword_hits(A, query, 50, states=ALL, query=EVERYTHING, candidates=candidates)
    assert hits is not None
    return [(h.memory_id, h.score) for h in hits]


def test_keyword_scores_use_only_the_callers_scope(store: EmbeddedStore) -> None:
    texts = ["my PIN is 7391", "my bank PIN is 1234", "I like oolong tea", "tea with milk", "乌龙茶很好喝"]
    store.put(A, [NewRow(row(f"a{i}", t), vec(i)) for i, t in enumerate(texts)])
    queries = ["PIN 7391", "tea", "乌龙茶", "bank pin tea", "7391"]
    before = {q: _scores(store, q) for q in queries}
    assert before["PIN 7391"][0][0] == "a0" and all(s > 0 for _, s in before["tea"])
    # another user's rows full of the same words, in several shapes
    others = ["7391 7391", "pin", "tea tea tea", "乌龙茶", "bank"] * 40
    store.put(B, [NewRow(row(f"b{i}", t, B), vec(100 + i)) for i, t in enumerate(others)])
    store.put(CURSOR, [NewRow(row("c0", "tea 7391", CURSOR), vec(7))])  # and alice's other client
    after = {q: _scores(store, q) for q in queries}
    assert after == before  # identical, not merely close
    store.remove(B, [f"b{i}" for i in range(len(others))])
    assert {q: _scores(store, q) for q in queries} == before
    hits = store.keyword_hits(ALICE, "7391", 10, states=ALL, query=EVERYTHING)  # the user-wide scope counts both
    assert hits is not None and {h.memory_id for h in hits} == {"a0", "c0"}


def test_keyword_candidates_score_only_those_rows(store: EmbeddedStore) -> None:
    texts = ["tea and cake", "tea", "coffee", "green tea latte", "water"]
    store.put(A, [NewRow(row(f"a{i}", t), vec(i)) for i, t in enumerate(texts)])
    store.put(B, [NewRow(row("b0", "tea", B), vec(9))])
    full = dict(_scores(store, "tea"))
    assert set(full) == {"a0", "a1", "a3"}
    part = _scores(store, "tea", candidates=["a3", "a2", "a1", "b0", "nope", "a3"])
    assert [i for i, _ in part] == sorted(["a1", "a3"], key=lambda i: -full[i])
    assert all(score == full[i] for i, score in part)  # same statistics either way
    assert _scores(store, "tea", candidates=[]) == []


# ---------------------------------------------------------------------- caches across processes


_WRITER = textwrap.dedent(
    """
    import sys
    from dataclasses import replace
    sys.path.insert(0, {src!r})
    from tablestore_openmemory_mcp.memory.ports import StoredMemory
    from tablestore_openmemory_mcp.memory.store_port import NewRow, RowChange
    from tablestore_openmemory_mcp.scope import Scope
    from tablestore_openmemory_mcp.stores.embedded import EmbeddedStore
    s = EmbeddedStore(collection_name="memories", path=sys.argv[1], embedding_model_dims={dims})
    scope, stamp = Scope("owner", "alice", shared=True), "2025-01-01T00:00:00+00:00"
    new = StoredMemory("new", "new", "alice", "cline", stamp, stamp, "h")
    s.put(scope, [NewRow(new, [0.0, 1.0] + [0.0] * {rest})])
    s.rewrite(scope, RowChange("a1", vector=[1.0] + [0.0] * {rest1}))
    s.rewrite(scope, RowChange("a2", replace(s.read_one(scope, "a2"), text="moved", client="cursor")))
    s.remove(scope, ["a3"])
    s.close()
    """
)


def test_another_processs_writes_are_replayed_not_reloaded(store: EmbeddedStore, tmp_path: Path) -> None:
    store.put(A, [NewRow(row(f"a{i}", f"t{i}"), vec(i)) for i in range(6)])
    nearest(store, A, vec(0), 3)  # warm the cache
    slab = next(iter(store._cache.slabs.values()))
    script = tmp_path / "writer.py"
    script.write_text(_WRITER.format(src=SRC, dims=DIMS, rest=DIMS - 2, rest1=DIMS - 1))
    done = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    hits = nearest(store, A, [1.0] + [0.0] * (DIMS - 1))
    assert hits[0].id == "a1" and hits[0].score == pytest.approx(1.0, abs=1e-6)
    assert {h.id for h in hits} == {"a0", "a1", "a4", "a5", "new"}
    assert next(iter(store._cache.slabs.values())) is slab  # patched from the change log, not reloaded
    fresh = EmbeddedStore(collection_name="memories", path=str(tmp_path), embedding_model_dims=DIMS)
    for sc in (A, CURSOR):
        for q in (vec(0), vec(4), [0.0, 1.0] + [0.0] * (DIMS - 2)):
            assert [(h.id, round(h.score or 0, 5)) for h in nearest(store, sc, q)] == [
                (h.id, round(h.score or 0, 5)) for h in nearest(fresh, sc, q)
            ]
    fresh.close()


def test_updates_and_deletes_keep_the_cache_exact(store: EmbeddedStore, tmp_path: Path) -> None:
    """Many in-place patches (tombstones, appends, compactions) give what a fresh load gives."""
    rng = np.random.default_rng(0)
    n = 400
    store.put(A, [NewRow(row(f"a{i}", f"t{i}"), v) for i, v in enumerate(rng.standard_normal((n, DIMS)).tolist())])
    nearest(store, A, vec(0), 5)
    alive = [f"a{i}" for i in range(n)]
    for step in range(300):
        victim = alive[int(rng.integers(len(alive)))]
        if step % 3 == 0:
            store.remove(A, [victim])
            alive.remove(victim)
        else:
            store.rewrite(A, RowChange(victim, vector=rng.standard_normal(DIMS).tolist()))
    fresh = EmbeddedStore(collection_name="memories", path=str(tmp_path), embedding_model_dims=DIMS)
    try:
        for seed in range(5):
            mine = [(h.id, round(h.score or 0, 5)) for h in nearest(store, A, vec(seed))]
            theirs = [(h.id, round(h.score or 0, 5)) for h in nearest(fresh, A, vec(seed))]
            assert mine == theirs and len(mine) == len(alive)
            assert [h.id for h in nearest(store, A, vec(seed), 10)] == [i for i, _ in theirs[:10]]
    finally:
        fresh.close()


# ---------------------------------------------------------------------- migration


def _previous_release_file(path: Path) -> None:
    """memories.sqlite3 as the previous release wrote it (schema and FTS text of that version)."""
    conn = sqlite3.connect(path / "memories.sqlite3")
    conn.executescript(
        """
        CREATE TABLE __collections (name TEXT PRIMARY KEY, dims INTEGER NOT NULL, generation INTEGER NOT NULL,
            created_at TEXT NOT NULL, rows INTEGER NOT NULL DEFAULT 0);
        CREATE TABLE "memories" (rid INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, user_id TEXT,
            agent_id TEXT, run_id TEXT, vector BLOB NOT NULL, payload TEXT NOT NULL, created_at TEXT NOT NULL);
        CREATE INDEX "memories__user_id" ON "memories" (user_id);
        CREATE INDEX "memories__agent_id" ON "memories" (agent_id);
        CREATE INDEX "memories__run_id" ON "memories" (run_id);
        CREATE VIRTUAL TABLE "memories__fts" USING fts5(text, scope, tokenize = 'unicode61 remove_diacritics 0');
        CREATE VIRTUAL TABLE "memories__vocab" USING fts5vocab("memories__fts", 'row');
        INSERT INTO __collections VALUES ('memories', 8, 12345, '2025-01-01T00:00:00+00:00', 3);
        """
    )
    from tablestore_openmemory_mcp.stores.embedded.rows import fts_text, scope_terms

    for rid, (id_, text, user) in enumerate(
        [("o1", "I like oolong tea", "alice"), ("o2", "乌龙茶", "alice"), ("o3", "tea", "bob")], 1
    ):
        payload = {"data": text, "user_id": user, "agent_id": "cline", "hash": "h" + id_}
        blob = np.asarray(vec(rid), dtype=np.float32)
        blob /= np.linalg.norm(blob)
        conn.execute(
            'INSERT INTO "memories" VALUES (?, ?, ?, ?, NULL, ?, ?, ?)',
            (rid, id_, user, "cline", blob.tobytes(), json.dumps(payload), f"2025-01-0{rid}T00:00:00.000000+00:00"),
        )
        ident = {"user_id": user, "agent_id": "cline"}
        conn.execute(
            'INSERT INTO "memories__fts" (rowid, text, scope) VALUES (?, ?, ?)',
            (rid, fts_text(payload), " ".join(scope_terms(ident))),
        )
    conn.commit()
    conn.close()


def test_previous_release_file_is_migrated_in_place(tmp_path: Path) -> None:
    _previous_release_file(tmp_path)
    for _ in range(2):  # idempotent: a second open changes nothing
        s = EmbeddedStore(collection_name="memories", path=str(tmp_path), embedding_model_dims=DIMS)
        assert [r.id for r in every_row(s, A)] == ["o1", "o2"]
        assert nearest(s, A, vec(1), 1)[0].id == "o1"
        hits = s.keyword_hits(A, "tea 乌龙茶", 5, states=ALL, query=EVERYTHING)
        assert hits is not None and {h.memory_id for h in hits} == {"o1", "o2"}
        page = s.page(A, states=ALL, query=EVERYTHING, limit=1)
        assert [r.id for r in page.items] == ["o1"]
        nxt = s.page(A, states=ALL, query=EVERYTHING, limit=1, cursor=page.next_cursor)
        assert [r.id for r in nxt.items] == ["o2"]
        bob = s.keyword_hits(B, "tea", 5, states=ALL, query=EVERYTHING)
        assert bob is not None and [h.memory_id for h in bob] == ["o3"]
        s.close()
    s = EmbeddedStore(collection_name="memories", path=str(tmp_path), embedding_model_dims=DIMS)
    assert s.put(A, [NewRow(row("n1", "new"), vec(5), "k1")]) == ["n1"]
    assert s.put(A, [NewRow(row("n2", "new"), vec(6), "k1")]) == ["n1"]
    fresh = s.keyword_hits(A, "tea", 5, states=ALL, query=EVERYTHING)
    s.close()
    conn = sqlite3.connect(tmp_path / "memories.sqlite3")
    indexes = {
        r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'memories'")
    }
    conn.close()
    assert {"memories__scope_ua", "memories__scope_u", "memories__dedup"} <= indexes
    assert not {"memories__user_id", "memories__agent_id", "memories__run_id"} & indexes
    assert "run_id" in _columns(tmp_path)  # stays, unused: no table rebuild
    assert fresh and fresh[0].memory_id == "o1"


def _columns(path: Path) -> set[str]:
    conn = sqlite3.connect(path / "memories.sqlite3")
    try:
        return {r[1] for r in conn.execute('PRAGMA table_info("memories")')}
    finally:
        conn.close()


def test_run_id_travels_in_the_payload_and_its_column_is_never_written(store: EmbeddedStore, tmp_path: Path) -> None:
    """A mem0 app's run_id is metadata (the mem0 provider checks it), kept in the payload; the ``run_id`` column
    stays in new files only so 2.0.0 can open them after a rollback: never written, never indexed."""
    store.put(A, [NewRow(row("r1", "tea in run one", run_id="run-1"), vec(1))])
    rewritten = row("r1", "oolong in run two", run_id="run-2")
    store.rewrite(A, RowChange("r1", rewritten, vec(2)))
    assert store.read(A, ["r1"])["r1"].metadata["run_id"] == "run-2"
    assert [m.id for m in nearest(store, A, vec(2), 1)] == ["r1"]
    hits = store.keyword_hits(A, "oolong", 5, states=ALL, query=EVERYTHING)
    assert hits is not None and [h.memory_id for h in hits] == ["r1"]
    assert "run_id" in _columns(tmp_path)
    conn = sqlite3.connect(tmp_path / "memories.sqlite3")
    try:
        indexes = " ".join(sql or "" for (sql,) in conn.execute("SELECT sql FROM sqlite_master WHERE type = 'index'"))
        written = conn.execute('SELECT COUNT(*) FROM "memories" WHERE run_id IS NOT NULL').fetchone()[0]
    finally:
        conn.close()
    assert "run_id" not in indexes
    assert written == 0


# ---------------------------------------------------------------------- states, vectors


def test_state_filters_agree_everywhere(store: EmbeddedStore) -> None:
    """Lists and counts answer the states in SQL; searches check them per row: same rows either way, with and
    without a narrowing query."""
    cycle: list[State] = ["active", "active", "paused", "archived", "deleted", "paused"]
    states = {f"a{i:02d}": cycle[i % len(cycle)] for i in range(24)}
    store.put(A, [NewRow(row(i, f"tea note {i}", state=s), vec(n)) for n, (i, s) in enumerate(states.items())])
    store.rewrite(A, RowChange("a01", row("a01", "tea note a01", state="archived")))  # active -> archived
    store.rewrite(A, RowChange("a03", row("a03", "tea note a03")))  # archived -> active
    states.update(a01="archived", a03="active")
    wanted: list[Collection[State]] = [
        ("active",),
        ("archived",),
        ("paused",),
        VISIBLE_STATES,
        ("paused", "deleted"),
        ALL_STATES,
    ]
    order = [r.id for r in every_row(store, A)]
    assert sorted(order) == sorted(states)
    for query in (EVERYTHING, MemoryQuery(client="cline")):
        for want in wanted:
            every = [i for i in order if states[i] in want]
            assert [r.id for r in every_row(store, A, want, query)] == every, want
            assert store.page_total(A, states=want, query=query) == len(every), want
            paged: list[str] = []
            cursor = None
            while True:
                page = store.page(A, states=want, query=query, limit=5, cursor=cursor)
                paged += [r.id for r in page.items]
                cursor = page.next_cursor
                if cursor is None:
                    break
            assert paged == every, want
            found = store.nearest(A, vec(0), EVERY_HIT, states=want, query=query)
            assert sorted(h.id for h in found) == sorted(every), want
            assert all(h.state in want for h in found)
            hits = store.keyword_hits(A, "tea", 100, states=want, query=query)
            assert hits is not None and sorted(h.memory_id for h in hits) == sorted(every), want


def test_empty_dedup_key_gives_the_key_up_and_vectors_export(store: EmbeddedStore) -> None:
    store.put(A, [NewRow(row("a", "tea"), vec(1), "k")])
    store.rewrite(A, RowChange("a", row("a", "tea", state="archived"), dedup_key=""))
    assert store.holder(A, "k") is None
    assert store.put(A, [NewRow(row("b", "tea"), vec(2), "k")]) == ["b"]
    got = store.read_vectors(A, ["a", "b", "zzz"])
    assert set(got) == {"a", "b"} and np.allclose(got["a"], np.asarray(vec(1)) / np.linalg.norm(vec(1)), atol=1e-6)
    assert store.read_vectors(B, ["a", "b"]) == {}


_LOAD_CHILD = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {src!r})
    import numpy as np
    from tablestore_openmemory_mcp.memory.ports import StoredMemory
    from tablestore_openmemory_mcp.memory.query_filters import MemoryQuery
    from tablestore_openmemory_mcp.memory.store_port import NewRow
    from tablestore_openmemory_mcp.scope import Scope
    from tablestore_openmemory_mcp.stores.embedded import EmbeddedStore

    def status(key):
        for line in open("/proc/self/status"):
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024

    path, n, dims = sys.argv[1], int(sys.argv[2]), 384
    scope, stamp, active = Scope("cline", "alice"), "2025-01-01T00:00:00+00:00", ("active",)
    if sys.argv[3] == "seed":
        s = EmbeddedStore(collection_name="memories", path=path, embedding_model_dims=dims)
        rng = np.random.default_rng(0)
        for lo in range(0, n, 2000):
            vectors = rng.standard_normal((2000, dims)).tolist()
            rows = [
                NewRow(StoredMemory(f"id-{{i:08d}}", f"m{{i}}", "alice", "cline", stamp, stamp, "h"), vectors[i - lo])
                for i in range(lo, lo + 2000)
            ]
            s.put(scope, rows)
        s.close()
    else:
        s = EmbeddedStore(collection_name="memories", path=path, embedding_model_dims=dims)
        s.page_total(scope, states=active, query=MemoryQuery())
        before = status("VmRSS")
        hits = s.nearest(scope, np.ones(dims).tolist(), 5, states=active, query=MemoryQuery())
        print(len(hits), status("VmHWM") - before, n * dims * 4)
    """
)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc (Linux)")
def test_loading_vectors_peaks_near_their_size(tmp_path: Path) -> None:
    """Loading a scope's vectors reads them straight into one matrix: peak growth <= 1.5x their size."""
    script = tmp_path / "load.py"
    script.write_text(_LOAD_CHILD.format(src=SRC))
    n = 20_000
    for mode in ("seed", "load"):
        done = subprocess.run(
            [sys.executable, str(script), str(tmp_path / "db"), str(n), mode],
            capture_output=True,
            text=True,
            timeout=300,
            env={**os.environ, "MEM0_TELEMETRY": "False", "OPENBLAS_NUM_THREADS": "1"},
        )
        assert done.returncode == 0, done.stderr
    hits, growth, size = map(int, done.stdout.split())
    assert hits == 5
    assert growth <= 1.5 * size, f"peak grew {growth / 2**20:.1f} MB for {size / 2**20:.1f} MB of vectors"


def test_rows_written_by_the_previous_release_later_are_counted_at_open(tmp_path: Path) -> None:
    _previous_release_file(tmp_path)
    EmbeddedStore(collection_name="memories", path=str(tmp_path), embedding_model_dims=DIMS).close()
    conn = sqlite3.connect(tmp_path / "memories.sqlite3")  # the previous release adds a row, as it did
    from tablestore_openmemory_mcp.stores.embedded.rows import scope_terms

    payload = {"data": "oolong again", "user_id": "alice", "agent_id": "cline"}
    blob = np.asarray([1.0] + [0.0] * (DIMS - 1), dtype=np.float32).tobytes()
    cur = conn.execute(
        'INSERT INTO "memories" (id, user_id, agent_id, vector, payload, created_at) VALUES (?, ?, ?, ?, ?, ?)',
        ("o4", "alice", "cline", blob, json.dumps(payload), "2025-02-01T00:00:00.000000+00:00"),
    )
    conn.execute(
        'INSERT INTO "memories__fts" (rowid, text, scope) VALUES (?, ?, ?)',
        (cur.lastrowid, "oolong again", " ".join(scope_terms({"user_id": "alice", "agent_id": "cline"}))),
    )
    conn.commit()
    conn.close()
    s = EmbeddedStore(collection_name="memories", path=str(tmp_path), embedding_model_dims=DIMS)
    hits = s.keyword_hits(A, "oolong", 5, states=ALL, query=EVERYTHING)
    s.close()
    assert hits is not None
    scores = {h.memory_id: h.score for h in hits}
    # three documents in alice's scope, two with "oolong": the rebuilt statistics say exactly that
    from tablestore_openmemory_mcp.stores.embedded.keywords import ScopeStats

    stats = ScopeStats(3, 4 + 5 + 2, {"oolong": 2})  # o1: 4 tokens, o2: 乌 龙 茶 乌龙 龙茶 (5), o4: 2
    assert scores == {
        "o1": stats.score(["oolong"], ["i", "like", "oolong", "tea"]),
        "o4": stats.score(["oolong"], ["oolong", "again"]),
    }


def test_loading_a_scope_blocks_neither_other_searches_nor_writes(store: EmbeddedStore) -> None:
    """A slab is loaded outside the cache lock; writes made meanwhile are replayed into it."""
    import threading

    store.put(A, [NewRow(row(f"a{i}", f"a{i}"), vec(i)) for i in range(20)])
    store.put(B, [NewRow(row("b0", "b", B), vec(50))])
    nearest(store, B, vec(0), 5)  # bob's slab is cached
    loaded, release = threading.Event(), threading.Event()
    real_load = store._load

    def held_load(conn: sqlite3.Connection, key: tuple[tuple[str, str], ...]) -> object:
        slab = real_load(conn, key)
        if ("user_id", "alice") in key and not loaded.is_set():
            loaded.set()
            assert release.wait(60)
        return slab

    store._load = held_load  # type: ignore[method-assign,assignment]
    results: dict[str, list[str]] = {}

    def search(scope: Scope, name: str) -> None:
        results[name] = [h.id for h in nearest(store, scope, vec(7))]

    alice = threading.Thread(target=search, args=(A, "alice"))
    alice.start()
    try:
        assert loaded.wait(60)
        bob = threading.Thread(target=search, args=(B, "bob"))
        bob.start()
        bob.join(60)
        assert not bob.is_alive() and results["bob"] == ["b0"]  # not stuck behind alice's load
        # alice writes while her slab is being loaded
        store.put(A, [NewRow(row("late", "late"), vec(77))])
        store.remove(A, ["a3"])
        store.rewrite(A, RowChange("a4", vector=vec(88)))
    finally:
        release.set()
        alice.join(60)
    assert not alice.is_alive()
    hits = nearest(store, A, vec(77))
    assert hits[0].id == "late" and hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert sorted(h.id for h in hits) == sorted([f"a{i}" for i in range(20) if i != 3] + ["late"])
    assert nearest(store, A, vec(88), 1)[0].id == "a4"


def test_a_load_that_cannot_catch_up_is_retried_then_done_under_the_lock(store: EmbeddedStore, tmp_path: Path) -> None:
    other = EmbeddedStore(collection_name="memories", path=str(tmp_path), embedding_model_dims=DIMS)
    real_load, real_replay = store._load, store._replay
    loads: list[int] = []

    def load_then_other_writes(conn: sqlite3.Connection, key: tuple[tuple[str, str], ...]) -> object:
        slab = real_load(conn, key)
        loads.append(1)
        # another process writes right after our read snapshot
        other.put(A, [NewRow(row(f"o{len(loads)}", "other"), vec(100 + len(loads)))])
        return slab

    def unreplayable(conn: sqlite3.Connection, slabs: object, old: int, gen: int) -> bool:
        return False if isinstance(slabs, list) else real_replay(conn, slabs, old, gen)  # type: ignore[arg-type]

    store._load = load_then_other_writes  # type: ignore[method-assign,assignment]
    store._replay = unreplayable  # type: ignore[method-assign]
    try:
        store.put(A, [NewRow(row("m", "mine"), vec(1))])
        ids = {h.id for h in nearest(store, A, vec(1))}
    finally:
        other.close()
    assert len(loads) == 4  # three loads outside the lock were stale, the fourth ran under it
    assert ids == {"m", "o1", "o2", "o3"}  # the fourth load's own write came after the search's snapshot


def test_created_window_from_the_index_matches_reading_every_row(store: EmbeddedStore) -> None:
    """The owner's browser pages from the (user, created_at, id) index; the answer is what sorting every
    row in (created_at, id) order gives."""
    stamps = [f"2025-01-{1 + i // 3:02d}T00:00:00.000000+00:00" for i in range(30)]  # threes share a time
    written = [
        row(f"m{(i * 37) % 30:02d}", f"t{i}", created_at=c, state="archived" if i % 7 == 0 else "active")
        for i, c in enumerate(stamps)  # ids not in time order: id breaks ties
    ]
    store.put(A, [NewRow(m, vec(i)) for i, m in enumerate(written)])
    store.put(B, [NewRow(row("bob", "bob", B, created_at=stamps[5]), vec(99))])
    not_archived: tuple[State, ...] = ("active", "paused", "deleted")
    cases: list[tuple[Scope, Collection[State], MemoryQuery, bool, int, int, str | None, str | None]] = [
        (ALICE, ALL, EVERYTHING, True, 0, 7, None, None),
        (ALICE, ALL, EVERYTHING, False, 5, 7, None, None),
        (ALICE, not_archived, EVERYTHING, True, 3, 10, None, None),
        (ALICE, ALL, EVERYTHING, True, 0, 50, "2025-01-03", "2025-01-06T99"),
        (A, ALL, EVERYTHING, False, 20, 10, "2025-01-02", None),
        (ALICE, not_archived, MemoryQuery(client="cline"), True, 2, 10, "2025-01-02", None),
        (ALICE, ALL, EVERYTHING, True, 40, 10, None, None),
    ]
    for scope, states, query, newest, offset, limit, since, until in cases:
        got, total = store.created_window(
            scope,
            states=states,
            newest_first=newest,
            offset=offset,
            limit=limit,
            since=since,
            until=until,
            query=query,
        )
        want = sorted(
            (
                m
                for m in written
                if m.state in states
                and (since is None or m.created_at >= since)
                and (until is None or m.created_at < until)
            ),
            key=lambda m: (m.created_at, m.id),
            reverse=newest,
        )
        assert [r.id for r in got] == [m.id for m in want[offset : offset + limit]], (states, offset, since)
        assert total == len(want), (states, offset, since)
    everything, total = store.created_window(ALICE, states=ALL, newest_first=True, offset=0, limit=100)
    assert total == 30 and "bob" not in {r.id for r in everything}
    created = [r.created_at for r in everything]
    assert created == sorted(created, reverse=True)
    bounded, total = store.created_window(
        ALICE, states=ALL, newest_first=False, offset=0, limit=100, since="2025-01-03", until="2025-01-04T99"
    )
    assert total == 6 and {r.created_at[:10] for r in bounded} == {"2025-01-03", "2025-01-04"}


def test_tallies_from_sql_match_counting_every_row(store: EmbeddedStore) -> None:
    """Apps and statistics count per (client, state, day) in SQLite; the answer is counting what was written."""
    cycle: list[State] = ["active", "active", "paused", "archived", "deleted"]
    written = [
        row(f"c{i}", f"c{i}", created_at=f"2025-02-0{1 + i % 3}T10:00:00.000000+00:00", state=cycle[i % 5])
        for i in range(20)
    ]
    store.put(A, [NewRow(m, vec(i)) for i, m in enumerate(written)])
    cursor_rows = [row(f"u{i}", f"u{i}", CURSOR, created_at="2025-02-09T23:59:59.000000+00:00") for i in range(4)]
    store.put(CURSOR, [NewRow(m, vec(50 + i)) for i, m in enumerate(cursor_rows)])
    store.put(B, [NewRow(row("bob", "bob", B), vec(99))])
    got = store.tallies(ALICE)
    assert got == dict(Counter((m.client, m.state, m.created_at[:10]) for m in written + cursor_rows))
    assert sum(got.values()) == 24
    assert sum(n for (client, state, _), n in got.items() if client == "cline" and state == "active") == 8
    assert {state for _, state, _ in got} == {"active", "paused", "archived", "deleted"}
    assert sum(store.tallies(A).values()) == 20 and sum(store.tallies(B).values()) == 1
