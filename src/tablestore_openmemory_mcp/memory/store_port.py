"""What a memory store offers the repository, in the project's own types, the caller's scope passed explicitly.

Why: the scope used to travel to the stores in a ContextVar and as a filter dict in mem0's dialect; now every
call names the :class:`~..scope.Scope` (and the states and :class:`~.query_filters.MemoryQuery` it may see),
and each store builds its own query from them (embedded: SQL on user/client/state; Tablestore: the user's
primary-key range and search-index terms), checking what its index lacks row by row while it walks candidates.

**Scope fails closed**: a row outside the scope is absent (reads) or missing (writes), whatever its id.
Only active rows hold a dedup key (scope + content hash), kept on a strongly consistent path.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from tablestore_openmemory_mcp.memory.ports import State, StoredMemory
from tablestore_openmemory_mcp.memory.query_filters import MemoryQuery
from tablestore_openmemory_mcp.scope import Scope

#: How many memories there are per (client, state, day created).
Tally = dict[tuple[str | None, str, str], int]


@dataclass(frozen=True, slots=True)
class NewRow:
    """A memory to write with its vector; ``dedup_key``: write nothing when a live row in scope holds it."""

    memory: StoredMemory
    vector: Sequence[float]
    dedup_key: str | None = None


@dataclass(frozen=True, slots=True)
class RowChange:
    """One conditional change of a stored row: the new memory and/or vector.

    ``expected_updated_at``: only if the row still has it. ``dedup_key``: the key the row holds after the
    change (``""`` gives it up, ``None`` keeps the one it has)."""

    memory_id: str
    memory: StoredMemory | None = None
    vector: Sequence[float] | None = None
    expected_updated_at: str | None = None
    dedup_key: str | None = None


@dataclass(frozen=True, slots=True)
class RowPage:
    """Memories in a stable order and the opaque cursor of the next page (None at the end)."""

    items: list[StoredMemory]
    next_cursor: str | None


class KeywordHit(NamedTuple):
    """A keyword (BM25) score of one memory, raw: higher is better."""

    memory_id: str
    score: float


class StorePort(Protocol):
    """The store seam. Every method sees only ``scope``'s rows; an empty user id never gets this far."""

    def put(self, scope: Scope, rows: Sequence[NewRow]) -> list[str]:
        """Write rows in one call (all or none); per row, the id now holding it (a dedup key's holder)."""
        ...

    def read_one(self, scope: Scope, memory_id: str) -> StoredMemory | None:
        """One row by id (a single-row read), every state; None when missing or outside the scope."""
        ...

    def read(self, scope: Scope, memory_ids: Sequence[str]) -> dict[str, StoredMemory]:
        """Rows by id, every state, strongly consistent; missing and out-of-scope ids are absent."""
        ...

    def read_vectors(self, scope: Scope, memory_ids: Sequence[str]) -> dict[str, list[float]]:
        """Stored (unit) vectors by id; missing and out-of-scope ids are absent."""
        ...

    def holder(self, scope: Scope, dedup_key: str) -> StoredMemory | None:
        """The live row in scope holding ``dedup_key``, strongly consistent."""
        ...

    def rewrite(self, scope: Scope, change: RowChange) -> None:
        """One change; ``MemoryNotFound`` for a missing row, ``ConflictError`` when it changed since read."""
        ...

    def rewrite_many(self, scope: Scope, changes: Sequence[RowChange]) -> list[str]:
        """Several changes; the ids changed (conflicting or missing rows left out). A store error after some
        rows changed carries their ids in ``applied``."""
        ...

    def remove(self, scope: Scope, memory_ids: Sequence[str]) -> list[str]:
        """Erase rows; exactly the ids this call erased (retries included)."""
        ...

    def page(
        self, scope: Scope, *, states: Collection[State], query: MemoryQuery, limit: int, cursor: str | None = None
    ) -> RowPage:
        """A page in a stable order; rows added or deleted between pages never make another repeat or vanish."""
        ...

    def page_total(self, scope: Scope, *, states: Collection[State], query: MemoryQuery) -> int:
        """The total shown with a page (Tablestore: the index's count with this process's writes reconciled)."""
        ...

    def created_window(
        self,
        scope: Scope,
        *,
        states: Collection[State],
        newest_first: bool,
        offset: int,
        limit: int,
        since: str | None = None,
        until: str | None = None,
        query: MemoryQuery = ...,
    ) -> tuple[list[StoredMemory], int]:
        """An offset page in (created_at, id) order and how many match; ``since``/``until`` bound created_at,
        ``query`` narrows as everywhere (its since/until are on the event time)."""
        ...

    def tallies(self, scope: Scope) -> Tally:
        """Rows in scope (every state) per (client, state, day created)."""
        ...

    def nearest(
        self, scope: Scope, vector: Sequence[float], limit: int, *, states: Collection[State], query: MemoryQuery
    ) -> list[StoredMemory]:
        """Nearest rows by cosine similarity (``score``), current text, best first, up to ``limit`` matches."""
        ...

    def keyword_hits(
        self,
        scope: Scope,
        text: str,
        limit: int,
        *,
        states: Collection[State],
        query: MemoryQuery,
        candidates: Sequence[str] | None = None,
    ) -> list[KeywordHit] | None:
        """BM25 scores, statistics from the scope only; with ``candidates`` only those rows are scored."""
        ...

    def probe(self) -> None:
        """One cheap read, quickly: readiness (raises what the store raises)."""
        ...

    def close(self) -> None: ...
