"""Scripted "LLM" replies for the memory flow, shared by tests and benchmarks.

``facts`` and ``decision`` build the two JSON replies the classic flow expects; ``classic_memory_llm``
is a chat handler that answers any extraction or decision prompt on its own (one fact per add, ADD
for every new fact), so each add costs a fixed number of LLM calls. ``run_update_scenario`` is the
core issue's scenario, run the same way on every store.
"""

from __future__ import annotations

import json
from typing import Any

from tests.server_process import structured


def facts(*items: str) -> str:
    return json.dumps({"facts": list(items)}, ensure_ascii=False)


def decision(*events: dict[str, Any]) -> str:
    return json.dumps({"memory": list(events)}, ensure_ascii=False)


def chat_bodies(fake: Any) -> list[dict[str, Any]]:
    return [body for endpoint, body in fake.requests if endpoint == "chat"]


def classic_memory_llm(body: dict[str, Any]) -> str:
    """Extraction: one fact per add; decision: ADD every new fact (so each add takes the full path)."""
    user = body["messages"][-1]["content"]
    if user.startswith("Decide the events"):
        new_facts = json.loads(user.split("\n", 1)[1])["new_facts"]
        return decision(*({"id": "new", "text": fact, "event": "ADD"} for fact in new_facts))
    said = user.removeprefix("Input:\n").split("\n\nReturn the facts", 1)[0]
    return facts(f"Fact: {said}")


async def run_update_scenario(client: Any, fake: Any) -> str:
    """ADD, then UPDATE (history shows it), then a repeat is NONE, then a retraction DELETEs.

    The retraction's replies come wrapped in code fences and prose. Returns the memory's id.
    """
    old = "Uses UPPER_SNAKE_CASE for constants"
    new = "Prefers lower_snake_case for variables and constants"
    calls = fake.counts["chat"]
    fake.script_chat(facts(old))
    first = structured(await client.call_tool("add_memories", {"text": "use UPPER_SNAKE_CASE for constants"}))
    assert [e["event"] for e in first["events"]] == ["ADD"] and first["inferred"] is True
    memory_id = first["events"][0]["id"]
    assert fake.counts["chat"] == calls + 1, "nothing to reconcile: no decision call"

    fake.script_chat(facts(new), decision({"id": "0", "text": new, "event": "UPDATE", "old_memory": old}))
    second = structured(
        await client.call_tool("add_memories", {"text": "I now prefer lower_snake_case for variables and constants"})
    )
    assert second["events"] == [{"id": memory_id, "memory": new, "event": "UPDATE", "previous_memory": old}]
    assert fake.counts["chat"] == calls + 3
    decision_request = chat_bodies(fake)[-1]
    assert old in decision_request["messages"][1]["content"] and new in decision_request["messages"][1]["content"]
    assert decision_request["response_format"] == {"type": "json_object"}

    listed = structured(await client.call_tool("list_memories", {}))
    assert [(m["id"], m["memory"]) for m in listed["memories"]] == [(memory_id, new)]
    history = structured(await client.call_tool("memory_history", {"memory_id": memory_id}))
    assert [(h["event"], h["old_memory"], h["new_memory"]) for h in history["history"]] == [
        ("ADD", None, old),
        ("UPDATE", old, new),
    ]

    fake.script_chat(facts(new), decision({"id": "0", "text": new, "event": "NONE"}))
    repeat = structured(await client.call_tool("add_memories", {"text": "I prefer lower_snake_case"}))
    assert [e["event"] for e in repeat["events"]] == ["NONE"]
    assert structured(await client.call_tool("list_memories", {}))["count"] == 1

    fake.script_chat(
        "Here you go:\n```json\n" + facts("Has no naming preference any more") + "\n```",
        "Sure. " + decision({"id": "0", "event": "DELETE"}) + " Hope this helps!",
    )
    gone = structured(await client.call_tool("add_memories", {"text": "forget my naming preference"}))
    assert [(e["event"], e["id"]) for e in gone["events"]] == [("DELETE", memory_id)]
    assert structured(await client.call_tool("list_memories", {}))["count"] == 0
    return memory_id
