"""What tools return: pydantic models (structured output) that also render as readable text."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

if TYPE_CHECKING:
    from tablestore_openmemory_mcp.memory.ports import HistoryRecord

Event = Literal["ADD", "UPDATE", "DELETE", "NONE"]


def memories(count: int) -> str:
    """``1 memory``, ``2 memories``: the texts are read by people and by LLMs, both notice bad grammar."""
    return f"{count} {'memory' if count == 1 else 'memories'}"


class MemoryItem(BaseModel):
    """One stored memory as the user sees it."""

    id: str
    memory: str
    client: str | None = Field(None, description="The MCP client that recorded it")
    created_at: str | None = None
    updated_at: str | None = None
    event_time: str | None = Field(None, description="When it happened, if given on add")
    metadata: dict[str, Any] | None = Field(None, description="The tags given on add")

    def line(self) -> str:
        return f"- [{self.id}] {self.memory}"


class ScoredMemory(MemoryItem):
    """A search hit: a memory and how relevant it is to the query."""

    score: float = Field(description="Relevance from 0 (unrelated) to 1 (the same text); 0.8 or more is a strong match")

    def line(self) -> str:
        return f"- [{self.id}] {self.memory} (score {self.score:.2f})"


class MemoryEvent(BaseModel):
    """What one add did to one memory."""

    id: str | None
    memory: str
    event: Event
    previous_memory: str | None = None

    def line(self) -> str:
        previous = f" (was: {self.previous_memory})" if self.previous_memory else ""
        return f"- {self.event} [{self.id}] {self.memory}{previous}"


class AddResult(BaseModel):
    events: list[MemoryEvent]
    inferred: bool = Field(description="True when an LLM extracted facts and decided the events")
    note: str | None = None

    def text(self) -> str:
        done = [
            f"{verb} {memories(sum(e.event == event for e in self.events))}"
            for event, verb in (("ADD", "added"), ("UPDATE", "updated"), ("DELETE", "deleted"))
            if any(e.event == event for e in self.events)
        ]
        head = (", ".join(done).capitalize() + ".") if done else "Nothing new to remember: it is already stored."
        lines = [head, *(e.line() for e in self.events)]
        if self.note:
            lines.append(f"Note: {self.note}")
        return "\n".join(lines)


class SearchResult(BaseModel):
    query: str
    results: list[ScoredMemory]

    def text(self) -> str:
        if not self.results:
            return f"No memory matches {self.query!r}."
        verb = "matches" if len(self.results) == 1 else "match"
        return "\n".join([f"{memories(len(self.results))} {verb} {self.query!r}:", *(m.line() for m in self.results)])


class ListResult(BaseModel):
    count: int = Field(description="Memories on this page")
    total: int = Field(description="Memories in your scope")
    next_cursor: str | None = Field(None, description="Pass as cursor to get the next page; null on the last page")
    memories: list[MemoryItem]

    def text(self) -> str:
        if not self.memories:
            return "No memories stored yet."
        head = f"{memories(self.count)}:"
        if self.next_cursor:
            head = f"{self.count} of {memories(self.total)} (more: pass cursor {self.next_cursor!r}):"
        return "\n".join([head, *(m.line() for m in self.memories)])


class DeleteResult(BaseModel):
    deleted: list[str]
    not_found: list[str] = Field(default_factory=list, description="Ids that are not among your memories")

    def text(self) -> str:
        parts = [f"Deleted {memories(len(self.deleted))}." if self.deleted else "Nothing deleted."]
        if self.not_found:
            parts.append(f"Not found among your memories: {', '.join(self.not_found)}.")
        return " ".join(parts)


class DeleteAllResult(BaseModel):
    deleted_count: int

    def text(self) -> str:
        if not self.deleted_count:
            return "Nothing to delete: you have no memories."
        return f"Deleted all your memories ({memories(self.deleted_count)})."


class UpdateResult(BaseModel):
    id: str
    memory: str
    previous_memory: str | None

    def text(self) -> str:
        return f"Updated memory {self.id}: {self.memory} (was: {self.previous_memory})"


class HistoryEntry(BaseModel):
    event: str
    old_memory: str | None = None
    new_memory: str | None = None
    created_at: str | None = None
    updated_at: str | None = None
    client: str | None = Field(None, description="The MCP client (app) that caused it")
    source: str | None = Field(None, description="mcp, rest, import or migration")
    model: str | None = Field(None, description="The LLM that decided it, for LLM decisions")
    reason: str | None = Field(None, description="The LLM's one-line reason, when it gave one")

    @classmethod
    def from_record(cls, record: HistoryRecord) -> HistoryEntry:
        return cls(
            event=record.event,
            old_memory=record.old_memory,
            new_memory=record.new_memory,
            created_at=record.at,
            updated_at=record.at,
            client=record.client,
            source=record.source,
            model=record.model,
            reason=record.reason,
        )


class HistoryResult(BaseModel):
    id: str
    history: list[HistoryEntry]

    def text(self) -> str:
        if not self.history:
            return f"No history for memory {self.id}."
        lines = [f"History of memory {self.id}:"]
        for entry in self.history:
            if entry.event == "UPDATE" and entry.old_memory is not None and entry.new_memory is not None:
                change = f"{entry.old_memory} -> {entry.new_memory}"
            else:  # ADD shows the text added, DELETE the text deleted (never "-> None")
                change = entry.new_memory if entry.new_memory is not None else entry.old_memory or ""
            lines.append(f"- {entry.updated_at or entry.created_at} {entry.event}: {change}")
        return "\n".join(lines)


class StateResult(BaseModel):
    state: str
    changed: list[str]
    unchanged: list[str] = Field(default_factory=list, description="Ids not among your memories, or already in it")

    def text(self) -> str:
        noun = "memory" if len(self.changed) == 1 else "memories"
        parts = [f"Moved {len(self.changed)} {noun} to {self.state}."]
        if self.unchanged:
            parts.append(f"Unchanged: {', '.join(self.unchanged)}.")
        return " ".join(parts)
