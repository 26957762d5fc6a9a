"""mem0 2.x's vector-store interface on our stores (the Tablestore store and the embedded store).

What our stores guarantee, mem0 gets too:

* **scope**: every store call names the caller's scope. A mem0 app's calls carry the user (``user_id`` in
  the payload or the filters; a call without one is refused in one line); id-only calls
  (``get``/``update``/``delete``) find the owner in the :mod:`.owners` directory. Inside the server the
  engine tells the provider its caller's scope (:data:`CALL`), since mem0 owns these methods' signatures.
* **no duplicates under concurrency**: every memory insert carries a dedup key (scope + md5 of the text,
  the same key the classic engine uses), so two concurrent adds of one text store one row; mem0's own
  id for the loser leads to the winner (an alias).
* **read-your-writes under index lag** and every limit: the stores' own (``nearest`` joins this process's
  recent writes). The provider calls only the typed store port (:class:`~..memory.store_port.StorePort`):
  mem0's filters become a scope, states and a :class:`~..memory.query_filters.MemoryQuery` where they can
  (:mod:`.selection`); the rest is checked with :func:`.filters.matches` on the rows read, reading further
  while too few matched; unsupported operators raise.
* **states**: rows paused, archived or deleted (by the server) are hidden unless a filter names ``state``.

Rows cross as mem0's payload (:func:`~..stores.row_format.to_payload` / ``to_memory``: the stored row format
is mem0's payload shape).

Vectors are normalized to unit length (the stores keep unit vectors); scores are cosine similarity
clipped to [0, 1], higher is better, as mem0 asks.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel

from tablestore_openmemory_mcp.errors import InvalidIdentity, UserInputError
from tablestore_openmemory_mcp.memory.clock import now_iso
from tablestore_openmemory_mcp.memory.ports import StoredMemory
from tablestore_openmemory_mcp.memory.query_filters import MemoryQuery
from tablestore_openmemory_mcp.memory.store_port import NewRow, RowChange, StorePort
from tablestore_openmemory_mcp.scope import Scope, validate_identity_part
from tablestore_openmemory_mcp.stores import row_format

from .owners import CachedOwners
from .selection import Selection, select

#: ``list()`` without ``top_k`` returns at most this many rows (mem0 always passes one).
DEFAULT_LIST = 1000
#: A search whose filters the store cannot answer alone reads at most this many nearest rows (Tablestore's KNN cap).
MAX_FETCH = 1000
#: The client named by a mem0 app's scope: it sees all of the user's rows (``shared``); the client recorded on a
#: row is the payload's ``agent_id``.
APP_CLIENT = "mem0"
_PAGE = 500
_T = TypeVar("_T")


class OutputData(BaseModel):
    """One row as mem0 reads it: ``id``, ``score`` (higher is better; searches only) and ``payload``."""

    id: str
    score: float | None = None
    payload: dict[str, Any] | None = None


@dataclass
class EngineCall:
    """What the server's engine tells the provider about the call in progress (``MEMORY_ENGINE=mem0``).

    ``dedup_key(hash)`` is the classic engine's key for the caller's scope; ``client`` is recorded on new
    rows (mem0 is called without ``agent_id`` when memories are shared across clients); ``scope``: the rows
    the caller sees. The provider fills ``aliases`` (mem0's id -> the row that already held the text) and
    ``store_errors``."""

    user_id: str
    client: str
    dedup_key: Callable[[str], str]
    scope: Scope | None = None
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


def _is_identity(value: str) -> bool:
    """Whether a mem0 ``agent_id`` can be a scope's client (else the query narrows by it)."""
    try:
        validate_identity_part(value, "agent_id")
    except InvalidIdentity:
        return False
    return True


def _unit(vector: Sequence[float] | None) -> list[float] | None:
    if vector is None:
        return None
    values = [float(x) for x in vector]
    norm = math.sqrt(sum(x * x for x in values))
    return [x / norm for x in values] if norm > 0 else values


def mem0_payload(memory: StoredMemory) -> dict[str, Any]:
    """A stored memory as mem0 reads it: the row format's payload (:func:`~..stores.row_format.to_payload`), less
    ``text_lemmatized``, which mem0 never reads back (it lemmatizes on its writes): mapped from an empty text so
    that no row read runs spaCy's pipeline again (when spaCy is installed: mem0 reads 60+ rows a search)."""
    payload = row_format.to_payload(dataclasses.replace(memory, text=""))
    payload.pop("text_lemmatized", None)
    payload["data"] = memory.text
    return payload


def _row(memory: StoredMemory, score: float | None = None) -> OutputData:
    return OutputData(id=memory.id, score=score, payload=mem0_payload(memory))


def _widened(top_k: int, narrowed: bool, fetch: Callable[[int], tuple[list[_T], int]]) -> list[_T]:
    """``top_k`` kept rows: ``fetch(n)`` reads ``n`` rows and returns those kept and how many it read; while
    the residual dropped some and the store has more, read 4x as many (at most :data:`MAX_FETCH`)."""
    if top_k <= 0:
        return []
    size = top_k if not narrowed else min(max(top_k * 4, top_k + 50), max(top_k, MAX_FETCH))
    while True:
        kept, read = fetch(size)
        if not narrowed or len(kept) >= top_k or read < size or size >= max(top_k, MAX_FETCH):
            return kept[:top_k]
        size = min(size * 4, max(top_k, MAX_FETCH))


class StoreVectorStore:
    """mem0's ``VectorStoreBase`` on one store collection, through the typed port (see the module docstring).

    ``soft_delete``: ``delete`` marks the row deleted (the server's semantics: history and restore keep
    working) instead of erasing it. ``owners`` is None inside the server, where every call is scoped.
    """

    def __init__(
        self,
        store: StorePort,
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
    def _scope(user: str | None) -> Scope:
        """The caller's scope: the engine's, else all of the user's rows named by the call."""
        call = CALL.get()
        if call is not None and call.scope is not None:
            return call.scope
        if not user:
            raise Mem0ScopeError(NO_USER)
        return Scope(APP_CLIENT, user, shared=True)

    @staticmethod
    def _where(filters: Mapping[str, Any] | None) -> tuple[Selection, Scope, MemoryQuery]:
        """``filters`` as the store's arguments: the scope (the engine's, else the user's and, when named, the
        client's) and the query (the client too when the scope does not already fix it), plus the residual."""
        call = CALL.get()
        fixed = call.scope if call is not None else None
        sel = select(filters, fixed.user_id if fixed is not None else None)
        if fixed is None and sel.user_id and sel.client and _is_identity(sel.client):
            return sel, Scope(sel.client, sel.user_id), sel.query
        scope = StoreVectorStore._scope(sel.user_id)
        if sel.client and (scope.shared or scope.client_name != sel.client):
            return sel, scope, dataclasses.replace(sel.query, client=sel.client)
        return sel, scope, sel.query

    def _resolve(self, vector_id: Any) -> tuple[str | None, str] | None:
        """(owner, row id) of an id mem0 holds; None when unknown."""
        key = str(vector_id)
        call = CALL.get()
        if call is not None:
            return None, call.aliases.get(key, key)
        if self.owners is None:
            return None
        return self.owners.get(key)

    def _remember(self, rows: Sequence[StoredMemory]) -> None:
        if self.owners is not None and CALL.get() is None:
            self.owners.remember({row.id: (row.user_id, row.id) for row in rows if row.user_id})

    @staticmethod
    def _memory(memory_id: str, payload: Mapping[str, Any], scope: Scope) -> StoredMemory:
        """mem0's payload as the memory to store: the row format's reading of it (a row always gets a creation
        time; it never moves to another user)."""
        owner = payload.get("user_id", scope.user_id)
        if owner != scope.user_id:
            raise Mem0ScopeError(f"memory {memory_id} belongs to {scope.user_id!r}; it cannot move to {owner!r}")
        row = {**payload, "user_id": scope.user_id}
        if not row.get("created_at"):
            row["created_at"] = now_iso()
        return row_format.to_memory(memory_id, row)

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
        scope = self._scope(user)
        new: list[NewRow] = []
        for key, vector, payload in zip(ids, vectors, payloads, strict=True):
            digest = payload.get("hash")
            dedup: str | None = None  # entity rows and text-less rows have no duplicate rule
            if isinstance(digest, str) and digest:
                dedup = call.dedup_key(digest) if call is not None else standalone_dedup_key(payload, digest)
            new.append(NewRow(self._memory(key, payload, scope), _unit(vector) or [], dedup))
        if self.owners is not None and call is None:
            self.owners.put({key: (user, key) for key in ids})  # before the rows: no row without its owner
        try:
            stored = self.store.put(scope, new)
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
        sel, scope, where = self._where(filters)
        vector = _unit(vectors) or []

        def fetch(size: int) -> tuple[list[OutputData], int]:
            found = self.store.nearest(scope, vector, size, states=sel.states, query=where) if sel.states else []
            self._remember(found)
            rows = [_row(m, max(0.0, float(m.score or 0.0))) for m in found]
            return [r for r, m in zip(rows, found, strict=True) if sel.accepts(r.payload or {}, m.state)], len(found)

        rows = _widened(max(0, int(top_k)), bool(sel.residual), fetch)
        call = CALL.get()
        if call is not None and call.searched is None:
            call.searched = len(rows)
        self._last_search.value = (json.dumps(filters or {}, sort_keys=True, default=str), [r.id for r in rows])
        return rows

    def keyword_search(
        self, query: str, top_k: int = 5, filters: Mapping[str, Any] | None = None
    ) -> list[OutputData] | None:
        """BM25 over the preceding search's candidates (mem0 scores only those), else over the scope.

        Hits carry ``id`` and ``score`` (what mem0 reads of them), no payload."""
        last = getattr(self._last_search, "value", None)
        key = json.dumps(filters or {}, sort_keys=True, default=str)
        candidates = last[1] if last is not None and last[0] == key else None
        self._last_search.value = None
        sel, scope, where = self._where(filters)
        if not sel.states:
            return []
        answered = True

        def fetch(size: int) -> tuple[list[OutputData], int]:
            nonlocal answered
            hits = self.store.keyword_hits(scope, query, size, states=sel.states, query=where, candidates=candidates)
            if hits is None:
                answered = False
                return [], 0
            read = len(hits)
            if sel.residual and candidates is None:  # candidates came from a search under the same filters
                rows = self.store.read(scope, [hit.memory_id for hit in hits])
                hits = [
                    hit
                    for hit in hits
                    if hit.memory_id in rows
                    and sel.accepts(mem0_payload(rows[hit.memory_id]), rows[hit.memory_id].state)
                ]
            return [OutputData(id=hit.memory_id, score=hit.score) for hit in hits], read

        found = _widened(max(0, int(top_k)), bool(sel.residual) and candidates is None, fetch)
        return found if answered else None

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
        memory = self.store.read_one(self._scope(user), row_id)
        if memory is None or memory.state != "active":
            return None
        return _row(memory)

    def update(
        self, vector_id: Any, vector: Sequence[float] | None = None, payload: Mapping[str, Any] | None = None
    ) -> None:
        found = self._resolve(vector_id)
        if found is None:
            raise ValueError(f"Memory with id {vector_id} not found")
        user, row_id = found
        call = CALL.get()
        try:
            scope = self._scope(user)
            memory = self._memory(row_id, payload, scope) if payload is not None else None
            key: str | None = None
            digest = payload.get("hash") if payload is not None else None
            if payload is not None and memory is not None and memory.state == "active" and isinstance(digest, str):
                key = call.dedup_key(digest) if call is not None else standalone_dedup_key(payload, digest)
            self.store.rewrite(scope, RowChange(row_id, memory, _unit(vector), dedup_key=key))
        except Exception as exc:
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
            memory = self.store.read_one(scope, row_id)
            if memory is None:
                return
            gone = dataclasses.replace(memory, state="deleted", updated_at=now_iso(), score=None)
            self.store.rewrite(scope, RowChange(row_id, gone, dedup_key=""))  # releases the text for a new add
            return
        self.store.remove(scope, [row_id])
        if self.owners is not None:
            self.owners.remove({str(vector_id), row_id})

    def list(self, filters: Mapping[str, Any] | None = None, top_k: int | None = None) -> list[list[OutputData]]:
        """``[rows]`` (wrapped once, as mem0 reads it), oldest first, at most ``top_k``."""
        limit = DEFAULT_LIST if top_k is None else max(0, int(top_k))
        sel, scope, where = self._where(filters)
        out: list[OutputData] = []
        cursor: str | None = None
        while len(out) < limit and sel.states:
            size = _PAGE if sel.residual else min(_PAGE, limit - len(out))
            page = self.store.page(scope, states=sel.states, query=where, limit=size, cursor=cursor)
            self._remember(page.items)
            rows = [(_row(m), m.state) for m in page.items]
            out.extend(row for row, state in rows if sel.accepts(row.payload or {}, state))
            cursor = page.next_cursor
            if cursor is None:
                break
        return [out[:limit]]

    def close(self) -> None:
        if self.close_store:
            self.store.close()
        if self.owners is not None:
            self.owners.close()
