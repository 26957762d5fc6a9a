"""Request and response bodies of the REST API (``/api/v1``); they also generate its OpenAPI document."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from tablestore_openmemory_mcp.memory.admin import AppSummary
from tablestore_openmemory_mcp.memory.ports import HistoryRecord, State, StoredMemory
from tablestore_openmemory_mcp.memory.query_filters import EVENT_TIME_KEY, METADATA_KEY

StateName = State


def _event_time(memory: StoredMemory) -> str | None:
    value = memory.metadata.get(EVENT_TIME_KEY)
    return str(value) if value else None


def _tags(memory: StoredMemory) -> dict[str, Any] | None:
    value = memory.metadata.get(METADATA_KEY)
    return dict(value) if isinstance(value, Mapping) and value else None


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MemoryOut(BaseModel):
    id: str
    memory: str
    client: str | None
    state: StateName
    categories: list[str]
    created_at: str
    updated_at: str
    event_time: str | None = Field(None, description="When it happened, if given on add (since/until use it)")
    metadata: dict[str, Any] | None = Field(None, description="The tags given on add")
    score: float | None = Field(None, description="Relevance 0-1, only when searching with q")

    @classmethod
    def of(cls, memory: StoredMemory) -> MemoryOut:
        return cls(
            id=memory.id,
            memory=memory.text,
            client=memory.client,
            state=memory.state,
            categories=list(memory.categories),
            created_at=memory.created_at,
            updated_at=memory.updated_at,
            event_time=_event_time(memory),
            metadata=_tags(memory),
            score=round(memory.score, 4) if memory.score is not None else None,
        )


class EventOut(BaseModel):
    event: str
    old_memory: str | None
    new_memory: str | None
    at: str
    client: str | None
    source: str
    model: str | None
    reason: str | None
    old_state: str | None
    new_state: str | None

    @classmethod
    def of(cls, record: HistoryRecord) -> EventOut:
        return cls(
            event=record.event,
            old_memory=record.old_memory,
            new_memory=record.new_memory,
            at=record.at,
            client=record.client,
            source=record.source,
            model=record.model,
            reason=record.reason,
            old_state=record.old_state,
            new_state=record.new_state,
        )


class AccessOut(BaseModel):
    at: str
    client: str | None
    query: str | None

    @classmethod
    def of(cls, record: HistoryRecord) -> AccessOut:
        return cls(at=record.at, client=record.client, query=record.new_memory)


class MemoryPage(BaseModel):
    items: list[MemoryOut]
    total: int
    page: int
    size: int


class MemoryDetailOut(MemoryOut):
    history: list[EventOut]
    access_log: list[AccessOut]


class AccessPage(BaseModel):
    items: list[AccessOut]
    total: int
    page: int
    size: int


class CreateMemory(_Body):
    user_id: str | None = None
    client: str = Field("rest", description="The app the memory is recorded for")
    text: str
    infer: bool = Field(False, description="true: let the LLM extract facts and reconcile, as add_memories does")
    metadata: dict[str, Any] | None = Field(None, description='Tags to keep with it, e.g. {"project": "x"}')
    event_time: str | None = Field(None, description="ISO 8601: when it happened (default: now)")


class EditMemory(_Body):
    user_id: str | None = None
    text: str


class ChangeState(_Body):
    user_id: str | None = None
    memory_ids: list[str]
    state: StateName


class InvalidId(BaseModel):
    id: str
    error: str


class StateChanged(BaseModel):
    changed: list[str]
    unchanged: list[str] = Field(description="Ids not found, or already in that state")
    invalid: list[InvalidId] = Field(
        default_factory=list, description="Ids that are not memory ids (the others were still changed)"
    )


class ExportRequest(_Body):
    user_id: str | None = None


class DeleteMemories(_Body):
    user_id: str | None = None
    memory_ids: list[str]


class AppOut(BaseModel):
    name: str
    memories: int
    paused: bool
    last_access: str | None
    by_state: dict[str, int]

    @classmethod
    def of(cls, app: AppSummary) -> AppOut:
        return cls(
            name=app.name, memories=app.memories, paused=app.paused, last_access=app.last_access, by_state=app.by_state
        )


class AppList(BaseModel):
    items: list[AppOut]


class PauseApp(_Body):
    paused: bool


class ErrorOut(BaseModel):
    error: str
    message: str
