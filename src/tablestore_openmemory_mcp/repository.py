"""The repository: :class:`~.memory.ports.MemoryRepository` on a typed store port and a history log.

What it adds to the store (:class:`~.memory.store_port.StorePort`): history events with the client, source,
model and reason; categories; the access log; exact-duplicate keys (:mod:`.stores.row_format`); hiding a paused
app's memories; and hybrid ranking (:mod:`.memory.scoring`). Rows, payloads and queries are the stores' own.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection, Iterator, Sequence
from dataclasses import replace
from datetime import datetime, timedelta

from tablestore_openmemory_mcp.errors import StoreError
from tablestore_openmemory_mcp.memory import scoring
from tablestore_openmemory_mcp.memory.audit import AccessLog, AppDirectory
from tablestore_openmemory_mcp.memory.ports import (
    ALL_STATES,
    Added,
    HistoryLog,
    HistoryRecord,
    NewMemory,
    Origin,
    Page,
    Purged,
    State,
    StoredMemory,
)
from tablestore_openmemory_mcp.memory.query_filters import EVERYTHING, MemoryQuery
from tablestore_openmemory_mcp.memory.store_port import NewRow, RowChange, StorePort
from tablestore_openmemory_mcp.scope import Scope
from tablestore_openmemory_mcp.stores.row_format import (
    dedup_key,
    lemmatize,
    new_memory_id,
    now_iso,
    text_hash,
)
from tablestore_openmemory_mcp.stores.tokenize import keyword_query

logger = logging.getLogger(__name__)

DELETE_BATCH = 200
ACTIVE: frozenset[State] = frozenset({"active"})


class StoreRepository:
    """:class:`~.memory.ports.MemoryRepository` on a :class:`~.memory.store_port.StorePort` and a history log.

    Reads default to active memories (what MCP tools see); the REST API names other states. Rows of a
    paused app are hidden from active reads for that user.
    """

    def __init__(
        self,
        store: StorePort,
        history: HistoryLog,
        *,
        embedder_name: str = "",
        apps: AppDirectory | None = None,
        access: AccessLog | None = None,
    ) -> None:
        self.store = store
        self.history_log = history
        self.embedder_name = embedder_name
        self.apps = apps
        self.access = access
        self._categories: dict[str, tuple[float, set[str]]] = {}

    def app_paused(self, scope: Scope) -> bool:
        return self.apps is not None and self.apps.is_paused(scope.user_id, scope.client_name)

    def _visible(self, scope: Scope, states: Collection[State], memories: list[StoredMemory]) -> list[StoredMemory]:
        """Drop memories of paused apps from active reads (per user)."""
        if self.apps is None or set(states) != ACTIVE or not memories:
            return memories
        clients = {m.client for m in memories if m.client}
        paused = {c for c in clients if self.apps.is_paused(scope.user_id, c)}
        return [m for m in memories if m.client not in paused] if paused else memories

    def known_categories(self, scope: Scope) -> set[str]:
        """The user's categories so far (cached a minute per user), so new ones reuse them."""
        cached = self._categories.get(scope.user_id)
        if cached is not None and time.monotonic() - cached[0] < 60.0:
            return cached[1]
        owner = Scope(scope.client_name, scope.user_id, shared=True)
        found = {c for page in self.iter_all(owner) for memory in page for c in memory.categories}
        self._categories[scope.user_id] = (time.monotonic(), found)
        return found

    def set_categories(self, scope: Scope, memory: StoredMemory) -> None:
        """Store a memory's categories if it is unchanged since read (categories don't bump updated_at)."""
        self.store.rewrite(scope, RowChange(memory.id, memory, expected_updated_at=memory.updated_at or None))
        cached = self._categories.get(scope.user_id)
        if cached is not None:
            cached[1].update(memory.categories)

    def ensure_recorded(self, scope: Scope, memory: StoredMemory, origin: Origin) -> None:
        """A writer that died between storing a memory and recording it leaves no ADD event; a later add of the
        same text (a client's retry) records it. The event's time is the memory's own, so retries record it once."""
        if not self.history_log.for_memory(scope.user_id, memory.id):
            record = self._record(
                memory.id, "ADD", None, memory.text, memory.created_at, scope, origin, client=memory.client
            )
            self._append_history(scope, [record])

    def access_for(self, user_id: str, memory_id: str) -> list[HistoryRecord]:
        return self.access.for_memory(user_id, memory_id) if self.access is not None else []

    def app_state(self, user_id: str, client: str) -> tuple[bool, str | None]:
        if self.apps is None:
            return False, None
        state = self.apps.state(user_id, client)
        return state.paused, state.changed_at

    def set_app_paused(self, user_id: str, client: str, paused: bool) -> None:
        if self.apps is None:
            raise StoreError("this server keeps no app settings")
        self.apps.set_paused(user_id, client, paused)

    def record_access(self, scope: Scope, memories: Sequence[StoredMemory], query: str | None) -> None:
        if self.access is not None and memories:
            self.access.record(scope.user_id, scope.client_name, [m.id for m in memories], query)

    # --- reads -----------------------------------------------------------------------------------
    def get(self, scope: Scope, memory_id: str) -> StoredMemory | None:
        return self.store.read_one(scope, memory_id)

    def get_many(self, scope: Scope, memory_ids: Sequence[str]) -> dict[str, StoredMemory]:
        return self.store.read(scope, memory_ids)

    def list_page(
        self,
        scope: Scope,
        *,
        limit: int,
        cursor: str | None = None,
        states: Collection[State] = ACTIVE,
        with_total: bool = True,
        where: MemoryQuery | None = None,
    ) -> Page:
        """One page and (``with_total``) how many memories there are in all; without, ``total`` is the page's.
        ``where``: the caller's narrowing (client, category, time, metadata) within the scope."""
        query = where or EVERYTHING
        if set(states) == ACTIVE and not scope.shared and self.app_paused(scope):
            return Page(items=[], total=0, next_cursor=None)  # a paused app's memories are hidden from it
        page = self.store.page(scope, states=states, query=query, limit=limit, cursor=cursor)
        total = self.store.page_total(scope, states=states, query=query) if with_total else len(page.items)
        return Page(items=self._visible(scope, states, page.items), total=total, next_cursor=page.next_cursor)

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
    ) -> tuple[list[StoredMemory], int] | None:
        """One page of the owner's memories by creation time and the total; ``None`` when paused apps
        must be hidden (active-only reads), which the caller then filters row by row."""
        if set(states) == ACTIVE:
            return None
        return self.store.created_window(
            scope,
            states=states,
            newest_first=newest_first,
            offset=offset,
            limit=limit,
            since=since,
            until=until,
            query=where or EVERYTHING,
        )

    def tally(self, scope: Scope) -> dict[tuple[str | None, str, str], int]:
        """Memories in scope (every state) per (client, state, day created)."""
        return self.store.tallies(scope)

    def nearest(self, scope: Scope, vector: Sequence[float], limit: int) -> list[StoredMemory]:
        found = self.store.nearest(scope, vector, limit, states=ACTIVE, query=EVERYTHING)
        return [memory for memory in found if memory.text]

    def search(
        self,
        scope: Scope,
        query: str,
        vector: Sequence[float],
        limit: int,
        min_score: float | None,
        states: Collection[State] = ACTIVE,
        where: MemoryQuery | None = None,
    ) -> list[StoredMemory]:
        narrow = where or EVERYTHING
        pool = max(limit * 4, scoring.SEARCH_POOL)
        semantic = self.store.nearest(scope, vector, pool, states=states, query=narrow)
        hits = (
            self.store.keyword_hits(
                scope,
                lemmatize(keyword_query(query)),
                pool,
                states=states,
                query=narrow,
                candidates=[m.id for m in semantic],
            )
            if semantic
            else None
        )
        keyword = {hit.memory_id: hit.score for hit in hits or ()}
        calibration = scoring.calibration_for(self.embedder_name, query)
        ranked = scoring.rank(
            [scoring.Candidate(m.id, float(m.score or 0.0), keyword.get(m.id)) for m in semantic],
            calibration=calibration,
            limit=limit,
            min_score=calibration.cutoff if min_score is None else min_score,
        )
        by_id = {memory.id: memory for memory in semantic}
        return self._visible(scope, states, [replace(by_id[hit.id], score=hit.score) for hit in ranked])

    def iter_all(
        self, scope: Scope, batch: int = 500, states: Collection[State] = ALL_STATES, where: MemoryQuery | None = None
    ) -> Iterator[list[StoredMemory]]:
        """Every memory in scope (all states by default; ``where`` narrows), a page at a time (export,
        browsing, migration).

        No total per page (a count for each page made reading 100k memories take 2 s longer)."""
        if set(states) == ACTIVE and not scope.shared and self.app_paused(scope):
            return
        cursor: str | None = None
        while True:
            page = self.store.page(scope, states=states, query=where or EVERYTHING, limit=batch, cursor=cursor)
            items = self._visible(scope, states, page.items)
            if items:
                yield items
            cursor = page.next_cursor
            if cursor is None:
                return

    def vectors(self, scope: Scope, memory_ids: Sequence[str]) -> dict[str, list[float]]:
        """Stored vectors of memories in scope (missing ids are absent)."""
        return self.store.read_vectors(scope, memory_ids)

    def find_exact(self, scope: Scope, text: str) -> StoredMemory | None:
        return self.store.holder(scope, dedup_key(scope, text_hash(text)))

    # --- writes ----------------------------------------------------------------------------------
    def add(self, scope: Scope, items: Sequence[NewMemory], origin: Origin) -> list[Added]:
        if not items:
            return []
        now = now_iso()
        fresh = [
            StoredMemory(
                id=item.id or new_memory_id(),
                text=item.text,
                user_id=scope.user_id,
                client=scope.client_name,
                created_at=item.created_at or now,
                updated_at=item.updated_at or item.created_at or now,
                hash=text_hash(item.text),
                metadata={"role": "user", **item.metadata},
            )
            for item in items
        ]
        stored_ids = self.store.put(
            scope,
            [
                NewRow(memory, item.vector, dedup_key(scope, memory.hash))
                for memory, item in zip(fresh, items, strict=True)
            ],
        )
        existing_ids = [sid for sid, memory in zip(stored_ids, fresh, strict=True) if sid != memory.id]
        existing = self.store.read(scope, existing_ids) if existing_ids else {}
        outcomes: list[Added] = []
        records: list[HistoryRecord] = []
        for stored_id, memory, item in zip(stored_ids, fresh, items, strict=True):
            if stored_id == memory.id:
                outcomes.append(Added(memory, True))
                records.append(
                    self._record(memory.id, "ADD", None, memory.text, memory.created_at, scope, origin, item)
                )
            else:
                row = existing.get(stored_id)
                outcomes.append(Added(row if row is not None else memory, False))
        self._append_history(scope, records)
        for stored_id in existing:  # an existing text whose writer may have died before recording it
            self.ensure_recorded(scope, existing[stored_id], origin)
        return outcomes

    def update(
        self, scope: Scope, current: StoredMemory, text: str, vector: Sequence[float], origin: Origin
    ) -> StoredMemory:
        changed = StoredMemory(
            id=current.id,
            text=text,
            user_id=current.user_id or scope.user_id,
            client=current.client,
            created_at=current.created_at,
            updated_at=_after(current.updated_at),
            hash=text_hash(text),
            state=current.state,
            categories=current.categories,
            metadata=current.metadata,
        )
        self.store.rewrite(
            scope,
            RowChange(
                current.id,
                changed,
                list(vector),
                expected_updated_at=current.updated_at or None,
                dedup_key=dedup_key(scope, changed.hash),
            ),
        )
        record = self._record(current.id, "UPDATE", current.text, text, changed.updated_at, scope, origin)
        self._append_history(scope, [record])
        return changed

    def set_state(
        self,
        scope: Scope,
        memory_ids: Sequence[str],
        state: State,
        origin: Origin,
        *,
        eligible: Collection[State] = ALL_STATES,
    ) -> list[StoredMemory]:
        """Move memories to ``state``; returns those this call changed. Only active memories hold a
        duplicate key, so a paused, archived or deleted text can be added again."""
        ids = list(dict.fromkeys(memory_ids))
        if not ids:
            return []
        rows = self.store.read(scope, ids)
        before = {i: m for i in ids if (m := rows.get(i)) is not None and m.state != state and m.state in eligible}
        moved = {i: replace(m, state=state, updated_at=_after(m.updated_at)) for i, m in before.items()}
        changes = [
            RowChange(
                memory_id,
                memory,
                expected_updated_at=before[memory_id].updated_at or None,
                dedup_key=dedup_key(scope, memory.hash) if state == "active" else "",
            )
            for memory_id, memory in moved.items()
        ]
        failure: StoreError | None = None
        try:
            done = set(self.store.rewrite_many(scope, changes)) if changes else set()
        except StoreError as exc:  # some rows may have changed before it gave up: record those, then raise
            applied = getattr(exc, "applied", None)
            if not applied:
                raise
            done, failure = set(applied), exc
        changed = [memory for memory_id, memory in moved.items() if memory_id in done]
        event, kept = ("DELETE", False) if state == "deleted" else ("STATE", True)
        records = [
            replace(
                self._record(
                    m.id, event, m.text, m.text if kept else None, m.updated_at, scope, origin, client=m.client
                ),
                old_state=before[m.id].state,
                new_state=state,
            )
            for m in changed
        ]
        self._append_history(scope, records)
        if failure is not None:
            raise failure
        return changed

    def delete(
        self, scope: Scope, memory_ids: Sequence[str], origin: Origin, *, eligible: Collection[State] = ACTIVE
    ) -> list[StoredMemory]:
        """Soft delete: the memory and its history stay readable to its owner; purge erases them."""
        return self.set_state(scope, memory_ids, "deleted", origin, eligible=eligible)

    def delete_all(self, scope: Scope, origin: Origin) -> int:
        """Soft-delete every active memory in scope (exact count, also when retried after a fault)."""
        total = 0
        stalled = 0
        while True:
            page = self.list_page(scope, limit=DELETE_BATCH, with_total=False)
            if not page.items:
                return total
            deleted = self.set_state(scope, [m.id for m in page.items], "deleted", origin, eligible=ACTIVE)
            total += len(deleted)
            stalled = 0 if deleted else stalled + 1
            if stalled >= 3:  # listed rows that no delete changes: report instead of looping
                raise StoreError(f"delete_all stopped after {total} memories: the store keeps listing undeletable rows")

    def purge(self, scope: Scope, memory_ids: Sequence[str]) -> Purged:
        """Erase memories, their history and their access log; returns what was erased."""
        ids = list(dict.fromkeys(memory_ids))
        if not ids:
            return Purged([], 0, 0)
        rows = self.store.read(scope, ids)
        erased = self.store.remove(scope, [i for i in ids if i in rows]) if rows else []
        events = self.history_log.erase(scope.user_id, erased) if erased else 0
        accesses = self.access.erase(scope.user_id, erased) if erased and self.access is not None else 0
        return Purged(list(erased), events, accesses)

    def histories(self, scope: Scope, memory_ids: Sequence[str]) -> dict[str, list[HistoryRecord]]:
        """:meth:`history` of several memories; for the owner (a shared scope, as export reads) one range
        read of the log when it can (``for_memories``) instead of one read per memory."""
        many = getattr(self.history_log, "for_memories", None)
        if many is None or not scope.shared:
            return {memory_id: self.history(scope, memory_id) for memory_id in memory_ids}
        found: dict[str, list[HistoryRecord]] = many(scope.user_id, list(memory_ids))
        return found

    def history(self, scope: Scope, memory_id: str) -> list[HistoryRecord]:
        records = self.history_log.for_memory(scope.user_id, memory_id)
        if not records or scope.shared:
            return records
        if any(record.client == scope.client_name for record in records):
            return records
        return records if self.get(scope, memory_id) is not None else []

    def check(self) -> None:
        """Readiness: one cheap store read, answered quickly (raises what the store raises)."""
        self.store.probe()

    def close(self) -> None:
        try:
            if self.access is not None:
                self.access.close()
        finally:
            try:
                self.store.close()
            finally:
                self.history_log.close()

    # --- history ---------------------------------------------------------------------------------
    @staticmethod
    def _record(
        memory_id: str,
        event: str,
        old: str | None,
        new: str | None,
        at: str,
        scope: Scope,
        origin: Origin,
        item: NewMemory | None = None,
        *,
        client: str | None = None,
    ) -> HistoryRecord:
        """One event; ``client`` is the memory's own (when known), else the caller's."""
        return HistoryRecord(
            memory_id=memory_id,
            event=event,
            old_memory=old,
            new_memory=new,
            at=at,
            client=client or scope.client_name,
            source=origin.source,
            model=origin.model,
            reason=(item.reason if item is not None and item.reason else origin.reason),
        )

    def _append_history(self, scope: Scope, records: Sequence[HistoryRecord]) -> None:
        """History follows the write it describes; a failure here must not turn a stored write into an error."""
        if not records:
            return
        try:
            self.history_log.append(scope.user_id, records)
        except Exception:
            logger.exception("could not record %d history event(s) for user %s", len(records), scope.user_id)


def _after(previous: str) -> str:
    """A timestamp strictly later than ``previous`` (two updates in one microsecond still differ)."""
    now = now_iso()
    return now if now > previous else _bump(previous)


def _bump(stamp: str) -> str:
    try:
        moment = datetime.fromisoformat(stamp)
    except ValueError:
        return now_iso()
    return (moment + timedelta(microseconds=1)).isoformat()
