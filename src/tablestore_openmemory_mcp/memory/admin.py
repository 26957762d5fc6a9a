"""The owner's view of their memories: every state and client, filters, states, apps and statistics.

MCP tools see a client's active memories; the REST API and the web page act for the *user* who owns
them: across clients, in every state, with history and access log. Everything here is scoped to one
user id that the edge (token binding, or a loopback page) has already authorized.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

from tablestore_openmemory_mcp.errors import MemoryNotFound, UserInputError
from tablestore_openmemory_mcp.memory.as_of import clean_as_of, memories_at, search_at
from tablestore_openmemory_mcp.memory.flow import ClassicFlow
from tablestore_openmemory_mcp.memory.ports import (
    ALL_STATES,
    VISIBLE_STATES,
    HistoryRecord,
    MemoryRepository,
    Origin,
    State,
    StoredMemory,
)
from tablestore_openmemory_mcp.memory.query_filters import MemoryQuery, build_query
from tablestore_openmemory_mcp.scope import Scope

Sort = Literal["created_at", "-created_at", "updated_at", "-updated_at", "memory", "-memory", "score"]
SORTS: tuple[str, ...] = ("created_at", "-created_at", "updated_at", "-updated_at", "memory", "-memory", "score")
REST_CLIENT = "rest"
MAX_SEARCH_HITS = 1000


@runtime_checkable
class OwnerRepository(MemoryRepository, Protocol):
    """What the owner's view needs beyond the flow's repository (checked at run time: the flow may hold another)."""

    def iter_all(
        self, scope: Scope, batch: int = 500, states: Collection[State] = ..., where: MemoryQuery | None = None
    ) -> Iterator[list[StoredMemory]]: ...

    def access_for(self, user_id: str, memory_id: str) -> list[HistoryRecord]: ...

    def tally(self, scope: Scope) -> dict[tuple[str | None, str, str], int]: ...

    def created_page(
        self,
        scope: Scope,
        states: Collection[State],
        *,
        newest_first: bool,
        offset: int,
        limit: int,
        since: str | None = None,
        until: str | None = None,
        where: MemoryQuery | None = None,
    ) -> tuple[list[StoredMemory], int] | None: ...

    def app_state(self, user_id: str, client: str) -> tuple[bool, str | None]: ...

    def set_app_paused(self, user_id: str, client: str, paused: bool) -> None: ...


@dataclass(frozen=True, slots=True)
class BrowseRequest:
    user_id: str
    client: str | None = None
    states: tuple[State, ...] = VISIBLE_STATES
    query: str | None = None
    category: str | None = None
    since: str | None = None  # ISO 8601; the memory's event time (else its creation time) >= since
    until: str | None = None  # ... < until (a bare date is that day's start, as over MCP)
    sort: str = "-created_at"
    page: int = 1
    size: int = 20
    min_score: float | None = None  # a search's relevance cutoff; None: the server's (0 shows weaker matches)
    metadata: Mapping[str, Any] | None = None  # tags given on add: every key must match (match_any: one)
    match_any: bool = False
    as_of: str | None = None  # ISO 8601: the memories as they were then, from their history (memory/as_of.py)


@dataclass(frozen=True, slots=True)
class BrowsePage:
    items: list[StoredMemory]
    total: int
    page: int
    size: int


@dataclass(frozen=True, slots=True)
class MemoryDetail:
    memory: StoredMemory
    history: list[HistoryRecord]
    access_log: list[HistoryRecord]


@dataclass(frozen=True, slots=True)
class AppSummary:
    name: str
    memories: int
    paused: bool
    last_access: str | None = None
    by_state: dict[str, int] = field(default_factory=dict)


def user_scope(user_id: str, client: str | None = None) -> Scope:
    """All of a user's memories (``client=None``) or one client's."""
    return Scope(client or REST_CLIENT, user_id, shared=client is None)


class Admin:
    """Synchronous owner operations; :class:`~.service.MemoryService` runs them in worker threads."""

    def __init__(self, flow: ClassicFlow) -> None:
        self.flow = flow

    @property
    def repository(self) -> OwnerRepository:
        repository = self.flow.repository
        if not isinstance(repository, OwnerRepository):
            raise UserInputError("this store does not support the owner's view")
        return repository

    def _all(self, scope: Scope, states: Collection[State], where: MemoryQuery) -> list[StoredMemory]:
        """Every memory in scope that ``where`` accepts (the store narrows its read where it can)."""
        pages = self.repository.iter_all(scope, states=states, where=where or None)
        return [memory for page in pages for memory in page if where.accepts(memory)]

    def browse(self, request: BrowseRequest) -> BrowsePage:
        """The MCP read tools' filters with the same names and meaning (:func:`build_query`), plus states,
        sorts and offset pages; each bad argument is a :class:`UserInputError` naming it."""
        if request.sort not in SORTS:
            raise UserInputError(f"sort must be one of {', '.join(SORTS)}")
        if request.page < 1 or not 1 <= request.size <= 200:
            raise UserInputError("page starts at 1 and size is between 1 and 200")
        where = build_query(
            category=request.category,
            since=request.since,
            until=request.until,
            metadata=request.metadata,
            match_any=request.match_any,
        )
        at = clean_as_of(request.as_of)
        scope = user_scope(request.user_id, request.client)
        start = (request.page - 1) * request.size
        if at:
            found, sort = self._found_at(request, scope, where, at), request.sort
        elif not request.query and request.sort in ("created_at", "-created_at", "score"):
            page = self.repository.created_page(
                scope,
                request.states,
                newest_first=request.sort != "created_at",
                offset=start,
                limit=request.size,
                where=where or None,
            )
            if page is not None:  # the store answered from its indexes, filters included
                return BrowsePage(page[0], page[1], request.page, request.size)
            found, sort = self._all(scope, request.states, where), request.sort
        elif request.query:
            vector = self.flow.embedder.embed(request.query, "search")
            found = self.repository.search(
                scope,
                request.query,
                vector,
                MAX_SEARCH_HITS,
                self._min_score(request),
                states=request.states,
                where=where or None,
            )
            sort = request.sort
        else:  # other sorts (updated_at, text): every memory in scope, filtered and sorted here
            found = self._all(scope, request.states, where)
            sort = request.sort
        if request.query:
            sort = sort if sort != "-created_at" else "score"
        else:
            sort = sort if sort != "score" else "-created_at"
        kept = _sorted(found, sort)
        return BrowsePage(kept[start : start + request.size], len(kept), request.page, request.size)

    def _min_score(self, request: BrowseRequest) -> float | None:
        return self.flow.min_score if request.min_score is None else request.min_score

    def _found_at(self, request: BrowseRequest, scope: Scope, where: MemoryQuery, at: str) -> list[StoredMemory]:
        """The scope's memories as they were at ``at`` (their state then must be one of ``states``)."""
        repository: Any = self.repository
        if request.query:
            vector = self.flow.embedder.embed(request.query, "search")
            name = str(getattr(self.flow.embedder, "name", ""))
            found = search_at(
                repository,
                self.flow.embedder,
                name,
                scope,
                request.query,
                vector,
                at,
                MAX_SEARCH_HITS,
                self._min_score(request),
                where or None,
                request.states,
            )
        else:
            found = memories_at(repository, scope, at, where or None, request.states)
        if set(request.states) == {"active"}:  # like today's active-only reads: paused apps' memories hidden
            paused = {
                c for c in {m.client for m in found if m.client} if self.repository.app_state(request.user_id, c)[0]
            }
            found = [m for m in found if m.client not in paused]
        return found

    def owner_scope(self, user_id: str, memory_id: str) -> Scope:
        """The (client, user) scope a memory was written in, so edits keep its client."""
        memory = self.repository.get(user_scope(user_id), memory_id)
        if memory is None or memory.state == "deleted":
            raise MemoryNotFound(f"No memory with id {memory_id} exists among your memories")
        return Scope(memory.client or REST_CLIENT, user_id)

    def detail(self, user_id: str, memory_id: str) -> MemoryDetail:
        scope = user_scope(user_id)
        memory = self.repository.get(scope, memory_id)
        if memory is None:
            raise MemoryNotFound(f"No memory with id {memory_id} exists among your memories")
        access = self.repository.access_for(user_id, memory_id)
        return MemoryDetail(memory, self.repository.history(scope, memory_id), access[-50:][::-1])

    def access_log(self, user_id: str, memory_id: str, page: int, size: int) -> tuple[list[HistoryRecord], int]:
        if self.repository.get(user_scope(user_id), memory_id) is None:
            raise MemoryNotFound(f"No memory with id {memory_id} exists among your memories")
        entries = self.repository.access_for(user_id, memory_id)[::-1]
        start = (page - 1) * size
        return entries[start : start + size], len(entries)

    def set_state(self, user_id: str, memory_ids: Sequence[str], state: State) -> list[str]:
        if state not in ALL_STATES:
            raise UserInputError(f"state must be one of {', '.join(ALL_STATES)}")
        changed = self.repository.set_state(user_scope(user_id), memory_ids, state, Origin(source="rest"))
        return [memory.id for memory in changed]

    def remove(self, user_id: str, memory_ids: Sequence[str], purge: bool) -> dict[str, object]:
        scope = user_scope(user_id)
        if purge:
            erased = self.repository.purge(scope, memory_ids)
            return {
                "purged": erased.memory_ids,
                "history_events": erased.history_events,
                "access_entries": erased.access_entries,
                "not_found": [i for i in memory_ids if i not in set(erased.memory_ids)],
            }
        deleted = [
            m.id for m in self.repository.delete(scope, memory_ids, Origin(source="rest"), eligible=VISIBLE_STATES)
        ]
        return {"deleted": deleted, "not_found": [i for i in memory_ids if i not in set(deleted)]}

    def apps(self, user_id: str) -> list[AppSummary]:
        counts: dict[str, Counter[str]] = defaultdict(Counter)
        for (client, state, _), n in self.repository.tally(user_scope(user_id)).items():
            counts[client or REST_CLIENT][state] += n
        out = []
        for name in sorted(counts):
            paused, _ = self.repository.app_state(user_id, name)
            by_state = dict(counts[name])
            live = sum(n for state, n in by_state.items() if state != "deleted")
            last = self._last_access(user_id, name)
            out.append(AppSummary(name, live, paused, last, by_state))
        return out

    def _last_access(self, user_id: str, client: str) -> str | None:
        entries = self.repository.access_for(user_id, "app:" + client)
        return entries[-1].at if entries else None

    def set_app_paused(self, user_id: str, client: str, paused: bool) -> AppSummary:
        Scope(client, user_id)  # validates the client name
        self.repository.set_app_paused(user_id, client, paused)
        for app in self.apps(user_id):
            if app.name == client:
                return app
        return AppSummary(client, 0, paused)

    def stats(self, user_id: str) -> dict[str, object]:
        by_state: Counter[str] = Counter()
        by_app: Counter[str] = Counter()
        per_day: dict[str, Counter[str]] = defaultdict(Counter)
        for (client, state, day), n in self.repository.tally(user_scope(user_id)).items():
            by_state[state] += n
            if state != "deleted":
                by_app[client or REST_CLIENT] += n
            per_day[day][client or REST_CLIENT] += n
        return {
            "total": sum(n for state, n in by_state.items() if state != "deleted"),
            "by_state": {state: by_state.get(state, 0) for state in ALL_STATES},
            "by_app": dict(sorted(by_app.items())),
            "added_per_day": [{"day": day, "by_app": dict(per_day[day])} for day in sorted(per_day) if day],
        }


def _sorted(memories: list[StoredMemory], sort: str) -> list[StoredMemory]:
    if sort == "score":
        return sorted(memories, key=lambda m: -(m.score or 0.0))
    key = sort.lstrip("-")
    reverse = sort.startswith("-")
    if key == "memory":
        return sorted(memories, key=lambda m: m.text.casefold(), reverse=reverse)
    return sorted(memories, key=lambda m: (getattr(m, key), m.id), reverse=reverse)
