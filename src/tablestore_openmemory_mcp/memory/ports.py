"""What the memory flow needs from the outside world, in the project's own types.

The classic flow (:mod:`.flow`) and the service talk only to these protocols. ``repository.py`` implements
:class:`MemoryRepository` on the typed store port (:mod:`.store_port`); tests use an in-memory fake.
Every repository method takes the caller's
:class:`~tablestore_openmemory_mcp.scope.Scope` explicitly: there is no call without one.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, get_args

from tablestore_openmemory_mcp.scope import Scope

if TYPE_CHECKING:  # query_filters reads StoredMemory from here
    from tablestore_openmemory_mcp.memory.query_filters import MemoryQuery

State = Literal["active", "paused", "archived", "deleted"]
ALL_STATES: tuple[State, ...] = get_args(State)
#: What the owner's view shows unless asked otherwise: everything but deleted memories.
VISIBLE_STATES: tuple[State, ...] = ("active", "paused", "archived")
Source = Literal["mcp", "rest", "import", "migration"]


@dataclass(frozen=True, slots=True)
class StoredMemory:
    """One memory as stored: its text, owner, client and timestamps (ISO 8601, UTC)."""

    id: str
    text: str
    user_id: str
    client: str | None
    created_at: str
    updated_at: str
    hash: str
    state: State = "active"
    categories: tuple[str, ...] = ()
    score: float | None = None  # relevance in [0, 1]; set by search only
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class NewMemory:
    """A memory to store. ``id`` and timestamps are given only when importing or migrating."""

    text: str
    vector: Sequence[float]
    reason: str | None = None
    id: str | None = None
    created_at: str | None = None
    updated_at: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Origin:
    """Who caused a change, recorded with every history event."""

    source: Source = "mcp"
    model: str | None = None  # the LLM that decided, for LLM decisions
    reason: str | None = None  # the LLM's one-line reason, when it gave one


@dataclass(frozen=True, slots=True)
class HistoryRecord:
    """One event in a memory's life, oldest first when listed."""

    memory_id: str
    event: str  # ADD | UPDATE | DELETE | STATE | ...
    old_memory: str | None
    new_memory: str | None
    at: str
    client: str | None = None
    source: str = "mcp"
    model: str | None = None
    reason: str | None = None
    old_state: str | None = None
    new_state: str | None = None


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a list, the number of memories in scope, and the cursor of the next page."""

    items: list[StoredMemory]
    total: int
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class Added:
    """The outcome of storing one :class:`NewMemory`: the memory now holding the text, and whether it is new."""

    memory: StoredMemory
    created: bool


@dataclass(frozen=True, slots=True)
class Purged:
    """What a purge erased: the memories, and how many history and access-log entries went with them."""

    memory_ids: list[str]
    history_events: int
    access_entries: int


class MemoryRepository(Protocol):
    """The store seam as the flow sees it. All methods are blocking; the service runs them in threads."""

    def get(self, scope: Scope, memory_id: str) -> StoredMemory | None: ...

    def get_many(self, scope: Scope, memory_ids: Sequence[str]) -> dict[str, StoredMemory]:
        """Current rows, strongly consistent (never a deleted row, never replaced text)."""
        ...

    def list_page(
        self,
        scope: Scope,
        *,
        limit: int,
        cursor: str | None = None,
        states: Collection[State] = ...,
        where: MemoryQuery | None = None,
    ) -> Page:
        """A page of memories in ``states`` (active only by default: what MCP tools see), narrowed by ``where``."""
        ...

    def nearest(self, scope: Scope, vector: Sequence[float], limit: int) -> list[StoredMemory]:
        """Most similar memories (``score`` = cosine similarity), re-read from the table."""
        ...

    def search(
        self,
        scope: Scope,
        query: str,
        vector: Sequence[float],
        limit: int,
        min_score: float | None,
        states: Collection[State] = ...,
        where: MemoryQuery | None = None,
    ) -> list[StoredMemory]:
        """Hybrid (vector + keyword) search; ``score`` is the calibrated 0-1 relevance users see."""
        ...

    def find_exact(self, scope: Scope, text: str) -> StoredMemory | None:
        """The memory in scope with exactly this text, on a strongly consistent path."""
        ...

    def add(self, scope: Scope, items: Sequence[NewMemory], origin: Origin) -> list[Added]:
        """Store memories in one write; an exact duplicate in scope is returned instead (``created=False``)."""
        ...

    def update(
        self, scope: Scope, current: StoredMemory, text: str, vector: Sequence[float], origin: Origin
    ) -> StoredMemory:
        """Replace ``current``'s text if it is unchanged since read (else ``ConflictError``)."""
        ...

    def delete(
        self, scope: Scope, memory_ids: Sequence[str], origin: Origin, *, eligible: Collection[State] = ...
    ) -> list[StoredMemory]:
        """Soft-delete memories (in ``eligible`` states, active by default); returns exactly those this call deleted."""
        ...

    def set_state(
        self,
        scope: Scope,
        memory_ids: Sequence[str],
        state: State,
        origin: Origin,
        *,
        eligible: Collection[State] = ...,
    ) -> list[StoredMemory]:
        """Move memories to ``state``; returns those this call changed (each transition is recorded)."""
        ...

    def purge(self, scope: Scope, memory_ids: Sequence[str]) -> Purged:
        """Erase memories with their history and access log."""
        ...

    def ensure_recorded(self, scope: Scope, memory: StoredMemory, origin: Origin) -> None:
        """Make sure an existing memory has its ADD event (a writer may have died before recording it)."""
        ...

    def app_paused(self, scope: Scope) -> bool:
        """Whether the scope's client is paused for its user (its MCP writes are refused)."""
        ...

    def record_access(self, scope: Scope, memories: Sequence[StoredMemory], query: str | None) -> None:
        """Note read hits in the access log, off the request path."""
        ...

    def delete_all(self, scope: Scope, origin: Origin) -> int: ...

    def history(self, scope: Scope, memory_id: str) -> list[HistoryRecord]:
        """A memory's events, also after it was deleted; empty when the id is not the caller's."""
        ...

    def close(self) -> None: ...


class HistoryLog(Protocol):
    """Where history events live: beside the memories, in the same store, scoped by user.

    Records carry the client, so a scoped reader can tell whose memory it was even after deletion.
    """

    def append(self, user_id: str, records: Sequence[HistoryRecord]) -> None: ...

    def for_memory(self, user_id: str, memory_id: str) -> list[HistoryRecord]: ...

    def erase(self, user_id: str, memory_ids: Sequence[str]) -> int: ...

    def close(self) -> None: ...


class Embedder(Protocol):
    """Turns text into vectors (offline or an OpenAI-compatible service)."""

    name: str

    def embed(self, text: str, memory_action: Literal["add", "search", "update"] | None = None) -> list[float]: ...

    def embed_batch(self, texts: list[str], memory_action: str = "add") -> list[list[float]]: ...


class ChatModel(Protocol):
    """An LLM that answers with a JSON object."""

    model: str

    def complete_json(self, messages: list[dict[str, str]]) -> dict[str, Any]: ...
