"""mem0 2.x filter semantics evaluated in Python (the mem0 provider checks the rows it reads with them)."""

from __future__ import annotations

import pytest

from tablestore_openmemory_mcp.mem0.filters import matches, split_identity
from tablestore_openmemory_mcp.stores.tokenize import tokens, unique_tokens

P = {
    "user_id": "u1",
    "agent_id": "cline",
    "data": "I like Oolong tea",
    "score": 7,
    "created_at": "2025-01-02T00:00:00+00:00",
    "categories": ["food", "Drinks"],
    "metadata": {"topic": "tea"},
    "none_field": None,
}


@pytest.mark.parametrize(
    ("flt", "expected"),
    [
        (None, True),
        ({}, True),
        ({"user_id": "u1"}, True),
        ({"user_id": "u2"}, False),
        ({"missing": "x"}, False),
        ({"user_id": "u1", "agent_id": "other"}, False),
        ({"user_id": {"eq": "u1"}}, True),
        ({"user_id": {"ne": "u1"}}, False),
        ({"missing": {"ne": "x"}}, True),
        ({"user_id": {"in": ["u0", "u1"]}}, True),
        ({"user_id": {"nin": ["u0", "u1"]}}, False),
        ({"missing": {"nin": ["a"]}}, True),
        ({"missing": {"in": ["a"]}}, False),
        ({"categories": {"in": ["food"]}}, True),
        ({"categories": {"nin": ["food"]}}, False),
        ({"user_id": ["u0", "u1"]}, True),
        ({"score": {"gt": 6}}, True),
        ({"score": {"gt": 7}}, False),
        ({"score": {"gte": 7, "lte": 7}}, True),
        ({"score": {"lt": 7}}, False),
        ({"score": {"gt": "a"}}, False),
        ({"missing": {"lt": 3}}, False),
        ({"created_at": {"gte": "2025-01-01"}}, True),
        ({"data": {"contains": "Oolong"}}, True),
        ({"data": {"contains": "oolong"}}, False),
        ({"data": {"icontains": "OOLONG"}}, True),
        ({"categories": {"contains": "food"}}, True),
        ({"categories": {"icontains": "drinks"}}, True),
        ({"categories": {"icontains": "drink"}}, False),
        ({"user_id": "*"}, True),
        ({"missing": "*"}, False),
        ({"none_field": "*"}, False),
        ({"metadata.topic": "tea"}, True),
        ({"metadata.topic": "coffee"}, False),
        ({"AND": [{"user_id": "u1"}, {"score": {"gt": 1}}]}, True),
        ({"AND": [{"user_id": "u1"}, {"score": {"gt": 10}}]}, False),
        ({"OR": [{"user_id": "u2"}, {"agent_id": "cline"}]}, True),
        ({"OR": [{"user_id": "u2"}, {"agent_id": "x"}]}, False),
        ({"NOT": [{"user_id": "u2"}]}, True),
        ({"NOT": [{"user_id": "u2"}, {"agent_id": "cline"}]}, False),
        ({"$or": [{"user_id": "u2"}, {"NOT": [{"user_id": "u2"}]}]}, True),
        ({"user_id": "u1", "OR": [{"score": {"lt": 0}}, {"data": {"icontains": "tea"}}]}, True),
    ],
)
def test_matches(flt: dict | None, expected: bool) -> None:
    assert matches(flt, P) is expected


def test_matches_rejects_unknown_operator_and_bad_lists() -> None:
    with pytest.raises(ValueError, match="operator"):
        matches({"score": {"gt": 1, "regex": "x"}}, P)
    with pytest.raises(ValueError, match="list"):
        matches({"score": {"in": 7}}, P)
    with pytest.raises(ValueError, match="list of filter dicts"):
        matches({"AND": "user_id"}, P)


def test_plain_dict_value_is_equality() -> None:
    assert matches({"metadata": {"topic": "tea"}}, P)
    assert not matches({"metadata": {"topic": "x"}}, P)


def test_split_identity() -> None:
    identity, rest = split_identity(
        {"user_id": "u1", "agent_id": {"eq": "a"}, "run_id": "*", "score": {"gt": 1}, "OR": [{"x": 1}]}
    )
    assert identity == {"user_id": "u1", "agent_id": "a"}
    assert rest == {"run_id": "*", "score": {"gt": 1}, "OR": [{"x": 1}]}
    assert split_identity(None) == ({}, {})
    identity, rest = split_identity({"user_id": {"in": ["a", "b"]}, "agent_id": 5})
    assert identity == {}
    assert rest == {"user_id": {"in": ["a", "b"]}, "agent_id": 5}


def test_tokens_chinese_and_english() -> None:
    assert tokens("乌龙茶") == ["乌", "龙", "茶", "乌龙", "龙茶"]
    assert tokens("I like Oolong-Tea_2, café!") == ["i", "like", "oolong", "tea", "2", "café"]
    assert tokens("我爱Python编程") == ["我", "爱", "我爱", "python", "编", "程", "编程"]
    assert tokens('"foo" OR * NEAR(') == ["foo", "or", "near"]
    assert tokens("") == [] and tokens(None) == []
    assert unique_tokens("茶 茶 tea tea") == ["茶", "tea"]
    assert unique_tokens("a b c d", limit=2) == ["a", "b"]
