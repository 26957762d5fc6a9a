"""mem0 2.x's vector-store interface on our stores (the Tablestore store and the embedded store).

What our stores guarantee, mem0 gets too:

* **scope**: every store call names the caller's scope. A mem0 app's calls carry the user (``user_id`` in
  the payload or the filters; a call without one is refused in one line); id-only calls
  (``get``/``update``/``delete``) find the owner in the :mod:`.owners` directory. Inside the server the
  engine tells the provider its caller's scope (:data:`CALL`), since mem0 owns these methods' signatures.
* **no duplicates under concurrency**: every memory insert carries a dedup key (scope + md5 of the text,
  the same key the classic engine uses), so two concurrent adds of one text store one row; mem0's own
  id for the loser leads to the winner (an alias).
* **read-your-writes under index lag**, every limit and every filter: the stores' own (``search`` joins
  this process's recent writes; filters are pushed down or post-filtered; unsupported operators raise).
* **states**: rows paused, archived or deleted (by the server) are hidden unless a filter names ``state``.

Vectors are normalized to unit length (the stores keep unit vectors); scores are cosine similarity
clipped to [0, 1], higher is better, as mem0 asks.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from tablestore_openmemory_mcp.errors import UserInputError
from tablestore_openmemory_mcp.memory.clock import now_iso
from tablestore_openmemory_mcp.stores.base import MemoryStore, OutputData
from tablestore_openmemory_mcp.stores.filters import OPERATORS, split_identity

from .owners import CachedOwners

#: Rows in these states are the server's paused, archived or deleted memories: hidden from mem0.
HIDDEN = {"state": {"nin": ["paused", "archived", "deleted"]}}
#: ``list()`` without ``top_k`` returns at most this many rows (mem0 always passes one).
DEFAULT_LIST = 1000
_PAGE = 500
_LOGICAL = frozenset({"AND", "OR", "NOT", "$and", "$or", "$not"})


@dataclass
class EngineCall:
    """What the server's engine tells the provider about the call in progress (``MEMORY_ENGINE=mem0``).

    ``dedup_key(hash)`` is the classic engine's key for the caller's scope; ``client`` is recorded on new
    rows (mem0 is called without ``agent_id`` when memories are shared across clients). The provider
    fills ``aliases`` (mem0's id -> the row that already held the text) and ``store_errors``."""

    user_id: str
    client: str
    dedup_key: Callable[[str], str]
    scope: dict[str, str] = field(default_factory=dict)  # the rows the caller sees (user, and client unless shared)
    aliases: dict[str, str] = field(default_factory=dict)
    store_errors: list[BaseException] = field(default_factory=list)
    searched: int | None = None  # rows the call's first search found (mem0 shows them to its LLM)


CALL: ContextVar[EngineCall | None] = ContextVar("MEM0_ENGINE_CALL", default=None)


NO_USER = (
    "the tablestore/openmemory_embedded vector store keeps users apart and needs a user_id: "
    "pass user_id= to add() and filters={'user_id': ...} to search(), get_all() and delete_all()"
)


class Mem0ScopeError(UserInputError):
    """A mem0 call that names no user: our stores keep every user's memories apart and need one."""


def standalone_dedup_key(payload: Mapping[str, Any], digest: str) -> str:
    """A mem0 app's key: user, agent (``*`` when absent, like the server's shared scope) and run, plus the hash.

    Without a run it equals the server's key for the same user and client, so the two dedupe together."""
    user = str(payload.get("user_id", ""))
    client = str(payload.get("agent_id") or "*")
    parts = f"{user}\x00{client}\x00{digest}"
    if payload.get("run_id"):
        parts = f"{parts}\x00run={payload['run_id']}"
    return hashlib.sha256(parts.encode()).hexdigest()[:40]


def check_filters(filters: Mapping[str, Any] | None) -> None:
    """Refuse operators our stores do not evaluate (mem0 passes unknown ones through, which would match nothing)."""
    for key, cond in (filters or {}).items():
        if key in _LOGICAL:
            for sub in cond if isinstance(cond, list | tuple) else [cond]:
                check_filters(sub if isinstance(sub, Mapping) else None)
        elif isinstance(cond, Mapping):
            unknown = sorted(set(cond) - OPERATORS)
            if unknown:
                raise UserInputError(
                    f"unsupported filter operator(s) {unknown} on {key!r}; supported: {', '.join(sorted(OPERATORS))}, "
                    "AND, OR, NOT and '*'"
                )


def _unit(vector: Sequence[float] | None) -> list[float] | None:
    if vector is None:
        return None
    values = [float(x) for x in vector]
    norm = math.sqrt(sum(x * x for x in values))
    return [x / norm for x in values] if norm > 0 else values


class StoreVectorStore:
    """mem0's ``VectorStoreBase`` on one :class:`~..stores.base.MemoryStore` collection (see the module docstring).

    ``soft_delete``: ``delete`` marks the row deleted (the server's semantics: history and restore keep
    working) instead of erasing it. ``owners`` is None inside the server, where every call is scoped.
    """

    def __init__(
        self,
        store: MemoryStore,
        *,
        collection_name: str,
        dimension: int,
        owners: CachedOwners | None,
        soft_delete: bool = False,
        close_store: bool = True,
    ) -> None:
        self.store = store
        self.collection_name = collection_name
        self.embedding_model_dims = dimension
        self.owners = owners
        self.soft_delete = soft_delete
        self.close_store = close_store
        self._last_search = threading.local()

    # ------------------------------------------------------------------ scope

    @staticmethod
    def _user_of(filters: Mapping[str, Any] | None) -> str | None:
        identity, _ = split_identity(filters)
        return identity.get("user_id")

    @staticmethod
    def _scope(user: str | None) -> dict[str, str]:
        """The caller's scope: the engine's, else the user named by the call."""
        call = CALL.get()
        if call is not None and call.scope:
            return dict(call.scope)
        if not user:
            raise Mem0ScopeError(NO_USER)
        return {"user_id": user}

    def _resolve(self, vector_id: Any) -> tuple[str | None, str] | None:
        """(owner, row id) of an id mem0 holds; None when unknown."""
        key = str(vector_id)
        call = CALL.get()
        if call is not None:
            return None, call.aliases.get(key, key)
        if self.owners is None:
            return None
        return self.owners.get(key)

    def _remember(self, rows: Sequence[OutputData]) -> None:
        if self.owners is not None and CALL.get() is None:
            entries = {}
            for row in rows:
                owner = (row.payload or {}).get("user_id")
                if isinstance(owner, str) and owner:
                    entries[str(row.id)] = (owner, str(row.id))
            self.owners.remember(entries)

    @staticmethod
    def _visible(filters: Mapping[str, Any] | None) -> dict[str, Any]:
        check_filters(filters)
        merged = dict(filters or {})
        if "state" not in merged:
            merged.update(HIDDEN)
        return merged

    # ------------------------------------------------------------------ mem0's interface

    def create_col(self, name: str | None = None, vector_size: int | None = None, distance: str | None = None) -> None:
        """The store created its table (or file collection) when it opened."""

    def list_cols(self) -> list[str]:
        return [self.collection_name]

    def col_info(self) -> dict[str, Any]:
        store = type(self.store).__name__
        return {"name": self.collection_name, "dimension": self.embedding_model_dims, "store": store}

    def delete_col(self) -> None:
        raise NotImplementedError(
            f"{self.collection_name!r} holds every user's memories; delete them per user with delete_all(user_id=...)"
        )

    def reset(self) -> None:
        self.delete_col()

    def insert(
        self,
        vectors: Sequence[Sequence[float]],
        payloads: Sequence[Mapping[str, Any]] | None = None,
        ids: Sequence[Any] | None = None,
    ) -> None:
        rows = [dict(p) for p in payloads] if payloads is not None else [{} for _ in vectors]
        keys = [str(i) for i in ids] if ids is not None else [str(uuid.uuid4()) for _ in vectors]
        call = CALL.get()
        by_user: dict[str, list[int]] = {}
        for index, payload in enumerate(rows):
            if call is not None:
                payload.setdefault("user_id", call.user_id)
                payload.setdefault("agent_id", call.client)
            user = payload.get("user_id")
            if not isinstance(user, str) or not user:
                raise Mem0ScopeError(NO_USER)
            by_user.setdefault(str(user), []).append(index)
        for user, indexes in by_user.items():
            chosen = [vectors[i] for i in indexes]
            self._insert_for(user, chosen, [rows[i] for i in indexes], [keys[i] for i in indexes])

    def _insert_for(
        self, user: str, vectors: Sequence[Sequence[float]], payloads: list[dict[str, Any]], ids: list[str]
    ) -> None:
        call = CALL.get()
        dedup: list[str | None] = []
        for payload in payloads:
            digest = payload.get("hash")
            if not isinstance(digest, str) or not digest:
                dedup.append(None)  # entity rows and text-less rows have no duplicate rule
            elif call is not None:
                dedup.append(call.dedup_key(digest))
            else:
                dedup.append(standalone_dedup_key(payload, digest))
        if self.owners is not None and call is None:
            self.owners.put({key: (user, key) for key in ids})  # before the rows: no row without its owner
        unit = [_unit(v) or [] for v in vectors]
        try:
            stored = self.store.insert(unit, payloads, ids, dedup, scope=self._scope(user))
        except Exception as exc:
            if call is not None:
                call.store_errors.append(exc)
            raise
        aliases = {key: held for key, held in zip(ids, stored, strict=True) if held != key}
        if aliases and call is not None:
            call.aliases.update(aliases)
        elif aliases and self.owners is not None:
            self.owners.put({key: (user, held) for key, held in aliases.items()})

    def search(
        self, query: str, vectors: Sequence[float], top_k: int = 5, filters: Mapping[str, Any] | None = None
    ) -> list[OutputData]:
        scope = self._scope(self._user_of(filters))
        rows = self.store.search(query, _unit(vectors) or [], top_k=top_k, filters=self._visible(filters), scope=scope)
        self._remember(rows)
        call = CALL.get()
        if call is not None and call.searched is None:
            call.searched = len(rows)
        self._last_search.value = (json.dumps(filters or {}, sort_keys=True, default=str), [r.id for r in rows])
        return [OutputData(id=r.id, score=max(0.0, float(r.score or 0.0)), payload=r.payload) for r in rows]

    def keyword_search(
        self, query: str, top_k: int = 5, filters: Mapping[str, Any] | None = None
    ) -> list[OutputData] | None:
        """BM25 over the preceding search's candidates (mem0 scores only those), else over the scope."""
        last = getattr(self._last_search, "value", None)
        key = json.dumps(filters or {}, sort_keys=True, default=str)
        candidates = last[1] if last is not None and last[0] == key else None
        self._last_search.value = None
        scope = self._scope(self._user_of(filters))
        return self.store.keyword_search(
            query, top_k=top_k, filters=self._visible(filters), candidates=candidates, scope=scope
        )

    def search_batch(
        self,
        queries: Sequence[str],
        vectors_list: Sequence[Sequence[float]],
        top_k: int = 1,
        filters: Mapping[str, Any] | None = None,
    ) -> list[list[OutputData]]:
        return [self.search(q, v, top_k=top_k, filters=filters) for q, v in zip(queries, vectors_list, strict=False)]

    def get(self, vector_id: Any) -> OutputData | None:
        found = self._resolve(vector_id)
        if found is None:
            return None
        user, row_id = found
        row = self.store.get(row_id, scope=self._scope(user))
        if row is None or (row.payload or {}).get("state", "active") != "active":
            return None
        return row

    def update(
        self, vector_id: Any, vector: Sequence[float] | None = None, payload: Mapping[str, Any] | None = None
    ) -> None:
        found = self._resolve(vector_id)
        if found is None:
            raise ValueError(f"Memory with id {vector_id} not found")
        user, row_id = found
        new = dict(payload) if payload is not None else None
        key: str | None = None
        if new is not None and isinstance(new.get("hash"), str) and new.get("state", "active") == "active":
            call = CALL.get()
            key = call.dedup_key(new["hash"]) if call is not None else standalone_dedup_key(new, new["hash"])
        try:
            self.store.update(row_id, _unit(vector), new, dedup_key=key, scope=self._scope(user))
        except Exception as exc:
            call = CALL.get()
            if call is not None:
                call.store_errors.append(exc)
            raise

    def delete(self, vector_id: Any) -> None:
        found = self._resolve(vector_id)
        if found is None:
            return
        user, row_id = found
        scope = self._scope(user)
        if self.soft_delete:
            row = self.store.get(row_id, scope=scope)
            if row is None:
                return
            payload = {**(row.payload or {}), "state": "deleted", "updated_at": now_iso()}
            self.store.update(row_id, None, payload, dedup_key="", scope=scope)  # releases the text for a new add
            return
        self.store.delete_many([row_id], scope=scope)
        if self.owners is not None:
            self.owners.remove({str(vector_id), row_id})

    def list(self, filters: Mapping[str, Any] | None = None, top_k: int | None = None) -> list[list[OutputData]]:
        """``[rows]`` (wrapped once, as mem0 reads it), oldest first, at most ``top_k``."""
        limit = DEFAULT_LIST if top_k is None else max(0, int(top_k))
        out: list[OutputData] = []
        cursor: str | None = None
        scope = self._scope(self._user_of(filters))
        while len(out) < limit:
            page, cursor = self.store.list_page(
                self._visible(filters), min(_PAGE, limit - len(out)), cursor, scope=scope
            )
            out.extend(page)
            if cursor is None:
                break
        self._remember(out)
        return [out[:limit]]

    def close(self) -> None:
        if self.close_store:
            self.store.close()
        if self.owners is not None:
            self.owners.close()
