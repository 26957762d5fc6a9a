"""Rows written the way the reference deployment (tablestore-openmemory-mcp 1.3.1) wrote them.

The reference ran mem0 0.1.114's ``aliyun_tablestore`` vector store on tablestore-for-agent-memory's
``KnowledgeStore``; this writes through that same KnowledgeStore (the PyPI package), with the payload
encoding of mem0's store (``payload`` = JSON array of ``key=value``, ``payload_source`` = JSON) and the
metadata the reference's ``add_memories`` passed (``source_app``, ``mcp_client``). Also mem0's
``history.db`` in its own schema.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tablestore

REFERENCE_TABLE = "mem0"
REFERENCE_INDEX = "mem0_search_index"


@dataclass(frozen=True)
class RefMemory:
    id: str
    text: str
    user: str
    client: str
    vector: list[float]
    created_at: str = "2025-06-01T10:00:00.123456-07:00"
    updated_at: str | None = None


def knowledge_store(emulator: Any, dims: int, table: str = REFERENCE_TABLE) -> Any:
    """The KnowledgeStore exactly as mem0's ``AliyunTableStore`` configures it (and creates the table)."""
    from tablestore_for_agent_memory.knowledge.knowledge_store import KnowledgeStore

    client = tablestore.OTSClient(
        emulator.endpoint,
        emulator.access_key_id,
        emulator.access_key_secret,
        emulator.instance_name,
        retry_policy=tablestore.WriteRetryPolicy(),
    )
    schema = [
        tablestore.FieldSchema(
            "payload", tablestore.FieldType.KEYWORD, index=True, is_array=True, enable_sort_and_agg=True
        ),
        tablestore.FieldSchema(
            "payload_source", tablestore.FieldType.KEYWORD, index=False, is_array=False, enable_sort_and_agg=False
        ),
    ]
    store = KnowledgeStore(
        tablestore_client=client,
        vector_dimension=dims,
        enable_multi_tenant=False,
        table_name=table,
        search_index_name=f"{table}_search_index",
        search_index_schema=schema,
        text_field="text",
        embedding_field="embedding",
        vector_metric_type=tablestore.VectorMetricType.VM_COSINE,
    )
    if table not in client.list_table():
        store.init_table()
    return store


def write(store: Any, memories: list[RefMemory], extra: dict[str, Any] | None = None) -> None:
    """Put each memory as mem0 0.1.114 + the reference's ``add_memories`` did."""
    from tablestore_for_agent_memory.base.base_knowledge_store import Document

    for m in memories:
        payload: dict[str, Any] = {
            "source_app": "openmemory",
            "mcp_client": m.client,
            "user_id": m.user,
            "hash": hashlib.md5(m.text.encode()).hexdigest(),
            "created_at": m.created_at,
            **(extra or {}),
        }
        if m.updated_at:
            payload["updated_at"] = m.updated_at
        metadata = {
            "payload": json.dumps([f"{k}={v}" for k, v in payload.items()], ensure_ascii=False),
            "payload_source": json.dumps(payload, ensure_ascii=False),
        }
        store.put_document(Document(document_id=m.id, text=m.text, embedding=m.vector, metadata=metadata))


def write_history_db(mem0_dir: Path, rows: list[tuple[str, str | None, str | None, str, str, str | None]]) -> Path:
    """mem0's history.db: rows of (memory_id, old, new, event, created_at, updated_at)."""
    mem0_dir.mkdir(parents=True, exist_ok=True)
    path = mem0_dir / "history.db"
    db = sqlite3.connect(path)
    try:
        db.execute(
            "CREATE TABLE IF NOT EXISTS history (id TEXT PRIMARY KEY, memory_id TEXT, old_memory TEXT, "
            "new_memory TEXT, event TEXT, created_at DATETIME, updated_at DATETIME, is_deleted INTEGER, "
            "actor_id TEXT, role TEXT)"
        )
        for i, (mid, old, new, event, created, updated) in enumerate(rows):
            db.execute(
                "INSERT INTO history VALUES (?, ?, ?, ?, ?, ?, ?, 0, NULL, 'user')",
                (f"h{i}", mid, old, new, event, created, updated),
            )
        db.commit()
    finally:
        db.close()
    return path
