"""The classic flow in-process: a scripted model and an in-memory repository, milliseconds per test."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from tablestore_openmemory_mcp.errors import AppPaused, ConflictError, MemoryNotFound
from tablestore_openmemory_mcp.memory.flow import ClassicFlow
from tablestore_openmemory_mcp.models.llm import LLMError
from tablestore_openmemory_mcp.scope import Scope
from tests.fakes.memory_repository import InMemoryRepository, ScriptedModel, WordEmbedder

ALICE = Scope("cline", "alice")
BOB = Scope("cline", "bob")


def make(*replies: object) -> tuple[ClassicFlow, InMemoryRepository, ScriptedModel, WordEmbedder]:
    repo, model, embedder = InMemoryRepository(), ScriptedModel(*replies), WordEmbedder()  # type: ignore[arg-type]
    return ClassicFlow(repo, embedder, model), repo, model, embedder


def test_first_add_extracts_and_adds_without_a_decision_call() -> None:
    flow, repo, model, _ = make({"facts": ["Likes tea", "Lives in Hangzhou"]})
    result = flow.add(ALICE, "I like tea and live in Hangzhou")
    assert [(e.event, e.memory) for e in result.events] == [("ADD", "Likes tea"), ("ADD", "Lives in Hangzhou")]
    assert len(model.requests) == 1, "nothing similar exists: no decision call"
    assert repo.calls["add"] == 1, "all ADDs in one write"


def test_update_delete_none_with_reasons_recorded() -> None:
    flow, _repo, model, _ = make({"facts": ["Uses UPPER_SNAKE_CASE for constants"]})
    memory_id = flow.add(ALICE, "use UPPER_SNAKE_CASE").events[0].id
    assert memory_id is not None
    new = "Prefers lower_snake_case for constants"
    model.script(
        {"facts": [new]},
        {"memory": [{"id": "0", "text": new, "event": "UPDATE", "reason": "The user changed their mind."}]},
    )
    second = flow.add(ALICE, "I now prefer lower_snake_case")
    assert [(e.event, e.id, e.previous_memory) for e in second.events] == [
        ("UPDATE", memory_id, "Uses UPPER_SNAKE_CASE for constants")
    ]
    history = flow.history(ALICE, memory_id).history
    assert [(h.event, h.reason, h.model) for h in history] == [
        ("ADD", None, "scripted-model"),
        ("UPDATE", "The user changed their mind.", "scripted-model"),
    ]
    model.script({"facts": [new]}, {"memory": [{"id": "0", "event": "NONE"}]})
    assert [e.event for e in flow.add(ALICE, "lower_snake_case please").events] == ["NONE"]
    model.script({"facts": ["No naming preference"]}, {"memory": [{"id": "0", "event": "DELETE"}]})
    assert [(e.event, e.id) for e in flow.add(ALICE, "forget it").events] == [("DELETE", memory_id)]
    assert flow.list_memories(ALICE, 10).total == 0
    assert [h.event for h in flow.history(ALICE, memory_id).history] == ["ADD", "UPDATE", "DELETE"], (
        "a deleted memory's history stays readable"
    )


def test_llm_failure_stores_verbatim_and_says_so() -> None:
    flow, _repo, _, _ = make(LLMError("the LLM service is down"))
    result = flow.add(ALICE, "My cat is called Mochi")
    assert result.inferred is False and result.note and "stored as given" in result.note
    assert [m.memory for m in flow.list_memories(ALICE, 10).memories] == ["My cat is called Mochi"]


def test_decision_failure_still_adds_the_facts() -> None:
    flow, _, model, _ = make({"facts": ["Likes tea"]})
    flow.add(ALICE, "I like tea")
    model.script({"facts": ["Likes green tea"]}, LLMError("timeout"))
    result = flow.add(ALICE, "I like green tea")
    assert [(e.event, e.memory) for e in result.events] == [("ADD", "Likes green tea")]
    assert result.note and "could not decide" in result.note


def test_exact_duplicate_is_not_stored_twice_and_is_reported() -> None:
    flow, _repo, _, embedder = make()
    flow.llm = None
    first = flow.add(ALICE, "Allergic to peanuts", infer=False)
    again = flow.add(ALICE, "Allergic to peanuts", infer=False)
    assert [e.event for e in first.events] == ["ADD"] and [e.event for e in again.events] == ["NONE"]
    assert again.events[0].id == first.events[0].id and again.note == "This memory was already stored."
    assert embedder.calls["embed"] == 1, "a known exact text is found before embedding"
    assert [e.event for e in flow.add(BOB, "Allergic to peanuts", infer=False).events] == ["ADD"], "per scope"


def test_delete_then_re_add_stores_the_text_again() -> None:
    flow, _, _, _ = make()
    first = flow.add(ALICE, "Works at a bank", infer=False).events[0].id
    assert first is not None
    assert flow.delete(ALICE, [first]).deleted == [first]
    again = flow.add(ALICE, "Works at a bank", infer=False)
    assert [e.event for e in again.events] == ["ADD"] and again.events[0].id != first


def test_conflicting_update_decides_again_on_fresh_rows() -> None:
    flow, repo, model, _ = make({"facts": ["Likes tea"]})
    memory_id = flow.add(ALICE, "I like tea").events[0].id
    assert memory_id is not None
    raced: list[bool] = []

    def someone_else_writes_first(scope: Scope, current: object) -> None:
        if not raced:
            raced.append(True)
            memory, vector = repo.rows[memory_id]
            repo.rows[memory_id] = (memory.__class__(**{**_fields(memory), "updated_at": "9999"}), vector)

    repo.before_update = someone_else_writes_first
    model.script(
        {"facts": ["Likes green tea"]},
        {"memory": [{"id": "0", "text": "Likes green tea", "event": "UPDATE"}]},
        {"memory": [{"id": "0", "text": "Likes green tea", "event": "UPDATE"}]},
    )
    result = flow.add(ALICE, "I like green tea")
    assert [e.event for e in result.events] == ["UPDATE"]
    assert len(model.requests) == 4, "one extraction, two decisions (the second after re-reading)"
    assert repo.calls["nearest"] == 3, "similar memories re-read for the second decision"


def test_conflict_that_never_resolves_is_reported() -> None:
    flow, repo, model, _ = make({"facts": ["Likes tea"]})
    flow.add(ALICE, "I like tea")

    def always(scope: Scope, current: object) -> None:
        raise ConflictError("changed")

    repo.before_update = always
    model.script(
        {"facts": ["Likes coffee"]}, *[{"memory": [{"id": "0", "text": "Likes coffee", "event": "UPDATE"}]}] * 3
    )
    with pytest.raises(ConflictError):
        flow.add(ALICE, "I like coffee")


def test_update_reads_the_row_once_and_is_scoped() -> None:
    flow, repo, _, _ = make()
    memory_id = flow.add(ALICE, "Likes tea", infer=False).events[0].id
    assert memory_id is not None
    repo.calls.clear()
    result = flow.update(ALICE, memory_id, "Likes coffee")
    assert result.previous_memory == "Likes tea" and repo.calls["get"] == 1 and repo.calls["update"] == 1
    with pytest.raises(MemoryNotFound):
        flow.update(BOB, memory_id, "hijacked")
    with pytest.raises(MemoryNotFound):
        flow.history(BOB, memory_id)


def test_delete_reports_unknown_ids_without_failing() -> None:
    flow, _, _, _ = make()
    kept = flow.add(ALICE, "Likes tea", infer=False).events[0].id
    assert kept is not None
    unknown = "00000000-0000-4000-8000-999999999999"
    result = flow.delete(BOB, [kept, unknown])
    assert result.deleted == [] and result.not_found == [kept, unknown]
    assert flow.list_memories(ALICE, 10).total == 1


def test_list_pages_with_a_cursor_and_total() -> None:
    flow, _, _, _ = make()
    for i in range(5):
        flow.add(ALICE, f"fact number {i}", infer=False)
    first = flow.list_memories(ALICE, 2)
    assert (first.count, first.total) == (2, 5) and first.next_cursor
    seen = [m.memory for m in first.memories]
    cursor = first.next_cursor
    while cursor:
        page = flow.list_memories(ALICE, 2, cursor)
        seen += [m.memory for m in page.memories]
        cursor = page.next_cursor
    assert seen == [f"fact number {i}" for i in range(5)]
    assert all(m.model_dump().get("score") is None for m in first.memories), "list results carry no score"


def _fields(memory: object) -> dict[str, object]:
    return {name: getattr(memory, name) for name in memory.__slots__}  # type: ignore[attr-defined]


def test_a_retry_after_a_writer_died_before_recording_records_the_add() -> None:
    flow, repo, _, _ = make()
    memory_id = flow.add(ALICE, "Lives in Hangzhou", infer=False).events[0].id
    assert memory_id is not None
    repo.events.clear()  # the writer died after storing the memory, before its history event
    again = flow.add(ALICE, "Lives in Hangzhou", infer=False)
    assert [(e.event, e.id) for e in again.events] == [("NONE", memory_id)]
    assert [h.event for h in flow.history(ALICE, memory_id).history] == ["ADD"]


def test_a_paused_app_cannot_write_but_other_apps_can() -> None:
    flow, repo, _, _ = make()
    flow.add(ALICE, "Likes tea", infer=False)
    repo.paused_apps.add(("cline", "alice"))
    with pytest.raises(AppPaused):
        flow.add(ALICE, "Likes coffee", infer=False)
    assert flow.list_memories(ALICE, 10).total == 0, "its memories are hidden from reads"
    assert [e.event for e in flow.add(Scope("cursor", "alice"), "Likes coffee", infer=False).events] == ["ADD"]


class _MeetingEmbedder(WordEmbedder):
    """Embeds only once ``parties`` callers are inside it at the same time (fails after 10 s otherwise)."""

    def __init__(self, parties: int) -> None:
        super().__init__()
        self.barrier = threading.Barrier(parties, timeout=10)

    def embed(self, text: str, memory_action: object = None) -> list[float]:
        self.barrier.wait()
        return super().embed(text, memory_action)

    def embed_batch(self, texts: list[str], memory_action: str = "add") -> list[list[float]]:
        self.barrier.wait()
        return super().embed_batch(texts, memory_action)


def _in_threads(*calls: Callable[[], object]) -> list[object]:
    with ThreadPoolExecutor(len(calls)) as pool:
        return [future.result(timeout=30) for future in [pool.submit(call) for call in calls]]


def test_verbatim_adds_in_one_scope_embed_concurrently() -> None:
    """Concurrent adds of one scope reach the embedder together, so its batcher can share one call."""
    repo, embedder = InMemoryRepository(), _MeetingEmbedder(parties=3)
    flow = ClassicFlow(repo, embedder, None)
    results = _in_threads(*(lambda t=text: flow.add(ALICE, t, infer=False) for text in ("tea", "coffee", "cocoa")))
    assert [r.events[0].event for r in results] == ["ADD", "ADD", "ADD"]  # type: ignore[attr-defined]
    assert flow.list_memories(ALICE, 10).total == 3


def test_extraction_runs_concurrently_but_decisions_take_turns() -> None:
    """Extraction and embedding overlap across adds of one scope; deciding against the scope does not."""

    class Model:
        model = "scripted-model"

        def __init__(self) -> None:
            self.extracting = threading.Barrier(2, timeout=10)
            self.guard = threading.Lock()
            self.active = 0
            self.both_in = threading.Event()
            self.overlapped = False

        def complete_json(self, messages: list[dict[str, str]]) -> dict[str, object]:
            text = messages[-1]["content"]
            if text.startswith("Input:"):
                self.extracting.wait()  # both extractions are in flight together
                return {"facts": [text.removeprefix("Input:\n").split("\n")[0]]}
            with self.guard:
                self.active += 1
                if self.active == 2:
                    self.both_in.set()
            # Unserialized, the other add's decision arrives within this wait (both left the barrier together).
            self.overlapped = self.both_in.wait(0.3) or self.overlapped
            with self.guard:
                self.active -= 1
            return {"memory": [{"id": "0", "event": "NONE"}]}

    flow, _, _, _ = make()
    flow.add(ALICE, "Likes tea", infer=False)  # something similar exists: each add makes a decision call
    model = Model()
    flow.llm = model  # type: ignore[assignment]
    results = _in_threads(lambda: flow.add(ALICE, "Likes green tea"), lambda: flow.add(ALICE, "Likes black tea"))
    assert not model.overlapped, "two decisions for one scope ran at the same time"
    assert all(r.inferred for r in results)  # type: ignore[attr-defined]
