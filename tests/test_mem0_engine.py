"""MEMORY_ENGINE=mem0 end to end: a real MCP client -> the server -> mem0 2.x's Memory -> our stores.

Switching engines loses nothing (each reads and changes the other's memories); mem0's add, search,
update, delete and history go through the same rows, history log and scope as the classic engine's;
faults end in the classic engine's one-line errors."""

from __future__ import annotations

import json

import pytest

from tests.fakes.openai_server import Fault
from tests.server_process import error_text, llm_env, server_env, stdio_client, structured, tablestore_env

pytestmark = pytest.mark.anyio
TEA = "Likes green tea"


def extracted(*texts: str) -> str:
    """mem0 2.x's additive extraction reply."""
    return json.dumps({"memory": [{"id": str(i), "text": t} for i, t in enumerate(texts)]})


def facts(*items: str) -> str:
    return json.dumps({"facts": list(items)})


def engine_env(tmp_path, fake, engine: str, **extra: str) -> dict[str, str]:
    return server_env(tmp_path, **llm_env(fake, LLM_MAX_RETRIES=0, MEMORY_ENGINE=engine, **extra))


async def texts(client) -> list[str]:
    listed = structured(await client.call_tool("list_memories", {}))
    return sorted(m["memory"] for m in listed["memories"])


async def test_switching_engines_back_and_forth_loses_nothing(tmp_path, fake_openai):
    async with stdio_client(engine_env(tmp_path, fake_openai, "classic")) as client:
        fake_openai.script_chat(facts("Likes green tea"))
        classic = structured(await client.call_tool("add_memories", {"text": "I like green tea"}))
        assert [e["event"] for e in classic["events"]] == ["ADD"]
        tea = classic["events"][0]["id"]

    async with stdio_client(engine_env(tmp_path, fake_openai, "mem0")) as client:
        assert await texts(client) == ["Likes green tea"]
        chats = fake_openai.counts["chat"]
        fake_openai.script_chat(extracted("Lives in Hangzhou", "Likes green tea"))
        added = structured(await client.call_tool("add_memories", {"text": "I live in Hangzhou and like green tea"}))
        assert fake_openai.counts["chat"] == chats + 1, "mem0 2.x: one LLM call per add"
        events = {(e["event"], e["memory"]) for e in added["events"]}
        assert events == {("ADD", "Lives in Hangzhou"), ("NONE", "Likes green tea")}, added
        city = next(e["id"] for e in added["events"] if e["event"] == "ADD")
        # mem0's search finds the classic engine's memory and its own
        found = structured(await client.call_tool("search_memories", {"query": "green tea"}))
        assert found["results"][0]["id"] == tea
        # mem0 changes a classic memory; its history shows both engines' events
        structured(await client.call_tool("update_memory", {"memory_id": tea, "text": "Likes oolong tea"}))
        history = structured(await client.call_tool("memory_history", {"memory_id": tea}))["history"]
        assert [(h["event"], h["new_memory"]) for h in history] == [
            ("ADD", "Likes green tea"),
            ("UPDATE", "Likes oolong tea"),
        ]
        verbatim = structured(await client.call_tool("add_memories", {"text": "My cat is Mochi", "infer": False}))
        assert [e["event"] for e in verbatim["events"]] == ["ADD"]
        again = structured(await client.call_tool("add_memories", {"text": "My cat is Mochi", "infer": False}))
        assert [e["event"] for e in again["events"]] == ["NONE"], "one memory per text, across engines"
        unknown = "0190a0b0-0000-7000-8000-000000000000"
        deleted = structured(await client.call_tool("delete_memories", {"memory_ids": [city, unknown]}))
        assert deleted == {"deleted": [city], "not_found": [unknown]}
        assert await texts(client) == ["Likes oolong tea", "My cat is Mochi"]

    async with stdio_client(engine_env(tmp_path, fake_openai, "classic")) as client:
        assert await texts(client) == ["Likes oolong tea", "My cat is Mochi"]
        history = structured(await client.call_tool("memory_history", {"memory_id": tea}))["history"]
        assert [(h["event"], h["new_memory"]) for h in history] == [
            ("ADD", "Likes green tea"),
            ("UPDATE", "Likes oolong tea"),
        ]
        history = structured(await client.call_tool("memory_history", {"memory_id": city}))["history"]
        assert [h["event"] for h in history] == ["ADD", "DELETE"]
        assert not (tmp_path / "data" / "mem0" / "history.db").exists(), "mem0 kept no file of its own"
        fake_openai.script_chat(facts("Lives in Hangzhou"))  # mem0 deleted it softly: the text may come back
        again = structured(await client.call_tool("add_memories", {"text": "I live in Hangzhou"}))
        assert [e["event"] for e in again["events"]] == ["ADD"] and again["events"][0]["id"] != city


async def test_mem0_engine_faults_end_like_the_classic_engine(tmp_path, fake_openai, tablestore_emulator):
    env = engine_env(tmp_path, fake_openai, "mem0", **tablestore_env(tablestore_emulator))
    async with stdio_client(env) as client:
        # index lag: what was just added is found at once (the store joins this process's recent writes)
        fake_openai.script_chat(extracted("Plays the cello"))
        added = structured(await client.call_tool("add_memories", {"text": "I play the cello"}))
        found = structured(await client.call_tool("search_memories", {"query": "cello"}))
        assert [r["id"] for r in found["results"]] == [added["events"][0]["id"]]

        # the LLM fails or answers prose: the text is stored as given, and the result says so
        for fault in (Fault.http(500), Fault.nonjson()):
            fake_openai.script_chat(fault)
            result = structured(await client.call_tool("add_memories", {"text": f"My cat is Mochi ({fault.kind})"}))
            assert result["inferred"] is False and "stored as given" in result["note"], result
            assert [e["event"] for e in result["events"]] == ["ADD"]

        # the embedder fails: one line naming it, and nothing stored
        before = await texts(client)
        fake_openai.script_embeddings(Fault.http(500))
        fake_openai.script_chat(extracted("Lives in Paris"))
        failed = await client.call_tool("add_memories", {"text": "I live in Paris"})
        message = error_text(failed)
        assert (
            failed.is_error and "\n" not in message and "embed" in message.lower() and "Nothing was changed" in message
        )
        assert await texts(client) == before

        # Tablestore throttles: retried, the add lands; throttled for good: one line, nothing half-written
        tablestore_emulator.inject("*", "OTSServerBusy", times=2)
        ok = structured(await client.call_tool("add_memories", {"text": "Drinks coffee", "infer": False}))
        assert [e["event"] for e in ok["events"]] == ["ADD"]
        tablestore_emulator.inject("*", "OTSServerBusy", times=1000)
        failed = await client.call_tool("add_memories", {"text": "Drinks water", "infer": False})
        message = error_text(failed)
        tablestore_emulator.clear_faults()
        assert failed.is_error and "\n" not in message and "Tablestore" in message, message
        assert "Drinks water" not in await texts(client)
        assert "Drinks coffee" in await texts(client)

        # bad input: an id that is not the caller's
        missing = await client.call_tool(
            "update_memory", {"memory_id": "0190a0b0-0000-7000-8000-000000000000", "text": "x"}
        )
        assert missing.is_error and "No memory with id" in error_text(missing)


async def test_rest_page_lifecycle_and_paused_apps_work_with_the_mem0_engine(tmp_path, tablestore_emulator):
    """The REST API's lifecycle tests, run as written against the app (in process) whose MCP tools use mem0."""
    from tests.inprocess import serve_in_process
    from tests.test_rest_api import (
        TOKENS,
        test_lifecycle_through_rest_and_mcp_agree,
        test_paused_app_cannot_write_and_is_hidden_for_that_user_only,
    )

    extra = {"MCP_AUTH_TOKENS": TOKENS, "TOOL_BLACK_LIST": "[]", "MEMORY_ENGINE": "mem0"}
    (tmp_path / "tablestore").mkdir()
    async with serve_in_process(tmp_path / "tablestore", **extra, **tablestore_env(tablestore_emulator)) as server:
        await test_lifecycle_through_rest_and_mcp_agree(server)
    (tmp_path / "embedded").mkdir()
    async with serve_in_process(tmp_path / "embedded", **extra) as server:
        await test_paused_app_cannot_write_and_is_hidden_for_that_user_only(server)


def test_mem0_written_memories_export_and_import_into_a_classic_server(tmp_path, fake_openai):
    """Backups are engine-neutral: what the mem0 engine stored moves to a classic server."""
    from benchmarks.engines import engine_settings

    from tablestore_openmemory_mcp.app.bootstrap import build_components
    from tablestore_openmemory_mcp.scope import Scope

    scope = Scope("cline", "alice")
    source = build_components(engine_settings(tmp_path / "a", fake_openai, "mem0"))
    try:
        fake_openai.script_chat(extracted("Likes green tea", "Lives in Hangzhou"))
        added = source.service.flow.add(scope, "I like green tea and live in Hangzhou", True, "mcp")
        assert [e.event for e in added.events] == ["ADD", "ADD"]
        backup = source.service.export_backup("alice")
    finally:
        source.service.close()
    target = build_components(engine_settings(tmp_path / "b", fake_openai, "classic"))
    try:
        summary = target.service.import_backup(backup, "alice", "skip")
        assert summary["imported"] == 2, summary
        listed = target.service.flow.list_memories(scope, 10)
        assert sorted(m.memory for m in listed.memories) == ["Likes green tea", "Lives in Hangzhou"]
    finally:
        target.service.close()
