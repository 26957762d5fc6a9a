"""The Tablestore store's selection: a Scope, states and MemoryQuery as the table's and the index's conditions.

In process, no emulator: what each read pushes to the service (column filter, index query) and what it still
checks on the rows it reads. The store tests run the same conditions against the strict emulator.
"""

from __future__ import annotations

import pytest

from tablestore_openmemory_mcp.errors import UserInputError
from tablestore_openmemory_mcp.memory.ports import ALL_STATES, State, StoredMemory
from tablestore_openmemory_mcp.memory.query_filters import MemoryQuery
from tablestore_openmemory_mcp.scope import Scope
from tablestore_openmemory_mcp.stores.tablestore.narrowing import NARROWING_COLUMNS
from tablestore_openmemory_mcp.stores.tablestore.schema import KEYWORD_FIELDS
from tablestore_openmemory_mcp.stores.tablestore.selection import MAX_CONDITIONS, Selection, Who, leaves

INDEXED = KEYWORD_FIELDS | frozenset(NARROWING_COLUMNS)
ALICE = Scope("cline", "alice")


def memory(client: str | None = "cline", state: State = "active", user: str = "alice", **tags: object) -> StoredMemory:
    when = "2026-01-02T00:00:00"
    return StoredMemory("m1", "text", user, client, when, when, "h", state, metadata={"metadata": tags} if tags else {})


def test_who_is_the_scope_user_and_its_client_unless_shared() -> None:
    assert Who.of(ALICE) == Who("alice", "cline")
    assert Who.of(Scope("cline", "alice", shared=True)) == Who("alice", None)
    with pytest.raises(UserInputError, match="#dedup"):
        Who.named("alice#dedup")
    assert [c.column_name for c in Who.of(ALICE).conditions()] == ["agent_id"]
    assert Who("alice").conditions() == []


def test_keeps_checks_scope_state_and_query_on_the_memory() -> None:
    sel = Selection.of(ALICE, ["active"], MemoryQuery(metadata={"project": "apollo"}))
    assert sel.keeps(memory(project="apollo"))
    assert not sel.keeps(memory(project="gemini"))
    assert not sel.keeps(memory(state="archived", project="apollo"))
    assert not sel.keeps(memory(client="claude", project="apollo"))
    assert not sel.keeps(memory(user="bob", project="apollo"))
    shared = Selection.of(Scope("cline", "alice", shared=True), ALL_STATES)
    assert shared.keeps(memory(client="claude", state="deleted")) and shared.keeps(memory(client=None))


def test_the_column_filter_holds_the_client_and_the_states_and_reads_their_columns() -> None:
    active = Selection.of(ALICE, ["active"]).column_filter()
    assert active.columns == ("agent_id", "state") and active.exact
    assert leaves(active.condition) == 1 + len(ALL_STATES) - 1 <= MAX_CONDITIONS
    everything = Selection.of(Scope("cline", "alice", shared=True), ALL_STATES).column_filter()
    assert everything.condition is None and everything.columns == () and everything.exact
    narrowed = Selection.of(ALICE, ["active"], MemoryQuery(category="travel")).column_filter()
    assert not narrowed.exact  # the query's fields live in the payload: checked on each row read
    nothing = Selection.of(ALICE, []).column_filter()
    assert not nothing.exact and nothing.columns == ("agent_id",)


def test_a_keys_only_count_rechecks_the_filtered_columns_a_missing_state_being_active() -> None:
    sel = Selection.of(ALICE, ["active", "paused"])
    assert sel.columns_pass({"agent_id": "cline"}) and sel.columns_pass({"agent_id": "cline", "state": "paused"})
    assert not sel.columns_pass({"agent_id": "cline", "state": "archived"})
    assert not sel.columns_pass({"agent_id": "claude"})
    archived = Selection.of(ALICE, ["archived"])
    assert not archived.columns_pass({"agent_id": "cline"}) and archived.columns_pass(
        {"agent_id": "cline", "state": "archived"}
    )


def test_the_index_query_is_exact_only_when_the_index_decides_every_row() -> None:
    query, exact = Selection.of(ALICE, ["active"]).index_query(INDEXED)
    assert query is not None and exact
    assert not Selection.of(ALICE, ["active"]).index_query(INDEXED - {"state"})[1]  # an old index: checked after
    assert Selection.of(ALICE, ["active"], MemoryQuery(client="cline")).index_query(INDEXED)[1]
    # rows written before the narrowing columns pass every narrowing condition: not exact by itself
    sel = Selection.of(ALICE, ["active"], MemoryQuery(category="travel"))
    assert not sel.index_query(INDEXED)[1] and sel.derived(INDEXED)
    assert not sel.derived(INDEXED - {NARROWING_COLUMNS[0]})


def test_the_selection_key_tells_selections_apart() -> None:
    keys = {
        Selection.of(ALICE, ["active"]).key(),
        Selection.of(ALICE, ["active", "paused"]).key(),
        Selection.of(Scope("cline", "alice", shared=True), ["active"]).key(),
        Selection.of(ALICE, ["active"], MemoryQuery(category="x")).key(),
        Selection.of(Scope("cline", "bob"), ["active"]).key(),
    }
    assert len(keys) == 5
    assert Selection.of(ALICE, ["paused", "active"]).key() == Selection.of(ALICE, ["active", "paused"]).key()
