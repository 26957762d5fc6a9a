"""An in-memory MemoryRepository and a scripted chat model, for fast in-process tests of the flow.

It keeps the contract the real repository keeps (scoped rows, exact-duplicate detection per scope,
conditional updates, exact delete results, history that survives deletion) and counts calls, so tests
can assert what the flow asked of the store.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import replace
from typing import Any

from tablestore_openmemory_mcp.errors import ConflictError, DependencyError, MemoryNotFound
from tablestore_openmemory_mcp.memory.ports import (
    Added,
    HistoryRecord,
    NewMemory,
    Origin,
    Page,
    Purged,
    StoredMemory,
)
from tablestore_openmemory_mcp.scope import Scope


def _cosine(a: Sequence[float], b: Sequence[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return dot / norm if norm else 0.0


def _owns(scope: Scope, memory: StoredMemory) -> bool:
    return memory.user_id == scope.user_id and (scope.shared or memory.client == scope.client_name)


class InMemoryRepository:
    def __init__(self) -> None:
        self.rows: dict[str, tuple[StoredMemory, list[float]]] = {}
        self.events: list[tuple[str, HistoryRecord]] = []
        self.calls: Counter[str] = Counter()
        self._clock = 0
        self._ids = 0
        self.before_update: Any = None  # hook: called with (scope, current) before a conditional update
        self.paused_apps: set[tuple[str, str]] = set()  # (client, user)
        self.accesses: list[tuple[str, str, str | None]] = []

    def _tick(self) -> str:
        self._clock += 1
        return f"2026-01-01T00:00:{self._clock:06d}"

    def _scoped(self, scope: Scope, states: Collection[str] = ("active",)) -> list[tuple[StoredMemory, list[float]]]:
        return [
            (m, v)
            for m, v in self.rows.values()
            if _owns(scope, m) and m.state in states and (m.client, m.user_id) not in self.paused_apps
        ]

    def ensure_recorded(self, scope: Scope, memory: StoredMemory, origin: Origin) -> None:
        self.calls["ensure_recorded"] += 1
        if not any(u == scope.user_id and r.memory_id == memory.id for u, r in self.events):
            self._record(scope, memory.id, "ADD", None, memory.text, origin, None)

    def app_paused(self, scope: Scope) -> bool:
        return (scope.client_name, scope.user_id) in self.paused_apps

    def record_access(self, scope: Scope, memories: Sequence[StoredMemory], query: str | None) -> None:
        self.accesses.extend((scope.user_id, m.id, query) for m in memories)

    def get(self, scope: Scope, memory_id: str) -> StoredMemory | None:
        self.calls["get"] += 1
        row = self.rows.get(memory_id)
        return row[0] if row and _owns(scope, row[0]) else None

    def get_many(self, scope: Scope, memory_ids: Sequence[str]) -> dict[str, StoredMemory]:
        self.calls["get_many"] += 1
        return {i: self.rows[i][0] for i in memory_ids if i in self.rows and _owns(scope, self.rows[i][0])}

    def list_page(
        self, scope: Scope, *, limit: int, cursor: str | None = None, states: Collection[str] = ("active",)
    ) -> Page:
        self.calls["list_page"] += 1
        rows = sorted((m for m, _ in self._scoped(scope, states)), key=lambda m: (m.created_at, m.id))
        start = int(cursor or 0)
        page = rows[start : start + limit]
        nxt = str(start + limit) if start + limit < len(rows) else None
        return Page(items=page, total=len(rows), next_cursor=nxt)

    def nearest(self, scope: Scope, vector: Sequence[float], limit: int) -> list[StoredMemory]:
        self.calls["nearest"] += 1
        scored = sorted(((m, _cosine(vector, v)) for m, v in self._scoped(scope)), key=lambda p: -p[1])
        return [replace(m, score=s) for m, s in scored[:limit]]

    def search(
        self,
        scope: Scope,
        query: str,
        vector: Sequence[float],
        limit: int,
        min_score: float | None,
        states: Collection[str] = ("active",),
    ) -> list[StoredMemory]:
        self.calls["search"] += 1
        hits = [m for m in self.nearest(scope, vector, limit) if min_score is None or (m.score or 0) >= min_score]
        return hits

    def find_exact(self, scope: Scope, text: str) -> StoredMemory | None:
        self.calls["find_exact"] += 1
        return next((m for m, _ in self._scoped(scope) if m.text == text), None)

    def add(self, scope: Scope, items: Sequence[NewMemory], origin: Origin) -> list[Added]:
        self.calls["add"] += 1
        out: list[Added] = []
        for item in items:
            same = self.find_exact(scope, item.text)
            if same is not None:  # like the real one: an existing text gets its missing ADD recorded
                self.ensure_recorded(scope, same, origin)
                out.append(Added(same, False))
                continue
            self._ids += 1
            now = self._tick()
            memory = StoredMemory(
                id=item.id or f"00000000-0000-4000-8000-{self._ids:012d}",
                text=item.text,
                user_id=scope.user_id,
                client=scope.client_name,
                created_at=now,
                updated_at=now,
                hash=str(hash(item.text)),
            )
            self.rows[memory.id] = (memory, list(item.vector))
            self._record(scope, memory.id, "ADD", None, item.text, origin, item.reason)
            out.append(Added(memory, True))
        return out

    def update(
        self, scope: Scope, current: StoredMemory, text: str, vector: Sequence[float], origin: Origin
    ) -> StoredMemory:
        self.calls["update"] += 1
        if self.before_update is not None:
            self.before_update(scope, current)
        row = self.rows.get(current.id)
        if row is None or not _owns(scope, row[0]):
            raise MemoryNotFound(f"No memory with id {current.id} exists among your memories")
        if row[0].updated_at != current.updated_at:
            raise ConflictError(f"memory {current.id} changed since it was read")
        changed = replace(row[0], text=text, updated_at=self._tick(), score=None)
        self.rows[current.id] = (changed, list(vector))
        self._record(scope, current.id, "UPDATE", row[0].text, text, origin, origin.reason)
        return changed

    def set_state(
        self,
        scope: Scope,
        memory_ids: Sequence[str],
        state: str,
        origin: Origin,
        *,
        eligible: Collection[str] = ("active", "paused", "archived", "deleted"),
    ) -> list[StoredMemory]:
        self.calls["set_state"] += 1
        changed = []
        for memory_id in dict.fromkeys(memory_ids):
            row = self.rows.get(memory_id)
            if row is None or not _owns(scope, row[0]) or row[0].state == state or row[0].state not in eligible:
                continue
            moved = replace(row[0], state=state, updated_at=self._tick())  # type: ignore[arg-type]
            self.rows[memory_id] = (moved, row[1])
            event = "DELETE" if state == "deleted" else "STATE"
            self._record(
                scope, memory_id, event, row[0].text, None if state == "deleted" else row[0].text, origin, None
            )
            changed.append(moved)
        return changed

    def delete(
        self, scope: Scope, memory_ids: Sequence[str], origin: Origin, *, eligible: Collection[str] = ("active",)
    ) -> list[StoredMemory]:
        self.calls["delete"] += 1
        return self.set_state(scope, memory_ids, "deleted", origin, eligible=eligible)

    def delete_all(self, scope: Scope, origin: Origin) -> int:
        self.calls["delete_all"] += 1
        return len(self.delete(scope, [m.id for m, _ in self._scoped(scope)], origin))

    def purge(self, scope: Scope, memory_ids: Sequence[str]) -> Purged:
        gone = [i for i in dict.fromkeys(memory_ids) if i in self.rows and _owns(scope, self.rows[i][0])]
        for memory_id in gone:
            del self.rows[memory_id]
        before = len(self.events)
        self.events = [(u, r) for u, r in self.events if not (u == scope.user_id and r.memory_id in gone)]
        return Purged(gone, before - len(self.events), 0)

    def history(self, scope: Scope, memory_id: str) -> list[HistoryRecord]:
        self.calls["history"] += 1
        return [
            r
            for user, r in self.events
            if user == scope.user_id and r.memory_id == memory_id and (scope.shared or r.client == scope.client_name)
        ]

    def close(self) -> None:
        self.calls["close"] += 1

    def _record(
        self, scope: Scope, memory_id: str, event: str, old: str | None, new: str | None, origin: Origin, reason: Any
    ) -> None:
        record = HistoryRecord(
            memory_id=memory_id,
            event=event,
            old_memory=old,
            new_memory=new,
            at=self._tick(),
            client=scope.client_name,
            source=origin.source,
            model=origin.model,
            reason=reason,
        )
        self.events.append((scope.user_id, record))


class WordEmbedder:
    """Bag-of-words vectors over a fixed vocabulary: similar texts share words, so they are near."""

    name = "test:words"

    def __init__(self, dims: int = 64) -> None:
        self.dims = dims
        self.calls: Counter[str] = Counter()

    def _vector(self, text: str) -> list[float]:
        vec = [0.0] * self.dims
        for word in text.lower().replace(".", " ").split():
            vec[sum(word.encode()) % self.dims] += 1.0
        vec[0] += 0.01
        return vec

    def embed(self, text: str, memory_action: Any = None) -> list[float]:
        self.calls["embed"] += 1
        return self._vector(text)

    def embed_batch(self, texts: list[str], memory_action: str = "add") -> list[list[float]]:
        self.calls["embed_batch"] += 1
        return [self._vector(t) for t in texts]


class ScriptedModel:
    """A chat model that answers with the scripted JSON objects in order (or raises a scripted error)."""

    model = "scripted-model"

    def __init__(self, *replies: dict[str, Any] | Exception) -> None:
        self.replies = list(replies)
        self.requests: list[list[dict[str, str]]] = []

    def script(self, *replies: dict[str, Any] | Exception) -> None:
        self.replies.extend(replies)

    def complete_json(self, messages: list[dict[str, str]]) -> dict[str, Any]:
        self.requests.append(messages)
        if not self.replies:
            raise DependencyError("the scripted model has no reply left")
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return reply
