"""The decision parser: what the LLM says -> which events are applied (tolerant of what models answer)."""

from __future__ import annotations

from tablestore_openmemory_mcp.memory.flow import fallback_plan, parse_facts, plan_events
from tablestore_openmemory_mcp.memory.ports import StoredMemory


def memory(memory_id: str, text: str) -> StoredMemory:
    return StoredMemory(memory_id, text, "alice", "cline", "t0", "t0", "h")


EXISTING = {"0": memory("m0", "Likes tea"), "1": memory("m1", "Lives in Hangzhou")}


def events(decision: dict[str, object]) -> list[tuple[str, str, str | None]]:
    return [(e.event, e.text, e.target.id if e.target else None) for e in plan_events(decision, EXISTING)]


def test_each_event_kind() -> None:
    decision = {
        "memory": [
            {"id": "0", "text": "Likes green tea", "event": "UPDATE", "reason": "more specific"},
            {"id": "1", "event": "DELETE"},
            {"id": "new", "text": "Works at a bank", "event": "ADD"},
        ]
    }
    assert events(decision) == [
        ("UPDATE", "Likes green tea", "m0"),
        ("DELETE", "Lives in Hangzhou", "m1"),
        ("ADD", "Works at a bank", None),
    ]
    assert plan_events(decision, EXISTING)[0].reason == "more specific"


def test_made_up_ids_missing_fields_and_garbage_are_tolerated() -> None:
    decision = {
        "memory": [
            {"id": "42", "text": "Plays go", "event": "UPDATE"},  # unknown id -> ADD
            {"id": "99", "event": "DELETE"},  # unknown id -> ignored
            {"text": "no event"},  # ignored
            "not an object",
            {"id": "0", "event": "update", "text": "Likes tea"},  # same text -> NONE
            {"id": "0", "event": "DELETE"},  # already touched -> ignored
        ]
    }
    assert events(decision) == [("ADD", "Plays go", None), ("NONE", "Likes tea", "m0")]
    assert plan_events({"memory": "nope"}, EXISTING) == []
    assert plan_events({}, EXISTING) == []


def test_an_add_of_a_known_text_is_none_and_duplicates_collapse() -> None:
    decision = {
        "events": [{"event": "ADD", "text": "Likes tea"}, {"event": "ADD", "text": "X"}, {"event": "ADD", "text": "X"}]
    }
    assert events(decision) == [("NONE", "Likes tea", "m0"), ("ADD", "X", None)]


def test_fact_shapes() -> None:
    assert parse_facts({"facts": ["a", " a ", {"text": "b"}, {"fact": "c"}, "", 3]}) == ["a", "b", "c"]
    assert parse_facts({"memory": "one"}) == ["one"]
    assert parse_facts({"items": []}) == []


def test_fallback_adds_new_facts_or_reports_known_ones() -> None:
    assert [(e.event, e.text) for e in fallback_plan(["Likes tea", "New"], EXISTING)] == [("ADD", "New")]
    assert [(e.event, e.target.id if e.target else None) for e in fallback_plan(["Likes tea"], EXISTING)] == [
        ("NONE", "m0")
    ]
