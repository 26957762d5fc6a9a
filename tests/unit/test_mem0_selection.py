"""mem0's filter dict split into the store port's arguments and the residual the provider checks (mem0/selection.py)."""

from __future__ import annotations

import pytest

from tablestore_openmemory_mcp.errors import UserInputError
from tablestore_openmemory_mcp.mem0.selection import VISIBLE, select
from tablestore_openmemory_mcp.memory.ports import ALL_STATES
from tablestore_openmemory_mcp.memory.query_filters import MemoryQuery


def test_identity_state_and_category_go_to_the_store_exactly() -> None:
    sel = select({"user_id": "u1", "agent_id": {"eq": "cline"}, "categories": {"contains": "food"}})
    assert sel.user_id == "u1" and sel.client == "cline" and sel.states == VISIBLE
    assert sel.query == MemoryQuery(category="food") and sel.residual == {}
    assert select({"user_id": "u1", "state": {"in": ["paused", "deleted"]}}).states == ("paused", "deleted")
    assert select({"user_id": "u1", "state": "*"}).states == ALL_STATES
    assert select({"user_id": "u1", "state": {"ne": "active"}}).states == ("paused", "archived", "deleted")
    assert select({"user_id": "u1", "state": "gone"}).states == ()


def test_the_rest_is_the_residual() -> None:
    sel = select({"user_id": "u1", "run_id": "r1", "topic": {"in": ["a"]}, "OR": [{"agent_id": "x"}]})
    assert sel.query == MemoryQuery() and sel.residual == {
        "run_id": "r1",
        "topic": {"in": ["a"]},
        "OR": [{"agent_id": "x"}],
    }
    assert sel.accepts({"run_id": "r1", "topic": "a", "agent_id": "x"}, "active")
    assert not sel.accepts({"run_id": "r2", "topic": "a", "agent_id": "x"}, "active")
    nested = select({"user_id": "u1", "state": "*", "OR": [{"state": "paused"}]})
    assert nested.accepts({}, "paused") and not nested.accepts({}, "active")  # the state given, not stored
    assert select({"user_id": {"in": ["u1"]}}).user_id is None  # a user must be named to be a scope
    assert select({"user_id": "u1", "agent_id": ""}).residual == {"agent_id": ""}  # never "every client"
    assert select({"user_id": "u1", "categories": {"contains": ""}}).residual == {"categories": {"contains": ""}}


def test_the_engines_scope_fixes_the_user() -> None:
    assert select({"user_id": "alice"}, "alice").residual == {}
    other = select({"user_id": "bob"}, "alice")
    assert other.residual == {"user_id": "bob"} and not other.accepts({"user_id": "alice"}, "active")


def test_unknown_operators_are_refused_in_one_line() -> None:
    with pytest.raises(UserInputError, match=r"unsupported filter operator\(s\) \['regex'\] on 'topic'"):
        select({"user_id": "u1", "NOT": [{"topic": {"regex": "^a"}}]})
