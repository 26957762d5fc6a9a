"""A running store notices a reembed switch (the table's meta row) without a restart: it follows when its
embedder can be the new one, and otherwise refuses vector operations in one line while reads keep working."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tablestore_openmemory_mcp.stores.base import scoped
from tablestore_openmemory_mcp.stores.tablestore import TablestoreStore
from tablestore_openmemory_mcp.stores.tablestore.embedding_meta import EmbeddingMeta, read_meta, write_meta
from tablestore_openmemory_mcp.stores.tablestore.schema import index_meta
from tablestore_openmemory_mcp.stores.tablestore.switch_watch import SwitchedAway
from tests.tablestore_emulator import TablestoreEmulator

U1 = {"user_id": "u1"}


@pytest.fixture(scope="module")
def emulator() -> Iterator[TablestoreEmulator]:
    em = TablestoreEmulator().start()
    yield em
    em.stop()


def open_store(em: TablestoreEmulator, table: str, embedder: str, dims: int) -> TablestoreStore:
    return TablestoreStore(
        collection_name=table,
        endpoint=em.endpoint,
        instance_name=em.instance_name,
        access_key_id=em.access_key_id,
        access_key_secret=em.access_key_secret,
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
        with scoped(U1):
            running.insert([[1.0, 0, 0, 0]], [{"data": "before", "user_id": "u1"}], ["m1"])
        meta = switch(running, "embedder-b", 6)
        with scoped(U1):
            running.insert([[0, 1.0, 0, 0, 0, 0]], [{"data": "after", "user_id": "u1"}], ["m2"])
            emulator.flush_index()
            hits = running.search("after", [0, 1.0, 0, 0, 0, 0], 5)
        assert adopted == ["embedder-b"] and [h.id for h in hits] == ["m2"]  # m1 has no vector in the new column
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
        with scoped(U1):
            running.insert([[1.0, 0, 0, 0]], [{"data": "kept", "user_id": "u1"}], ["m1"])
        switch(running, "embedder-b", 6)
        with scoped(U1):
            with pytest.raises(SwitchedAway) as refused:
                running.search("kept", [1.0, 0, 0, 0], 5)
            message = str(refused.value)
            assert "\n" not in message and "embedder-b" in message and "restart" in message
            with pytest.raises(SwitchedAway):
                running.insert([[1.0, 0, 0, 0]], [{"data": "new", "user_id": "u1"}], ["m2"])
            assert [r.id for r in running.list_page({"user_id": "u1"}, 10)[0]] == ["m1"]  # reads still work
            assert running.get("m2") is None  # nothing was written with the old embedder's vector
        assert read_meta(running.client, table).embedder == "embedder-b"
    finally:
        running.close()
