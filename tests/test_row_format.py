"""Rows written by 2.0.0 (commit 8d4f491) stay readable, searchable, updatable and deletable through the store port.

The rows are written here by hand, as 2.0.0 wrote them (raw sqlite3 inserts into the embedded file; raw
``tablestore`` SDK PutRow against the emulator), with 2.0.0's columns and payload keys, never through our
stores, so a change of the row format that would strand an existing file or table fails here.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import struct
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from tablestore import Condition, OTSClient, Row, RowExistenceExpectation

from tablestore_openmemory_mcp.errors import ConflictError
from tablestore_openmemory_mcp.memory.ports import ALL_STATES, StoredMemory
from tablestore_openmemory_mcp.memory.query_filters import EVERYTHING, MemoryQuery
from tablestore_openmemory_mcp.memory.store_port import NewRow, RowChange, StorePort
from tablestore_openmemory_mcp.scope import Scope
from tablestore_openmemory_mcp.stores import row_format
from tablestore_openmemory_mcp.stores.embedded import EmbeddedStore
from tablestore_openmemory_mcp.stores.tablestore import TablestoreStore
from tests.tablestore_emulator import TablestoreEmulator

DIMS = 8
CLINE = Scope("cline", "alice")
OWNER = Scope("cline", "alice", shared=True)
CURSOR = Scope("cursor", "alice")
BOB = Scope("cline", "bob")
ACTIVE = ("active",)


def unit(i: int) -> list[float]:
    v = [0.0] * DIMS
    v[i % DIMS] = 1.0
    return v


def md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def key_2_0_0(user: str, client: str, text: str) -> str:
    """2.0.0's dedup key: sha256(user NUL client NUL md5(text)), 40 hex digits."""
    return hashlib.sha256(f"{user}\x00{client}\x00{md5(text)}".encode()).hexdigest()[:40]


#: (id, text, client, state, extra payload keys) as 2.0.0 wrote them for user alice.
ROWS = [
    ("m-tea", "alice drinks green tea every morning", "cline", None, {}),
    (
        "m-apollo",
        "the apollo project ships in march",
        "cline",
        None,
        {"metadata": {"project": "apollo"}, "event_time": "2026-03-01T00:00:00.000000+00:00", "categories": ["work"]},
    ),
    ("m-old", "alice used to drink coffee", "cline", "archived", {}),
    # a mem0 app's run_id: 2.0.0 also copied it into a column (embedded) or a KEYWORD column (Tablestore)
    ("m-cursor", "cursor remembers the build command", "cursor", None, {"run_id": "run-7"}),
]


def payload_2_0_0(memory_id: str, text: str, client: str, state: str | None, extra: dict[str, object]) -> dict:
    stamp = f"2026-01-0{1 + [r[0] for r in ROWS].index(memory_id)}T10:00:00.000000+00:00"
    payload: dict[str, object] = {"role": "user", **extra}
    payload.update(
        data=text,
        hash=md5(text),
        created_at=stamp,
        updated_at=stamp,
        user_id="alice",
        text_lemmatized=text,
        agent_id=client,
    )
    if state is not None:
        payload["state"] = state
    return payload


def exercise(store: StorePort) -> None:
    """Read, search, narrow, update, change state and erase the 2.0.0 rows through the port."""
    found = store.read(OWNER, [r[0] for r in ROWS])
    assert set(found) == {"m-tea", "m-apollo", "m-old", "m-cursor"}
    apollo = found["m-apollo"]
    assert apollo.text == "the apollo project ships in march" and apollo.client == "cline"
    assert apollo.categories == ("work",) and apollo.metadata["metadata"] == {"project": "apollo"}
    assert apollo.metadata["role"] == "user" and apollo.hash == md5(apollo.text)
    assert found["m-old"].state == "archived" and found["m-tea"].state == "active"
    # the scope is the row's: another client sees only its own, another user nothing
    assert set(store.read(CURSOR, [r[0] for r in ROWS])) == {"m-cursor"}
    assert store.read(BOB, [r[0] for r in ROWS]) == {}

    # the dedup key 2.0.0 wrote is the key we compute
    holder = store.holder(CLINE, row_format.dedup_key(CLINE, md5("alice drinks green tea every morning")))
    assert holder is not None and holder.id == "m-tea"
    assert row_format.dedup_key(CLINE, md5(holder.text)) == key_2_0_0("alice", "cline", holder.text)

    hits = store.nearest(CLINE, unit(0), 5, states=ACTIVE, query=EVERYTHING)
    assert [m.id for m in hits][:1] == ["m-tea"] and "m-old" not in {m.id for m in hits}
    assert "m-cursor" not in {m.id for m in hits}
    keyword = store.keyword_hits(CLINE, "apollo", 5, states=ACTIVE, query=EVERYTHING)
    assert keyword is not None and [h.memory_id for h in keyword] == ["m-apollo"]
    tagged = store.nearest(CLINE, unit(0), 5, states=ACTIVE, query=MemoryQuery(metadata={"project": "apollo"}))
    assert [m.id for m in tagged] == ["m-apollo"]
    march = MemoryQuery(since="2026-02-15T00:00:00.000000+00:00")
    assert [m.id for m in store.page(OWNER, states=ACTIVE, query=march, limit=10).items] == ["m-apollo"]
    listed = store.page(OWNER, states=ALL_STATES, query=EVERYTHING, limit=10)
    assert {m.id for m in listed.items} == {"m-tea", "m-apollo", "m-old", "m-cursor"} and listed.next_cursor is None

    tea = found["m-tea"]
    changed = StoredMemory(
        id=tea.id,
        text="alice drinks oolong tea every morning",
        user_id=tea.user_id,
        client=tea.client,
        created_at=tea.created_at,
        updated_at="2026-02-01T00:00:00.000000+00:00",
        hash=md5("alice drinks oolong tea every morning"),
        metadata=tea.metadata,
    )
    with pytest.raises(ConflictError):
        store.rewrite(CLINE, RowChange(tea.id, changed, unit(6), expected_updated_at="2020-01-01T00:00:00+00:00"))
    store.rewrite(
        CLINE,
        RowChange(
            tea.id,
            changed,
            unit(6),
            expected_updated_at=tea.updated_at,
            dedup_key=row_format.dedup_key(CLINE, changed.hash),
        ),
    )
    again = store.read(CLINE, ["m-tea"])["m-tea"]
    assert again.text == changed.text and again.metadata["role"] == "user"
    assert [m.id for m in store.nearest(CLINE, unit(6), 1, states=ACTIVE, query=EVERYTHING)] == ["m-tea"]
    # the old text's key was released: adding it again writes a new row
    old_text = "alice drinks green tea every morning"
    fresh = StoredMemory(
        id="m-new",
        text=old_text,
        user_id="alice",
        client="cline",
        created_at="2026-02-02T00:00:00+00:00",
        updated_at="2026-02-02T00:00:00+00:00",
        hash=md5(old_text),
    )
    assert store.put(CLINE, [NewRow(fresh, unit(2), row_format.dedup_key(CLINE, fresh.hash))]) == ["m-new"]

    apollo_deleted = replace(apollo, state="deleted")
    assert store.rewrite_many(
        CLINE, [RowChange(apollo.id, apollo_deleted, expected_updated_at=apollo.updated_at, dedup_key="")]
    ) == ["m-apollo"]
    assert "m-apollo" not in {m.id for m in store.page(CLINE, states=ACTIVE, query=EVERYTHING, limit=10).items}
    assert store.remove(BOB, ["m-old"]) == []  # another user's erase finds nothing
    assert store.remove(CLINE, ["m-old", "m-cursor"]) == ["m-old"]  # the cursor row is outside cline's scope
    assert set(store.read(OWNER, ["m-old", "m-cursor"])) == {"m-cursor"}


def _fields(memory: row_format.StoredMemory) -> dict[str, object]:
    return {name: getattr(memory, name) for name in memory.__slots__}  # type: ignore[attr-defined]


# ---------------------------------------------------------------------------------------------- embedded


def _scope_term(kind: str, value: str) -> str:
    return kind + hashlib.sha1(value.encode("utf-8")).hexdigest()[:20]


#: 2.0.0's schema (version 2) of collection ``memories``: its ``run_id`` column, no ``event_at``, no term table.
SCHEMA_2_0_0 = """
CREATE TABLE __collections (name TEXT PRIMARY KEY, dims INTEGER NOT NULL, generation INTEGER NOT NULL,
    created_at TEXT NOT NULL, rows INTEGER NOT NULL DEFAULT 0);
CREATE TABLE __schema (name TEXT PRIMARY KEY, version INTEGER NOT NULL);
CREATE TABLE "memories" (rid INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, user_id TEXT,
    agent_id TEXT, run_id TEXT, vector BLOB NOT NULL, payload TEXT NOT NULL, created_at TEXT NOT NULL,
    dedup_key TEXT, state TEXT);
CREATE INDEX "memories__scope_ua" ON "memories" (user_id, agent_id, created_at, id, state);
CREATE INDEX "memories__scope_u" ON "memories" (user_id, created_at, id, state);
CREATE UNIQUE INDEX "memories__dedup" ON "memories" (user_id, dedup_key) WHERE dedup_key IS NOT NULL;
CREATE VIRTUAL TABLE "memories__fts" USING fts5(text, scope, tokenize = 'unicode61 remove_diacritics 0');
CREATE TABLE "memories__df" (scope TEXT NOT NULL, term TEXT NOT NULL, df INTEGER NOT NULL,
    PRIMARY KEY (scope, term)) WITHOUT ROWID;
CREATE TABLE "memories__dl" (scope TEXT PRIMARY KEY, docs INTEGER NOT NULL, tokens INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE "memories__log" (gen INTEGER NOT NULL, rid INTEGER NOT NULL, PRIMARY KEY (gen, rid)) WITHOUT ROWID;
INSERT INTO __collections (name, dims, generation, created_at) VALUES ('memories', 8, 4242,
    '2026-01-01T00:00:00.000000+00:00');
INSERT INTO __schema (name, version) VALUES ('memories', 2);
"""


def write_embedded_2_0_0(path: Path) -> None:
    """2.0.0's file: its schema; rows with identity columns (``run_id`` copied from the payload), float32 vector
    BLOB, JSON payload, UTC created_at, dedup key, state; its FTS rows (lower-cased tokens, hashed scope terms,
    ``r`` for a run). The keyword statistics are left for the open to rebuild, as after 2.0.0 wrote to the file."""
    conn = sqlite3.connect(path / "memories.sqlite3")
    try:
        conn.executescript(SCHEMA_2_0_0)
        for i, (memory_id, text, client, state, extra) in enumerate(ROWS):
            payload = payload_2_0_0(memory_id, text, client, state, extra)
            blob = struct.pack(f"<{DIMS}f", *unit(i))
            key = key_2_0_0("alice", client, text) if state is None else None
            run_id = payload.get("run_id")
            cur = conn.execute(
                "INSERT INTO memories (id, user_id, agent_id, run_id, vector, payload, created_at, dedup_key, state) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    memory_id,
                    "alice",
                    client,
                    run_id,
                    blob,
                    json.dumps(payload, separators=(",", ":")),
                    payload["created_at"],
                    key,
                    state,
                ),
            )
            scope = f"{_scope_term('u', 'alice')} {_scope_term('a', client)}"
            if isinstance(run_id, str):
                scope += f" {_scope_term('r', run_id)}"
            conn.execute(
                "INSERT INTO memories__fts (rowid, text, scope) VALUES (?, ?, ?)", (cur.lastrowid, text.lower(), scope)
            )
        conn.commit()
    finally:
        conn.close()


def test_embedded_store_reads_and_changes_rows_written_by_2_0_0(tmp_path: Path) -> None:
    write_embedded_2_0_0(tmp_path)
    store = EmbeddedStore(collection_name="memories", path=str(tmp_path), embedding_model_dims=DIMS)
    try:
        exercise(store)
        # a mem0 app's run_id is read from the payload; the store leaves 2.0.0's column as it was
        cursor_row = store.read(CURSOR, ["m-cursor"])["m-cursor"]
        assert cursor_row.metadata["run_id"] == "run-7"
        keyword = store.keyword_hits(CURSOR, "build command", 5, states=ACTIVE, query=EVERYTHING)
        assert keyword is not None and [h.memory_id for h in keyword] == ["m-cursor"]
    finally:
        store.close()
    conn = sqlite3.connect(tmp_path / "memories.sqlite3")
    try:
        run_ids = dict(conn.execute("SELECT id, run_id FROM memories").fetchall())
    finally:
        conn.close()
    assert run_ids["m-cursor"] == "run-7" and run_ids["m-new"] is None


# ---------------------------------------------------------------------------------------------- Tablestore


@pytest.fixture
def emulator() -> Iterator[TablestoreEmulator]:
    em = TablestoreEmulator().start()
    em.index_delay = 0.0
    try:
        yield em
    finally:
        em.stop()
    if em.last_internal_error is not None:
        raise AssertionError(f"tablestore emulator bug: {em.last_internal_error!r}")


def open_tablestore(em: TablestoreEmulator) -> TablestoreStore:
    return TablestoreStore(
        collection_name="memories",
        **em.credentials(),
        embedding_model_dims=DIMS,
    )


def write_tablestore_2_0_0(em: TablestoreEmulator) -> None:
    """2.0.0's memory rows (text, KEYWORD copies, payload JSON, vector JSON, the dedup key they hold) and its
    dedup rows ``(user#dedup, key) -> memory``, with the plain SDK."""
    client = OTSClient(em.endpoint, em.access_key_id, em.access_key_secret, em.instance_name)
    for i, (memory_id, text, agent, state, extra) in enumerate(ROWS):
        payload = payload_2_0_0(memory_id, text, agent, state, extra)
        columns = [("data", text)]
        columns += [
            (name, payload[name])
            for name in ("agent_id", "run_id", "hash", "actor_id", "role", "created_at", "updated_at", "state")
            if isinstance(payload.get(name), str)
        ]
        columns.append(("payload", json.dumps(payload, ensure_ascii=False)))
        columns.append(("vector", "[" + ",".join(f"{x:.9g}" for x in unit(i)) + "]"))
        if state is None:
            key = key_2_0_0("alice", agent, text)
            columns.append(("dedup_key", key))
            dedup = Row([("user_id", "alice#dedup"), ("memory_id", key)], [("memory", memory_id)])
            client.put_row("memories", dedup, Condition(RowExistenceExpectation.IGNORE))
        row = Row([("user_id", "alice"), ("memory_id", memory_id)], columns)
        client.put_row("memories", row, Condition(RowExistenceExpectation.IGNORE))


def test_tablestore_store_reads_and_changes_rows_written_by_2_0_0(emulator: TablestoreEmulator) -> None:
    open_tablestore(emulator).close()  # the table and its index
    write_tablestore_2_0_0(emulator)
    emulator.flush_index()
    store = open_tablestore(emulator)
    try:
        exercise(store)
    finally:
        store.close()
