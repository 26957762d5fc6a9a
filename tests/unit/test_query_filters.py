"""MemoryQuery.accepts compares tag values as the stores' indexes do (Tablestore's ``tag_term``)."""

from __future__ import annotations

from typing import Any

import pytest

from tablestore_openmemory_mcp.memory.ports import StoredMemory
from tablestore_openmemory_mcp.memory.query_filters import build_query, same_tag
from tablestore_openmemory_mcp.stores.tablestore.narrowing import tag_term


def _tagged(**tags: Any) -> StoredMemory:
    return StoredMemory(
        id="m1",
        text="t",
        user_id="u1",
        client=None,
        created_at="2026-01-01T00:00:00.000000+00:00",
        updated_at="2026-01-01T00:00:00.000000+00:00",
        hash="",
        metadata={"metadata": tags},
    )


@pytest.mark.parametrize(
    ("stored", "wanted"),
    [
        (1, 1.0),
        (2.0, 2),
        (True, True),
        (False, False),
        ("apollo", "apollo"),
        (1, True),
        (True, 1),
        (0, False),
        ("1", 1),
        (1, "1"),
        ("true", True),
        (2.5, 2.5),
        (2.5, 2),
    ],
)
def test_same_tag_agrees_with_the_index_term(stored: Any, wanted: Any) -> None:
    assert same_tag(stored, wanted) == (tag_term("k", stored) == tag_term("k", wanted))


def test_accepts_matches_numbers_by_value_but_never_a_boolean_as_a_number() -> None:
    assert build_query(metadata={"prio": 1}).accepts(_tagged(prio=1.0))
    assert not build_query(metadata={"prio": 1}).accepts(_tagged(prio=True))
    assert not build_query(metadata={"done": True}).accepts(_tagged(done=1))
    assert build_query(metadata={"done": True}).accepts(_tagged(done=True))
    assert not build_query(metadata={"prio": "1"}).accepts(_tagged(prio=1))
    assert build_query(metadata={"prio": True, "x": "y"}, match_any=True).accepts(_tagged(x="y", prio=1))
