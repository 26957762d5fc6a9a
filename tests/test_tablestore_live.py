"""End to end on Tablestore through ``tablestore_target``: the strict emulator always, a real instance in live mode.

Nothing here reaches for emulator internals (no flush, no counters): what holds on the emulator must hold on the
service, so search is waited for (the index lags writes) instead of forced. The seam itself (skip reason, prefix,
cleanup) is tested against the emulator below. Live mode: tests/tablestore_target.py and README, Tests.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from tablestore import (
    CapacityUnit,
    FieldSchema,
    FieldType,
    ReservedThroughput,
    SearchIndexMeta,
    TableMeta,
    TableOptions,
)

from tests.fakes.memory_llm import facts
from tests.fakes.openai_server import FakeOpenAI
from tests.server_process import llm_env, server_env, stdio_client, structured
from tests.tablestore_emulator import TablestoreEmulator
from tests.tablestore_target import (
    LIVE_VARIABLES,
    TablestoreTarget,
    live_skip_reason,
    open_target,
)

DIMS = 64
#: How long search may lag a write: the service syncs within 3 s in 99 % of cases; a live instance gets room.
SEARCH_LAG = 60.0


async def eventually(check: Callable[[], Awaitable[Any]], what: str, timeout: float = SEARCH_LAG) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)  # polling interval of a condition wait


#: Until the server waits for a new table to be ready (issue 20, item 2: branch i20-store), its first start on a new
#: instance fails with OTSTableNotReady, on the strict emulator as on the service. Strict xfail: once the fix is
#: merged this XPASSes and fails, so the mark is removed in the same merge.
STARTUP_WAITS_FOR_NEW_TABLES = True  # i20-store: readiness.py


@pytest.mark.anyio
async def test_memories_end_to_end(
    request: pytest.FixtureRequest,
    tmp_path: Any,
    fake_openai: FakeOpenAI,
    tablestore_target: TablestoreTarget,
) -> None:
    """A new instance (no tables yet): the server creates them, then add, list, search, update, delete."""
    if not STARTUP_WAITS_FOR_NEW_TABLES:
        reason = "the server's first start fails on a table that is not ready yet (issue 20 item 2, i20-store)"
        request.applymarker(pytest.mark.xfail(reason=reason, strict=True))
    env = server_env(
        tmp_path,
        **llm_env(fake_openai, LLM_MAX_RETRIES=0),
        **tablestore_target.env(TABLESTORE_VECTOR_DIMENSION=DIMS, TOOL_BLACK_LIST="[]"),
    )
    async with stdio_client(env) as client:
        fake_openai.script_chat(facts("Likes green tea", "Lives in Hangzhou"))
        added = structured(await client.call_tool("add_memories", {"text": "I like green tea and live in Hangzhou"}))
        ids = {e["memory"]: e["id"] for e in added["events"]}
        assert sorted(ids) == ["Likes green tea", "Lives in Hangzhou"]

        listed = structured(await client.call_tool("list_memories", {}))
        assert sorted(m["memory"] for m in listed["memories"]) == ["Likes green tea", "Lives in Hangzhou"]
        assert listed["total"] == 2

        async def tea_found() -> bool:
            found = structured(await client.call_tool("search_memories", {"query": "green tea", "limit": 1}))
            return [m["id"] for m in found["results"]] == [ids["Likes green tea"]]

        await eventually(tea_found, "search to find the new memory")

        tea = ids["Likes green tea"]
        updated = structured(await client.call_tool("update_memory", {"memory_id": tea, "text": "Likes oolong tea"}))
        assert updated["memory"] == "Likes oolong tea"
        deleted = structured(await client.call_tool("delete_memories", {"memory_ids": [ids["Lives in Hangzhou"]]}))
        assert deleted["deleted"] == [ids["Lives in Hangzhou"]]
        listed = structured(await client.call_tool("list_memories", {}))
        assert [m["memory"] for m in listed["memories"]] == ["Likes oolong tea"]
        history = structured(await client.call_tool("memory_history", {"memory_id": tea}))
        assert [h["event"] for h in history["history"]] == ["ADD", "UPDATE"]
    assert tablestore_target.tables() == sorted(
        tablestore_target.table(n) for n in ("mem", "mem_access", "mem_history")
    )


# ---- the seam itself ---------------------------------------------------------------------------------------
def test_live_mode_is_skipped_with_the_missing_variables_named() -> None:
    reason = live_skip_reason({})
    assert reason is not None and all(name in reason for name in LIVE_VARIABLES)
    partial = dict.fromkeys(LIVE_VARIABLES, "x") | {"TABLESTORE_LIVE_ACCESS_KEY_SECRET": " "}
    assert "missing: TABLESTORE_LIVE_ACCESS_KEY_SECRET" in (live_skip_reason(partial) or "")
    assert live_skip_reason(dict.fromkeys(LIVE_VARIABLES, "x")) is None
    with pytest.raises(pytest.skip.Exception, match="missing: TABLESTORE_LIVE_ENDPOINT"), open_target("live", {}):
        pass  # never reached


def test_live_target_reads_the_documented_variables() -> None:
    environ = dict(
        zip(LIVE_VARIABLES, ("https://i.cn-hangzhou.ots.aliyuncs.com", "inst", "akid", "secret"), strict=True)
    )
    target = TablestoreTarget.from_environment(environ)
    assert (target.endpoint, target.instance_name, target.access_key_id, target.access_key_secret) == (
        "https://i.cn-hangzhou.ots.aliyuncs.com",
        "inst",
        "akid",
        "secret",
    )
    assert target.live and target.prefix != TablestoreTarget.from_environment(environ).prefix  # unique per test
    assert target.env()["TABLESTORE_TABLE_NAME"] == target.prefix + "mem"


def test_cleanup_drops_exactly_the_prefixed_tables(tablestore_emulator: TablestoreEmulator) -> None:
    """The live cleanup, run against the emulator: prefixed tables and their indexes go, other tables stay."""
    tablestore_emulator.ready_now()
    target = TablestoreTarget.on_emulator(tablestore_emulator)
    neighbour = TablestoreTarget.on_emulator(tablestore_emulator)  # another run sharing the instance
    assert target.prefix != neighbour.prefix and target.prefix[0].isalpha()
    client = target.client()
    names = [target.table("mem"), target.table("mem_history"), neighbour.table("mem"), "mem"]
    for name in names:
        client.create_table(TableMeta(name, [("id", "STRING")]), TableOptions(), ReservedThroughput(CapacityUnit(0, 0)))
    client.create_search_index(target.table("mem"), "idx", SearchIndexMeta([FieldSchema("k", FieldType.KEYWORD)]))
    assert target.tables() == sorted(names[:2])
    assert target.drop_tables() == sorted(names[:2])
    assert sorted(tablestore_emulator.store.tables) == sorted([neighbour.table("mem"), "mem"])
    assert target.drop_tables() == []


def test_an_emulator_target_is_strict_and_cleaned_up_after_a_failure() -> None:
    with pytest.raises(RuntimeError, match="boom"), open_target("emulator") as target:
        assert target.emulator is not None and target.emulator.rules.relaxed == frozenset()
        emulator = target.emulator
        target.client().create_table(
            TableMeta(target.table("mem"), [("id", "STRING")]), TableOptions(), ReservedThroughput(CapacityUnit(0, 0))
        )
        raise RuntimeError("boom")
    assert emulator.store.tables == {}  # dropped although the test body failed
