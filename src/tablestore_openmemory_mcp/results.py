"""What tools return: pydantic models (structured output) that also render as readable text."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

Event = Literal["ADD", "UPDATE", "DELETE", "NONE"]


class MemoryItem(BaseModel):
    """One stored memory as the user sees it."""

    id: str
    memory: str
    client: str | None = Field(None, description="The MCP client that recorded it")
    created_at: str | None = None
    updated_at: str | None = None
    score: float | None = Field(None, description="Relevance, higher is better (search only)")

    def line(self) -> str:
        score = f" (score {self.score:.3f})" if self.score is not None else ""
        return f"- [{self.id}] {self.memory}{score}"


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
        changed = [e for e in self.events if e.event != "NONE"]
        head = f"Memory updated: {len(changed)} change(s)." if changed else "Nothing new to remember."
        lines = [head, *(e.line() for e in self.events)]
        if self.note:
            lines.append(f"Note: {self.note}")
        return "\n".join(lines)


class SearchResult(BaseModel):
    query: str
    results: list[MemoryItem]

    def text(self) -> str:
        if not self.results:
            return f"No memories match {self.query!r}."
        return "\n".join([f"{len(self.results)} memories match {self.query!r}:", *(m.line() for m in self.results)])


class ListResult(BaseModel):
    count: int
    memories: list[MemoryItem]

    def text(self) -> str:
        if not self.memories:
            return "No memories stored yet."
        return "\n".join([f"{self.count} memories:", *(m.line() for m in self.memories)])


class DeleteResult(BaseModel):
    deleted: list[str]
    not_found: list[str] = Field(default_factory=list, description="Ids that are not among your memories")

    def text(self) -> str:
        parts = [f"Deleted {len(self.deleted)} memories."]
        if self.not_found:
            parts.append(f"Not found among your memories: {', '.join(self.not_found)}.")
        return " ".join(parts)


class DeleteAllResult(BaseModel):
    deleted_count: int

    def text(self) -> str:
        return f"Deleted all {self.deleted_count} memories."


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

    @classmethod
    def from_mem0(cls, row: dict[str, Any]) -> HistoryEntry:
        return cls(
            event=str(row.get("event")),
            old_memory=row.get("old_memory"),
            new_memory=row.get("new_memory"),
            created_at=row.get("created_at"),
            updated_at=row.get("updated_at"),
        )


class HistoryResult(BaseModel):
    id: str
    history: list[HistoryEntry]

    def text(self) -> str:
        lines = [f"History of memory {self.id}:"]
        for entry in self.history:
            change = entry.new_memory if entry.event == "ADD" else f"{entry.old_memory} -> {entry.new_memory}"
            lines.append(f"- {entry.updated_at or entry.created_at} {entry.event}: {change}")
        return "\n".join(lines)
