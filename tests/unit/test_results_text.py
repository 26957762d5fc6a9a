"""The readable texts of tool results: plurals, what happened, no misleading phrases."""

from __future__ import annotations

import pytest

from tablestore_openmemory_mcp.memory.results import (
    AddResult,
    DeleteAllResult,
    DeleteResult,
    HistoryResult,
    ListResult,
    MemoryEvent,
    MemoryItem,
    ScoredMemory,
    SearchResult,
)


def event(kind: str, text: str = "x") -> MemoryEvent:
    return MemoryEvent(id="m1", memory=text, event=kind, previous_memory="old" if kind == "UPDATE" else None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kinds", "head"),
    [
        (["ADD"], "Added 1 memory."),
        (["ADD", "ADD"], "Added 2 memories."),
        (["ADD", "UPDATE", "DELETE"], "Added 1 memory, updated 1 memory, deleted 1 memory."),
        (["UPDATE", "NONE"], "Updated 1 memory."),
        (["NONE"], "Nothing new to remember: it is already stored."),
    ],
)
def test_add_says_what_happened(kinds, head):
    text = AddResult(events=[event(kind) for kind in kinds], inferred=True).text()
    assert text.splitlines()[0] == head
    assert "change(s)" not in text


def test_search_plurals_and_scores():
    one = ScoredMemory(id="a", memory="I like tea", score=0.91)
    assert SearchResult(query="tea", results=[one]).text().startswith("1 memory matches 'tea':")
    assert SearchResult(query="tea", results=[one, one]).text().startswith("2 memories match 'tea':")
    assert SearchResult(query="tea", results=[]).text() == "No memory matches 'tea'."


def test_list_has_no_score_and_says_when_there_is_more():
    item = MemoryItem(id="a", memory="I like tea")
    text = ListResult(count=1, total=1, memories=[item]).text()
    assert text.splitlines()[0] == "1 memory:" and "score" not in text
    paged = ListResult(count=1, total=3, next_cursor="c2", memories=[item]).text()
    assert paged.splitlines()[0] == "1 of 3 memories (more: pass cursor 'c2'):"
    assert "Nothing was changed" not in text + paged


def test_deletes_and_history():
    assert DeleteResult(deleted=["a"]).text() == "Deleted 1 memory."
    assert DeleteResult(deleted=[], not_found=["z"]).text() == "Nothing deleted. Not found among your memories: z."
    assert DeleteAllResult(deleted_count=2).text() == "Deleted all your memories (2 memories)."
    assert DeleteAllResult(deleted_count=0).text() == "Nothing to delete: you have no memories."
    assert HistoryResult(id="a", history=[]).text() == "No history for memory a."


def test_history_text_shows_what_each_event_did_never_none():
    from tablestore_openmemory_mcp.memory.results import HistoryEntry

    history = HistoryResult(
        id="a",
        history=[
            HistoryEntry(event="ADD", new_memory="likes tea", updated_at="t1"),
            HistoryEntry(event="UPDATE", old_memory="likes tea", new_memory="likes green tea", updated_at="t2"),
            HistoryEntry(event="DELETE", old_memory="likes green tea", new_memory=None, updated_at="t3"),
        ],
    )
    assert history.text().splitlines()[1:] == [
        "- t1 ADD: likes tea",
        "- t2 UPDATE: likes tea -> likes green tea",
        "- t3 DELETE: likes green tea",
    ]
    assert "None" not in history.text()
