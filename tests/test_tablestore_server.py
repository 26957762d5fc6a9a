"""The whole server (installed console script) on the Tablestore backend, against the wire-level emulator.

Real MCP clients over stdio, SSE and streamable HTTP; the only doubles are the fake OpenAI server (scripted
LLM, hash embeddings) and the Tablestore emulator. RPC counts come from the emulator's per-API counters.
"""

from __future__ import annotations

import asyncio
import json
import math
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
from starlette.requests import Request
from starlette.responses import Response

from tablestore_openmemory_mcp.memory.ports import StoredMemory
from tablestore_openmemory_mcp.memory.store_port import NewRow
from tablestore_openmemory_mcp.scope import Scope
from tablestore_openmemory_mcp.settings import TOOL_NAMES
from tablestore_openmemory_mcp.stores.row_format import now_iso, text_hash
from tablestore_openmemory_mcp.stores.tablestore import TablestoreStore
from tablestore_openmemory_mcp.stores.tablestore.rows import MAX_DATA_BYTES
from tests.fakes.memory_llm import facts, run_update_scenario
from tests.fakes.openai_server import FakeOpenAI, embed_text
from tests.server_process import (
    SCRIPT,
    HttpServer,
    error_text,
    free_port,
    llm_env,
    server_env,
    stdio_client,
    structured,
    tablestore_env,
)
from tests.tablestore_emulator import TablestoreEmulator

pytestmark = pytest.mark.anyio

DIMS = 64  # text-embedding-v4 offers 64; small vectors keep the emulator's KNN cheap
STARTUP_TIMEOUT = 120


def ts_env(tmp_path: Path, emulator: TablestoreEmulator, fake: FakeOpenAI, **extra: Any) -> dict[str, str]:
    """Server settings: Tablestore emulator, fake LLM and embedder, every tool enabled."""
    settings = {
        **llm_env(fake, LLM_MAX_RETRIES=0),
        **tablestore_env(emulator),
        "TABLESTORE_VECTOR_DIMENSION": DIMS,
        "TOOL_BLACK_LIST": "[]",
        **extra,
    }
    return server_env(tmp_path, **settings)


def direct_store(emulator: TablestoreEmulator, dims: int = DIMS, table: str = "mem0") -> TablestoreStore:
    """The store in this process, on the same table the server uses."""
    return TablestoreStore(
        collection_name=table,
        **emulator.credentials(),
        embedding_model_dims=dims,
    )


def bulk_load(store: TablestoreStore, client: str, user: str, count: int) -> None:
    """``count`` memories in one scope, in the payload format the repository writes."""
    texts = [f"bulk memory number {i}" for i in range(count)]
    now = now_iso()
    memories = [
        StoredMemory(str(uuid.uuid4()), t, user, client, now, now, text_hash(t), metadata={"role": "user"})
        for t in texts
    ]
    store.put(
        Scope(client, user), [NewRow(m, embed_text(m.text, store.embedding_model_dims).tolist()) for m in memories]
    )


async def exercise_every_tool(client: Any, fake: FakeOpenAI, emulator: TablestoreEmulator) -> None:
    """Each of the seven tools once, with the results checked."""
    assert {t.name for t in (await client.list_tools()).tools} == set(TOOL_NAMES)

    fake.script_chat(facts("Likes green tea", "Lives in Hangzhou"))
    added = structured(await client.call_tool("add_memories", {"text": "I like green tea and live in Hangzhou"}))
    assert added["inferred"] is True
    assert sorted((e["event"], e["memory"]) for e in added["events"]) == [
        ("ADD", "Likes green tea"),
        ("ADD", "Lives in Hangzhou"),
    ]
    ids = {e["memory"]: e["id"] for e in added["events"]}
    plain = structured(await client.call_tool("add_memories", {"text": "Deadline is Friday", "infer": False}))
    assert [(e["event"], e["memory"]) for e in plain["events"]] == [("ADD", "Deadline is Friday")]
    assert plain["inferred"] is False

    listed = structured(await client.call_tool("list_memories", {}))
    assert sorted(m["memory"] for m in listed["memories"]) == [
        "Deadline is Friday",
        "Likes green tea",
        "Lives in Hangzhou",
    ]

    emulator.flush_index()  # search reads the index, which lags writes by design
    found = structured(await client.call_tool("search_memories", {"query": "green tea", "limit": 1}))
    assert [m["id"] for m in found["results"]] == [ids["Likes green tea"]]

    tea = ids["Likes green tea"]
    updated = structured(await client.call_tool("update_memory", {"memory_id": tea, "text": "Likes oolong tea"}))
    assert (updated["memory"], updated["previous_memory"]) == ("Likes oolong tea", "Likes green tea")
    history = structured(await client.call_tool("memory_history", {"memory_id": tea}))
    assert [(h["event"], h["new_memory"]) for h in history["history"]] == [
        ("ADD", "Likes green tea"),
        ("UPDATE", "Likes oolong tea"),
    ]

    missing = str(uuid.uuid4())
    deleted = structured(await client.call_tool("delete_memories", {"memory_ids": [ids["Lives in Hangzhou"], missing]}))
    assert (deleted["deleted"], deleted["not_found"]) == ([ids["Lives in Hangzhou"]], [missing])
    listed = structured(await client.call_tool("list_memories", {}))
    assert sorted(m["memory"] for m in listed["memories"]) == ["Deadline is Friday", "Likes oolong tea"]

    assert structured(await client.call_tool("delete_all_memories", {}))["deleted_count"] == 2
    assert structured(await client.call_tool("list_memories", {}))["count"] == 0
    # deletes are soft (repository.delete): the owner still reads the history, ending in the DELETE
    history = structured(await client.call_tool("memory_history", {"memory_id": tea}))
    assert [h["event"] for h in history["history"]] == ["ADD", "UPDATE", "DELETE"]


# ------------------------------------------------------------------------------------------ end to end


async def test_stdio_every_tool_and_the_update_scenario(tmp_path, fake_openai, tablestore_emulator):
    """Every tool over stdio, then the core issue's UPDATE / NONE / DELETE scenario on this backend."""
    env = ts_env(tmp_path, tablestore_emulator, fake_openai)
    async with stdio_client(env) as client:
        await exercise_every_tool(client, fake_openai, tablestore_emulator)
        fake_openai.reset()
        memory_id = await run_update_scenario(client, fake_openai)
    table = tablestore_emulator.store.tables["mem0"]  # gone from the table, or kept only as a soft-deleted row
    rows = [row for key, row in table.rows.items() if memory_id in repr(key)]
    assert all(json.loads(row.columns["payload"][0]).get("state") == "deleted" for row in rows)


async def test_two_processes_sse_and_streamable_http_on_one_table(tmp_path, fake_openai, tablestore_emulator):
    """Server A (SSE) creates the table; server B (streamable HTTP) opens it in <= 3 RPCs; both serve at once."""
    env = ts_env(tmp_path, tablestore_emulator, fake_openai)
    with HttpServer(env, tmp_path, transport="sse").wait_ready(STARTUP_TIMEOUT) as first:
        assert {"CreateTable", "CreateSearchIndex"} <= set(tablestore_emulator.counts)
        tablestore_emulator.reset_counts()
        with HttpServer(env, tmp_path, transport="streamable-http").wait_ready(STARTUP_TIMEOUT) as second:
            startup = dict(tablestore_emulator.counts)
            assert "CreateTable" not in startup and "CreateSearchIndex" not in startup, startup
            # the memory table, its meta row (embedder, index, vector column) and its index: the store's 3 RPCs,
            # + 1 DescribeTable of the upgrade check (migrate/upgrade.py); history and access-log tables add their own
            on_memories = tablestore_emulator.calls_on("mem0")
            assert on_memories.get("DescribeSearchIndex") == 1, (on_memories, startup)
            assert on_memories.get("GetRow") == 1, (on_memories, startup)
            assert set(on_memories) == {"DescribeTable", "GetRow", "DescribeSearchIndex"}, (on_memories, startup)
            assert on_memories["DescribeTable"] <= 2, (on_memories, startup)

            # Every tool on each transport (a different user on each, so their scopes don't meet).
            async with first.sse("cline", "alice") as client:
                await exercise_every_tool(client, fake_openai, tablestore_emulator)
            async with second.http("cline", "bruno") as client:
                await exercise_every_tool(client, fake_openai, tablestore_emulator)

            # One user through both processes at once: each sees what both wrote.
            async with first.sse("cursor", "dana") as a, second.http("cursor", "dana") as b:

                async def add_many(session: Any, tag: str) -> None:
                    for i in range(4):
                        text = f"{tag} note {i}"
                        result = structured(await session.call_tool("add_memories", {"text": text, "infer": False}))
                        assert result["events"][0]["event"] == "ADD"

                await asyncio.gather(add_many(a, "from A"), add_many(b, "from B"))
                expected = sorted(f"{tag} note {i}" for tag in ("from A", "from B") for i in range(4))
                for session in (a, b):
                    listed = structured(await session.call_tool("list_memories", {}))
                    assert sorted(m["memory"] for m in listed["memories"]) == expected
                assert structured(await b.call_tool("delete_all_memories", {}))["deleted_count"] == 8
                assert structured(await a.call_tool("list_memories", {}))["count"] == 0


async def test_read_your_writes_and_rpc_counts(tmp_path, fake_openai, tablestore_emulator):
    """With a 3 s index delay, list/delete_all see every add at once; search = 1 Search; delete_all batches."""
    emulator = tablestore_emulator
    env = ts_env(tmp_path, emulator, fake_openai)
    with HttpServer(env, tmp_path, transport="streamable-http").wait_ready(STARTUP_TIMEOUT) as server:
        emulator.index_delay = 3
        async with server.http("cline", "erin") as client:
            texts = [f"fresh memory {i}" for i in range(6)]
            for text in texts:
                structured(await client.call_tool("add_memories", {"text": text, "infer": False}))
            emulator.reset_counts()
            listed = structured(await client.call_tool("list_memories", {}))
            assert sorted(m["memory"] for m in listed["memories"]) == texts, "list is read-your-writes"
            assert emulator.calls_on("mem0") == {"GetRange": 1}
            assert structured(await client.call_tool("delete_all_memories", {}))["deleted_count"] == len(texts)
            assert structured(await client.call_tool("list_memories", {}))["count"] == 0

            # 450 memories in one scope (bulk-loaded, same payloads as the server writes).
            emulator.index_delay = 0
            store = direct_store(emulator)
            bulk_load(store, "cline", "erin", 450)
            emulator.flush_index()  # search lags by design (earlier writes queued behind the 3 s delay)
            emulator.reset_counts()
            found = structured(await client.call_tool("search_memories", {"query": "bulk memory number 7", "limit": 5}))
            assert len(found["results"]) == 5
            calls = emulator.calls_on("mem0")
            # the search's candidate pool (scoring.SEARCH_POOL, 200) is checked in BatchGetRows of 100
            assert calls == {"Search": 1, "BatchGetRow": 2}, f"search = 1 Search + 2 BatchGetRow on the table: {calls}"

            emulator.reset_counts()
            assert structured(await client.call_tool("list_memories", {}))["total"] == 450
            calls = emulator.calls_on("mem0")  # the first page + the index's count; no scan of the scope
            assert calls.get("GetRange") == 1 and calls.get("Search", 0) >= 1, calls

            assert structured(await client.call_tool("delete_all_memories", {}))["deleted_count"] == 450
            assert structured(await client.call_tool("list_memories", {}))["count"] == 0


# ------------------------------------------------------------------------------------------ startup


def _start_and_wait(env: dict[str, str], transport: str) -> subprocess.Popen:
    """Start the server; stdin stays open (a stdio server would otherwise see EOF and exit 0)."""
    args = [SCRIPT, "--transport", transport]
    if transport != "stdio":
        args += ["--port", str(free_port())]
    return subprocess.Popen(args, env=env, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _failed_startup(process: subprocess.Popen, timeout: float = STARTUP_TIMEOUT) -> str:
    """Wait for the process to exit non-zero; return its stderr and check it ends in one error line."""
    try:
        process.wait(timeout)  # not communicate(): closing stdin would end a stdio server with exit code 0
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    assert process.stdin is not None and process.stderr is not None
    process.stdin.close()
    stderr = process.stderr.read().decode(errors="replace")
    process.stderr.close()
    assert process.returncode is not None and process.returncode >= 0, f"server did not exit: {stderr[-2000:]}"
    assert process.returncode == 1, (process.returncode, stderr[-2000:])
    assert "Traceback" not in stderr, stderr[-2000:]
    errors = [line for line in stderr.splitlines() if "cannot start" in line]
    assert len(errors) == 1, stderr[-2000:]
    return errors[0]


def test_unreachable_tablestore_at_startup_exits_with_one_line(tmp_path, fake_openai):
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    env = server_env(
        tmp_path,
        **llm_env(fake_openai),
        TABLESTORE_ENDPOINT=endpoint,
        TABLESTORE_INSTANCE_NAME="inst",
        TABLESTORE_ACCESS_KEY_ID="ak",
        TABLESTORE_ACCESS_KEY_SECRET="sk",
        TABLESTORE_MAX_RETRY_SECONDS="2",  # an unreachable endpoint is retried for the budget, then one line
    )
    processes = [_start_and_wait(env, transport) for transport in ("sse", "stdio")]
    for process in processes:
        line = _failed_startup(process)
        assert endpoint in line and "Cannot reach Tablestore" in line, line


def test_dimension_mismatch_with_the_existing_index_fails_startup(tmp_path, fake_openai, tablestore_emulator):
    direct_store(tablestore_emulator, dims=128).close()  # an index built for a 128-dimension embedder
    env = ts_env(tmp_path, tablestore_emulator, fake_openai)  # the server's embedder makes 64
    line = _failed_startup(_start_and_wait(env, "sse"))
    assert "dimension 128" in line and "produces 64" in line and "TABLESTORE_VECTOR_DIMENSION" in line, line


def test_bad_table_name_fails_startup_before_any_rpc(tmp_path, fake_openai, tablestore_emulator):
    env = ts_env(tmp_path, tablestore_emulator, fake_openai, TABLESTORE_TABLE_NAME="bad-name!")
    line = _failed_startup(_start_and_wait(env, "sse"))
    assert "'bad-name!'" in line and "TABLESTORE_TABLE_NAME" in line, line
    assert sum(tablestore_emulator.counts.values()) == 0, dict(tablestore_emulator.counts)


# ------------------------------------------------------------------------------------------ faults


async def test_transient_faults_are_retried_and_exhausted_retries_write_nothing(
    tmp_path, fake_openai, tablestore_emulator
):
    emulator = tablestore_emulator
    env = ts_env(tmp_path, emulator, fake_openai, TABLESTORE_MAX_RETRY_SECONDS=5)  # >= 5 attempts; exhausts fast
    async with stdio_client(env) as client:
        assert structured(await client.call_tool("list_memories", {}))["count"] == 0  # startup done
        emulator.reset_counts()
        # Seeded rates: the sequence of calls is deterministic, so is which of them fail.
        emulator.inject("PutRow", "OTSServerBusy", rate=0.3, seed=1)
        emulator.inject("Search", "http503", rate=0.3, seed=2)
        emulator.inject("BatchWriteRow", "drop", rate=0.3, seed=3)
        emulator.inject("GetRange", "OTSTimeout", rate=0.3, seed=4)
        expected = []
        for i in range(8):
            text = f"plain memory {i}"
            structured(await client.call_tool("add_memories", {"text": text, "infer": False}))
            expected.append(text)
        for i in range(4):
            pair = [f"fact {i} alpha", f"fact {i} beta"]
            fake_openai.script_chat(facts(*pair))  # a decision call, if any, gets the fake's default "{}"
            result = structured(await client.call_tool("add_memories", {"text": f"two facts {i}"}))
            assert sorted(e["memory"] for e in result["events"] if e["event"] == "ADD") == pair
            expected += pair
        listed = structured(await client.call_tool("list_memories", {}))
        assert sorted(m["memory"] for m in listed["memories"]) == sorted(expected)
        counts = emulator.counts
        assert counts["PutRow"] > 8 and counts["BatchWriteRow"] > 4, "faults happened and were retried"
        emulator.clear_faults()

        # Retries run out: a clear tool error, and nothing of that add is stored.
        for api, kind, args in (
            ("PutRow", "OTSServerBusy", {"text": "never stored", "infer": False}),
            ("PutRow", "drop", {"text": "never stored either", "infer": False}),
            ("BatchWriteRow", "http503", {"text": "two facts that fail"}),
        ):
            if "infer" not in args:
                fake_openai.script_chat(facts("doomed fact one", "doomed fact two"))
            emulator.inject(api, kind, times=1000)
            message = error_text(await client.call_tool("add_memories", args))
            emulator.clear_faults()
            assert "Tablestore" in message and "attempts" in message and "Nothing was changed" in message, message
            listed = structured(await client.call_tool("list_memories", {}))
            assert sorted(m["memory"] for m in listed["memories"]) == sorted(expected), f"{api}/{kind} left rows"


# ------------------------------------------------------------------------------------------ bad input


class BrokenEmbeddings(FakeOpenAI):
    """The fake OpenAI server whose embeddings can be switched to the wrong length or to NaN."""

    mode = "ok"

    def _embed_dim(self, body: dict) -> int | str:
        dim = super()._embed_dim(body)
        return dim + 3 if self.mode == "short" and isinstance(dim, int) else dim

    async def _embeddings(self, request: Request) -> Response:
        if self.mode != "nan":
            return await super()._embeddings(request)
        body = json.loads(await request.body())
        texts = [body["input"]] if isinstance(body["input"], str) else body["input"]
        data = [
            {"object": "embedding", "index": i, "embedding": [math.nan] * body["dimensions"]} for i in range(len(texts))
        ]
        usage = {"prompt_tokens": 1, "total_tokens": 1}
        payload = {"object": "list", "data": data, "model": body["model"], "usage": usage}
        return Response(json.dumps(payload), media_type="application/json")  # NaN: valid for Python's json


async def test_bad_vectors_and_oversized_memories_are_rejected_whole(tmp_path, tablestore_emulator):
    fake = BrokenEmbeddings().start()
    try:
        env = ts_env(tmp_path, tablestore_emulator, fake, MEMORY_MAX_TEXT_CHARS=30000)
        async with stdio_client(env) as client:
            fake.mode = "short"
            message = error_text(await client.call_tool("add_memories", {"text": "short vector", "infer": False}))
            assert f"{DIMS + 3}-dimensional" in message and f"{DIMS} are configured" in message, message
            assert "Nothing was changed" in message
            fake.mode = "nan"
            message = error_text(await client.call_tool("add_memories", {"text": "nan vector", "infer": False}))
            assert "NaN" in message and "Nothing was changed" in message, message
            fake.mode = "ok"
            assert structured(await client.call_tool("list_memories", {}))["count"] == 0

            # The store's limit is 64 KiB of UTF-8 per memory text; the tool's default input cap (16000
            # characters, at most 4 bytes each = 64000 bytes) always fits under it.
            assert MAX_DATA_BYTES >= 16000 * 4
            widest = "😀" * 16000
            stored = structured(await client.call_tool("add_memories", {"text": widest, "infer": False}))
            assert stored["events"][0]["event"] == "ADD"
            too_big = "😀" * 17000  # 68000 bytes: within this server's 30000-character cap, above the row limit
            message = error_text(await client.call_tool("add_memories", {"text": too_big, "infer": False}))
            assert "64 KiB" in message and "nothing was written" in message, message
            too_long = "x" * 30001
            message = error_text(await client.call_tool("add_memories", {"text": too_long, "infer": False}))
            assert "limit is 30000" in message and "MEMORY_MAX_TEXT_CHARS" in message, message
            listed = structured(await client.call_tool("list_memories", {}))
            assert [m["memory"] for m in listed["memories"]] == [widest]
    finally:
        fake.stop()


# ------------------------------------------------------------------------------- consistency (issue 9)
# The emulator's index lags every write by the fixture's delay; nothing here flushes it. These run the
# whole server, so they also need the repository wiring (dedup keys, re-read candidates): marked `seam`.


async def add_plain(client: Any, text: str) -> dict[str, Any]:
    return structured(await client.call_tool("add_memories", {"text": text, "infer": False}))


async def listed_texts(client: Any) -> list[str]:
    return sorted(m["memory"] for m in structured(await client.call_tool("list_memories", {}))["memories"])


@pytest.mark.seam
async def test_delete_or_update_then_readd_stores_the_text(tmp_path, fake_openai, tablestore_emulator):
    env = ts_env(tmp_path, tablestore_emulator, fake_openai)
    async with stdio_client(env) as client:
        first = (await add_plain(client, "Likes green tea"))["events"][0]
        again = (await add_plain(client, "Likes green tea"))["events"][0]
        assert again["event"] != "ADD" and again["id"] == first["id"], again  # an exact duplicate
        deleted = structured(await client.call_tool("delete_memories", {"memory_ids": [first["id"]]}))
        assert deleted["deleted"] == [first["id"]]
        readded = (await add_plain(client, "Likes green tea"))["events"][0]
        assert readded["event"] == "ADD" and readded["id"] != first["id"], readded
        assert await listed_texts(client) == ["Likes green tea"]

        updated = structured(
            await client.call_tool("update_memory", {"memory_id": readded["id"], "text": "Likes oolong tea"})
        )
        assert updated["memory"] == "Likes oolong tea"
        back = (await add_plain(client, "Likes green tea"))["events"][0]
        assert back["event"] == "ADD", back  # the replaced text can be stored again
        assert await listed_texts(client) == ["Likes green tea", "Likes oolong tea"]
        found = structured(await client.call_tool("search_memories", {"query": "tea", "limit": 5}))
        assert sorted(m["memory"] for m in found["results"]) == ["Likes green tea", "Likes oolong tea"]


@pytest.mark.seam
async def test_decision_never_sees_a_deleted_memory(tmp_path, fake_openai, tablestore_emulator):
    """With an LLM: after a delete, re-adding the fact reconciles against the table, not the lagging index."""
    env = ts_env(tmp_path, tablestore_emulator, fake_openai)
    async with stdio_client(env) as client:
        fake_openai.script_chat(facts("Likes green tea"))
        added = structured(await client.call_tool("add_memories", {"text": "I like green tea"}))
        memory_id = added["events"][0]["id"]
        structured(await client.call_tool("delete_memories", {"memory_ids": [memory_id]}))
        calls = fake_openai.counts["chat"]
        fake_openai.script_chat(facts("Likes green tea"))
        again = structured(await client.call_tool("add_memories", {"text": "I like green tea"}))
        assert [e["event"] for e in again["events"]] == ["ADD"], again
        assert fake_openai.counts["chat"] == calls + 1, "the deleted memory reached the decision step"
        assert await listed_texts(client) == ["Likes green tea"]


@pytest.mark.seam
async def test_same_text_from_two_processes_at_once_is_stored_once(tmp_path, fake_openai, tablestore_emulator):
    env = ts_env(tmp_path, tablestore_emulator, fake_openai)
    with (
        HttpServer(env, tmp_path, transport="streamable-http").wait_ready(STARTUP_TIMEOUT) as one,
        HttpServer(env, tmp_path, transport="streamable-http").wait_ready(STARTUP_TIMEOUT) as two,
    ):
        async with one.http("cline", "fay") as a, two.http("cline", "fay") as b, one.http("cline", "fay") as c:
            for i in range(5):
                text = f"Same fact number {i}"
                results = await asyncio.gather(add_plain(a, text), add_plain(b, text), add_plain(c, text))
                assert len({r["events"][0]["id"] for r in results}) == 1, results
            assert await listed_texts(a) == [f"Same fact number {i}" for i in range(5)]


@pytest.mark.seam
async def test_search_right_after_delete_all_and_every_limit(tmp_path, fake_openai, tablestore_emulator):
    emulator = tablestore_emulator
    env = ts_env(tmp_path, emulator, fake_openai)
    with HttpServer(env, tmp_path, transport="streamable-http").wait_ready(STARTUP_TIMEOUT) as server:
        async with server.http("cline", "gus") as client:
            bulk_load(direct_store(emulator), "cline", "gus", 120)
            emulator.flush_index()
            for limit in (1, 10, 25, 26, 50, 99, 100):
                found = structured(await client.call_tool("search_memories", {"query": "bulk memory", "limit": limit}))
                assert len(found["results"]) == limit, (limit, len(found["results"]))
            assert structured(await client.call_tool("delete_all_memories", {}))["deleted_count"] == 120
            found = structured(await client.call_tool("search_memories", {"query": "bulk memory", "limit": 10}))
            assert found["results"] == [], "search returned memories a completed delete_all removed"


@pytest.mark.seam
async def test_deletes_count_exactly_under_faults_and_batch_lookups(tmp_path, fake_openai, tablestore_emulator):
    emulator = tablestore_emulator
    env = ts_env(tmp_path, emulator, fake_openai)
    with HttpServer(env, tmp_path, transport="streamable-http").wait_ready(STARTUP_TIMEOUT) as server:
        async with server.http("cline", "hal") as client:
            bulk_load(direct_store(emulator), "cline", "hal", 64)
            for api in ("BatchWriteRow", "UpdateRow", "GetRange", "BatchGetRow"):
                emulator.inject(api, "drop_after", rate=0.2, seed=7)
            emulator.inject("BatchWriteRow", "OTSServerBusy", rate=0.2, seed=8)
            result = structured(await client.call_tool("delete_all_memories", {}))
            emulator.clear_faults()
            assert result["deleted_count"] == 64, result
            assert structured(await client.call_tool("list_memories", {}))["count"] == 0

            unknown = [str(uuid.uuid4()) for _ in range(1000)]
            emulator.reset_counts()
            deleted = structured(await client.call_tool("delete_memories", {"memory_ids": unknown}))
            assert deleted["deleted"] == [] and sorted(deleted["not_found"]) == sorted(unknown)
            calls = emulator.calls_on("mem0")
            assert calls.get("BatchGetRow") == 10 and "GetRow" not in calls, calls


@pytest.mark.seam
async def test_delete_all_is_batched(tmp_path, fake_openai, tablestore_emulator):
    """450 memories: a handful of batched RPCs on the memory table, not one write per memory."""
    emulator = tablestore_emulator
    env = ts_env(tmp_path, emulator, fake_openai)
    with HttpServer(env, tmp_path, transport="streamable-http").wait_ready(STARTUP_TIMEOUT) as server:
        async with server.http("cline", "ivy") as client:
            bulk_load(direct_store(emulator), "cline", "ivy", 450)
            emulator.reset_counts()
            assert structured(await client.call_tool("delete_all_memories", {}))["deleted_count"] == 450
            calls = emulator.calls_on("mem0")
            assert sum(calls.values()) <= 4 * math.ceil(450 / 200) + 2, calls
