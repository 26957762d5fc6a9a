"""Every place this server touches mem0 beyond its public API, in one module.

mem0 2.x validates provider names against hard-coded lists and has no public way to plug in a store,
an embedder object or batched creation. This module:

* sets ``MEM0_DIR`` (inside our data directory) and ``MEM0_TELEMETRY`` *before* mem0 is imported,
  because importing mem0 writes ``$MEM0_DIR/config.json`` and may start telemetry;
* registers our stores in ``VectorStoreFactory.provider_to_class`` and builds the config with
  ``model_construct`` (skipping the provider-name validation);
* swaps in our embedder object and a placeholder LLM (the classic flow calls our own LLM client);
* creates memories in batches and records history the way mem0's ``_create_memory`` does.

``tests/test_mem0_bridge.py`` checks each of these assumptions and fails loudly when mem0 changes.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

STORE_PROVIDERS = {
    "openmemory_embedded": "tablestore_openmemory_mcp.stores.embedded.EmbeddedStore",
    "openmemory_tablestore": "tablestore_openmemory_mcp.stores.tablestore.TablestoreStore",
}


def prepare_environment(data_dir: Path, telemetry: bool) -> None:
    """Point mem0 at our data directory and set telemetry; call before anything imports mem0."""
    mem0_dir = data_dir / "mem0"
    mem0_dir.mkdir(parents=True, exist_ok=True)
    os.environ["MEM0_DIR"] = str(mem0_dir)
    os.environ["MEM0_TELEMETRY"] = "True" if telemetry else "False"


class StoreConfig(BaseModel):
    """mem0 reads ``config.collection_name`` and passes ``model_dump()`` to the store's constructor."""

    model_config = ConfigDict(extra="allow")
    collection_name: str


class NoLLM:
    """mem0 insists on an LLM object; ours is never asked (the classic flow uses :mod:`llm`)."""

    def __init__(self, config: Any = None) -> None:
        self.config = config

    def generate_response(self, *args: Any, **kwargs: Any) -> str:
        raise RuntimeError("mem0's own LLM path is not used by this server")


class PlaceholderEmbedder:
    """Stands in while mem0 builds ``Memory``; replaced by our embedder right after."""

    def __init__(self, config: Any = None) -> None:
        self.config = config

    def embed(self, text: str, memory_action: str | None = None) -> list[float]:
        raise RuntimeError("placeholder embedder used")


def build_memory(*, store_provider: str, store_config: dict[str, Any], embedder: Any, history_db_path: Path) -> Any:
    """Build a mem0 ``Memory`` on our store and embedder."""
    from mem0 import Memory
    from mem0.configs.base import MemoryConfig
    from mem0.embeddings.configs import EmbedderConfig
    from mem0.llms.configs import LlmConfig
    from mem0.utils.factory import EmbedderFactory, LlmFactory, VectorStoreFactory
    from mem0.vector_stores.configs import VectorStoreConfig

    VectorStoreFactory.provider_to_class.update(STORE_PROVIDERS)
    EmbedderFactory.provider_to_class["openmemory_placeholder"] = f"{__name__}.PlaceholderEmbedder"
    LlmFactory.register_provider("openmemory_none", f"{__name__}.NoLLM")

    config = MemoryConfig.model_construct(
        vector_store=VectorStoreConfig.model_construct(provider=store_provider, config=StoreConfig(**store_config)),
        llm=LlmConfig.model_construct(provider="openmemory_none", config={}),
        embedder=EmbedderConfig.model_construct(provider="openmemory_placeholder", config={}),
        history_db_path=str(history_db_path),
        reranker=None,
        version="v1.1",
        custom_instructions=None,
    )
    memory = Memory(config)
    memory.embedding_model = embedder
    _tune_history_db(memory)
    return memory


def _tune_history_db(memory: Any) -> None:
    """WAL and a busy timeout, so two server processes can share one history database."""
    connection = memory.db.connection
    with memory.db._lock:
        connection.execute("PRAGMA busy_timeout=30000")
        connection.execute("PRAGMA journal_mode=WAL")


def text_hash(text: str) -> str:
    """The ``hash`` mem0 stores with each memory (md5 of the text); used to spot exact duplicates."""
    return hashlib.md5(text.encode()).hexdigest()


def new_payload(text: str, metadata: dict[str, Any], now: str | None = None) -> dict[str, Any]:
    """The payload mem0 writes for a new memory (see ``Memory._create_memory``)."""
    from mem0.utils.lemmatization import lemmatize_for_bm25

    created = now or datetime.now(UTC).isoformat()
    payload = dict(metadata)
    payload.update(
        data=text,
        hash=text_hash(text),
        created_at=created,
        updated_at=created,
        text_lemmatized=lemmatize_for_bm25(text),
    )
    return payload


def create_memories(memory: Any, texts: list[str], vectors: list[list[float]], metadata: dict[str, Any]) -> list[str]:
    """Insert many memories in one store call, then record one ADD history row each."""
    if not texts:
        return []
    ids = [str(uuid.uuid4()) for _ in texts]
    payloads = [new_payload(text, metadata) for text in texts]
    memory.vector_store.insert(vectors=vectors, payloads=payloads, ids=ids)
    memory.db.batch_add_history(
        [
            {
                "memory_id": memory_id,
                "old_memory": None,
                "new_memory": payload["data"],
                "event": "ADD",
                "created_at": payload["created_at"],
                "updated_at": payload["updated_at"],
                "actor_id": payload.get("actor_id"),
                "role": payload.get("role"),
                "is_deleted": 0,
            }
            for memory_id, payload in zip(ids, payloads, strict=True)
        ]
    )
    return ids


def update_memory(memory: Any, memory_id: str, text: str, vector: list[float]) -> None:
    """Update text and vector, recording an UPDATE history row (mem0's ``_update_memory``)."""
    memory._update_memory(memory_id, text, {text: vector}, None)


def delete_memory(memory: Any, memory_id: str, existing: Any) -> None:
    """Delete one memory, recording a DELETE history row (mem0's ``_delete_memory``)."""
    memory._delete_memory(memory_id, existing)


def record_deletions(memory: Any, rows: list[Any]) -> None:
    """One DELETE history row per removed memory, written in one batch (after a bulk delete)."""
    now = datetime.now(UTC).isoformat()
    memory.db.batch_add_history(
        [
            {
                "memory_id": str(row.id),
                "old_memory": (row.payload or {}).get("data"),
                "new_memory": None,
                "event": "DELETE",
                "created_at": (row.payload or {}).get("created_at"),
                "updated_at": now,
                "actor_id": (row.payload or {}).get("actor_id"),
                "role": (row.payload or {}).get("role"),
                "is_deleted": 1,
            }
            for row in rows
        ]
    )
