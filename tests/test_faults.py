"""Faults, nothing lost (issue 4, item 4).

500+ concurrent classic-flow adds over streamable HTTP against the Tablestore emulator while the emulator
throttles, answers 5xx, times out and drops connections, the embedder answers 500s and times out, and the
LLM answers prose instead of JSON. Every add must either succeed (and then be found by list_memories) or
report a clear tool error: nothing acknowledged may be lost. Then clients that hang up mid-call, over SSE
and streamable HTTP, must leave the server healthy and its store consistent.
"""

from __future__ import annotations

from collections import Counter

import anyio
import httpx
import pytest

from tests.fakes.memory_llm import classic_memory_llm
from tests.fakes.openai_server import FakeOpenAI
from tests.server_process import HttpServer, llm_env, server_env, structured, tablestore_env
from tests.tablestore_emulator import TablestoreEmulator

pytestmark = pytest.mark.anyio

ADDS = 512
CONCURRENCY = 16
USERS = 8
DIMS = 64
LLM_TIMEOUT = 2.0
TABLESTORE_FAULTS = {  # kind -> rate per RPC; rules are checked in order, so about 1 RPC in 4 fails
    "OTSOperationThrottled": 0.05,
    "OTSServerBusy": 0.04,
    "OTSTimeout": 0.04,
    "http500": 0.03,
    "http503": 0.03,
    "hang": 0.02,
    "drop": 0.04,
}
EMBEDDER_FAULT_RATE = 0.12  # http500 or a timeout; with LLM_MAX_RETRIES=1 about 1.5% of calls fail twice
LLM_NONJSON_RATE = 0.1


def fault_env(tmp_path, emulator: TablestoreEmulator, fake: FakeOpenAI) -> dict[str, str]:
    return server_env(
        tmp_path,
        **llm_env(fake, LLM_TIMEOUT=LLM_TIMEOUT, LLM_MAX_RETRIES=1),
        **tablestore_env(emulator),
        TABLESTORE_VECTOR_DIMENSION=DIMS,
    )


async def test_500_adds_under_faults_lose_nothing(tmp_path, tablestore_emulator, fake_openai):
    fake_openai.chat_handler = classic_memory_llm
    with HttpServer(
        fault_env(tmp_path, tablestore_emulator, fake_openai), tmp_path, transport="streamable-http"
    ) as server:
        # Faults only after startup: creating the table and index is not what is measured here.
        tablestore_emulator.hang_seconds = 0.5
        for seed, (kind, rate) in enumerate(TABLESTORE_FAULTS.items()):
            tablestore_emulator.inject("*", kind, rate=rate, seed=seed)
        injected: Counter[str] = Counter()
        pick = tablestore_emulator.faults.pick

        def counting_pick(api: str) -> str | None:
            if (kind := pick(api)) is not None:
                injected[kind] += 1
            return kind

        tablestore_emulator.faults.pick = counting_pick
        fake_openai.fault_rate(
            endpoint="embeddings",
            kinds=["http500", "timeout"],
            rate=EMBEDDER_FAULT_RATE,
            seed=1,
            timeout_seconds=LLM_TIMEOUT + 1,
        )
        fake_openai.fault_rate(endpoint="chat", kinds=["nonjson"], rate=LLM_NONJSON_RATE, seed=2)

        acknowledged: dict[str, dict[str, str]] = {f"user{u}": {} for u in range(USERS)}  # user -> id -> text
        counts: Counter[str] = Counter()
        errors: list[str] = []
        jobs = iter(range(ADDS))

        async def worker(w: int) -> None:
            user = f"user{w % USERS}"
            async with server.http("faults", user) as client:
                for i in jobs:
                    result = await client.call_tool("add_memories", {"text": f"I practise hobby number {i} daily"})
                    if result.is_error:
                        counts["error"] += 1
                        errors.append(result.content[0].text)
                        continue
                    counts["success"] += 1
                    for event in result.structured_content["events"]:
                        if event["event"] in ("ADD", "UPDATE", "NONE"):
                            acknowledged[user][event["id"]] = event["memory"]
                    if result.structured_content.get("note"):
                        counts["stored as given"] += 1

        with anyio.fail_after(150):
            async with anyio.create_task_group() as tg:
                for w in range(CONCURRENCY):
                    tg.start_soon(worker, w)

        tablestore_emulator.clear_faults()
        fake_openai.fault_rate(endpoint="embeddings", rate=0)
        fake_openai.fault_rate(endpoint="chat", rate=0)
        lost = 0
        for user, memories in acknowledged.items():
            async with server.http("faults", user) as client:
                listed = structured(await client.call_tool("list_memories", {}))
            found = {m["id"]: m["memory"] for m in listed["memories"]}
            lost += sum(1 for key, text in memories.items() if found.get(key) != text)
        print(f"\nadds={ADDS} {dict(counts)} lost={lost}")
        print(f"tablestore: {sum(tablestore_emulator.counts.values())} RPCs, faults injected {dict(injected)}")
        print(f"fake openai requests: {dict(fake_openai.counts)}")
        print("errors:", *sorted(set(errors))[:8], sep="\n  ")

        assert counts["success"] + counts["error"] == ADDS
        assert lost == 0
        assert counts["success"] > ADDS * 0.8, errors[:5]
        for text in errors:
            assert "Traceback" not in text and "Error executing tool" not in text, text
            assert text.endswith("Nothing was changed.") and ("Tablestore" in text or "service" in text), text
        assert httpx.get(f"{server.url}/health").status_code == 200


@pytest.mark.parametrize("transport", ["sse", "http"])
async def test_client_disconnecting_mid_call_leaves_server_healthy(tmp_path, fake_openai, transport):
    fake_openai.chat_handler = classic_memory_llm
    env = server_env(tmp_path, **llm_env(fake_openai, LLM_MAX_RETRIES=0), TOOL_BLACK_LIST="[]")
    with HttpServer(env, tmp_path, transport="streamable-http" if transport == "http" else "sse") as server:
        connect = server.sse if transport == "sse" else server.http
        fake_openai.chat_latency = 2.0
        users = [f"gone{i}" for i in range(4)]

        async def hang_up(user: str) -> None:
            async with connect("faults", user) as client:
                with anyio.move_on_after(0.3) as scope:
                    await client.call_tool("add_memories", {"text": f"{user} collects old maps"})
                assert scope.cancel_called, "the add finished before the client hung up"

        async with anyio.create_task_group() as tg:
            for user in users:
                tg.start_soon(hang_up, user)
        # The abandoned adds are still running on the server; give them time to finish (or not).
        with anyio.fail_after(20):
            while fake_openai.counts["chat"] < len(users):
                await anyio.sleep(0.1)
        fake_openai.chat_latency = 0.0
        await anyio.to_thread.run_sync(server.wait_idle)

        assert server.process.poll() is None
        assert httpx.get(f"{server.url}/health").status_code == 200
        landed = 0
        for user in users:
            async with connect("faults", user) as client:
                memories = structured(await client.call_tool("list_memories", {}))["memories"]
                assert len(memories) <= 1, memories  # all or nothing: never a half-applied add
                for memory in memories:
                    assert memory["memory"] == f"Fact: {user} collects old maps"
                    history = structured(await client.call_tool("memory_history", {"memory_id": memory["id"]}))
                    assert [h["event"] for h in history["history"]] == ["ADD"]
                    landed += 1
                added = structured(await client.call_tool("add_memories", {"text": "a fresh session works"}))
                assert added["events"][0]["event"] == "ADD"
                assert structured(await client.call_tool("list_memories", {}))["count"] == len(memories) + 1
        print(f"\n{transport}: {len(users)} clients hung up mid-add; {landed} adds landed whole, none half-applied")
        assert "Traceback" not in server.log()
