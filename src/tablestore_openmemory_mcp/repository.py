"""The repository: the memory ports implemented on our stores and mem0's keyword-scoring helpers.

This is the one place that knows

* the stores' row format (mem0's payload keys: ``data`` = text, ``hash``, ``agent_id`` = client, ...),
  so an embedded file or a Tablestore table written by earlier releases keeps working;
* mem0: its BM25 lemmatisation, used only when spaCy is installed (mem0 itself falls back to the plain
  text without it). Nothing else of mem0 is imported: ``import mem0`` costs ~2.6 s of CPU (it pulls in
  qdrant_client, posthog and the hosted client) and writes ``$MEM0_DIR/config.json``. Scores are ours
  (:mod:`.memory.scoring`: calibrated 0-1 relevance per embedder).

Every call opens :func:`~tablestore_openmemory_mcp.stores.base.scoped` with the caller's scope, so the
store refuses rows outside it; history events go to the :class:`~.memory.ports.HistoryLog` beside the
memories, with the client, source, model and reason.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import logging
import os
import secrets
import time
import uuid
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

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
from tablestore_openmemory_mcp.scope import Scope
from tablestore_openmemory_mcp.stores.base import MemoryStore, OutputData, RowUpdate, scoped
from tablestore_openmemory_mcp.stores.tokenize import keyword_query

logger = logging.getLogger(__name__)

#: Payload keys that are not metadata.
_CORE_KEYS = frozenset(
    {"data", "hash", "created_at", "updated_at", "user_id", "agent_id", "state", "categories", "text_lemmatized"}
)
_READY_USER = "\x00readiness-probe"
DELETE_BATCH = 200


# --- mem0 -----------------------------------------------------------------------------------------


def prepare_mem0_environment(data_dir: Path, telemetry: bool) -> None:
    """Keep mem0's files inside our data directory and its telemetry off, before anything of mem0 loads."""
    mem0_dir = data_dir / "mem0"
    mem0_dir.mkdir(parents=True, exist_ok=True)
    os.environ["MEM0_DIR"] = str(mem0_dir)
    os.environ["MEM0_TELEMETRY"] = "True" if telemetry else "False"


@functools.cache
def _has_spacy() -> bool:
    """spaCy and mem0 (the optional ``[mem0]`` extra) both installed: only then is there a lemmatizer."""
    return importlib.util.find_spec("spacy") is not None and importlib.util.find_spec("mem0") is not None


def lemmatize(text: str) -> str:
    """mem0's BM25 lemmatisation when spaCy is installed; the text itself otherwise (mem0's own fallback)."""
    if not _has_spacy():
        return text
    from mem0.utils.lemmatization import lemmatize_for_bm25  # only with spaCy, which mem0 needs for it

    return str(lemmatize_for_bm25(text))


def text_hash(text: str) -> str:
    """The ``hash`` stored with each memory (md5 of the text, as mem0 computes it)."""
    return hashlib.md5(text.encode()).hexdigest()


# --- ids, times, keys -----------------------------------------------------------------------------


def new_memory_id() -> str:
    """A UUIDv7: random, but ordered by creation time, so key-ordered stores list oldest first."""
    millis = time.time_ns() // 1_000_000
    value = (millis & ((1 << 48) - 1)) << 80 | secrets.randbits(80)
    value = (value & ~(0xF << 76)) | (0x7 << 76)  # version 7
    value = (value & ~(0x3 << 62)) | (0x2 << 62)  # RFC 4122 variant
    return str(uuid.UUID(int=value))


def now_iso() -> str:
    return datetime.now(UTC).isoformat()


def dedup_key(scope: Scope, digest: str) -> str:
    """Scope + content hash: one live memory per exact text per scope (per user when shared)."""
    client = "*" if scope.shared else scope.client_name
    return hashlib.sha256(f"{scope.user_id}\x00{client}\x00{digest}".encode()).hexdigest()[:40]


# --- rows <-> memories ----------------------------------------------------------------------------


def to_memory(row: OutputData, score: float | None = None) -> StoredMemory:
    payload = row.payload or {}
    categories = payload.get("categories") or ()
    return StoredMemory(
        id=str(row.id),
        text=str(payload.get("data", "")),
        user_id=str(payload.get("user_id", "")),
        client=payload.get("agent_id"),
        created_at=str(payload.get("created_at") or ""),
        updated_at=str(payload.get("updated_at") or payload.get("created_at") or ""),
        hash=str(payload.get("hash") or text_hash(str(payload.get("data", "")))),
        state=cast(State, payload.get("state") or "active"),
        categories=tuple(str(c) for c in categories) if isinstance(categories, list | tuple) else (),
        score=score,
        metadata={k: v for k, v in payload.items() if k not in _CORE_KEYS},
    )


def to_payload(memory: StoredMemory) -> dict[str, Any]:
    payload: dict[str, Any] = dict(memory.metadata)
    payload.update(
        data=memory.text,
        hash=memory.hash,
        created_at=memory.created_at,
        updated_at=memory.updated_at,
        user_id=memory.user_id,
        text_lemmatized=lemmatize(memory.text),
    )
    if memory.client is not None:
        payload["agent_id"] = memory.client
    if memory.state != "active":
        payload["state"] = memory.state
    if memory.categories:
        payload["categories"] = list(memory.categories)
    return payload


ACTIVE: frozenset[State] = frozenset({"active"})


def state_filter(states: Collection[State]) -> dict[str, Any]:
    """Filter on the ``state`` payload key; rows written before states existed (no key) are active."""
    wanted = set(states)
    if "active" in wanted:
        return {"state": {"nin": [s for s in ALL_STATES if s not in wanted]}} if wanted != set(ALL_STATES) else {}
    return {"state": {"in": sorted(wanted)}}


class StoreRepository:
    """:class:`~.memory.ports.MemoryRepository` on a :class:`~.stores.base.MemoryStore` and a history log.

    Reads default to active memories (what MCP tools see); the REST API names other states. Rows of a
    paused app are hidden from active reads for that user.
    """

    def __init__(
        self,
        store: MemoryStore,
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

    def _filters(self, scope: Scope, states: Collection[State]) -> dict[str, Any]:
        filters: dict[str, Any] = {**scope.filters(), **state_filter(states)}
        return filters

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
        with scoped(scope.filters()):
            self.store.update(memory.id, None, to_payload(memory), expected_updated_at=memory.updated_at or None)
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
        with scoped(scope.filters()):
            row = self.store.get(memory_id)
        return to_memory(row) if row is not None else None

    def get_many(self, scope: Scope, memory_ids: Sequence[str]) -> dict[str, StoredMemory]:
        if not memory_ids:
            return {}
        with scoped(scope.filters()):
            rows = self.store.get_many(list(dict.fromkeys(memory_ids)))
        return {key: to_memory(row) for key, row in rows.items()}

    def list_page(
        self,
        scope: Scope,
        *,
        limit: int,
        cursor: str | None = None,
        states: Collection[State] = ACTIVE,
        with_total: bool = True,
        where: Mapping[str, Any] | None = None,
    ) -> Page:
        """One page and (``with_total``) how many memories there are in all; without, ``total`` is the page's.
        ``where``: the caller's filters (client, category, time, metadata) on top of the scope's."""
        filters = {**self._filters(scope, states), **(where or {})}
        if set(states) == ACTIVE and not scope.shared and self.app_paused(scope):
            return Page(items=[], total=0, next_cursor=None)  # a paused app's memories are hidden from it
        with scoped(scope.filters()):
            rows, next_cursor = self.store.list_page(filters, limit, cursor)
            total = self.store.total(filters) if with_total else len(rows)
        items = self._visible(scope, states, [to_memory(row) for row in rows])
        return Page(items=items, total=total, next_cursor=next_cursor)

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
    ) -> tuple[list[StoredMemory], int] | None:
        """One page of the owner's memories by creation time and the total; ``None`` when paused apps
        must be hidden (active-only reads), which the caller then filters row by row."""
        if set(states) == ACTIVE:
            return None
        with scoped(scope.filters()):
            rows, total = self.store.created_page(
                self._filters(scope, states),
                newest_first=newest_first,
                offset=offset,
                limit=limit,
                since=since,
                until=until,
            )
        return [to_memory(row) for row in rows], total

    def tally(self, scope: Scope) -> dict[tuple[str | None, str, str], int]:
        """Memories in scope (every state) per (client, state, day created)."""
        with scoped(scope.filters()):
            return self.store.tally(self._filters(scope, ALL_STATES))

    def nearest(self, scope: Scope, vector: Sequence[float], limit: int) -> list[StoredMemory]:
        filters = self._filters(scope, ACTIVE)
        with scoped(scope.filters()):
            rows = self.store.search("", vector, top_k=limit, filters=filters)
        return [to_memory(row, row.score) for row in rows if row.payload and row.payload.get("data")]

    def search(
        self,
        scope: Scope,
        query: str,
        vector: Sequence[float],
        limit: int,
        min_score: float | None,
        states: Collection[State] = ACTIVE,
        where: Mapping[str, Any] | None = None,
    ) -> list[StoredMemory]:
        filters = {**self._filters(scope, states), **(where or {})}
        pool = max(limit * 4, scoring.SEARCH_POOL)
        lemmatized = lemmatize(keyword_query(query))
        with scoped(scope.filters()):
            semantic = [row for row in self.store.search(query, vector, top_k=pool, filters=filters) if row.payload]
            keyword_rows = (
                self.store.keyword_search(lemmatized, top_k=pool, filters=filters, candidates=[r.id for r in semantic])
                if semantic
                else None
            )
        keyword = {str(row.id): float(row.score) for row in keyword_rows or () if row.score and row.score > 0}
        calibration = scoring.calibration_for(self.embedder_name, query)
        ranked = scoring.rank(
            [scoring.Candidate(row.id, float(row.score or 0.0), keyword.get(row.id)) for row in semantic],
            calibration=calibration,
            limit=limit,
            min_score=calibration.cutoff if min_score is None else min_score,
        )
        by_id = {row.id: row for row in semantic}
        return self._visible(scope, states, [to_memory(by_id[hit.id], hit.score) for hit in ranked])

    def iter_all(
        self, scope: Scope, batch: int = 500, states: Collection[State] = ALL_STATES
    ) -> Iterator[list[StoredMemory]]:
        """Every memory in scope (all states by default), a page at a time (export, browsing, migration).

        No total per page (a count for each page made reading 100k memories take 2 s longer)."""
        filters = self._filters(scope, states)
        if set(states) == ACTIVE and not scope.shared and self.app_paused(scope):
            return
        cursor: str | None = None
        while True:
            with scoped(scope.filters()):
                rows, cursor = self.store.list_page(filters, batch, cursor)
            items = self._visible(scope, states, [to_memory(row) for row in rows])
            if items:
                yield items
            if cursor is None:
                return

    def vectors(self, scope: Scope, memory_ids: Sequence[str]) -> dict[str, list[float]]:
        """Stored vectors of memories in scope (missing ids are absent)."""
        if not memory_ids:
            return {}
        with scoped(scope.filters()):
            return self.store.get_vectors(list(memory_ids))

    def find_exact(self, scope: Scope, text: str) -> StoredMemory | None:
        with scoped(scope.filters()):
            row = self.store.find_by_dedup_key(dedup_key(scope, text_hash(text)))
        return to_memory(row) if row is not None else None

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
        with scoped(scope.filters()):
            stored_ids = self.store.insert(
                [list(item.vector) for item in items],
                [to_payload(memory) for memory in fresh],
                [memory.id for memory in fresh],
                [dedup_key(scope, memory.hash) for memory in fresh],
            )
            existing_ids = [sid for sid, memory in zip(stored_ids, fresh, strict=True) if sid != memory.id]
            existing = self.store.get_many(existing_ids) if existing_ids else {}
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
                outcomes.append(Added(to_memory(row) if row is not None else memory, False))
        self._append_history(scope, records)
        for stored_id in existing:  # an existing text whose writer may have died before recording it
            self.ensure_recorded(scope, to_memory(existing[stored_id]), origin)
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
        with scoped(scope.filters()):
            self.store.update(
                current.id,
                list(vector),
                to_payload(changed),
                expected_updated_at=current.updated_at or None,
                dedup_key=dedup_key(scope, changed.hash),
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
        with scoped(scope.filters()):
            rows = self.store.get_many(ids)
            before: dict[str, StoredMemory] = {}
            for memory_id in ids:
                current = to_memory(rows[memory_id]) if memory_id in rows else None
                if current is not None and current.state != state and current.state in eligible:
                    before[memory_id] = current
            moved = {i: replace(m, state=state, updated_at=_after(m.updated_at)) for i, m in before.items()}
            changes = [
                RowUpdate(
                    memory_id,
                    None,
                    to_payload(memory),
                    expected_updated_at=before[memory_id].updated_at or None,
                    dedup_key=dedup_key(scope, memory.hash) if state == "active" else "",
                )
                for memory_id, memory in moved.items()
            ]
            failure: StoreError | None = None
            try:
                done = set(self.store.update_many(changes)) if changes else set()
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
        with scoped(scope.filters()):
            rows = self.store.get_many(ids)
            erased = self.store.delete_many([i for i in ids if i in rows]) if rows else []
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
        """Readiness: one cheap, scoped store read (raises what the store raises)."""
        probe = getattr(self.store, "probe", None)
        if callable(probe):  # a store whose calls retry for long answers a probe quickly instead
            probe()
            return
        with scoped({"user_id": _READY_USER}):
            self.store.list_page({"user_id": _READY_USER}, 1, None)

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
