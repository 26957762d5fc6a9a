"""The classic memory flow, pure: extract facts -> find similar memories -> decide -> apply.

mem0 2.x stores whatever its one extraction call returns (ADD-only). This server keeps the classic
flow its users were promised:

1. the LLM extracts facts from what the user said;
2. similar memories in the caller's scope are retrieved (re-read from the table, so the LLM never
   decides against a deleted row or replaced text);
3. one LLM decision chooses ADD / UPDATE / DELETE / NONE per fact (with a one-line reason), and it is
   applied through the repository. An UPDATE is conditional on the row being unchanged since it was
   read; when another writer won, the flow re-reads and decides again.

Without an LLM, or when the LLM fails or answers garbage, the text is stored verbatim and the result
says so: an acknowledged add is never silently empty.

Only step 3 is serialized per scope inside the process (two concurrent adds of related facts decide
one after the other, not both against the same old state); extraction, embedding and verbatim adds run
concurrently, so concurrent callers share embedder batches. Across processes the repository's
conditional writes catch the race and the flow decides again.

This module imports neither mem0 nor the stores; it talks to :mod:`.ports` only, and is synchronous
(the service runs it in worker threads).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from weakref import WeakValueDictionary

from tablestore_openmemory_mcp.errors import AppPaused, ConflictError, DependencyError, LLMReplyError, MemoryNotFound
from tablestore_openmemory_mcp.memory.as_of import memories_at, search_at
from tablestore_openmemory_mcp.memory.ports import (
    ChatModel,
    Embedder,
    MemoryRepository,
    NewMemory,
    Origin,
    Source,
    State,
    StoredMemory,
)
from tablestore_openmemory_mcp.memory.prompts import fact_extraction_messages, update_decision_messages
from tablestore_openmemory_mcp.memory.query_filters import EVENT_TIME_KEY, METADATA_KEY, MemoryQuery
from tablestore_openmemory_mcp.memory.results import (
    AddResult,
    DeleteAllResult,
    DeleteResult,
    HistoryEntry,
    HistoryResult,
    ListResult,
    MemoryEvent,
    MemoryItem,
    ScoredMemory,
    SearchResult,
    UpdateResult,
)
from tablestore_openmemory_mcp.progress import Report
from tablestore_openmemory_mcp.scope import Scope

logger = logging.getLogger(__name__)

SIMILAR_PER_FACT = 5
MAX_SIMILAR = 20
CONFLICT_RETRIES = 3


@dataclass(frozen=True, slots=True)
class PlannedEvent:
    """One decided event before it is applied (``target`` is the similar memory it acts on)."""

    event: str  # ADD | UPDATE | DELETE | NONE
    text: str
    target: StoredMemory | None = None
    reason: str | None = None


class ScopeLocks:
    """One lock per scope, created on demand and dropped when nobody holds a reference."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: WeakValueDictionary[tuple[str, str, bool], threading.Lock] = WeakValueDictionary()

    def get(self, scope: Scope) -> threading.Lock:
        key = (scope.user_id, "" if scope.shared else scope.client_name, scope.shared)
        with self._guard:
            lock = self._locks.get(key)
            if lock is None:
                lock = threading.Lock()
                self._locks[key] = lock
            return lock


class ClassicFlow:
    """The memory operations on one repository, embedder and (optional) LLM."""

    def __init__(
        self,
        repository: MemoryRepository,
        embedder: Embedder,
        llm: ChatModel | None,
        *,
        fact_prompt: str | None = None,
        update_prompt: str | None = None,
        min_score: float | None = None,
    ) -> None:
        self.repository = repository
        self.embedder = embedder
        self.llm = llm
        self.fact_prompt = fact_prompt
        self.update_prompt = update_prompt
        self.min_score = min_score
        self._deciding = ScopeLocks()

    # --- add -----------------------------------------------------------------------------------------
    def add(
        self,
        scope: Scope,
        text: str,
        infer: bool = True,
        source: Source = "mcp",
        extra: Mapping[str, Any] | None = None,
        progress: Report | None = None,
    ) -> AddResult:
        """Refused for a paused app whoever asks: MCP through the app, or REST naming it as the client.
        ``extra``: payload fields every new memory of this add carries (user metadata, event time).
        ``progress`` (optional) hears each step of an inferred add: extraction, decision, writes."""
        report = progress or _silent
        if self.repository.app_paused(scope):
            raise AppPaused(scope.client_name, scope.user_id)
        extra = dict(extra or {})
        if not infer:
            return self._store_verbatim(scope, text, None, source, extra)
        if self.llm is None:
            note = "No LLM is configured, so the text was stored as given."
            return self._store_verbatim(scope, text, note, source, extra)
        try:
            report(1, "extracting facts")
            facts = self._extract_facts(text)
        except DependencyError as exc:
            logger.warning("fact extraction failed: %s", exc)
            note = f"The LLM could not extract facts ({exc}); the text was stored as given."
            return self._store_verbatim(scope, text, note, source, extra)
        if not facts:
            note = "The LLM found no separate facts, so the text was stored as given."
            return self._store_verbatim(scope, text, note, source, extra)
        vectors = dict(zip(facts, self.embedder.embed_batch(facts, "add"), strict=True))
        with self._deciding.get(scope):
            for attempt in range(CONFLICT_RETRIES):
                try:
                    return self._reconcile(scope, facts, vectors, source, extra, report)
                except ConflictError:
                    if attempt == CONFLICT_RETRIES - 1:
                        raise
                    logger.info("a memory changed while deciding; deciding again")
        raise AssertionError("unreachable")

    def _reconcile(
        self,
        scope: Scope,
        facts: list[str],
        vectors: dict[str, list[float]],
        source: Source,
        extra: Mapping[str, Any] | None = None,
        report: Report | None = None,
    ) -> AddResult:
        assert self.llm is not None
        report = report or _silent
        report(2, f"comparing {len(facts)} fact(s) with your memories")
        existing = self._similar(scope, facts, vectors)
        note = None
        plan: list[PlannedEvent] | None = None
        if existing:
            try:
                decision = self.llm.complete_json(
                    update_decision_messages(
                        [{"id": key, "text": memory.text} for key, memory in existing.items()],
                        facts,
                        self.update_prompt,
                    )
                )
                plan = plan_events(decision, existing)
            except DependencyError as exc:
                logger.warning("memory decision failed: %s", exc)
                note = f"The LLM could not decide how the facts relate to existing memories ({exc}); they were added."
            if plan is not None and not plan:
                note = "The LLM's decision named no usable events, so the facts were added."
        if not plan:
            plan = fallback_plan(facts, existing)
        origin = Origin(source=source, model=getattr(self.llm, "model", None))
        report(3, f"writing {len(plan)} change(s)")
        return AddResult(events=self._apply(scope, plan, vectors, origin, extra), inferred=True, note=note)

    def _extract_facts(self, text: str) -> list[str]:
        assert self.llm is not None
        reply = self.llm.complete_json(fact_extraction_messages(text, self.fact_prompt))
        return parse_facts(reply)

    def _similar(self, scope: Scope, facts: list[str], vectors: Mapping[str, list[float]]) -> dict[str, StoredMemory]:
        """Current memories in scope most similar to any fact, keyed by small integer ids for the LLM."""
        found: dict[str, StoredMemory] = {}
        for fact in facts:
            for memory in self.repository.nearest(scope, vectors[fact], SIMILAR_PER_FACT):
                if memory.id not in found and memory.text:
                    found[memory.id] = memory
        ranked = sorted(found.values(), key=lambda memory: -(memory.score or 0.0))[:MAX_SIMILAR]
        return {str(index): memory for index, memory in enumerate(ranked)}

    def _store_verbatim(
        self, scope: Scope, text: str, note: str | None, source: Source, extra: Mapping[str, Any] | None = None
    ) -> AddResult:
        origin = Origin(source=source)
        known = self.repository.find_exact(scope, text)  # before embedding: a known text costs no embedder call
        if known is not None:
            self.repository.ensure_recorded(scope, known, origin)
        else:  # the add itself is atomic against a concurrent add of the same text (and records a missing ADD)
            vector = self.embedder.embed(text, "add")
            added = self.repository.add(scope, [NewMemory(text=text, vector=vector, metadata=extra or {})], origin)
            if added[0].created:
                return AddResult(
                    events=[MemoryEvent(id=added[0].memory.id, memory=text, event="ADD")], inferred=False, note=note
                )
            known = added[0].memory
        event = MemoryEvent(id=known.id, memory=text, event="NONE")
        return AddResult(events=[event], inferred=False, note=note or "This memory was already stored.")

    def _apply(
        self,
        scope: Scope,
        plan: list[PlannedEvent],
        vectors: dict[str, list[float]],
        origin: Origin,
        extra: Mapping[str, Any] | None = None,
    ) -> list[MemoryEvent]:
        """Apply the plan: all ADDs in one repository write, then UPDATEs and DELETEs one by one."""
        needed = list(dict.fromkeys(e.text for e in plan if e.event in ("ADD", "UPDATE") and e.text not in vectors))
        if needed:
            vectors = {**vectors, **dict(zip(needed, self.embedder.embed_batch(needed, "add"), strict=True))}
        done: list[MemoryEvent] = []
        adds = [e for e in plan if e.event == "ADD"]
        if adds:
            added = self.repository.add(
                scope,
                [NewMemory(text=e.text, vector=vectors[e.text], reason=e.reason, metadata=extra or {}) for e in adds],
                origin,
            )
            for outcome in added:
                done.append(
                    MemoryEvent(
                        id=outcome.memory.id, memory=outcome.memory.text, event="ADD" if outcome.created else "NONE"
                    )
                )
        for event in plan:
            if event.event == "ADD":
                continue
            target = event.target
            assert target is not None
            try:
                if event.event == "UPDATE":
                    self.repository.update(scope, target, event.text, vectors[event.text], _with_reason(origin, event))
                    done.append(
                        MemoryEvent(id=target.id, memory=event.text, event="UPDATE", previous_memory=target.text)
                    )
                elif event.event == "DELETE":
                    if self.repository.delete(scope, [target.id], _with_reason(origin, event)):
                        done.append(
                            MemoryEvent(id=target.id, memory=target.text, event="DELETE", previous_memory=target.text)
                        )
                else:
                    done.append(MemoryEvent(id=target.id, memory=target.text, event="NONE"))
            except ConflictError:
                if done and any(e.event != "NONE" for e in done):
                    # Part of the plan is applied; deciding again would repeat it. Report what happened.
                    logger.warning("memory %s changed concurrently; its %s was skipped", target.id, event.event)
                    done.append(MemoryEvent(id=target.id, memory=target.text, event="NONE"))
                    continue
                raise
        return done

    # --- read ----------------------------------------------------------------------------------------
    def search(
        self, scope: Scope, query: str, limit: int, where: MemoryQuery | None = None, as_of: str | None = None
    ) -> SearchResult:
        vector = self.embedder.embed(query, "search")
        if as_of:  # from the memory history (memory/as_of.py); not recorded as an access of today's rows
            name = str(getattr(self.embedder, "name", ""))
            repo: Any = self.repository
            then = search_at(repo, self.embedder, name, scope, query, vector, as_of, limit, self.min_score, where)
            return SearchResult(query=query, results=[_hit(memory) for memory in then])
        if where:
            found = self.repository.search(scope, query, vector, limit, self.min_score, where=where)
        else:
            found = self.repository.search(scope, query, vector, limit, self.min_score)
        self.repository.record_access(scope, found, query)
        return SearchResult(query=query, results=[_hit(memory) for memory in found])

    def list_memories(
        self,
        scope: Scope,
        limit: int,
        cursor: str | None = None,
        where: MemoryQuery | None = None,
        as_of: str | None = None,
    ) -> ListResult:
        if as_of:  # oldest first; the cursor is the offset of the next page
            repo: Any = self.repository
            then = memories_at(repo, scope, as_of, where)
            start = int(cursor) if cursor and cursor.isdigit() else 0
            items = then[start : start + limit]
            more = str(start + limit) if start + limit < len(then) else None
            return ListResult(count=len(items), total=len(then), next_cursor=more, memories=[_item(m) for m in items])
        if where:
            page = self.repository.list_page(scope, limit=limit, cursor=cursor, where=where)
        else:
            page = self.repository.list_page(scope, limit=limit, cursor=cursor)
        self.repository.record_access(scope, page.items, None)
        return ListResult(
            count=len(page.items),
            total=page.total,
            next_cursor=page.next_cursor,
            memories=[_item(memory) for memory in page.items],
        )

    def history(self, scope: Scope, memory_id: str) -> HistoryResult:
        """The app's own reads: refused while it is paused (the owner reads history through REST)."""
        if not scope.shared and self.repository.app_paused(scope):
            raise AppPaused(scope.client_name, scope.user_id)
        records = self.repository.history(scope, memory_id)
        if not records:
            raise MemoryNotFound(f"No memory with id {memory_id} exists among your memories")
        return HistoryResult(id=memory_id, history=[HistoryEntry.from_record(record) for record in records])

    # --- change --------------------------------------------------------------------------------------
    def update(self, scope: Scope, memory_id: str, text: str, source: Source = "mcp") -> UpdateResult:
        """MCP changes active memories only; REST (the owner) may edit a paused or archived one too."""
        if source == "mcp" and self.repository.app_paused(scope):
            raise AppPaused(scope.client_name, scope.user_id)
        current = self.repository.get(scope, memory_id)
        editable = ("active",) if source == "mcp" else ("active", "paused", "archived")
        if current is None or current.state not in editable:
            raise MemoryNotFound(f"No memory with id {memory_id} exists among your memories")
        if current.text == text:
            return UpdateResult(id=memory_id, memory=text, previous_memory=current.text)
        vector = self.embedder.embed(text, "update")
        self.repository.update(scope, current, text, vector, Origin(source=source))
        return UpdateResult(id=memory_id, memory=text, previous_memory=current.text)

    def delete(self, scope: Scope, memory_ids: Sequence[str], source: Source = "mcp") -> DeleteResult:
        if source == "mcp" and self.repository.app_paused(scope):
            raise AppPaused(scope.client_name, scope.user_id)
        eligible: tuple[State, ...] = ("active",) if source == "mcp" else ("active", "paused", "archived")
        deleted = {m.id for m in self.repository.delete(scope, memory_ids, Origin(source=source), eligible=eligible)}
        return DeleteResult(
            deleted=[i for i in memory_ids if i in deleted], not_found=[i for i in memory_ids if i not in deleted]
        )

    def delete_all(self, scope: Scope, source: Source = "mcp") -> DeleteAllResult:
        if source == "mcp" and self.repository.app_paused(scope):
            raise AppPaused(scope.client_name, scope.user_id)
        return DeleteAllResult(deleted_count=self.repository.delete_all(scope, Origin(source=source)))


def _silent(step: int, message: str) -> None:
    """The reporter when nobody listens."""


def _with_reason(origin: Origin, event: PlannedEvent) -> Origin:
    return Origin(source=origin.source, model=origin.model, reason=event.reason)


def _item(memory: StoredMemory) -> MemoryItem:
    return MemoryItem(
        id=memory.id,
        memory=memory.text,
        client=memory.client,
        created_at=memory.created_at,
        updated_at=memory.updated_at,
        event_time=memory.metadata.get(EVENT_TIME_KEY),
        metadata=memory.metadata.get(METADATA_KEY) or None,
    )


def _hit(memory: StoredMemory) -> ScoredMemory:
    return ScoredMemory(**_item(memory).model_dump(), score=round(memory.score or 0.0, 4))


def parse_facts(reply: Mapping[str, Any]) -> list[str]:
    """The LLM's fact list, tolerating the shapes models actually answer with."""
    raw = reply.get("facts", reply.get("memory", reply.get("items", [])))
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list):
        raise LLMReplyError("the LLM's fact list was not a list")
    facts: list[str] = []
    for item in raw:
        fact = (item.get("text") or item.get("fact")) if isinstance(item, dict) else item
        if isinstance(fact, str) and fact.strip() and fact.strip() not in facts:
            facts.append(fact.strip())
    return facts


def fallback_plan(facts: Sequence[str], existing: Mapping[str, StoredMemory]) -> list[PlannedEvent]:
    """Without a usable decision: add every fact not already stored verbatim, else report the matches."""
    known = {memory.text for memory in existing.values()}
    plan = [PlannedEvent("ADD", fact) for fact in facts if fact not in known]
    return plan or [PlannedEvent("NONE", memory.text, memory) for memory in existing.values() if memory.text in facts]


def plan_events(decision: Mapping[str, Any], existing: Mapping[str, StoredMemory]) -> list[PlannedEvent]:
    """Turn the LLM's decision into events, tolerating missing fields and ids it made up."""
    items = decision.get("memory", decision.get("events", decision.get("items", [])))
    if not isinstance(items, list):
        return []
    plan: list[PlannedEvent] = []
    touched: set[str] = set()
    by_text = {memory.text: memory for memory in existing.values()}
    for item in items:
        if not isinstance(item, dict):
            continue
        kind = str(item.get("event", "")).strip().upper()
        raw_text = item.get("text") or item.get("memory") or ""
        text = raw_text.strip() if isinstance(raw_text, str) else ""
        raw_reason = item.get("reason")
        reason = raw_reason.strip()[:300] or None if isinstance(raw_reason, str) else None
        target = existing.get(str(item.get("id", "")).strip())
        if target is not None and target.id in touched:
            continue
        if kind == "ADD" or (kind == "UPDATE" and target is None):
            if text and text in by_text:
                same = by_text[text]
                if same.id not in touched:
                    touched.add(same.id)
                    plan.append(PlannedEvent("NONE", text, same, reason))
            elif text and all(e.text != text for e in plan if e.event == "ADD"):
                plan.append(PlannedEvent("ADD", text, None, reason))
        elif kind == "UPDATE" and text and target is not None:
            touched.add(target.id)
            plan.append(PlannedEvent("NONE" if text == target.text else "UPDATE", text, target, reason))
        elif kind == "DELETE" and target is not None:
            touched.add(target.id)
            plan.append(PlannedEvent("DELETE", target.text, target, reason))
        elif kind == "NONE" and target is not None:
            touched.add(target.id)
            plan.append(PlannedEvent("NONE", target.text, target, reason))
    return plan
