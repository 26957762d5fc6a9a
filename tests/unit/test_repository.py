"""The repository at its ``MemoryRepository`` protocol, on the embedded store as the server wires it (unit/wiring.py).

Only the protocol is used: what the flow and the owner's view rely on (scoping, duplicates, states, history,
conflicts, purge), not how the store keeps rows.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest

from tablestore_openmemory_mcp.app.bootstrap import Components
from tablestore_openmemory_mcp.errors import ConflictError
from tablestore_openmemory_mcp.memory.ports import NewMemory, Origin
from tablestore_openmemory_mcp.scope import Scope
from tests.unit.wiring import add_texts, built, fresh_scope
from tests.waiting import wait_for


@pytest.fixture(scope="module")
def wired(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Components]:
    with built(tmp_path_factory.mktemp("repository")) as components:
        yield components


@pytest.fixture
def repo(wired: Components) -> Any:
    return wired.service.repository


def vector(wired: Components, text: str) -> list[float]:
    return list(wired.service.flow.embedder.embed(text, "search"))


def test_add_then_read_back_and_an_exact_duplicate_is_not_stored_twice(wired: Components, repo: Any) -> None:
    scope = fresh_scope()
    [tea] = add_texts(wired, scope, "Drinks oolong tea every morning")
    assert (tea.text, tea.user_id, tea.client, tea.state) == (
        "Drinks oolong tea every morning",
        scope.user_id,
        "cline",
        "active",
    )
    assert repo.get(scope, tea.id) == tea
    assert repo.get_many(scope, [tea.id, "00000000-0000-4000-8000-000000000000"]) == {tea.id: tea}
    again = repo.add(scope, [NewMemory(tea.text, vector(wired, tea.text))], Origin())
    assert [(a.memory.id, a.created) for a in again] == [(tea.id, False)]
    assert repo.find_exact(scope, tea.text).id == tea.id
    assert repo.find_exact(scope, "Drinks oolong tea") is None
    assert [h.event for h in repo.history(scope, tea.id)] == ["ADD"]


def test_a_scope_never_reaches_another_users_or_clients_memories(wired: Components, repo: Any) -> None:
    owner = fresh_scope()
    [secret] = add_texts(wired, owner, "My PIN is 7391")
    others = [Scope("cline", f"{owner.user_id}-x"), Scope("cursor", owner.user_id)]
    for other in others:
        assert repo.get(other, secret.id) is None
        assert repo.get_many(other, [secret.id]) == {}
        assert repo.list_page(other, limit=10).items == []
        assert repo.search(other, "PIN", vector(wired, "PIN"), 5, None) == []
        assert repo.delete(other, [secret.id], Origin()) == []
        assert repo.history(other, secret.id) == []
    assert repo.get(owner, secret.id) is not None
    everyone = Scope("rest", owner.user_id, shared=True)  # the owner's view: every client of the user
    assert [m.id for m in repo.list_page(everyone, limit=10).items] == [secret.id]


def test_list_pages_follow_the_cursor_and_count_the_scope(wired: Components, repo: Any) -> None:
    scope = fresh_scope()
    added = add_texts(wired, scope, *(f"Fact number {n}" for n in range(5)))
    first = repo.list_page(scope, limit=2)
    assert first.total == 5 and len(first.items) == 2 and first.next_cursor
    seen = [m.id for m in first.items]
    cursor = first.next_cursor
    while cursor:
        page = repo.list_page(scope, limit=2, cursor=cursor)
        seen += [m.id for m in page.items]
        cursor = page.next_cursor
    assert sorted(seen) == sorted(m.id for m in added) and len(seen) == len(set(seen))


def test_search_and_nearest_rank_the_matching_memory_first(wired: Components, repo: Any) -> None:
    scope = fresh_scope()
    tea, _, _ = add_texts(wired, scope, "Drinks green tea", "Writes Go at work", "Lives in Hangzhou")
    hits = repo.search(scope, "tea", vector(wired, "tea"), 3, 0.0)
    assert hits[0].id == tea.id and all(0.0 <= (h.score or 0.0) <= 1.0 for h in hits)
    assert repo.nearest(scope, vector(wired, "green tea"), 1)[0].id == tea.id
    assert repo.search(scope, "tea", vector(wired, "tea"), 3, 1.01) == [], "nothing clears a cutoff above 1"


def test_update_replaces_text_only_if_unchanged_since_read(wired: Components, repo: Any) -> None:
    scope = fresh_scope()
    [memory] = add_texts(wired, scope, "Prefers tabs")
    updated = repo.update(scope, memory, "Prefers spaces", vector(wired, "Prefers spaces"), Origin(source="rest"))
    assert updated.id == memory.id and updated.text == "Prefers spaces"
    assert repo.get(scope, memory.id).text == "Prefers spaces"
    with pytest.raises(ConflictError):
        repo.update(scope, memory, "Prefers neither", vector(wired, "Prefers neither"), Origin())  # stale read
    history = repo.history(scope, memory.id)
    assert [(h.event, h.old_memory, h.new_memory, h.source) for h in history] == [
        ("ADD", None, "Prefers tabs", "mcp"),
        ("UPDATE", "Prefers tabs", "Prefers spaces", "rest"),
    ]


def test_delete_is_soft_returns_what_it_deleted_and_keeps_history(wired: Components, repo: Any) -> None:
    scope = fresh_scope()
    gone, kept = add_texts(wired, scope, "Old address", "Current job")
    assert [m.id for m in repo.delete(scope, [gone.id], Origin())] == [gone.id]
    assert repo.delete(scope, [gone.id], Origin()) == [], "already deleted: not deleted by this call"
    assert [m.id for m in repo.list_page(scope, limit=10).items] == [kept.id]
    assert repo.get_many(scope, [gone.id])[gone.id].state == "deleted", "soft: the row stays, marked deleted"
    assert [h.event for h in repo.history(scope, gone.id)] == ["ADD", "DELETE"]
    again = add_texts(wired, scope, "Old address")[0]
    assert again.id != gone.id, "the same text can be added after deletion"


def test_states_hide_memories_from_tools_and_each_change_is_recorded(wired: Components, repo: Any) -> None:
    scope = fresh_scope()
    paused, active = add_texts(wired, scope, "Paused fact", "Active fact")
    changed = repo.set_state(scope, [paused.id], "paused", Origin(source="rest"))
    assert [(m.id, m.state) for m in changed] == [(paused.id, "paused")]
    assert repo.set_state(scope, [paused.id], "paused", Origin(source="rest")) == [], "no change, nothing returned"
    assert [m.id for m in repo.list_page(scope, limit=10).items] == [active.id]
    both = repo.list_page(scope, limit=10, states=("active", "paused"))
    assert {m.id for m in both.items} == {paused.id, active.id}
    last = repo.history(scope, paused.id)[-1]
    assert (last.old_state, last.new_state, last.source) == ("active", "paused", "rest")


def test_purge_erases_memory_and_history_and_says_what_it_erased(wired: Components, repo: Any) -> None:
    scope = fresh_scope()
    [memory] = add_texts(wired, scope, "To be erased")
    repo.delete(scope, [memory.id], Origin())
    erased = repo.purge(scope, [memory.id, "00000000-0000-4000-8000-000000000000"])
    assert erased.memory_ids == [memory.id] and erased.history_events >= 2
    assert repo.get(scope, memory.id) is None and repo.history(scope, memory.id) == []


def test_delete_all_counts_only_the_scope(wired: Components, repo: Any) -> None:
    scope, other = fresh_scope(), fresh_scope()
    add_texts(wired, scope, "One", "Two", "Three")
    add_texts(wired, other, "Someone else's")
    assert repo.delete_all(scope, Origin()) == 3
    assert repo.list_page(scope, limit=10).total == 0
    assert repo.list_page(other, limit=10).total == 1


def test_ensure_recorded_adds_a_missing_add_event_once(wired: Components, repo: Any) -> None:
    scope = fresh_scope()
    [memory] = add_texts(wired, scope, "Recorded once")
    repo.ensure_recorded(scope, memory, Origin())
    assert [h.event for h in repo.history(scope, memory.id)] == ["ADD"]


def test_app_pause_and_access_log_are_per_user(wired: Components, repo: Any) -> None:
    scope = fresh_scope()
    [memory] = add_texts(wired, scope, "Seen by a search")
    assert repo.app_paused(scope) is False
    repo.set_app_paused(scope.user_id, "cline", True)
    assert repo.app_paused(scope) is True
    assert repo.app_paused(Scope("cline", f"{scope.user_id}-x")) is False, "another user's cline is not paused"
    repo.set_app_paused(scope.user_id, "cline", False)
    repo.record_access(scope, [replace(memory, score=0.9)], "a search")
    entries = wait_for(lambda: repo.access_for(scope.user_id, memory.id), "the access entry")
    assert [(e.event, e.client, e.new_memory) for e in entries] == [("ACCESS", "cline", "a search")]
    assert repo.access_for(f"{scope.user_id}-x", memory.id) == []
