"""The memory service: the async face of the classic flow that tools and the REST API call.

Every blocking call (LLM, embedder, store) runs in a worker thread, never on the event loop; the
flow itself serializes what must be (deciding, per scope).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, ParamSpec, Protocol, TypeVar

import anyio
import anyio.to_thread

from tablestore_openmemory_mcp.errors import AppPaused, DependencyError
from tablestore_openmemory_mcp.memory.admin import (
    Admin,
    AppSummary,
    BrowsePage,
    BrowseRequest,
    MemoryDetail,
)
from tablestore_openmemory_mcp.memory.categories import Categorizer
from tablestore_openmemory_mcp.memory.flow import ClassicFlow
from tablestore_openmemory_mcp.memory.ids import not_a_memory_id, split_memory_ids
from tablestore_openmemory_mcp.memory.ports import HistoryRecord, MemoryRepository, Origin, Source, State
from tablestore_openmemory_mcp.memory.query_filters import MemoryQuery
from tablestore_openmemory_mcp.memory.results import (
    AddResult,
    DeleteAllResult,
    DeleteResult,
    HistoryResult,
    ListResult,
    SearchResult,
    UpdateResult,
)
from tablestore_openmemory_mcp.progress import Report
from tablestore_openmemory_mcp.scope import Scope

T = TypeVar("T")
P = ParamSpec("P")


class Backups(Protocol):
    """One user's backup while the server runs; the wiring hands the job (:mod:`~..backup.online`) to the service,
    so the core never imports it."""

    def export(self, user_id: str) -> str: ...

    def import_file(self, path: str, user_id: str, mode: str) -> dict[str, object]: ...


class MemoryService:
    """Async facade over :class:`ClassicFlow`; one instance serves every scope."""

    def __init__(
        self,
        flow: ClassicFlow,
        repository: MemoryRepository,
        *,
        admin: Admin | None = None,
        worker_threads: int = 32,
        backups: Backups | None = None,
    ) -> None:
        self.flow = flow
        self.repository = repository
        self.backups = backups
        self.admin = admin if admin is not None else Admin(flow)
        self.categorizer: Categorizer | None = None
        self.background: list[Any] = []  # long-running jobs with stop(), e.g. the upgrade copy
        self._limiter = anyio.CapacityLimiter(worker_threads)
        self.in_flight = 0  # calls running now; shutdown waits for them (changed on the event loop only)

    def close(self) -> None:
        """Stop background work, then release the store's connections (at shutdown)."""
        for job in self.background:
            job.stop()
        if self.categorizer is not None:
            self.categorizer.close()
        self.repository.close()

    async def add(
        self,
        scope: Scope,
        text: str,
        infer: bool = True,
        source: Source = "mcp",
        extra: Mapping[str, Any] | None = None,
        progress: Report | None = None,
    ) -> AddResult:
        result = await self._run(self.flow.add, scope, text, infer, source, extra, progress)
        self._categorize(scope, [e.id for e in result.events if e.id and e.event in ("ADD", "UPDATE")])
        return result

    def _categorize(self, scope: Scope, memory_ids: list[str]) -> None:
        """Hand written memories to the background categorizer (never on the write path)."""
        if self.categorizer is not None and memory_ids:
            self.categorizer.submit(scope, memory_ids)

    async def search(
        self, scope: Scope, query: str, limit: int, where: MemoryQuery | None = None, as_of: str | None = None
    ) -> SearchResult:
        return await self._run(self.flow.search, scope, query, limit, where, as_of)

    async def list_memories(
        self,
        scope: Scope,
        limit: int,
        cursor: str | None = None,
        where: MemoryQuery | None = None,
        as_of: str | None = None,
    ) -> ListResult:
        return await self._run(self.flow.list_memories, scope, limit, cursor, where, as_of)

    async def delete(self, scope: Scope, memory_ids: Sequence[str], source: Source = "mcp") -> DeleteResult:
        return await self._run(self.flow.delete, scope, memory_ids, source)

    async def delete_all(self, scope: Scope, source: Source = "mcp") -> DeleteAllResult:
        return await self._run(self.flow.delete_all, scope, source)

    async def update(self, scope: Scope, memory_id: str, text: str, source: Source = "mcp") -> UpdateResult:
        result = await self._run(self.flow.update, scope, memory_id, text, source)
        self._categorize(scope, [memory_id])
        return result

    async def history(self, scope: Scope, memory_id: str) -> HistoryResult:
        return await self._run(self.flow.history, scope, memory_id)

    # --- the owner's view (REST API, web page): every state, every client ------------------------------
    async def browse(self, request: BrowseRequest) -> BrowsePage:
        return await self._run(self.admin.browse, request)

    async def detail(self, user_id: str, memory_id: str) -> MemoryDetail:
        return await self._run(self.admin.detail, user_id, memory_id)

    async def access_log(self, user_id: str, memory_id: str, page: int, size: int) -> tuple[list[HistoryRecord], int]:
        return await self._run(self.admin.access_log, user_id, memory_id, page, size)

    async def edit(self, user_id: str, memory_id: str, text: str) -> UpdateResult:
        scope = await self._run(self.admin.owner_scope, user_id, memory_id)
        result = await self._run(self.flow.update, scope, memory_id, text, "rest")
        self._categorize(scope, [memory_id])
        return result

    async def set_state(self, user_id: str, memory_ids: Sequence[str], state: State) -> list[str]:
        return await self._run(self.admin.set_state, user_id, memory_ids, state)

    async def remove(self, user_id: str, memory_ids: Sequence[str], purge: bool) -> dict[str, object]:
        return await self._run(self.admin.remove, user_id, memory_ids, purge)

    async def apps(self, user_id: str) -> list[AppSummary]:
        return await self._run(self.admin.apps, user_id)

    async def set_app_paused(self, user_id: str, client: str, paused: bool) -> AppSummary:
        return await self._run(self.admin.set_app_paused, user_id, client, paused)

    async def stats(self, user_id: str) -> dict[str, object]:
        return await self._run(self.admin.stats, user_id)

    async def resolve_ids(self, scope: Scope, values: object) -> tuple[list[str], list[tuple[str, str]]]:
        """``(ids to act on, refused (id, why))``: memory ids, plus odd ids only where a memory is stored under
        one in ``scope`` (earlier versions imported ids as given; those memories must stay erasable)."""
        ids, odd, refused = split_memory_ids(values)
        if odd:
            stored = await self._run(self.repository.get_many, scope, odd)
            ids += [i for i in odd if i in stored]
            refused += [(i[:60], not_a_memory_id(i)) for i in odd if i not in stored]
        return ids, refused

    async def set_scope_state(self, scope: Scope, memory_ids: Sequence[str], state: State) -> list[str]:
        """The MCP tool's state change: within the caller's (client, user) scope; refused for a paused app."""

        def change() -> list[str]:
            if self.repository.app_paused(scope):
                raise AppPaused(scope.client_name, scope.user_id)
            origin = Origin(source="mcp")
            return [m.id for m in self.repository.set_state(scope, memory_ids, state, origin)]

        return await self._run(change)

    def export_backup(self, user_id: str) -> str:
        """Blocking: write the user's backup zip to a temporary file and return its path (REST streams it)."""
        return self._backups().export(user_id)

    def import_backup(self, path: str, user_id: str, mode: str) -> dict[str, object]:
        """Blocking: import a backup file for ``user_id``; returns the summary (counts and skip reasons)."""
        return self._backups().import_file(path, user_id, mode)

    def _backups(self) -> Backups:
        if self.backups is None:
            raise DependencyError("backups are not available in this server (no backup job was configured)")
        return self.backups

    async def readiness(self) -> dict[str, str]:
        """What each dependency says right now: ``{"store": "ok"}`` or the store's error."""

        def probe() -> dict[str, str]:
            check = getattr(self.repository, "check", None)
            try:
                if callable(check):
                    check()
            except Exception as exc:
                return {"store": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"}
            return {"store": "ok"}

        return await anyio.to_thread.run_sync(probe, limiter=self._limiter)

    async def _run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn`` in a worker thread. The thread is not abandoned when the client goes away, so a
        started write always finishes and the store stays consistent."""
        self.in_flight += 1
        try:
            return await anyio.to_thread.run_sync(lambda: fn(*args, **kwargs), limiter=self._limiter)
        finally:
            self.in_flight -= 1
