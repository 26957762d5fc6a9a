"""The owner's view (memory/admin.py): browse, detail, states, removal, apps and statistics for one user, across
their clients, on the service as the server wires it (tests/unit/wiring.py)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import date, timedelta
from typing import Any

import pytest

from tablestore_openmemory_mcp.app.bootstrap import Components
from tablestore_openmemory_mcp.errors import MemoryNotFound, UserInputError
from tablestore_openmemory_mcp.memory.admin import Admin, BrowseRequest, user_scope
from tablestore_openmemory_mcp.scope import Scope
from tests.unit.wiring import add_texts, built, fresh_scope

UNKNOWN = "00000000-0000-4000-8000-000000000000"


@pytest.fixture(scope="module")
def wired(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Components]:
    with built(tmp_path_factory.mktemp("admin")) as components:
        yield components


@pytest.fixture
def admin(wired: Components) -> Admin:
    return wired.service.admin  # type: ignore[no-any-return]


def test_browse_spans_clients_and_pages(wired: Components, admin: Admin) -> None:
    cline = fresh_scope("cline")
    cursor = Scope("cursor", cline.user_id)
    add_texts(wired, cline, "Banana", "apple", "Cherry")
    add_texts(wired, cursor, "date", "Elderberry")
    everything = admin.browse(BrowseRequest(cline.user_id, sort="memory", size=2))
    assert everything.total == 5 and [m.text for m in everything.items] == ["apple", "Banana"], "case-insensitive"
    third = admin.browse(BrowseRequest(cline.user_id, sort="memory", size=2, page=3))
    assert [m.text for m in third.items] == ["Elderberry"]
    only_cursor = admin.browse(BrowseRequest(cline.user_id, client="cursor", sort="-memory"))
    assert [m.text for m in only_cursor.items] == ["Elderberry", "date"]
    newest = admin.browse(BrowseRequest(cline.user_id))  # -created_at: the store's ordered page
    assert newest.total == 5 and newest.items[0].created_at >= newest.items[-1].created_at


@pytest.mark.parametrize(
    "request_args,message",
    [
        ({"sort": "random"}, "sort must be one of"),
        ({"page": 0}, "page starts at 1"),
        ({"size": 201}, "size is between 1 and 200"),
    ],
)
def test_browse_refuses_bad_requests_with_a_clear_message(
    admin: Admin, request_args: dict[str, Any], message: str
) -> None:
    with pytest.raises(UserInputError, match=message):
        admin.browse(BrowseRequest("someone", **request_args))


def test_browse_filters_by_query_category_and_time(wired: Components, admin: Admin) -> None:
    scope = fresh_scope()
    tea, go = add_texts(wired, scope, "Drinks green tea", "Writes Go at work")
    wired.service.repository.set_categories(scope, replace(tea, categories=("drinks",)))
    found = admin.browse(BrowseRequest(scope.user_id, query="tea", min_score=0.0))
    assert found.items[0].id == tea.id and found.items[0].score is not None
    assert [m.id for m in admin.browse(BrowseRequest(scope.user_id, category="drinks")).items] == [tea.id]
    day = tea.created_at[:10]
    next_day = (date.fromisoformat(day) + timedelta(days=1)).isoformat()
    assert admin.browse(BrowseRequest(scope.user_id, until=day)).total == 0, "a bare date: until that day starts"
    assert admin.browse(BrowseRequest(scope.user_id, until=next_day)).total == 2
    assert admin.browse(BrowseRequest(scope.user_id, until="2000-01-01")).total == 0
    assert admin.browse(BrowseRequest(scope.user_id, since="2999-01-01", sort="memory")).total == 0
    assert {m.id for m in admin.browse(BrowseRequest(scope.user_id, since=day, sort="memory")).items} == {tea.id, go.id}


def test_detail_owner_scope_and_not_found(wired: Components, admin: Admin) -> None:
    scope = fresh_scope("cursor")
    [memory] = add_texts(wired, scope, "Uses tabs")
    detail = admin.detail(scope.user_id, memory.id)
    assert detail.memory.id == memory.id and [h.event for h in detail.history] == ["ADD"]
    assert detail.access_log == []
    assert admin.owner_scope(scope.user_id, memory.id) == Scope("cursor", scope.user_id), "edits keep the client"
    for user, memory_id in ((scope.user_id, UNKNOWN), (f"{scope.user_id}-x", memory.id)):
        with pytest.raises(MemoryNotFound):
            admin.detail(user, memory_id)
        with pytest.raises(MemoryNotFound):
            admin.owner_scope(user, memory_id)
    admin.remove(scope.user_id, [memory.id], purge=False)
    with pytest.raises(MemoryNotFound):
        admin.owner_scope(scope.user_id, memory.id)  # deleted: nothing left to edit
    assert admin.detail(scope.user_id, memory.id).memory.state == "deleted", "its detail stays readable"


def test_states_removal_and_purge(wired: Components, admin: Admin) -> None:
    scope = fresh_scope()
    one, two, three = add_texts(wired, scope, "One", "Two", "Three")
    with pytest.raises(UserInputError, match="state must be one of"):
        admin.set_state(scope.user_id, [one.id], "gone")  # type: ignore[arg-type]
    assert admin.set_state(scope.user_id, [one.id, UNKNOWN], "archived") == [one.id]
    assert admin.browse(BrowseRequest(scope.user_id, states=("archived",))).total == 1
    assert admin.remove(scope.user_id, [two.id, UNKNOWN], purge=False) == {"deleted": [two.id], "not_found": [UNKNOWN]}
    purged = admin.remove(scope.user_id, [two.id, three.id], purge=True)
    assert sorted(purged["purged"]) == sorted([two.id, three.id]) and purged["not_found"] == []  # type: ignore[arg-type]
    assert admin.browse(BrowseRequest(scope.user_id, states=("active", "paused", "archived", "deleted"))).total == 1


def test_apps_pause_and_stats(wired: Components, admin: Admin) -> None:
    cline = fresh_scope("cline")
    add_texts(wired, cline, "A", "B")
    cursor_memory = add_texts(wired, Scope("cursor", cline.user_id), "C")[0]
    admin.remove(cline.user_id, [cursor_memory.id], purge=False)
    summary = admin.set_app_paused(cline.user_id, "cline", True)
    assert (summary.name, summary.memories, summary.paused) == ("cline", 2, True)
    apps = {app.name: app for app in admin.apps(cline.user_id)}
    assert (apps["cline"].paused, apps["cursor"].paused, apps["cursor"].memories) == (True, False, 0)
    assert apps["cursor"].by_state == {"deleted": 1}
    assert admin.set_app_paused(cline.user_id, "never-used", False).memories == 0
    with pytest.raises(ValueError):
        admin.set_app_paused(cline.user_id, "bad name!", True)
    stats = admin.stats(cline.user_id)
    assert stats["total"] == 2 and stats["by_app"] == {"cline": 2}
    assert stats["by_state"] == {"active": 2, "paused": 0, "archived": 0, "deleted": 1}
    assert admin.stats(f"{cline.user_id}-x")["total"] == 0


def test_user_scope_is_shared_unless_a_client_is_named() -> None:
    assert user_scope("alice").shared is True
    assert user_scope("alice", "cline") == Scope("cline", "alice")


def test_filtered_browse_of_active_memories_hides_paused_apps(wired: Components, admin: Admin) -> None:
    """Active only + a filter: the repository cannot page it from the index (paused apps are hidden), so
    the store's narrowed read is filtered and sorted here; every sort gives the same memories and total."""
    cline = fresh_scope("cline")
    add_texts(wired, cline, "kept one", "kept two")
    add_texts(wired, Scope("cursor", cline.user_id), "paused app's")
    admin.set_app_paused(cline.user_id, "cursor", True)
    since = (date.today() - timedelta(days=1)).isoformat()
    for sort in ("-created_at", "memory", "score"):
        page = admin.browse(BrowseRequest(cline.user_id, states=("active",), since=since, sort=sort))
        assert page.total == 2 and sorted(m.text for m in page.items) == ["kept one", "kept two"], sort
    later = (date.today() + timedelta(days=2)).isoformat()
    assert admin.browse(BrowseRequest(cline.user_id, states=("active",), since=later)).total == 0
