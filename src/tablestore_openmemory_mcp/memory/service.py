"""The memory service: mem0's classic flow, on top of mem0 2.x primitives, scoped per caller.

mem0 2.x stores whatever its one extraction call returns (ADD-only). This server keeps the classic
flow its users were promised:

1. the LLM extracts facts from what the user said;
2. similar memories in the caller's scope are retrieved;
3. one LLM decision chooses ADD / UPDATE / DELETE / NONE per fact, and it is applied.

Without an LLM, or when the LLM fails or answers garbage, the text is stored verbatim and the result
says so: an acknowledged add is never silently empty.

Every blocking call (mem0, LLM, embedder, store) runs in a worker thread, never on the event loop, and
inside :data:`~tablestore_openmemory_mcp.stores.base.ACTIVE_SCOPE` so the store itself refuses to touch
another scope's rows.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

import anyio
import anyio.to_thread

from tablestore_openmemory_mcp import mem0_bridge
from tablestore_openmemory_mcp.errors import MemoryNotFound
from tablestore_openmemory_mcp.llm import ChatClient, LLMError
from tablestore_openmemory_mcp.prompts import fact_extraction_messages, update_decision_messages
from tablestore_openmemory_mcp.results import (
    AddResult,
    DeleteAllResult,
    DeleteResult,
    HistoryEntry,
    HistoryResult,
    ListResult,
    MemoryEvent,
    MemoryItem,
    SearchResult,
    UpdateResult,
)
from tablestore_openmemory_mcp.scope import Scope
from tablestore_openmemory_mcp.stores.base import ACTIVE_SCOPE

logger = logging.getLogger(__name__)
T = TypeVar("T")

SIMILAR_PER_FACT = 5
MAX_SIMILAR = 20


class MemoryService:
    """Async facade over the synchronous pipeline; one instance serves every scope."""

    def __init__(
        self,
        memory: Any,
        embedder: Any,
        llm: ChatClient | None,
        *,
        fact_prompt: str | None = None,
        update_prompt: str | None = None,
        min_score: float | None = None,
        worker_threads: int = 32,
    ) -> None:
        self.memory = memory
        self.store = memory.vector_store
        self.embedder = embedder
        self.llm = llm
        self.fact_prompt = fact_prompt
        self.update_prompt = update_prompt
        self.min_score = min_score
        self._limiter = anyio.CapacityLimiter(worker_threads)
        self.in_flight = 0  # calls running now; shutdown waits for them (changed on the event loop only)

    def close(self) -> None:
        """Release the store's connections and mem0's history database (at shutdown)."""
        close = getattr(self.store, "close", None)
        if callable(close):
            close()
        self.memory.close()

    # --- async API (what tools call) -----------------------------------------------------------------
    async def add(self, scope: Scope, text: str, infer: bool = True) -> AddResult:
        return await self._run(scope, self._add, scope, text, infer)

    async def search(self, scope: Scope, query: str, limit: int) -> SearchResult:
        return await self._run(scope, self._search, scope, query, limit)

    async def list(self, scope: Scope) -> ListResult:
        return await self._run(scope, self._list, scope)

    async def delete(self, scope: Scope, memory_ids: list[str]) -> DeleteResult:
        return await self._run(scope, self._delete, memory_ids)

    async def delete_all(self, scope: Scope) -> DeleteAllResult:
        return await self._run(scope, self._delete_all, scope)

    async def update(self, scope: Scope, memory_id: str, text: str) -> UpdateResult:
        return await self._run(scope, self._update, memory_id, text)

    async def history(self, scope: Scope, memory_id: str) -> HistoryResult:
        return await self._run(scope, self._history, memory_id)

    async def _run(self, scope: Scope, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn`` in a worker thread with the store locked to ``scope``.

        The thread is not abandoned when the client goes away, so a started write always finishes and
        the store stays consistent.
        """

        def scoped() -> T:
            token = ACTIVE_SCOPE.set(scope.filters())
            try:
                return fn(*args)
            finally:
                ACTIVE_SCOPE.reset(token)

        self.in_flight += 1
        try:
            return await anyio.to_thread.run_sync(scoped, limiter=self._limiter)
        finally:
            self.in_flight -= 1

    # --- add -----------------------------------------------------------------------------------------
    def _add(self, scope: Scope, text: str, infer: bool) -> AddResult:
        metadata = {**scope.ids(), "role": "user"}
        if not infer:
            return self._store_verbatim(text, metadata, note=None)
        if self.llm is None:
            return self._store_verbatim(text, metadata, note="No LLM is configured, so the text was stored as given.")
        try:
            facts = self._extract_facts(text)
        except LLMError as exc:
            logger.warning("fact extraction failed: %s", exc)
            return self._store_verbatim(
                text, metadata, note=f"The LLM could not extract facts ({exc}); the text was stored as given."
            )
        if not facts:
            return self._store_verbatim(
                text, metadata, note="The LLM found no separate facts, so the text was stored as given."
            )

        vectors = dict(zip(facts, self.embedder.embed_batch(facts, "add"), strict=True))
        existing = self._similar(facts, vectors)
        note = None
        plan: list[MemoryEvent] | None = None
        if existing:
            try:
                decision = self.llm.complete_json(
                    update_decision_messages(
                        [{"id": key, "text": row.payload.get("data", "")} for key, row in existing.items()],
                        facts,
                        self.update_prompt,
                    )
                )
                plan = _plan_events(decision, existing)
            except LLMError as exc:
                logger.warning("memory decision failed: %s", exc)
                note = f"The LLM could not decide how the facts relate to existing memories ({exc}); they were added."
            if plan is not None and not plan:
                note = "The LLM's decision named no usable events, so the facts were added."
        if not plan:
            known = {row.payload.get("hash") for row in existing.values()}
            plan = [
                MemoryEvent(id=None, memory=fact, event="ADD")
                for fact in facts
                if mem0_bridge.text_hash(fact) not in known
            ] or [
                MemoryEvent(id=row.id, memory=row.payload.get("data", ""), event="NONE")
                for row in existing.values()
                if row.payload.get("data") in facts
            ]
        return AddResult(events=self._apply(plan, vectors, metadata), inferred=True, note=note)

    def _extract_facts(self, text: str) -> list[str]:
        assert self.llm is not None
        reply = self.llm.complete_json(fact_extraction_messages(text, self.fact_prompt))
        raw = reply.get("facts", reply.get("memory", reply.get("items", [])))
        if isinstance(raw, str):
            raw = [raw]
        if not isinstance(raw, list):
            raise LLMError("the LLM's fact list was not a list")
        facts: list[str] = []
        for item in raw:
            fact = item.get("text") or item.get("fact") if isinstance(item, dict) else item
            if isinstance(fact, str) and fact.strip() and fact.strip() not in facts:
                facts.append(fact.strip())
        return facts

    def _similar(self, facts: list[str], vectors: dict[str, list[float]]) -> dict[str, Any]:
        """Existing memories in scope most similar to any fact, keyed by small integer ids for the LLM."""
        filters = ACTIVE_SCOPE.get() or {}
        found: dict[str, Any] = {}
        for fact in facts:
            for row in self.store.search(query=fact, vectors=vectors[fact], top_k=SIMILAR_PER_FACT, filters=filters):
                if row.id not in found and row.payload and row.payload.get("data"):
                    found[row.id] = row
        ranked = sorted(found.values(), key=lambda row: -(row.score or 0.0))[:MAX_SIMILAR]
        return {str(index): row for index, row in enumerate(ranked)}

    def _store_verbatim(self, text: str, metadata: dict[str, Any], note: str | None) -> AddResult:
        vector = self.embedder.embed(text, "add")
        digest = mem0_bridge.text_hash(text)
        filters = ACTIVE_SCOPE.get() or {}
        for row in self.store.search(query=text, vectors=vector, top_k=3, filters=filters):
            if row.payload and row.payload.get("hash") == digest:
                event = MemoryEvent(id=row.id, memory=text, event="NONE")
                return AddResult(events=[event], inferred=False, note=note or "This memory was already stored.")
        ids = mem0_bridge.create_memories(self.memory, [text], [vector], metadata)
        return AddResult(events=[MemoryEvent(id=ids[0], memory=text, event="ADD")], inferred=False, note=note)

    def _apply(
        self, plan: list[MemoryEvent], vectors: dict[str, list[float]], metadata: dict[str, Any]
    ) -> list[MemoryEvent]:
        """Apply the plan: all ADDs in one store write, then UPDATEs and DELETEs one by one."""
        needed = list(dict.fromkeys(e.memory for e in plan if e.event in ("ADD", "UPDATE") and e.memory not in vectors))
        if needed:
            vectors = {**vectors, **dict(zip(needed, self.embedder.embed_batch(needed, "add"), strict=True))}
        adds = [e for e in plan if e.event == "ADD"]
        done: list[MemoryEvent] = []
        ids = mem0_bridge.create_memories(
            self.memory, [e.memory for e in adds], [vectors[e.memory] for e in adds], metadata
        )
        done += [e.model_copy(update={"id": new_id}) for e, new_id in zip(adds, ids, strict=True)]
        for event in plan:
            try:
                if event.event == "UPDATE":
                    mem0_bridge.update_memory(self.memory, event.id, event.memory, vectors[event.memory])
                elif event.event == "DELETE":
                    existing = self.store.get(event.id)
                    if existing is None:
                        continue
                    mem0_bridge.delete_memory(self.memory, event.id, existing)
            except Exception as exc:
                applied = "; ".join(f"{e.event} {e.id}" for e in done) or "nothing"
                raise RuntimeError(
                    f"{event.event} of memory {event.id} failed ({exc}); already applied: {applied}"
                ) from exc
            if event.event != "ADD":
                done.append(event)
        return done

    # --- read ----------------------------------------------------------------------------------------
    def _search(self, scope: Scope, query: str, limit: int) -> SearchResult:
        found = self.memory.search(
            query, top_k=limit, filters=scope.filters(), threshold=self.min_score if self.min_score is not None else 0.0
        )
        items = [
            MemoryItem(
                id=str(row["id"]),
                memory=row.get("memory", ""),
                client=row.get("agent_id"),
                created_at=row.get("created_at"),
                updated_at=row.get("updated_at"),
                score=row.get("score"),
            )
            for row in found.get("results", [])
        ]
        return SearchResult(query=query, results=items)

    def _list(self, scope: Scope) -> ListResult:
        rows = self.store.list(filters=scope.filters(), top_k=None)[0]
        items = [_item(row) for row in rows]
        return ListResult(count=len(items), memories=items)

    def _history(self, memory_id: str) -> HistoryResult:
        self._get_or_raise(memory_id)
        rows = self.memory.history(memory_id)
        return HistoryResult(id=memory_id, history=[HistoryEntry.from_mem0(row) for row in rows])

    # --- change --------------------------------------------------------------------------------------
    def _update(self, memory_id: str, text: str) -> UpdateResult:
        existing = self._get_or_raise(memory_id)
        previous = (existing.payload or {}).get("data")
        vector = self.embedder.embed(text, "update")
        mem0_bridge.update_memory(self.memory, memory_id, text, vector)
        return UpdateResult(id=memory_id, memory=text, previous_memory=previous)

    def _delete(self, memory_ids: list[str]) -> DeleteResult:
        deleted: list[str] = []
        missing: list[str] = []
        for memory_id in memory_ids:
            existing = self.store.get(memory_id)
            if existing is None:
                missing.append(memory_id)
                continue
            mem0_bridge.delete_memory(self.memory, memory_id, existing)
            deleted.append(memory_id)
        if not deleted:
            raise MemoryNotFound(
                f"No memory with id {', '.join(missing)} exists among your memories; nothing was deleted"
            )
        return DeleteResult(deleted=deleted, not_found=missing)

    def _delete_all(self, scope: Scope) -> DeleteAllResult:
        rows = self.store.list(filters=scope.filters(), top_k=None)[0]
        if not rows:
            return DeleteAllResult(deleted_count=0)
        count = self.store.delete_many([str(row.id) for row in rows])
        mem0_bridge.record_deletions(self.memory, rows)
        return DeleteAllResult(deleted_count=count)

    def _get_or_raise(self, memory_id: str) -> Any:
        existing = self.store.get(memory_id)
        if existing is None:
            raise MemoryNotFound(f"No memory with id {memory_id} exists among your memories")
        return existing


def _item(row: Any) -> MemoryItem:
    payload = row.payload or {}
    return MemoryItem(
        id=str(row.id),
        memory=payload.get("data", ""),
        client=payload.get("agent_id"),
        created_at=payload.get("created_at"),
        updated_at=payload.get("updated_at"),
    )


def _plan_events(decision: dict[str, Any], existing: dict[str, Any]) -> list[MemoryEvent]:
    """Turn the LLM's decision into events, tolerating missing fields and ids it made up."""
    items = decision.get("memory", decision.get("events", decision.get("items", [])))
    if not isinstance(items, list):
        return []
    plan: list[MemoryEvent] = []
    touched: set[str] = set()
    known_texts = {row.payload.get("data"): row for row in existing.values()}
    for item in items:
        if not isinstance(item, dict):
            continue
        kind = str(item.get("event", "")).strip().upper()
        text = item.get("text") or item.get("memory") or ""
        text = text.strip() if isinstance(text, str) else ""
        row = existing.get(str(item.get("id", "")).strip())
        if row is not None and row.id in touched:
            continue
        old = (row.payload or {}).get("data") if row is not None else None
        if kind == "ADD" or (kind == "UPDATE" and row is None):
            if text and text in known_texts:
                same = known_texts[text]
                if same.id not in touched:
                    touched.add(same.id)
                    plan.append(MemoryEvent(id=same.id, memory=text, event="NONE"))
            elif text and all(e.memory != text for e in plan if e.event == "ADD"):
                plan.append(MemoryEvent(id=None, memory=text, event="ADD"))
        elif kind == "UPDATE" and text:
            touched.add(row.id)
            if text == old:
                plan.append(MemoryEvent(id=row.id, memory=text, event="NONE"))
            else:
                plan.append(MemoryEvent(id=row.id, memory=text, event="UPDATE", previous_memory=old))
        elif kind == "DELETE" and row is not None:
            touched.add(row.id)
            plan.append(MemoryEvent(id=row.id, memory=old or "", event="DELETE", previous_memory=old))
        elif kind == "NONE" and row is not None:
            touched.add(row.id)
            plan.append(MemoryEvent(id=row.id, memory=old or "", event="NONE"))
    return plan
