"""The store seam: what every memory store offers beyond mem0's ``VectorStoreBase``.

mem0 drives stores through ``VectorStoreBase``. Two things it lacks matter to this server:

* **Scope enforcement by id.** mem0 fetches, updates and deletes by bare id. The memory service
  sets :data:`ACTIVE_SCOPE` to the caller's identity filters for the duration of each call, and
  every store treats a row outside that scope as if it did not exist. One user can therefore never
  reach another user's memory, even with a guessed or leaked id.
* **Complete, batched operations.** ``list(filters, top_k=None)`` returns every row in scope (no cap),
  and ``delete_many(ids)`` removes many rows in as few round trips as the backend allows.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from contextvars import ContextVar
from typing import Any

from pydantic import BaseModel

#: Identity filters of the call in progress, e.g. ``{"user_id": "u1", "agent_id": "cline"}``.
#: ``None`` means "no scope restriction" (only used by maintenance code and tests).
ACTIVE_SCOPE: ContextVar[dict[str, str] | None] = ContextVar("ACTIVE_SCOPE", default=None)


class OutputData(BaseModel):
    """One stored row as mem0 expects it: ``id``, ``score`` (higher is better) and ``payload``."""

    id: str
    score: float | None = None
    payload: dict[str, Any] | None = None


def in_active_scope(payload: dict[str, Any] | None) -> bool:
    """True when ``payload`` belongs to the scope of the call in progress (or no scope is set)."""
    scope = ACTIVE_SCOPE.get()
    if scope is None:
        return True
    if not payload:
        return False
    return all(payload.get(key) == value for key, value in scope.items())


class MemoryStore(ABC):
    """The methods mem0 calls on a vector store (``mem0.vector_stores.base.VectorStoreBase``), plus ours.

    Our stores do not inherit mem0's class: importing mem0 writes files, and importing a store module
    must not. mem0 duck-types stores; ``tests/test_mem0_bridge.py`` checks this class still covers every
    abstract method of mem0's ``VectorStoreBase``.
    """

    @abstractmethod
    def create_col(self, name: Any, vector_size: Any, distance: Any) -> Any: ...

    @abstractmethod
    def insert(self, vectors: Any, payloads: Any = None, ids: Any = None) -> Any: ...

    @abstractmethod
    def search(self, query: Any, vectors: Any, top_k: int = 5, filters: Any = None) -> Any: ...

    @abstractmethod
    def delete(self, vector_id: Any) -> Any: ...

    @abstractmethod
    def update(self, vector_id: Any, vector: Any = None, payload: Any = None) -> Any: ...

    @abstractmethod
    def get(self, vector_id: Any) -> Any: ...

    @abstractmethod
    def list_cols(self) -> Any: ...

    @abstractmethod
    def delete_col(self) -> Any: ...

    @abstractmethod
    def col_info(self) -> Any: ...

    @abstractmethod
    def list(self, filters: Any = None, top_k: Any = None) -> Any: ...

    @abstractmethod
    def reset(self) -> Any: ...

    @abstractmethod
    def keyword_search(self, query: str, top_k: int = 5, filters: Any = None) -> Any: ...

    @abstractmethod
    def delete_many(self, ids: Any) -> int: ...

    def search_batch(self, queries: Any, vectors_list: Any, top_k: int = 1, filters: Any = None) -> Any:
        return [self.search(q, v, top_k=top_k, filters=filters) for q, v in zip(queries, vectors_list, strict=True)]
