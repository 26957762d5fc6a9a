"""The two prompts of the classic memory flow: fact extraction, then the ADD/UPDATE/DELETE/NONE decision.

Both ask for JSON and contain the word "json", which DashScope requires for ``json_object`` mode.
``MEM0_FACT_EXTRACTION_PROMPT`` and ``MEM0_UPDATE_MEMORY_PROMPT`` replace the system parts; the user
parts (the data) are always built here, and a reminder to answer in JSON is added when a custom prompt
does not mention it.
"""

from __future__ import annotations

import json
from datetime import date

FACT_EXTRACTION_PROMPT = """You extract durable facts about the user from what they said, for a long-term memory.

Keep: personal details, preferences and dislikes, plans and intentions, habits, relationships,
professional details, project conventions and instructions for the assistant, and anything the user
explicitly asks to remember. Drop greetings, small talk and questions that state no fact.

Rules:
- Each fact is one short, self-contained sentence.
- Write every fact in the same language the user used (Chinese stays Chinese).
- Keep names, identifiers and code terms exactly as written (e.g. UPPER_SNAKE_CASE).
- If the user changes or retracts something, state the new situation as a fact
  (e.g. "Prefers lower_snake_case for variables and constants", "No longer likes coffee").
- Today's date is {today}.

Answer with a JSON object only: {{"facts": ["fact 1", "fact 2"]}}. Use {{"facts": []}} if there is nothing to keep."""

UPDATE_MEMORY_PROMPT = """You maintain a user's long-term memory. Compare newly extracted facts with the
existing memories and decide, for each, one event:

- ADD: the fact is new information. Use "id": "new".
- UPDATE: the fact refines, corrects or supersedes an existing memory. Keep that memory's id and give
  the merged, up-to-date text (e.g. an old preference replaced by a new one).
- DELETE: the fact retracts or contradicts an existing memory so that it should be forgotten. Keep
  that memory's id.
- NONE: the fact is already known (same meaning). Keep the matching memory's id.

Rules:
- Only use ids that appear in the existing memories, or "new" for ADD.
- Keep the language of the facts (Chinese stays Chinese).
- Every new fact must lead to exactly one event.

Answer with a JSON object only:
{"memory": [{"id": "0", "text": "...", "event": "UPDATE", "old_memory": "..."},
            {"id": "new", "text": "...", "event": "ADD"}]}"""


def _with_json_reminder(system: str) -> str:
    if "json" in system.lower():
        return system
    return system + "\n\nAnswer with a JSON object only."


def fact_extraction_messages(text: str, custom_prompt: str | None = None) -> list[dict[str, str]]:
    """Messages for step 1: extract facts from the user's text."""
    system = custom_prompt or FACT_EXTRACTION_PROMPT.format(today=date.today().isoformat())
    return [
        {"role": "system", "content": _with_json_reminder(system)},
        {"role": "user", "content": f"Input:\n{text}\n\nReturn the facts as JSON."},
    ]


def update_decision_messages(
    existing: list[dict[str, str]], facts: list[str], custom_prompt: str | None = None
) -> list[dict[str, str]]:
    """Messages for step 3: one decision over all new facts against the similar existing memories."""
    data = {"existing_memories": existing, "new_facts": facts}
    return [
        {"role": "system", "content": _with_json_reminder(custom_prompt or UPDATE_MEMORY_PROMPT)},
        {
            "role": "user",
            "content": "Decide the events as JSON.\n" + json.dumps(data, ensure_ascii=False, indent=1),
        },
    ]
