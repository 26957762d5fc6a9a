"""EmbeddedStore and the store contract of stores/base.py: dedup keys, conditional updates, keyset pages,
per-scope keyword statistics, incremental cache catch-up across processes, migration of old files."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tablestore_openmemory_mcp.errors import ConflictError, MemoryNotFound
from tablestore_openmemory_mcp.stores.base import scoped
from tablestore_openmemory_mcp.stores.embedded import EmbeddedStore
from tests.fakes.store_rows import all_rows

DIMS = 8
SRC = str(Path(__file__).resolve().parents[1] / "src")
A = {"user_id": "alice", "agent_id": "cline"}
B = {"user_id": "bob", "agent_id": "cline"}


def vec(seed: int) -> list[float]:
    return np.random.default_rng(seed).standard_normal(DIMS).tolist()


def row(text: str, scope: dict[str, str], **extra: object) -> dict[str, object]:
    return {"data": text, **scope, **extra}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[EmbeddedStore]:
    s = EmbeddedStore(collection_name="memories", path=str(tmp_path), embedding_model_dims=DIMS)
    yield s
    s.close()


# ---------------------------------------------------------------------- dedup keys


def test_dedup_key_returns_the_holder_and_frees_on_delete(store: EmbeddedStore) -> None:
    with scoped(A):
        got = store.insert(
            [vec(1), vec(2), vec(3)],
            [row("tea", A), row("coffee", A), row("tea", A)],
            ["a", "b", "c"],
            ["k-tea", "k-coffee", "k-tea"],
        )
        assert got == ["a", "b", "a"] and store.count() == 2  # the batch's own duplicate is folded
        assert store.insert([vec(4)], [row("tea", A)], ["d"], ["k-tea"]) == ["a"]
        assert store.find_by_dedup_key("k-tea").id == "a"
        assert store.insert([vec(4)], [row("no key", A)], ["e"], [None]) == ["e"]
        assert store.delete_many(["a"]) == ["a"]
        assert store.find_by_dedup_key("k-tea") is None
        assert store.insert([vec(4)], [row("tea", A)], ["f"], ["k-tea"]) == ["f"]  # delete -> re-add stores it
    with scoped(B):
        assert store.find_by_dedup_key("k-tea") is None  # another user's key is invisible
        assert store.insert([vec(5)], [row("tea", B)], ["g"], ["k-tea"]) == ["g"]
    with scoped({"user_id": "alice", "agent_id": "cursor"}):
        assert store.find_by_dedup_key("k-tea") is None
        with pytest.raises(ConflictError):  # held by the same user's other client: never leaked
            store.insert([vec(6)], [row("tea", {"user_id": "alice", "agent_id": "cursor"})], ["h"], ["k-tea"])
        assert store.get("h") is None


def test_update_moves_the_key_and_drops_it_when_taken(store: EmbeddedStore) -> None:
    with scoped(A):
        store.insert([vec(1), vec(2)], [row("tea", A), row("coffee", A)], ["a", "b"], ["k-tea", "k-coffee"])
        store.update("a", vector=vec(3), payload=row("green tea", A), dedup_key="k-green")
        assert store.find_by_dedup_key("k-green").id == "a" and store.find_by_dedup_key("k-tea") is None
        assert store.insert([vec(1)], [row("tea", A)], ["c"], ["k-tea"]) == ["c"]  # update -> re-add stores it
        store.update("b", payload=row("tea", A), dedup_key="k-tea")  # c holds it: b's key is dropped
        assert store.find_by_dedup_key("k-tea").id == "c" and store.find_by_dedup_key("k-coffee") is None
        store.update("c", vector=vec(9))  # no dedup_key: the key stays
        assert store.find_by_dedup_key("k-tea").id == "c"


_DEDUP_CHILD = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {src!r})
    from tablestore_openmemory_mcp.stores.base import scoped
    from tablestore_openmemory_mcp.stores.embedded import EmbeddedStore
    path, tag = sys.argv[1], sys.argv[2]
    s = EmbeddedStore(collection_name="memories", path=path, embedding_model_dims={dims})
    print("ready", flush=True)
    sys.stdin.readline()
    with scoped({{"user_id": "alice", "agent_id": "cline"}}):
        for i in range(60):
            payload = {{"data": f"same text {{i}}", "user_id": "alice", "agent_id": "cline"}}
            got = s.insert([[1.0] + [0.5] * {rest}], [payload], [f"{{tag}}-{{i}}"], [f"key-{{i}}"])
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
    with scoped(A):
        assert s.count() == 60
        for i in range(60):  # both processes were told the id of the one row holding the text
            assert outs[0][i] == outs[1][i] == s.find_by_dedup_key(f"key-{i}").id
    s.close()


# ---------------------------------------------------------------------- conditional update, delete


def test_update_with_expected_updated_at(store: EmbeddedStore) -> None:
    with scoped(A):
        store.insert([vec(1)], [row("v1", A, updated_at="t1")], ["a"])
        store.update("a", payload=row("v2", A, updated_at="t2"), expected_updated_at="t1")
        with pytest.raises(ConflictError):
            store.update("a", payload=row("v3", A, updated_at="t3"), expected_updated_at="t1")
        assert store.get("a").payload["data"] == "v2"
        with pytest.raises(MemoryNotFound):
            store.update("zzz", payload=row("x", A), expected_updated_at="t1")
    with scoped(B), pytest.raises(MemoryNotFound):
        store.update("a", vector=vec(2))


def test_delete_many_reports_exactly_what_it_deleted(store: EmbeddedStore) -> None:
    with scoped(A):
        store.insert([vec(i) for i in range(5)], [row(f"t{i}", A) for i in range(5)], [f"a{i}" for i in range(5)])
    with scoped(B):
        store.insert([vec(9)], [row("b", B)], ["b0"])
        assert store.delete_many(["a0", "a1", "b0", "b0", "nope"]) == ["b0"]
    with scoped(A):
        assert store.delete_many(["a3", "a1", "b0", "a3"]) == ["a3", "a1"]
        assert store.delete_many(["a3", "a1"]) == []  # a retry deletes nothing more
        assert store.delete_many(iter([])) == []
        assert sorted(r.id for r in all_rows(store)) == ["a0", "a2", "a4"]


# ---------------------------------------------------------------------- keyset pages


def test_list_page_keyset_is_stable_under_concurrent_changes(store: EmbeddedStore) -> None:
    with scoped(A):
        ids = [f"m{i:03d}" for i in range(50)]
        stamps = [f"2025-01-01T00:00:{i // 2:02d}Z" for i in range(50)]  # pairs share created_at: id breaks ties
        store.insert([vec(i) for i in range(50)], [row(f"t{i}", A, created_at=c) for i, c in enumerate(stamps)], ids)
        with scoped(B):
            store.insert([vec(99)], [row("bob", B, created_at="2025-01-01T00:00:05Z")], ["bob"])
        assert store.count() == 50
        seen: list[str] = []
        cursor = None
        pages = 0
        while True:
            page, cursor = store.list_page(None, 7, cursor)
            seen += [r.id for r in page]
            pages += 1
            if pages == 2:  # between pages: delete an unseen row and one already seen, add a late one
                assert store.delete_many(["m040", "m001"]) == ["m040", "m001"]
                store.insert([vec(100)], [row("late", A, created_at="2030-01-01T00:00:00Z")], ["late"])
            if cursor is None:
                break
        assert len(seen) == len(set(seen))
        assert seen == [i for i in ids if i != "m040"] + ["late"]
        assert pages == 8
        page, cursor = store.list_page({"data": {"in": ["t3", "t30", "t31"]}}, 2)
        assert [r.id for r in page] == ["m003", "m030"] and cursor is not None
        page, cursor = store.list_page({"data": {"in": ["t3", "t30", "t31"]}}, 2, cursor)
        assert [r.id for r in page] == ["m031"] and cursor is None
        assert store.list_page({"user_id": "bob"}, 5) == ([], None)


# ---------------------------------------------------------------------- per-scope keyword statistics


def _scores(store: EmbeddedStore, query: str, **kw: object) -> list[tuple[str, float]]:
    with scoped(A):
        return [(r.id, r.score) for r in store.keyword_search(query, 50, **kw)]


def test_keyword_scores_use_only_the_callers_scope(store: EmbeddedStore) -> None:
    texts = ["my PIN is 7391", "my bank PIN is 1234", "I like oolong tea", "tea with milk", "乌龙茶很好喝"]
    with scoped(A):
        store.insert([vec(i) for i in range(5)], [row(t, A) for t in texts], [f"a{i}" for i in range(5)])
    queries = ["PIN 7391", "tea", "乌龙茶", "bank pin tea", "7391"]
    before = {q: _scores(store, q) for q in queries}
    assert before["PIN 7391"][0][0] == "a0" and all(s > 0 for _, s in before["tea"])
    with scoped(B):  # another user's rows full of the same words, in several shapes
        others = ["7391 7391", "pin", "tea tea tea", "乌龙茶", "bank"] * 40
        store.insert(
            [vec(100 + i) for i in range(len(others))],
            [row(t, B) for t in others],
            [f"b{i}" for i in range(len(others))],
        )
    with scoped({"user_id": "alice", "agent_id": "cursor"}):  # and alice's other client
        store.insert([vec(7)], [row("tea 7391", {"user_id": "alice", "agent_id": "cursor"})], ["c0"])
    after = {q: _scores(store, q) for q in queries}
    assert after == before  # identical, not merely close
    with scoped(B):
        store.delete_many([f"b{i}" for i in range(len(others))])
    assert {q: _scores(store, q) for q in queries} == before
    with scoped({"user_id": "alice"}):  # the user-wide scope counts both clients
        assert {r.id for r in store.keyword_search("7391", 10)} == {"a0", "c0"}


def test_keyword_candidates_score_only_those_rows(store: EmbeddedStore) -> None:
    with scoped(A):
        texts = ["tea and cake", "tea", "coffee", "green tea latte", "water"]
        store.insert([vec(i) for i in range(5)], [row(t, A) for t in texts], [f"a{i}" for i in range(5)])
    with scoped(B):
        store.insert([vec(9)], [row("tea", B)], ["b0"])
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
    sys.path.insert(0, {src!r})
    from tablestore_openmemory_mcp.stores.base import scoped
    from tablestore_openmemory_mcp.stores.embedded import EmbeddedStore
    s = EmbeddedStore(collection_name="memories", path=sys.argv[1], embedding_model_dims={dims})
    with scoped({{"user_id": "alice"}}):
        s.insert([[0.0, 1.0] + [0.0] * {rest}], [{{"data": "new", "user_id": "alice", "agent_id": "cline"}}], ["new"])
        s.update("a1", vector=[1.0] + [0.0] * {rest1})
        s.update("a2", payload={{"data": "moved", "user_id": "alice", "agent_id": "cursor"}})
        s.delete_many(["a3"])
    s.close()
    """
)


def test_another_processs_writes_are_replayed_not_reloaded(store: EmbeddedStore, tmp_path: Path) -> None:
    with scoped(A):
        store.insert([vec(i) for i in range(6)], [row(f"t{i}", A) for i in range(6)], [f"a{i}" for i in range(6)])
        store.search("q", vec(0), 3)  # warm the cache
        slab = next(iter(store._cache.slabs.values()))
    script = tmp_path / "writer.py"
    script.write_text(_WRITER.format(src=SRC, dims=DIMS, rest=DIMS - 2, rest1=DIMS - 1))
    done = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    with scoped(A):
        hits = store.search("q", [1.0] + [0.0] * (DIMS - 1), None)
        assert hits[0].id == "a1" and hits[0].score == pytest.approx(1.0, abs=1e-6)
        assert {h.id for h in hits} == {"a0", "a1", "a4", "a5", "new"}
        assert next(iter(store._cache.slabs.values())) is slab  # patched from the change log, not reloaded
    fresh = EmbeddedStore(collection_name="memories", path=str(tmp_path), embedding_model_dims=DIMS)
    for sc in (A, {"user_id": "alice", "agent_id": "cursor"}):
        for q in (vec(0), vec(4), [0.0, 1.0] + [0.0] * (DIMS - 2)):
            with scoped(sc):
                assert [(h.id, round(h.score, 5)) for h in store.search("q", q, None)] == [
                    (h.id, round(h.score, 5)) for h in fresh.search("q", q, None)
                ]
    fresh.close()


def test_updates_and_deletes_keep_the_cache_exact(store: EmbeddedStore, tmp_path: Path) -> None:
    """Many in-place patches (tombstones, appends, compactions) give what a fresh load gives."""
    rng = np.random.default_rng(0)
    with scoped(A):
        n = 400
        store.insert(rng.standard_normal((n, DIMS)), [row(f"t{i}", A) for i in range(n)], [f"a{i}" for i in range(n)])
        store.search("q", vec(0), 5)
        alive = [f"a{i}" for i in range(n)]
        for step in range(300):
            victim = alive[int(rng.integers(len(alive)))]
            if step % 3 == 0:
                store.delete_many([victim])
                alive.remove(victim)
            else:
                store.update(victim, vector=rng.standard_normal(DIMS).tolist())
        fresh = EmbeddedStore(collection_name="memories", path=str(tmp_path), embedding_model_dims=DIMS)
        try:
            for seed in range(5):
                mine = [(h.id, round(h.score, 5)) for h in store.search("q", vec(seed), None)]
                theirs = [(h.id, round(h.score, 5)) for h in fresh.search("q", vec(seed), None)]
                assert mine == theirs and len(mine) == len(alive)
                assert [h.id for h in store.search("q", vec(seed), 10)] == [i for i, _ in theirs[:10]]
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
        with scoped(A):
            assert [r.id for r in all_rows(s)] == ["o1", "o2"]
            assert s.search("q", vec(1), 1)[0].id == "o1"
            assert {r.id for r in s.keyword_search("tea 乌龙茶", 5)} == {"o1", "o2"}
            page, cursor = s.list_page(None, 1)
            assert [r.id for r in page] == ["o1"] and s.list_page(None, 1, cursor)[0][0].id == "o2"
        with scoped(B):
            assert [r.id for r in s.keyword_search("tea", 5)] == ["o3"]
        s.close()
    s = EmbeddedStore(collection_name="memories", path=str(tmp_path), embedding_model_dims=DIMS)
    with scoped(A):
        assert s.insert([vec(5)], [row("new", A)], ["n1"], ["k1"]) == ["n1"]
        assert s.insert([vec(6)], [row("new", A)], ["n2"], ["k1"]) == ["n1"]
        fresh_scores = [(r.id, r.score) for r in s.keyword_search("tea", 5)]
    s.close()
    conn = sqlite3.connect(tmp_path / "memories.sqlite3")
    indexes = {
        r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'memories'")
    }
    conn.close()
    assert {"memories__scope_ua", "memories__scope_u", "memories__dedup"} <= indexes
    assert "memories__agent_id" not in indexes
    assert fresh_scores and fresh_scores[0][0] == "o1"


# ---------------------------------------------------------------------- states, vectors


def test_state_filters_agree_everywhere(store: EmbeddedStore) -> None:
    """Lists and counts answer state filters in SQL; searches check them per row: same rows either way."""
    states = [None, "active", "paused", "archived", "deleted", 7]
    with scoped(A):
        payloads = []
        for i in range(24):
            state = states[i % len(states)]
            payloads.append(row(f"tea note {i}", A) if state is None else row(f"tea note {i}", A, state=state))
        store.insert([vec(i) for i in range(24)], payloads, [f"a{i:02d}" for i in range(24)])
        store.update("a01", payload=row("tea note 1", A, state="archived"))  # active -> archived
        store.update("a03", payload=row("tea note 3", A))  # archived -> no state
        filters = [
            {"state": {"nin": ["paused", "archived", "deleted"]}},
            {"state": {"in": ["archived"]}},
            {"state": "paused"},
            {"state": {"ne": "deleted"}},
            {"state": {"eq": "active"}},
            {"state": "*"},
            {"state": {"nin": []}},
        ]
        for f in filters:
            every = [r.id for r in all_rows(store) if _matches(f, r.payload)]
            assert [r.id for r in all_rows(store, f)] == every, f
            assert store.count(f) == len(every), f
            paged, cursor = [], None
            while True:
                page, cursor = store.list_page(f, 5, cursor)
                paged += [r.id for r in page]
                if cursor is None:
                    break
            assert paged == every, f
            assert sorted(h.id for h in store.search("q", vec(0), None, f)) == sorted(every), f
            assert sorted(h.id for h in store.keyword_search("tea", 100, f)) == sorted(every), f


def _matches(f: dict[str, object], payload: dict[str, object] | None) -> bool:
    from tablestore_openmemory_mcp.stores.filters import matches

    return matches(f, payload)


def test_empty_dedup_key_gives_the_key_up_and_vectors_export(store: EmbeddedStore) -> None:
    with scoped(A):
        store.insert([vec(1)], [row("tea", A)], ["a"], ["k"])
        store.update("a", payload=row("tea", A, state="archived"), dedup_key="")
        assert store.find_by_dedup_key("k") is None
        assert store.insert([vec(2)], [row("tea", A)], ["b"], ["k"]) == ["b"]
        got = store.get_vectors(["a", "b", "zzz"])
        assert set(got) == {"a", "b"} and np.allclose(got["a"], np.asarray(vec(1)) / np.linalg.norm(vec(1)), atol=1e-6)
    with scoped(B):
        assert store.get_vectors(["a", "b"]) == {}


_LOAD_CHILD = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {src!r})
    import numpy as np
    from tablestore_openmemory_mcp.stores.base import scoped
    from tablestore_openmemory_mcp.stores.embedded import EmbeddedStore

    def status(key):
        for line in open("/proc/self/status"):
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024

    path, n, dims = sys.argv[1], int(sys.argv[2]), 384
    scope = {{"user_id": "alice", "agent_id": "cline"}}
    if sys.argv[3] == "seed":
        s = EmbeddedStore(collection_name="memories", path=path, embedding_model_dims=dims)
        rng = np.random.default_rng(0)
        with scoped(scope):
            for lo in range(0, n, 2000):
                payloads = [dict(scope, data=f"m{{i}}") for i in range(lo, lo + 2000)]
                s.insert(rng.standard_normal((2000, dims)), payloads, [f"id-{{i:08d}}" for i in range(lo, lo + 2000)])
        s.close()
    else:
        s = EmbeddedStore(collection_name="memories", path=path, embedding_model_dims=dims)
        with scoped(scope):
            s.count()
            before = status("VmRSS")
            hits = s.search("q", np.ones(dims).tolist(), 5)
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
        (cur.lastrowid, "oolong again", " ".join(scope_terms(A))),
    )
    conn.commit()
    conn.close()
    s = EmbeddedStore(collection_name="memories", path=str(tmp_path), embedding_model_dims=DIMS)
    with scoped(A):
        scores = {r.id: r.score for r in s.keyword_search("oolong", 5)}
    s.close()
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

    with scoped(A):
        store.insert([vec(i) for i in range(20)], [row(f"a{i}", A) for i in range(20)], [f"a{i}" for i in range(20)])
    with scoped(B):
        store.insert([vec(50)], [row("b", B)], ["b0"])
        store.search("q", vec(0), 5)  # bob's slab is cached
    loaded, release = threading.Event(), threading.Event()
    real_load = store._load

    def held_load(conn: sqlite3.Connection, key: tuple[tuple[str, str], ...]) -> object:
        slab = real_load(conn, key)
        if ("user_id", "alice") in key and not loaded.is_set():
            loaded.set()
            assert release.wait(60)
        return slab

    store._load = held_load  # type: ignore[method-assign]
    results: dict[str, list[str]] = {}

    def search(scope: dict[str, str], name: str) -> None:
        with scoped(scope):
            results[name] = [h.id for h in store.search("q", vec(7), None)]

    alice = threading.Thread(target=search, args=(A, "alice"))
    alice.start()
    try:
        assert loaded.wait(60)
        bob = threading.Thread(target=search, args=(B, "bob"))
        bob.start()
        bob.join(60)
        assert not bob.is_alive() and results["bob"] == ["b0"]  # not stuck behind alice's load
        with scoped(A):  # alice writes while her slab is being loaded
            store.insert([vec(77)], [row("late", A)], ["late"])
            store.delete_many(["a3"])
            store.update("a4", vector=vec(88))
    finally:
        release.set()
        alice.join(60)
    assert not alice.is_alive()
    with scoped(A):
        hits = store.search("q", vec(77), None)
    assert hits[0].id == "late" and hits[0].score == pytest.approx(1.0, abs=1e-5)
    assert sorted(h.id for h in hits) == sorted([f"a{i}" for i in range(20) if i != 3] + ["late"])
    with scoped(A):
        assert store.search("q", vec(88), 1)[0].id == "a4"


def test_a_load_that_cannot_catch_up_is_retried_then_done_under_the_lock(store: EmbeddedStore, tmp_path: Path) -> None:
    other = EmbeddedStore(collection_name="memories", path=str(tmp_path), embedding_model_dims=DIMS)
    real_load, real_replay = store._load, store._replay
    loads: list[int] = []

    def load_then_other_writes(conn: sqlite3.Connection, key: tuple[tuple[str, str], ...]) -> object:
        slab = real_load(conn, key)
        loads.append(1)
        with scoped(A):  # another process writes right after our read snapshot
            other.insert([vec(100 + len(loads))], [row("other", A)], [f"o{len(loads)}"])
        return slab

    def unreplayable(conn: sqlite3.Connection, slabs: object, old: int, gen: int) -> bool:
        return False if isinstance(slabs, list) else real_replay(conn, slabs, old, gen)  # type: ignore[arg-type]

    store._load = load_then_other_writes  # type: ignore[method-assign]
    store._replay = unreplayable  # type: ignore[method-assign]
    try:
        with scoped(A):
            store.insert([vec(1)], [row("mine", A)], ["m"])
            ids = {h.id for h in store.search("q", vec(1), None)}
    finally:
        other.close()
    assert len(loads) == 4  # three loads outside the lock were stale, the fourth ran under it
    assert ids == {"m", "o1", "o2", "o3"}  # the fourth load's own write came after the search's snapshot


def test_created_page_from_the_index_matches_reading_every_row(store: EmbeddedStore) -> None:
    """The owner's browser pages from the (user, created_at, id) index; the answer is the generic one."""
    from tablestore_openmemory_mcp.stores.base import MemoryStore

    stamps = [f"2025-01-{1 + i // 3:02d}T00:00:00.000000+00:00" for i in range(30)]  # threes share a time
    with scoped(A):
        store.insert(
            [vec(i) for i in range(30)],
            [row(f"t{i}", A, created_at=c, state="archived" if i % 7 == 0 else "active") for i, c in enumerate(stamps)],
            [f"m{(i * 37) % 30:02d}" for i in range(30)],  # ids not in time order: id breaks ties
        )
    with scoped(B):
        store.insert([vec(99)], [row("bob", B, created_at=stamps[5])], ["bob"])
    cases = [
        ({"user_id": "alice"}, True, 0, 7, None, None),
        ({"user_id": "alice"}, False, 5, 7, None, None),
        ({"user_id": "alice", "state": {"nin": ["archived"]}}, True, 3, 10, None, None),
        ({"user_id": "alice"}, True, 0, 50, "2025-01-03", "2025-01-06T99"),
        ({"user_id": "alice", "agent_id": "cline"}, False, 20, 10, "2025-01-02", None),
        ({"user_id": "alice"}, True, 40, 10, None, None),
    ]
    with scoped({"user_id": "alice"}):
        for filters, newest, offset, limit, since, until in cases:
            got, total = store.created_page(
                filters, newest_first=newest, offset=offset, limit=limit, since=since, until=until
            )
            want, want_total = MemoryStore.created_page(
                store, filters, newest_first=newest, offset=offset, limit=limit, since=since, until=until
            )
            assert [r.id for r in got] == [r.id for r in want] and total == want_total, (filters, offset, since)
        everything, total = store.created_page({"user_id": "alice"}, newest_first=True, offset=0, limit=100)
        assert total == 30 and "bob" not in {r.id for r in everything}
        created = [r.payload["created_at"] for r in everything]
        assert created == sorted(created, reverse=True)
        bounded, total = store.created_page(
            {"user_id": "alice"}, newest_first=False, offset=0, limit=100, since="2025-01-03", until="2025-01-04T99"
        )
        assert total == 6 and {r.payload["created_at"][:10] for r in bounded} == {"2025-01-03", "2025-01-04"}


def test_tally_from_sql_matches_counting_every_row(store: EmbeddedStore) -> None:
    """Apps and statistics count per (client, state, day) in SQLite; the answer is the generic one."""
    from tablestore_openmemory_mcp.stores.base import MemoryStore

    cline, cursor = {"user_id": "alice", "agent_id": "cline"}, {"user_id": "alice", "agent_id": "cursor"}
    states = [None, "active", "paused", "archived", "deleted"]
    with scoped(cline):
        store.insert(
            [vec(i) for i in range(20)],
            [
                row(
                    f"c{i}",
                    cline,
                    created_at=f"2025-02-0{1 + i % 3}T10:00:00.000000+00:00",
                    **({"state": s} if (s := states[i % 5]) else {}),
                )
                for i in range(20)
            ],
            [f"c{i}" for i in range(20)],
        )
    with scoped(cursor):
        store.insert(
            [vec(50 + i) for i in range(4)],
            [row(f"u{i}", cursor, created_at="2025-02-09T23:59:59.000000+00:00") for i in range(4)],
            [f"u{i}" for i in range(4)],
        )
    with scoped(B):
        store.insert([vec(99)], [row("bob", B)], ["bob"])
    with scoped({"user_id": "alice"}):
        got = store.tally({"user_id": "alice"})
        assert got == MemoryStore.tally(store, {"user_id": "alice"})
        assert sum(got.values()) == 24
        assert sum(n for (client, state, _), n in got.items() if client == "cline" and state == "active") == 8
        assert {state for _, state, _ in got} == {"active", "paused", "archived", "deleted"}
