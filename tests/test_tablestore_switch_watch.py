"""A running store notices a reembed switch (the table's meta row) without a restart: it follows when its
embedder can be the new one, and otherwise refuses vector operations in one line while reads keep working."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tablestore_openmemory_mcp.memory.ports import ALL_STATES, StoredMemory
from tablestore_openmemory_mcp.memory.query_filters import MemoryQuery
from tablestore_openmemory_mcp.memory.store_port import NewRow
from tablestore_openmemory_mcp.scope import Scope
from tablestore_openmemory_mcp.stores.tablestore import TablestoreStore
from tablestore_openmemory_mcp.stores.tablestore.embedding_meta import EmbeddingMeta, read_meta, write_meta
from tablestore_openmemory_mcp.stores.tablestore.schema import index_meta
from tablestore_openmemory_mcp.stores.tablestore.switch_watch import SwitchedAway
from tests.tablestore_emulator import TablestoreEmulator

U1 = Scope("cline", "u1", shared=True)


def row(memory_id: str, text: str, vector: list[float]) -> NewRow:
    at = "2026-01-01T00:00:00+00:00"
    memory = StoredMemory(id=memory_id, text=text, user_id="u1", client=None, created_at=at, updated_at=at, hash="")
    return NewRow(memory, vector)


def nearest_ids(store: TablestoreStore, vector: list[float]) -> list[str]:
    return [m.id for m in store.nearest(U1, vector, 5, states=ALL_STATES, query=MemoryQuery())]


@pytest.fixture(scope="module")
def emulator() -> Iterator[TablestoreEmulator]:
    em = TablestoreEmulator().start()
    yield em
    em.stop()


def open_store(em: TablestoreEmulator, table: str, embedder: str, dims: int) -> TablestoreStore:
    return TablestoreStore(
        collection_name=table,
        **em.credentials(),
        embedding_model_dims=dims,
        embedder_name=embedder,
    )


def switch(store: TablestoreStore, embedder: str, dims: int) -> EmbeddingMeta:
    """What ``reembed`` leaves behind: a new vector column and index, named in the meta row."""
    index, column = f"{store.collection_name}_v2", "vector_v2"
    store.client.create_search_index(store.collection_name, index, index_meta(dims, "cosine", column))
    meta = EmbeddingMeta(embedder, dims, index, column, switched_at="2026-01-01T00:00:00+00:00")
    write_meta(store.client, store.collection_name, meta)
    return meta


def test_a_running_store_follows_a_switch_its_server_can_adopt(emulator: TablestoreEmulator) -> None:
    table = f"t_{uuid.uuid4().hex[:10]}"
    running = open_store(emulator, table, "embedder-a", 4)
    adopted: list[str] = []

    def on_switch(meta: EmbeddingMeta) -> bool:
        adopted.append(str(meta.embedder))
        return True

    running.follow_switches(on_switch)
    running._switch.interval = 0
    try:
        running.put(U1, [row("m1", "before", [1.0, 0, 0, 0])])
        meta = switch(running, "embedder-b", 6)
        running.put(U1, [row("m2", "after", [0, 1.0, 0, 0, 0, 0])])
        emulator.flush_index()
        hits = nearest_ids(running, [0, 1.0, 0, 0, 0, 0])
        assert adopted == ["embedder-b"] and hits == ["m2"]  # m1 has no vector in the new column
        assert (running.index_name, running.vector_column, running.embedding_model_dims) == (
            meta.index_name,
            "vector_v2",
            6,
        )
        restarted = open_store(emulator, table, "embedder-b", 6)  # agrees with a server started afresh
        assert restarted.index_name == running.index_name
        restarted.close()
    finally:
        running.close()


def test_a_switch_the_server_cannot_adopt_refuses_vectors_in_one_line(emulator: TablestoreEmulator) -> None:
    table = f"t_{uuid.uuid4().hex[:10]}"
    running = open_store(emulator, table, "embedder-a", 4)
    running._switch.interval = 0
    try:
        running.put(U1, [row("m1", "kept", [1.0, 0, 0, 0])])
        switch(running, "embedder-b", 6)
        with pytest.raises(SwitchedAway) as refused:
            nearest_ids(running, [1.0, 0, 0, 0])
        message = str(refused.value)
        assert "\n" not in message and "embedder-b" in message and "restart" in message
        with pytest.raises(SwitchedAway):
            running.put(U1, [row("m2", "new", [1.0, 0, 0, 0])])
        page = running.page(U1, states=ALL_STATES, query=MemoryQuery(), limit=10)
        assert [m.id for m in page.items] == ["m1"]  # reads still work
        assert running.read_one(U1, "m2") is None  # nothing was written with the old embedder's vector
        assert read_meta(running.client, table).embedder == "embedder-b"
    finally:
        running.close()
