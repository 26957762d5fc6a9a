"""The owner's view of their memories: every state and client, filters, states, apps and statistics.

MCP tools see a client's active memories; the REST API and the web page act for the *user* who owns
them: across clients, in every state, with history and access log. Everything here is scoped to one
user id that the edge (token binding, or a loopback page) has already authorized.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from tablestore_openmemory_mcp.errors import MemoryNotFound, UserInputError
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
from tablestore_openmemory_mcp.memory.query_filters import METADATA_KEY, MemoryQuery
from tablestore_openmemory_mcp.scope import Scope

Sort = Literal["created_at", "-created_at", "updated_at", "-updated_at", "memory", "-memory", "score"]
SORTS: tuple[str, ...] = ("created_at", "-created_at", "updated_at", "-updated_at", "memory", "-memory", "score")
REST_CLIENT = "rest"
MAX_SEARCH_HITS = 1000


class OwnerRepository(MemoryRepository, Protocol):
    """What the owner's view needs beyond the flow's repository."""

    def iter_all(
        self, scope: Scope, batch: int = 500, states: Collection[State] = ...
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
    since: str | None = None  # ISO date or time; created_at >= since
    until: str | None = None  # created_at < until (a date means "before that day ends")
    sort: str = "-created_at"
    page: int = 1
    size: int = 20
    min_score: float | None = None  # a search's relevance cutoff; None: the server's (0 shows weaker matches)
    metadata: Mapping[str, Any] | None = None  # tags given on add: every key must match (match_any: one)
    match_any: bool = False


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
        if not hasattr(repository, "iter_all"):
            raise UserInputError("this store does not support the owner's view")
        return repository  # type: ignore[return-value]

    def _all(self, scope: Scope, states: Collection[State]) -> list[StoredMemory]:
        return [memory for page in self.repository.iter_all(scope, states=states) for memory in page]

    def browse(self, request: BrowseRequest) -> BrowsePage:
        if request.sort not in SORTS:
            raise UserInputError(f"sort must be one of {', '.join(SORTS)}")
        if request.page < 1 or not 1 <= request.size <= 200:
            raise UserInputError("page starts at 1 and size is between 1 and 200")
        scope = user_scope(request.user_id, request.client)
        start = (request.page - 1) * request.size
        plain = not request.query and not request.category and not request.metadata
        if plain and request.sort in ("created_at", "-created_at", "score"):
            page = self.repository.created_page(
                scope,
                request.states,
                newest_first=request.sort != "created_at",
                offset=start,
                limit=request.size,
                since=request.since or None,
                until=_until_bound(request.until),
            )
            if page is not None:  # the store's ordered index answered; otherwise read and sort below
                return BrowsePage(page[0], page[1], request.page, request.size)
        if request.query:
            vector = self.flow.embedder.embed(request.query, "search")
            tags = MemoryQuery(metadata=request.metadata or {}, match_any=request.match_any)
            where = {"where": tags} if tags else {}
            found = self.repository.search(
                scope,
                request.query,
                vector,
                MAX_SEARCH_HITS,
                self.flow.min_score if request.min_score is None else request.min_score,
                states=request.states,
                **where,
            )
            sort = request.sort if request.sort != "-created_at" else "score"
        else:
            found = self._all(scope, request.states)
            sort = request.sort if request.sort != "score" else "-created_at"
        kept = [m for m in found if _matches(m, request)]
        kept = _sorted(kept, sort)
        return BrowsePage(kept[start : start + request.size], len(kept), request.page, request.size)

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


def _matches(memory: StoredMemory, request: BrowseRequest) -> bool:
    if request.category and request.category not in memory.categories:
        return False
    if request.metadata:
        tags = memory.metadata.get(METADATA_KEY)
        tags = tags if isinstance(tags, Mapping) else {}
        hits = [key in tags and tags[key] == value for key, value in request.metadata.items()]
        if not (any(hits) if request.match_any else all(hits)):
            return False
    if request.since and memory.created_at < request.since:
        return False
    until = _until_bound(request.until)
    return until is None or memory.created_at < until


def _until_bound(until: str | None) -> str | None:
    """The exclusive upper bound of ``created_at``: a bare date means "before that day ends"."""
    if not until:
        return None
    return until + ("T99" if len(until) == 10 else "")


def _sorted(memories: list[StoredMemory], sort: str) -> list[StoredMemory]:
    if sort == "score":
        return sorted(memories, key=lambda m: -(m.score or 0.0))
    key = sort.lstrip("-")
    reverse = sort.startswith("-")
    if key == "memory":
        return sorted(memories, key=lambda m: m.text.casefold(), reverse=reverse)
    return sorted(memories, key=lambda m: (getattr(m, key), m.id), reverse=reverse)
