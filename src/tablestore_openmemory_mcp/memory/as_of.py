"""As-of recall (issue 23, item 3): what a scope's memories said at a past time, from their history.

Why from the history: the store keeps only the current row of a memory (a soft-deleted one included), while
the history log keeps every ADD / UPDATE / DELETE / STATE event with its time. Replaying a memory's events up
to ``as_of`` gives its text and state then; memories deleted since come back as they were, updated ones with
their old text. A memory with no event at all (written before history existed) counts from its
``created_at`` with its current text.

Cost: one history read per memory of the scope (fine for a person's memories; a per-user history range read
would make it one). Searches embed the texts that changed since (the stored vector is of today's text).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, Protocol, cast

from tablestore_openmemory_mcp.errors import UserInputError
from tablestore_openmemory_mcp.memory import scoring
from tablestore_openmemory_mcp.memory.ports import ALL_STATES, HistoryRecord, State, StoredMemory
from tablestore_openmemory_mcp.memory.query_filters import MemoryQuery, iso_time
from tablestore_openmemory_mcp.scope import Scope


class HistoryReader(Protocol):
    def iter_all(self, scope: Scope, batch: int = ..., states: Any = ...) -> Iterable[list[StoredMemory]]: ...
    def history(self, scope: Scope, memory_id: str) -> list[HistoryRecord]: ...
    def vectors(self, scope: Scope, memory_ids: Sequence[str]) -> dict[str, list[float]]: ...


_ACTIVE: tuple[State, ...] = ("active",)


def clean_as_of(value: str | None) -> str | None:
    """``as_of`` as the stores write times; a time in the future is an error naming it."""
    if not value:
        return None
    at = iso_time(value, "as_of")
    if at > datetime.now(UTC).isoformat():
        raise UserInputError("as_of must not be in the future")
    return at


def replay(memory: StoredMemory, records: Sequence[HistoryRecord], at: str) -> StoredMemory | None:
    """``memory`` as it was at ``at`` (``None``: it did not exist yet)."""
    if not records:
        return memory if memory.created_at <= at else None
    text: str | None = None
    state: State = "active"
    for record in sorted(records, key=lambda r: r.at):
        if record.at > at:
            break
        if record.event in ("ADD", "UPDATE") and record.new_memory is not None:
            text = record.new_memory
            state = "active" if record.event == "ADD" else state
        elif record.event == "DELETE":
            state = "deleted"
        elif record.event == "STATE" and record.new_state:
            state = cast(State, record.new_state)
    if text is None:
        return None
    return replace(memory, text=text, state=state if state in ALL_STATES else "active")


def memories_at(
    repository: HistoryReader,
    scope: Scope,
    at: str,
    where: MemoryQuery | None,
    states: Collection[State] = _ACTIVE,
) -> list[StoredMemory]:
    """The scope's memories that were in ``states`` at ``at`` (MCP: active; REST: any), oldest first,
    narrowed by ``where``."""
    out: list[StoredMemory] = []
    for page in repository.iter_all(scope, states=ALL_STATES):
        for memory in page:
            then = replay(memory, repository.history(scope, memory.id), at)
            if then is None or then.state not in states:
                continue
            if where and not where.accepts(then):
                continue
            out.append(then)
    out.sort(key=lambda m: (m.created_at, m.id))
    return out


def search_at(
    repository: HistoryReader,
    embedder: Any,
    embedder_name: str,
    scope: Scope,
    query: str,
    vector: Sequence[float],
    at: str,
    limit: int,
    min_score: float | None,
    where: MemoryQuery | None,
    states: Collection[State] = _ACTIVE,
) -> list[StoredMemory]:
    """Vector search over :func:`memories_at` (no keyword signal: the FTS index holds today's texts)."""
    then = memories_at(repository, scope, at, where, states)
    current = {m.id: m for page in repository.iter_all(scope, states=ALL_STATES) for m in page}
    same = [m.id for m in then if m.id in current and current[m.id].text == m.text]
    try:
        vectors = repository.vectors(scope, same)
    except NotImplementedError:  # a store that cannot read vectors back (Tablestore today): embed them all
        vectors = {}
    changed = [m for m in then if m.id not in vectors]
    if changed:
        fresh = embedder.embed_batch([m.text for m in changed], "add")
        vectors.update(zip([m.id for m in changed], fresh, strict=True))
    q = _unit(vector)
    candidates = [scoring.Candidate(m.id, _dot(q, _unit(vectors[m.id]))) for m in then if m.id in vectors]
    calibration = scoring.calibration_for(embedder_name, query)
    floor = calibration.cutoff if min_score is None else min_score
    ranked = scoring.rank(candidates, calibration=calibration, limit=limit, min_score=floor)
    by_id = {m.id: m for m in then}
    return [replace(by_id[hit.id], score=hit.score) for hit in ranked]


def _unit(vector: Sequence[float]) -> list[float]:
    norm = math.sqrt(sum(x * x for x in vector)) or 1.0
    return [x / norm for x in vector]


def _dot(a: Sequence[float], b: Sequence[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=False))


__all__ = ["clean_as_of", "memories_at", "replay", "search_at"]
