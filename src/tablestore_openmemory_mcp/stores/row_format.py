"""The stored row format, shared by both stores: one memory as a payload dict, its content hash and dedup key.

Why one module: the embedded file and the Tablestore table hold the same payload (mem0's keys, kept since
2.0.0 so files and tables written by earlier releases keep working), so mapping it to and from
:class:`~..memory.ports.StoredMemory` is done here once. Nothing above the stores sees a payload.

Payload keys (2.0.0): ``data`` = the text, ``hash`` = md5 of the text, ``created_at``, ``updated_at``
(ISO 8601), ``user_id``, ``agent_id`` = the client, ``state`` (absent = active; rows written before
states existed have none), ``categories`` (a list), ``text_lemmatized`` (mem0's BM25 text), and every
other key as metadata (``role``, ``metadata`` = the user's tags, ``event_time``, ...).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import math
import os
import secrets
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

from tablestore_openmemory_mcp.memory.clock import now_iso as now_iso  # the one clock (memory/clock.py)
from tablestore_openmemory_mcp.memory.ports import State, StoredMemory
from tablestore_openmemory_mcp.scope import Scope

#: Payload keys that are not metadata.
CORE_KEYS = frozenset(
    {"data", "hash", "created_at", "updated_at", "user_id", "agent_id", "state", "categories", "text_lemmatized"}
)


def prepare_mem0_environment(data_dir: Path, telemetry: bool) -> None:
    """Keep mem0's files inside our data directory and its telemetry off, before anything of mem0 loads."""
    mem0_dir = data_dir / "mem0"
    mem0_dir.mkdir(parents=True, exist_ok=True)
    os.environ["MEM0_DIR"] = str(mem0_dir)
    os.environ["MEM0_TELEMETRY"] = "True" if telemetry else "False"


@functools.cache
def _has_spacy() -> bool:
    """spaCy and mem0 (the optional ``[mem0]`` extra) both installed: only then is there a lemmatizer."""
    return importlib.util.find_spec("spacy") is not None and importlib.util.find_spec("mem0") is not None


def lemmatize(text: str) -> str:
    """mem0's BM25 lemmatisation when spaCy is installed; the text itself otherwise (mem0's own fallback)."""
    if not _has_spacy():
        return text
    from mem0.utils.lemmatization import lemmatize_for_bm25  # only with spaCy, which mem0 needs for it

    return str(lemmatize_for_bm25(text))


def text_hash(text: str) -> str:
    """The ``hash`` stored with each memory (md5 of the text, as mem0 computes it)."""
    return hashlib.md5(text.encode()).hexdigest()


def new_memory_id() -> str:
    """A UUIDv7: random, but ordered by creation time, so key-ordered stores list oldest first."""
    millis = time.time_ns() // 1_000_000
    value = (millis & ((1 << 48) - 1)) << 80 | secrets.randbits(80)
    value = (value & ~(0xF << 76)) | (0x7 << 76)  # version 7
    value = (value & ~(0x3 << 62)) | (0x2 << 62)  # RFC 4122 variant
    return str(uuid.UUID(int=value))


def dedup_key(scope: Scope, digest: str) -> str:
    """Scope + content hash: one live memory per exact text per scope (per user when shared)."""
    client = "*" if scope.shared else scope.client_name
    return hashlib.sha256(f"{scope.user_id}\x00{client}\x00{digest}".encode()).hexdigest()[:40]


def tag_term(key: str, value: Any) -> str:
    """One tag as an index term. Values compare as :meth:`MemoryQuery.accepts` compares them: ``1 == 1.0``
    (one canonical number), but ``True`` is not ``1`` here (JSON keeps them apart; a tag is one or the other)."""
    if isinstance(value, bool):
        rendered = "true" if value else "false"
    elif isinstance(value, int | float):
        number = float(value)
        rendered = str(int(number)) if math.isfinite(number) and number.is_integer() else repr(number)
    else:
        rendered = json.dumps(str(value), ensure_ascii=False)
    return f"{key}={rendered}"


def text_of(payload: Mapping[str, Any]) -> str | None:
    """A row's memory text; None for a row without one (not a memory: e.g. an entity row of mem0's)."""
    data = payload.get("data")
    return data if isinstance(data, str) else None


def to_memory(memory_id: str, payload: Mapping[str, Any] | None, score: float | None = None) -> StoredMemory:
    """A stored row as a memory; rows of every release since 2.0.0 read (missing keys get their defaults)."""
    payload = payload or {}
    categories = payload.get("categories") or ()
    text = str(payload.get("data", ""))
    client = payload.get("agent_id")
    return StoredMemory(
        id=str(memory_id),
        text=text,
        user_id=str(payload.get("user_id", "")),
        client=client if isinstance(client, str) else None,
        created_at=str(payload.get("created_at") or ""),
        updated_at=str(payload.get("updated_at") or payload.get("created_at") or ""),
        hash=str(payload.get("hash") or text_hash(text)),
        state=cast(State, payload.get("state") or "active"),
        categories=tuple(str(c) for c in categories) if isinstance(categories, list | tuple) else (),
        score=score,
        metadata={k: v for k, v in payload.items() if k not in CORE_KEYS},
    )


def to_payload(memory: StoredMemory) -> dict[str, Any]:
    """A memory as the row payload both stores write (the keys 2.0.0 wrote)."""
    payload: dict[str, Any] = dict(memory.metadata)
    payload.update(
        data=memory.text,
        hash=memory.hash,
        created_at=memory.created_at,
        updated_at=memory.updated_at,
        user_id=memory.user_id,
        text_lemmatized=lemmatize(memory.text),
    )
    if memory.client is not None:
        payload["agent_id"] = memory.client
    if memory.state != "active":
        payload["state"] = memory.state
    if memory.categories:
        payload["categories"] = list(memory.categories)
    return payload
