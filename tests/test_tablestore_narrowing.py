"""Narrowing pushed into the search index (stores/tablestore/narrowing.py), through the real SDK on the emulator.

The index must return exactly the rows :meth:`MemoryQuery.accepts` accepts among rows that carry the derived
columns, and must never drop an old row (one written before those columns existed) that accepts would keep.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import pytest
from tablestore import (
    BoolQuery,
    CapacityUnit,
    ColumnReturnType,
    ColumnsToGet,
    FieldSchema,
    FieldType,
    OTSClient,
    ReservedThroughput,
    Row,
    SearchIndexMeta,
    SearchQuery,
    TableMeta,
    TableOptions,
    TermQuery,
)

from tablestore_openmemory_mcp.memory.ports import StoredMemory
from tablestore_openmemory_mcp.memory.query_filters import MemoryQuery, build_query
from tablestore_openmemory_mcp.stores.tablestore import narrowing
from tests.tablestore_emulator import TablestoreEmulator

TABLE, INDEX, USER = "narrow", "narrow_index", "u1"
CLIENTS = ("cline", "cursor", None)
CATEGORIES = ("work", "food", "travel")
TAGS: dict[str, tuple[Any, ...]] = {"project": ("apollo", "zeus"), "prio": (1, 2.0, 2.5), "done": (True, False)}
DAYS = ("2026-01-05", "2026-02-10", "2026-03-15", "2026-04-20")


def _payload(rng: random.Random, i: int) -> dict[str, Any]:
    created = f"{rng.choice(DAYS)}T{i % 24:02d}:00:00.000000+00:00"
    payload: dict[str, Any] = {"data": f"memory {i}", "user_id": USER, "created_at": created, "updated_at": created}
    client = rng.choice(CLIENTS)
    if client:
        payload["agent_id"] = client
    payload["categories"] = rng.sample(CATEGORIES, rng.randint(0, 2))
    tags = {k: rng.choice(v) for k, v in TAGS.items() if rng.random() < 0.5}
    if tags:
        payload["metadata"] = tags
    if rng.random() < 0.4:
        payload["event_time"] = f"{rng.choice(DAYS)}T12:00:00.000000+00:00"
    return payload


def _memory(memory_id: str, payload: dict[str, Any]) -> StoredMemory:
    extras = {k: v for k, v in payload.items() if k in ("metadata", "event_time")}
    return StoredMemory(
        id=memory_id,
        text=payload["data"],
        user_id=USER,
        client=payload.get("agent_id"),
        created_at=payload["created_at"],
        updated_at=payload["updated_at"],
        hash="",
        categories=tuple(payload.get("categories") or ()),
        metadata=extras,
    )


@pytest.fixture(scope="module")
def indexed_rows() -> Iterator[tuple[OTSClient, dict[str, StoredMemory], set[str]]]:
    """80 rows with the derived columns and 40 written as 2.0.0 did (no derived columns), all indexed."""
    with TablestoreEmulator(access_key_id="a", access_key_secret="s", instance_name="i") as emu:
        emu.index_delay = 0.0
        client = OTSClient(emu.endpoint, "a", "s", "i", retry_policy=None)
        client.create_table(
            TableMeta(TABLE, [("user_id", "STRING"), ("memory_id", "STRING")]),
            TableOptions(),
            ReservedThroughput(CapacityUnit(0, 0)),
        )
        fields = [
            FieldSchema("user_id", FieldType.KEYWORD, index=True),
            FieldSchema("memory_id", FieldType.KEYWORD, index=True),
            FieldSchema("agent_id", FieldType.KEYWORD, index=True),
            FieldSchema("created_at", FieldType.KEYWORD, index=True),
            *narrowing.index_fields(),
        ]
        client.create_search_index(TABLE, INDEX, SearchIndexMeta(fields))
        emu.ready_now()
        rng = random.Random(23)
        memories: dict[str, StoredMemory] = {}
        old: set[str] = set()
        for i in range(120):
            payload = _payload(rng, i)
            memory_id = f"m{i:03d}"
            columns = [("created_at", payload["created_at"])]
            if payload.get("agent_id"):
                columns.append(("agent_id", payload["agent_id"]))
            if i < 80:
                columns += narrowing.narrowing_columns(payload)
            else:
                old.add(memory_id)
            client.put_row(TABLE, Row([("user_id", USER), ("memory_id", memory_id)], columns))
            memories[memory_id] = _memory(memory_id, payload)
        yield client, memories, old


def _search(client: OTSClient, push: narrowing.Pushdown) -> set[str]:
    parts = [TermQuery("user_id", USER)] + ([push.query] if push.query is not None else [])
    found: set[str] = set()
    token = None
    while True:
        query = SearchQuery(BoolQuery(must_queries=parts), limit=100, next_token=token, get_total_count=False)
        response = client.search(TABLE, INDEX, query, ColumnsToGet(return_type=ColumnReturnType.NONE))
        found |= {dict(row[0])["memory_id"] for row in response.rows}
        token = response.next_token
        if not token:
            return found


def _queries() -> Iterator[MemoryQuery]:
    yield build_query(client="cline")
    yield build_query(category="food")
    yield build_query(since="2026-02-01", until="2026-04-01")
    yield build_query(until="2026-02-11")
    yield build_query(metadata={"project": "apollo"})
    yield build_query(metadata={"prio": 2})  # stored as 2.0: one canonical number
    yield build_query(metadata={"project": "zeus", "done": True})
    yield build_query(metadata={"project": "zeus", "done": True}, match_any=True)
    yield build_query(client="cursor", category="work", since="2026-02-01")
    yield build_query(category="travel", metadata={"project": "apollo"})


@pytest.mark.parametrize("query", list(_queries()), ids=lambda q: repr(q)[:60])
def test_the_index_returns_what_accepts_keeps(
    indexed_rows: tuple[OTSClient, dict[str, StoredMemory], set[str]], query: MemoryQuery
) -> None:
    client, memories, old = indexed_rows
    push = narrowing.pushdown(query, frozenset({"agent_id", "created_at", *narrowing.NARROWING_COLUMNS}))
    found = _search(client, push)
    wanted = {mid for mid, memory in memories.items() if query.accepts(memory)}
    assert wanted, "the seeded rows should match every query in the set"
    assert wanted <= found, "the index dropped a row the query keeps"
    assert found - old == wanted - old, "among rows with the derived columns the index decides exactly"
    if push.exact:
        assert found == wanted


def test_an_index_without_the_fields_pushes_nothing_it_cannot_decide() -> None:
    query = build_query(client="cline", category="food", metadata={"project": "apollo"})
    push = narrowing.pushdown(query, frozenset({"agent_id", "created_at"}))
    assert not push.exact
    assert isinstance(push.query, TermQuery)  # only the client, which every index has


def test_tag_terms_keep_types_apart_and_numbers_canonical() -> None:
    assert narrowing.tag_term("prio", 2) == narrowing.tag_term("prio", 2.0) == "prio=2"
    assert narrowing.tag_term("done", True) == "done=true" != narrowing.tag_term("done", 1)
    assert narrowing.tag_term("project", "1") == 'project="1"' != narrowing.tag_term("project", 1)


def test_every_new_row_carries_event_at() -> None:
    cols = dict(narrowing.narrowing_columns({"created_at": "2026-01-01T00:00:00.000000+00:00"}))
    assert cols == {"event_at": "2026-01-01T00:00:00.000000+00:00"}
