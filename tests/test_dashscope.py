"""Every Qwen model on DashScope (issue 5), against the fake in DashScope strict mode.

The fake rejects what DashScope rejects (more than 10 embedding inputs, json_object without "json" in
the messages, QwQ without streaming, JSON mode for thinking models, ...), so a pass here means the
product sends requests DashScope accepts. End-to-end tests go through a real MCP client (stdio) into the
installed server; a few fast in-process tests pin down the LLM client's and embedder's fallbacks.
"""

from __future__ import annotations

import json
import subprocess

import pytest
from mcp import Client, StdioServerParameters
from mcp.client.stdio import stdio_client as sdk_stdio_client

from tablestore_openmemory_mcp.embedders import EmbeddingError, OpenAICompatibleEmbedder, check_dimension
from tablestore_openmemory_mcp.models.llm import ChatClient, LLMError
from tests.fakes.openai_server import (
    MSG_STREAM_ONLY,
    MSG_THINKING_NONSTREAM,
    FakeOpenAI,
    Fault,
    _message_text,
)
from tests.server_process import SCRIPT, error_text, free_port, llm_env, server_env, stdio_client, structured

# A decoy: if reasoning content ever leaked into the parsed answer, this JSON would be found first.
REASONING = 'Let me think. The user may mean {"facts": ["REASONING LEAK"], "memory": [{"id": "0", "event": "DELETE"}]}.'

FACTS = {
    "I like green tea. I live in Hangzhou.": ["Likes green tea", "Lives in Hangzhou"],
    "I moved to Shanghai last month.": ["Lives in Shanghai"],
    "I stopped drinking green tea. Still in Shanghai. My cat is called Mochi.": [
        "No longer drinks green tea",
        "Lives in Shanghai",
        "Has a cat named Mochi",
    ],
}
# new fact -> (event, the existing memory it acts on)
RULES = {
    "Lives in Shanghai": ("UPDATE", "Lives in Hangzhou"),
    "No longer drinks green tea": ("DELETE", "Likes green tea"),
    "Has a cat named Mochi": ("ADD", None),
}

# How each model wraps its JSON (qwen-max's code fences are what broke the reference's parsing).
STYLES = {
    "plain": "{}",
    "fenced": "```json\n{}\n```",
    "prose": "Sure! Here is the result:\n{}\nLet me know if you need anything else.",
}
MODELS = [
    ("qwen-plus", "plain"),
    ("qwen-max", "fenced"),
    ("qwen-turbo", "prose"),
    ("qwq-plus", "prose"),  # streaming-only
    ("qwen3-235b-a22b-thinking-2507", "plain"),  # thinking: reasoning_content is streamed first
]


def is_stream_only(model: str) -> bool:
    return "qwq" in model or "thinking" in model


def user_text(body: dict) -> str:
    return next(m["content"] for m in body["messages"] if m["role"] == "user")


def extraction_reply(body: dict) -> dict | None:
    text = user_text(body)
    if text.startswith("Input:\n"):
        said = text.removeprefix("Input:\n").split("\n\nReturn the facts as JSON.")[0]
        return {"facts": FACTS[said]}
    return None


def decision_reply(body: dict) -> dict:
    data = json.loads(user_text(body).split("\n", 1)[1])
    by_text = {m["text"]: m["id"] for m in data["existing_memories"]}
    events = []
    for fact in data["new_facts"]:
        if fact in by_text:
            events.append({"id": by_text[fact], "text": fact, "event": "NONE"})
            continue
        event, target = RULES[fact]
        if event == "ADD":
            events.append({"id": "new", "text": fact, "event": "ADD"})
        else:
            events.append({"id": by_text[target], "text": fact, "event": event, "old_memory": target})
    return {"memory": events}


def handler(style: str):
    def reply(body: dict) -> str:
        answer = extraction_reply(body) or decision_reply(body)
        return STYLES[style].format(json.dumps(answer))

    return reply


def bodies(fake: FakeOpenAI, endpoint: str) -> list[dict]:
    return [body for name, body in fake.requests if name == endpoint]


def assert_dashscope_clean(fake: FakeOpenAI) -> None:
    """What DashScope demands, checked on every request the server sent."""
    for body in bodies(fake, "chat"):
        if body.get("response_format") == {"type": "json_object"}:
            assert "json" in _message_text(body["messages"]).lower()
    for body in bodies(fake, "embeddings"):
        assert len(body["input"]) <= 10 and body["encoding_format"] == "float"


# --------------------------------------------------------------------------- end to end, per model


@pytest.mark.anyio
@pytest.mark.parametrize(("model", "style"), MODELS, ids=[m for m, _ in MODELS])
async def test_whole_pipeline_per_model(tmp_path, fake_dashscope, model, style):
    fake = fake_dashscope
    fake.chat_handler = handler(style)
    fake.reasoning_text = REASONING
    # The fake embedder hashes words: its scores are not a real model's, so the relevance cutoff calibrated
    # for text-embedding-v4 would hide one-word queries here (the cutoff has its own tests: test_search_cutoff).
    env = server_env(
        tmp_path, **llm_env(fake, LLM_MODEL=model, LLM_MAX_RETRIES=0, TABLESTORE_SEARCH_MEMORY_MIN_SCORE="0")
    )
    async with stdio_client(env) as client:
        first = structured(await client.call_tool("add_memories", {"text": "I like green tea. I live in Hangzhou."}))
        assert sorted((e["event"], e["memory"]) for e in first["events"]) == [
            ("ADD", "Likes green tea"),
            ("ADD", "Lives in Hangzhou"),
        ]
        assert first["inferred"] is True and not first.get("note")
        ids = {e["memory"]: e["id"] for e in first["events"]}
        calls = [fake.counts["chat"]]

        second = structured(await client.call_tool("add_memories", {"text": "I moved to Shanghai last month."}))
        assert second["events"] == [
            {
                "id": ids["Lives in Hangzhou"],
                "memory": "Lives in Shanghai",
                "event": "UPDATE",
                "previous_memory": "Lives in Hangzhou",
            }
        ]
        calls.append(fake.counts["chat"] - sum(calls))

        third = structured(
            await client.call_tool(
                "add_memories", {"text": "I stopped drinking green tea. Still in Shanghai. My cat is called Mochi."}
            )
        )
        events = {(e["event"], e["memory"]) for e in third["events"]}
        assert events == {
            ("ADD", "Has a cat named Mochi"),
            ("DELETE", "Likes green tea"),
            ("NONE", "Lives in Shanghai"),
        }
        calls.append(fake.counts["chat"] - sum(calls))
        assert calls == [1, 2, 2], "extraction, then extraction + one decision; no rejected or repeated call"
        cat_id = next(e["id"] for e in third["events"] if e["event"] == "ADD")

        found = structured(await client.call_tool("search_memories", {"query": "Shanghai", "limit": 1}))
        assert [m["memory"] for m in found["results"]] == ["Lives in Shanghai"]
        listed = structured(await client.call_tool("list_memories", {}))
        assert sorted(m["memory"] for m in listed["memories"]) == ["Has a cat named Mochi", "Lives in Shanghai"]

        new_text = "Has a cat named Mochi and a dog named Bo"
        updated = structured(await client.call_tool("update_memory", {"memory_id": cat_id, "text": new_text}))
        assert updated["previous_memory"] == "Has a cat named Mochi"
        found = structured(await client.call_tool("search_memories", {"query": "dog", "limit": 1}))
        assert [(m["id"], m["memory"]) for m in found["results"]] == [(cat_id, new_text)]
        history = structured(await client.call_tool("memory_history", {"memory_id": ids["Lives in Hangzhou"]}))
        assert [h["event"] for h in history["history"]] == ["ADD", "UPDATE"]
        listed = structured(await client.call_tool("list_memories", {}))

    stored = json.dumps(listed, ensure_ascii=False)
    assert "REASONING" not in stored and "think" not in stored.lower()
    chats = bodies(fake, "chat")
    if is_stream_only(model):
        assert all(b.get("stream") is True and "response_format" not in b for b in chats)
    else:
        assert all(b.get("response_format") == {"type": "json_object"} and not b.get("stream") for b in chats)
    assert_dashscope_clean(fake)


# ------------------------------------------------------------------ end to end, DashScope's limits


@pytest.mark.anyio
async def test_25_facts_are_embedded_in_batches_of_10_and_a_refused_response_format_is_retried(
    tmp_path, fake_dashscope
):
    fake = fake_dashscope
    many = [f"Fact number {i} about the user" for i in range(25)]
    fake.chat_handler = lambda body: "Here are the facts: " + json.dumps({"facts": many}) + " (25 in total)"
    fake.script_chat(Fault.http(400, "'response_format' is not supported by this model"))
    env = server_env(tmp_path, **llm_env(fake, LLM_MODEL="qwen-plus", LLM_MAX_RETRIES=0))
    async with stdio_client(env) as client:
        result = structured(await client.call_tool("add_memories", {"text": "twenty-five things about me"}))
        assert [e["event"] for e in result["events"]] == ["ADD"] * 25 and result["inferred"] is True
        first, retry = bodies(fake, "chat")
        assert first["response_format"] == {"type": "json_object"} and "response_format" not in retry
        assert fake.counts["chat"] == 2, "exactly one retry"
        assert [len(b["input"]) for b in bodies(fake, "embeddings")] == [10, 10, 5]

        fake.reset()
        fake.chat_handler = lambda body: json.dumps({"facts": ["Fact number 3 about the user"]})
        again = structured(await client.call_tool("add_memories", {"text": "fact three again"}))
        assert structured(await client.call_tool("list_memories", {}))["count"] == 25
        assert [e["event"] for e in again["events"]] == ["NONE"]
        assert all("response_format" not in b for b in bodies(fake, "chat")), "the refusal is remembered"
    assert_dashscope_clean(fake)


# ------------------------------------------------------------------------------------- bad input


@pytest.mark.anyio
async def test_rejected_key_unknown_model_and_timeout_name_the_setting(tmp_path, fake_dashscope):
    fake = fake_dashscope
    fake.chat_handler = lambda body: json.dumps({"facts": ["Likes hiking"]})
    env = server_env(tmp_path, **llm_env(fake, LLM_MODEL="qwen-plus", LLM_MAX_RETRIES=0, LLM_TIMEOUT=1.5))

    async def count(client: Client) -> int:
        return structured(await client.call_tool("list_memories", {}))["count"]

    async with stdio_client(env) as client:
        # The LLM fails: the text is stored as given and the note names the setting.
        fake.script_chat(Fault.http(401, "Incorrect API key provided."))
        result = structured(await client.call_tool("add_memories", {"text": "I like hiking"}))
        assert result["inferred"] is False and "OPENAI_API_KEY" in result["note"]
        fake.known_models = {"text-embedding-v4"}
        result = structured(await client.call_tool("add_memories", {"text": "I like sailing"}))
        assert "LLM_MODEL" in result["note"]
        fake.known_models = None
        fake.script_chat(Fault.timeout(10))
        chats = fake.counts["chat"]
        result = structured(await client.call_tool("add_memories", {"text": "I like climbing"}))
        # the client gave up at LLM_TIMEOUT (a 10 s answer would read as an HTTP error), without retrying
        assert "LLM_TIMEOUT" in result["note"] and fake.counts["chat"] == chats + 1
        assert await count(client) == 3

        # The embedder fails: a tool error naming the setting, and nothing is stored.
        fake.api_key = "rotated-key"
        message = error_text(await client.call_tool("add_memories", {"text": "I like rowing"}))
        assert "OPENAI_API_KEY" in message and "Nothing was changed" in message
        del fake.api_key  # back to the class attribute
        fake.known_models = {"qwen-plus"}
        message = error_text(await client.call_tool("add_memories", {"text": "I like rowing"}))
        assert "EMBEDDER_MODEL" in message
        assert "EMBEDDER_MODEL" in error_text(await client.call_tool("search_memories", {"query": "hiking"}))
        fake.known_models = None
        fake.script_embeddings(Fault.timeout(10))
        message = error_text(await client.call_tool("add_memories", {"text": "I like rowing", "infer": False}))
        assert "LLM_TIMEOUT" in message
        # A failure in the second of three embedding batches: none of the 25 facts is written.
        fake.chat_handler = lambda body: json.dumps({"facts": [f"Rows on lake number {i}" for i in range(25)]})
        fake.script_embeddings(None, Fault.http(500))
        message = error_text(await client.call_tool("add_memories", {"text": "lakes I row on"}))
        assert "embedding service" in message and "Nothing was changed" in message
        listed = structured(await client.call_tool("list_memories", {}))
    assert sorted(m["memory"] for m in listed["memories"]) == ["I like climbing", "I like hiking", "I like sailing"]
    assert_dashscope_clean(fake)


@pytest.mark.anyio
async def test_unreachable_llm_url_and_an_unknown_embedding_model(tmp_path, fake_dashscope):
    """A wrong LLM base URL is a note naming it; an embedding model we don't know is a warning, and the
    server runs with it."""
    env = server_env(
        tmp_path,
        **llm_env(
            fake_dashscope,
            LLM_BASE_URL=f"http://127.0.0.1:{free_port()}/v1",
            LLM_MAX_RETRIES=0,
            EMBEDDER_MODEL="nomic-embed-text",
            TABLESTORE_VECTOR_DIMENSION=768,
        ),
    )
    errlog = (tmp_path / "stderr.log").open("w+")
    params = StdioServerParameters(command=SCRIPT, args=["--transport", "stdio"], env=env)
    async with Client(sdk_stdio_client(params, errlog=errlog)) as client:
        result = structured(await client.call_tool("add_memories", {"text": "I like hiking"}))
        assert "cannot reach" in result["note"] and "LLM_BASE_URL" in result["note"]
        found = structured(await client.call_tool("search_memories", {"query": "hiking"}))
        assert [m["memory"] for m in found["results"]] == ["I like hiking"]
    errlog.close()
    warnings = [
        line for line in (tmp_path / "stderr.log").read_text().splitlines() if "not in the list of known models" in line
    ]
    assert len(warnings) == 1 and "nomic-embed-text" in warnings[0], warnings
    assert "TABLESTORE_VECTOR_DIMENSION" in warnings[0]
    assert all(b["dimensions"] == 768 for b in bodies(fake_dashscope, "embeddings"))


def test_known_embedding_model_with_an_impossible_dimension_stops_the_server(tmp_path, fake_dashscope):
    env = server_env(
        tmp_path, **llm_env(fake_dashscope, EMBEDDER_MODEL="text-embedding-v4", TABLESTORE_VECTOR_DIMENSION=1000)
    )
    process = subprocess.Popen(
        [SCRIPT, "--transport", "stdio"],
        env=env,
        stdin=subprocess.PIPE,  # kept open: the server must exit on its own
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 1, stderr
    lines = [line for line in stderr.splitlines() if "TABLESTORE_VECTOR_DIMENSION" in line]
    assert len(lines) == 1 and lines[0].startswith("tablestore-openmemory-mcp: cannot start:"), stderr
    assert "1000" in lines[0] and "text-embedding-v4" in lines[0] and "Traceback" not in stderr
    assert fake_dashscope.counts["embeddings"] == 0


# ------------------------------------------------- in process: the client's and embedder's fallbacks


def chat_client(fake: FakeOpenAI, model: str, **kw) -> ChatClient:
    return ChatClient(model=model, api_key=fake.api_key, base_url=fake.base_url, max_retries=0, **kw)


ASK = [{"role": "user", "content": "Give me the facts."}]


def test_json_word_is_added_and_thinking_models_are_streamed_without_json_mode(fake_dashscope):
    fake_dashscope.chat_handler = lambda body: '{"facts": ["ok"]}'
    fake_dashscope.reasoning_text = REASONING
    for model in ("qwen-plus", "qwq-plus", "qvq-max", "qwen3-235b-a22b-thinking-2507"):
        assert chat_client(fake_dashscope, model).complete_json(ASK) == {"facts": ["ok"]}
    plus, qwq, qvq, thinking = bodies(fake_dashscope, "chat")
    assert plus["response_format"] == {"type": "json_object"} and "json" in _message_text(plus["messages"]).lower()
    assert all(b["stream"] is True and "response_format" not in b for b in (qwq, qvq, thinking))


def test_a_400_that_says_how_to_call_the_model_is_followed_once(fake_dashscope):
    fake = fake_dashscope
    fake.chat_handler = lambda body: '{"facts": ["ok"]}'
    # A stream-only model whose name we don't recognise: streamed from then on.
    fake.script_chat(Fault.http(400, MSG_STREAM_ONLY))
    client = chat_client(fake, "some-new-reasoning-model")
    assert client.complete_json(ASK) == {"facts": ["ok"]} and client.calls == 2
    assert client.complete_json(ASK) == {"facts": ["ok"]} and client.calls == 3
    assert [b.get("stream") for b in bodies(fake, "chat")] == [None, True, True]
    # Qwen3 open-source models think by default; non-streamed they need enable_thinking=false.
    fake.reset()
    fake.script_chat(Fault.http(400, MSG_THINKING_NONSTREAM))
    client = chat_client(fake, "qwen3-32b")
    assert client.complete_json(ASK) == {"facts": ["ok"]}
    retry = bodies(fake, "chat")[1]
    assert retry["enable_thinking"] is False and retry["response_format"] == {"type": "json_object"}
    # A provider refusing response_format twice: one retry only, then a clear error.
    fake.reset()
    fake.script_chat(Fault.http(400, "response_format is not supported"), Fault.http(400, "still no"))
    with pytest.raises(LLMError, match="HTTP 400"):
        chat_client(fake, "qwen-plus").complete_json(ASK)
    assert fake.counts["chat"] == 2


def test_llm_errors_name_the_setting(fake_dashscope, tmp_path):
    fake = fake_dashscope
    fake.known_models = {"qwen-plus"}
    with pytest.raises(LLMError, match="LLM_MODEL"):
        chat_client(fake, "qwen-plux").complete_json(ASK)
    with pytest.raises(LLMError, match="OPENAI_API_KEY"):
        ChatClient(model="qwen-plus", api_key="bad", base_url=fake.base_url, max_retries=0).complete_json(ASK)
    with pytest.raises(LLMError, match="OPENAI_BASE_URL"):
        root = fake.base_url.removesuffix("/v1")
        ChatClient(model="qwen-plus", api_key=fake.api_key, base_url=root, max_retries=0).complete_json(ASK)
    fake.known_models = None
    fake.script_chat(Fault.timeout(10))
    with pytest.raises(LLMError, match="LLM_TIMEOUT"):
        chat_client(fake, "qwq-plus", timeout=0.5).complete_json(ASK)


def embedder(fake: FakeOpenAI, **kw) -> OpenAICompatibleEmbedder:
    options = {"model": "text-embedding-v4", "dimension": 1024, "api_key": fake.api_key, "base_url": fake.base_url}
    return OpenAICompatibleEmbedder(max_retries=0, **{**options, **kw})


def test_embedder_batches_and_adapts(fake_dashscope):
    fake = fake_dashscope
    texts = [f"text {i}" for i in range(25)]
    assert len(embedder(fake).embed_batch(texts)) == 25
    assert [len(b["input"]) for b in bodies(fake, "embeddings")] == [10, 10, 5]
    # EMBEDDER_BATCH_SIZE set too high for DashScope: the service's stated limit is used from then on.
    fake.reset()
    big = embedder(fake, batch_size=25)
    assert len(big.embed_batch(texts)) == 25 and big.batch_size == 10
    assert [len(b["input"]) for b in bodies(fake, "embeddings")] == [25, 10, 10, 5]
    # A provider that refuses `dimensions`: one retry without it, remembered.
    fake.reset()
    fake.script_embeddings(Fault.http(400, "This model does not support specifying dimensions."))
    plain = embedder(fake, model="text-embedding-v3")
    plain.embed_batch(["a"])
    plain.embed_batch(["b"])
    assert ["dimensions" in b for b in bodies(fake, "embeddings")] == [True, False, False]
    # A fixed-size model gets no `dimensions` at all.
    fake.reset()
    embedder(fake, model="text-embedding-v2", dimension=1536).embed_batch(["a"])
    assert "dimensions" not in bodies(fake, "embeddings")[0]


def test_embedder_errors_name_the_setting(fake_dashscope):
    fake = fake_dashscope
    with pytest.raises(EmbeddingError, match="OPENAI_BASE_URL"):
        embedder(fake, base_url=fake.base_url.removesuffix("/v1")).embed("x")
    with pytest.raises(EmbeddingError, match="OPENAI_BASE_URL"):
        embedder(fake, base_url=f"http://127.0.0.1:{free_port()}/v1").embed("x")
    with pytest.raises(EmbeddingError, match="OPENAI_API_KEY"):
        embedder(fake, api_key="bad").embed("x")
    fake.known_models = {"qwen-plus"}
    with pytest.raises(EmbeddingError, match="EMBEDDER_MODEL"):
        embedder(fake).embed("x")
    fake.known_models = None
    with pytest.raises(EmbeddingError, match="TABLESTORE_VECTOR_DIMENSION=1536"):  # the model's own size
        embedder(fake, model="some-embedder", dimension=1000, send_dimensions=False).embed("x")


def test_dimension_check():
    assert check_dimension("text-embedding-v4", 1536) is None
    with pytest.raises(ValueError, match=r"TABLESTORE_VECTOR_DIMENSION.*") as info:
        check_dimension("text-embedding-v4", 1000)
    assert "2048, 1536, 1024" in str(info.value)
    with pytest.raises(ValueError, match="TABLESTORE_VECTOR_DIMENSION"):
        check_dimension("text-embedding-3-small", 3072)
    assert "TABLESTORE_VECTOR_DIMENSION" in (check_dimension("nomic-embed-text", 768) or "")
