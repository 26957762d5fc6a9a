"""The classic mem0 flow end to end: real MCP client -> stdio server -> mem0 -> embedded store, with a
scripted fake LLM. Counts LLM calls; asserts events, history and what is stored."""

import pytest

from tests.fakes.memory_llm import chat_bodies, decision, facts, run_update_scenario
from tests.fakes.openai_server import Fault
from tests.server_process import error_text, llm_env, server_env, stdio_client, structured

pytestmark = pytest.mark.anyio


async def test_update_scenario_delete_and_none(tmp_path, fake_openai):
    env = server_env(tmp_path, **llm_env(fake_openai, LLM_MAX_RETRIES=0))
    async with stdio_client(env) as client:
        await run_update_scenario(client, fake_openai)


async def test_unknown_ids_and_missing_fields_are_tolerated(tmp_path, fake_openai):
    env = server_env(tmp_path, **llm_env(fake_openai, LLM_MAX_RETRIES=0))
    async with stdio_client(env) as client:
        fake_openai.script_chat(facts("Likes tea"))
        structured(await client.call_tool("add_memories", {"text": "I like tea"}))
        fake_openai.script_chat(
            facts("Lives in Hangzhou", "Works at a bank"),
            decision(
                {"id": "42", "text": "Lives in Hangzhou", "event": "UPDATE"},  # made-up id: becomes an ADD
                {"id": "0", "event": "DELETE"} | {"id": "99"},  # unknown id to delete: ignored
                {"text": "Works at a bank"},  # no event: ignored
            ),
        )
        result = structured(await client.call_tool("add_memories", {"text": "I live in Hangzhou, I work at a bank"}))
        assert [(e["event"], e["memory"]) for e in result["events"]] == [("ADD", "Lives in Hangzhou")]
        texts = sorted(m["memory"] for m in structured(await client.call_tool("list_memories", {}))["memories"])
        assert texts == ["Likes tea", "Lives in Hangzhou"]


@pytest.mark.parametrize(
    "reply",
    [Fault.http(500), Fault.nonjson(), '{"facts": "not a list"', "   "],
    ids=["http500", "nonjson", "broken-json", "empty"],
)
async def test_llm_failure_stores_the_text_verbatim_and_says_so(tmp_path, fake_openai, reply):
    env = server_env(tmp_path, **llm_env(fake_openai, LLM_MAX_RETRIES=0))
    async with stdio_client(env) as client:
        fake_openai.script_chat(reply)
        result = structured(await client.call_tool("add_memories", {"text": "My cat is called Mochi"}))
        assert result["inferred"] is False
        assert "stored as given" in result["note"]
        assert [(e["event"], e["memory"]) for e in result["events"]] == [("ADD", "My cat is called Mochi")]
        listed = structured(await client.call_tool("list_memories", {}))
        assert [m["memory"] for m in listed["memories"]] == ["My cat is called Mochi"]


async def test_decision_failure_still_adds_the_facts(tmp_path, fake_openai):
    env = server_env(tmp_path, **llm_env(fake_openai, LLM_MAX_RETRIES=0))
    async with stdio_client(env) as client:
        fake_openai.script_chat(facts("Likes tea"))
        structured(await client.call_tool("add_memories", {"text": "I like tea"}))
        fake_openai.script_chat(facts("Likes green tea"), Fault.http(503))
        result = structured(await client.call_tool("add_memories", {"text": "green tea especially"}))
        assert [(e["event"], e["memory"]) for e in result["events"]] == [("ADD", "Likes green tea")]
        assert "could not decide" in result["note"]


async def test_chinese_stays_chinese_and_custom_prompts_are_used(tmp_path, fake_openai):
    env = server_env(
        tmp_path,
        **llm_env(
            fake_openai,
            MEM0_FACT_EXTRACTION_PROMPT="CUSTOM-EXTRACT: list facts",
            MEM0_UPDATE_MEMORY_PROMPT="CUSTOM-UPDATE: decide",
        ),
    )
    async with stdio_client(env) as client:
        fake_openai.script_chat(facts("喜欢喝乌龙茶"))
        structured(await client.call_tool("add_memories", {"text": "我喜欢喝乌龙茶"}))
        fake_openai.script_chat(facts("住在杭州"), decision({"id": "new", "text": "住在杭州", "event": "ADD"}))
        structured(await client.call_tool("add_memories", {"text": "我住在杭州"}))
        found = structured(await client.call_tool("search_memories", {"query": "乌龙茶", "limit": 1}))
        assert [m["memory"] for m in found["results"]] == ["喜欢喝乌龙茶"]
    bodies = chat_bodies(fake_openai)
    assert bodies[0]["messages"][0]["content"].startswith("CUSTOM-EXTRACT: list facts")
    assert "json" in bodies[0]["messages"][0]["content"].lower(), "a JSON reminder is added for json_object mode"
    assert bodies[2]["messages"][0]["content"].startswith("CUSTOM-UPDATE: decide")
    assert "我喜欢喝乌龙茶" in bodies[0]["messages"][1]["content"]


async def test_infer_false_stores_as_given_without_llm_calls(tmp_path, fake_openai):
    env = server_env(tmp_path, **llm_env(fake_openai))
    async with stdio_client(env) as client:
        result = structured(await client.call_tool("add_memories", {"text": "原样保存这句话", "infer": False}))
        assert result["events"][0]["memory"] == "原样保存这句话"
        again = structured(await client.call_tool("add_memories", {"text": "原样保存这句话", "infer": False}))
        assert again["events"][0]["event"] == "NONE", "an identical memory is not stored twice"
    assert fake_openai.counts["chat"] == 0


async def test_unreachable_llm_is_reported_in_the_note(tmp_path):
    env = server_env(
        tmp_path,
        OPENAI_API_KEY="k",
        OPENAI_BASE_URL="http://127.0.0.1:9/v1",
        EMBEDDER_PROVIDER="offline",
        LLM_MAX_RETRIES=0,
        LLM_TIMEOUT=5,
    )
    async with stdio_client(env) as client:
        result = structured(await client.call_tool("add_memories", {"text": "I like hiking"}))
        assert "cannot reach the LLM service" in result["note"] and "OPENAI_BASE_URL" in result["note"]
        assert structured(await client.call_tool("list_memories", {}))["count"] == 1


async def test_embedder_failure_is_a_tool_error_and_nothing_is_stored(tmp_path, fake_openai):
    env = server_env(tmp_path, **llm_env(fake_openai, LLM_MAX_RETRIES=0))
    async with stdio_client(env) as client:
        fake_openai.script_embeddings(Fault.http(500))
        message = error_text(await client.call_tool("add_memories", {"text": "x is y", "infer": False}))
        assert "embedding service" in message and "Nothing was changed" in message
        assert structured(await client.call_tool("list_memories", {}))["count"] == 0
