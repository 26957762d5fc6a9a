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
