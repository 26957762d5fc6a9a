"""Fails loudly when mem0 changes any of the internals mem0_bridge.py relies on."""

import inspect

from tablestore_openmemory_mcp import mem0_bridge
from tablestore_openmemory_mcp.stores.base import MemoryStore
from tablestore_openmemory_mcp.stores.embedded import EmbeddedStore


def test_mem0_internals_we_touch_still_exist():
    from mem0 import Memory
    from mem0.configs.base import MemoryConfig
    from mem0.memory.storage import SQLiteManager
    from mem0.utils.factory import EmbedderFactory, LlmFactory, VectorStoreFactory

    assert isinstance(VectorStoreFactory.provider_to_class, dict)
    assert isinstance(EmbedderFactory.provider_to_class, dict)
    assert callable(LlmFactory.register_provider)
    assert {"vector_store", "llm", "embedder", "history_db_path"} <= set(MemoryConfig.model_fields)
    assert list(inspect.signature(Memory._update_memory).parameters)[:5] == [
        "self",
        "memory_id",
        "data",
        "existing_embeddings",
        "metadata",
    ]
    assert list(inspect.signature(Memory._delete_memory).parameters)[:3] == ["self", "memory_id", "existing_memory"]
    source = inspect.getsource(SQLiteManager.batch_add_history)
    for key in ("memory_id", "old_memory", "new_memory", "event", "created_at", "updated_at", "is_deleted"):
        assert f'record.get("{key}"' in source, key
    assert "_lock" in inspect.getsource(SQLiteManager.__init__)


def test_our_store_interface_covers_mem0s_vector_store_base():
    from mem0.vector_stores.base import VectorStoreBase

    required = set(VectorStoreBase.__abstractmethods__) | {"keyword_search"}
    assert required <= set(dir(MemoryStore)), required - set(dir(MemoryStore))
    for name in required:
        ours = list(inspect.signature(getattr(MemoryStore, name)).parameters)
        theirs = list(inspect.signature(getattr(VectorStoreBase, name)).parameters)
        assert ours == theirs, (name, ours, theirs)


def test_memory_builds_on_our_store_and_records_history(tmp_path):
    from tablestore_openmemory_mcp.embedders import OfflineEmbedder

    embedder = OfflineEmbedder()
    memory = mem0_bridge.build_memory(
        store_provider="openmemory_embedded",
        store_config={"collection_name": "memories", "path": str(tmp_path), "embedding_model_dims": 384},
        embedder=embedder,
        history_db_path=tmp_path / "history.sqlite3",
    )
    assert isinstance(memory.vector_store, EmbeddedStore)
    assert memory.embedding_model is embedder
    [memory_id] = mem0_bridge.create_memories(
        memory, ["likes tea"], [embedder.embed("likes tea")], {"user_id": "u", "agent_id": "c"}
    )
    mem0_bridge.update_memory(memory, memory_id, "likes coffee", embedder.embed("likes coffee"))
    found = memory.search("coffee", top_k=1, filters={"user_id": "u", "agent_id": "c"})
    assert found["results"][0]["id"] == memory_id and found["results"][0]["memory"] == "likes coffee"
    assert [row["event"] for row in memory.history(memory_id)] == ["ADD", "UPDATE"]
    mem0_bridge.delete_memory(memory, memory_id, memory.vector_store.get(memory_id))
    assert [row["event"] for row in memory.history(memory_id)] == ["ADD", "UPDATE", "DELETE"]
    journal = memory.db.connection.execute("PRAGMA journal_mode").fetchone()[0]
    assert journal == "wal"
