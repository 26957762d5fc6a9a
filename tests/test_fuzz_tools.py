"""Property-based fuzzing of every tool's arguments against one running server (streamable HTTP).

A raw JSON-RPC client over httpx sends what the SDK client cannot: NaN and Infinity tokens, lone
surrogates, invalid UTF-8, arguments that are not an object, missing and extra arguments. Whatever
arrives, the server must answer within the timeout with a tool result, a tool error or a JSON-RPC error
(a 4xx for a body it cannot parse), never a 5xx, never a traceback, and stay healthy. Extra arguments
such as ``user_id`` must never reach another scope: a victim's memory survives the whole run.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fakes.openai_server import FakeOpenAI
from tests.server_process import HttpServer, llm_env, server_env

EXAMPLES = 60
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
LEAKS = ("Traceback", 'File "')
HEADERS = {
    "Content-Type": "application/json",
    "Accept": "application/json, text/event-stream",
    "MCP-Protocol-Version": "2025-06-18",
}


class RawClient:
    """JSON-RPC over streamable HTTP with nothing in between: bodies go out byte for byte."""

    def __init__(self, url: str, client: str = "fuzz", user: str = "fuzzer") -> None:
        self.url = url
        self.endpoint = f"{url}/mcp/{client}/http/{user}"
        self.http = httpx.Client(timeout=30.0)

    def post(self, body: bytes, endpoint: str | None = None) -> httpx.Response:
        return self.http.post(endpoint or self.endpoint, content=body, headers=HEADERS)

    def call(self, tool: Any, arguments: Any, ensure_ascii: bool = True) -> httpx.Response:
        params = {"name": tool, "arguments": arguments}
        payload = json.dumps(
            {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": params}, ensure_ascii=ensure_ascii
        )
        return self.post(payload.encode("utf-8", "surrogatepass"))  # a lone surrogate becomes invalid UTF-8

    def healthy(self) -> bool:
        return self.http.get(f"{self.url}/health").status_code == 200


def messages(response: httpx.Response) -> list[dict[str, Any]]:
    """The JSON-RPC messages in a response (plain JSON or server-sent events)."""
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        return [json.loads(line[5:]) for line in response.text.splitlines() if line.startswith("data:")]
    return [response.json()] if response.content else []


def check_answer(response: httpx.Response) -> str:
    """The property: a 4xx JSON-RPC error, or a 200 with one result or error; no traceback. Returns the kind."""
    assert response.status_code < 500, (response.status_code, response.text[:500])
    for leak in LEAKS:
        assert leak not in response.text, response.text[:2000]
    if response.status_code != 200:
        assert response.status_code in (400, 413), (response.status_code, response.text[:500])
        return f"http {response.status_code}"
    [message] = messages(response)
    if "error" in message:
        assert isinstance(message["error"]["code"], int) and message["error"]["message"]
        return "json-rpc error"
    result = message["result"]
    assert result["content"] and all(isinstance(c["text"], str) for c in result["content"])
    return "tool error" if result.get("isError") else "result"


# ---- strategies ------------------------------------------------------------------------------------
ODD_STRINGS = ["", " ", "\t\n", "../x", "a?b=c", "%00", "\x00", "*", "' OR 1=1 --", '"', "😀", "\ud800", "null"]
huge = st.builds(
    lambda unit, n: unit * n, st.sampled_from(["x", "😀", "茶 ", "\x00", " ", "\ud83d"]), st.integers(0, 100_000)
)
plausible = st.text(st.characters(categories=["L", "N", "P", "Zs", "So"]), min_size=1, max_size=80)
texts = st.one_of(
    plausible,
    st.text(max_size=200),
    st.text(st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=()), max_size=50),
    st.sampled_from(ODD_STRINGS),
    huge,
)
numbers = st.one_of(st.integers(-5, 200), st.integers(-(2**80), 2**80), st.floats(allow_nan=True, allow_infinity=True))
anything = st.recursive(
    st.one_of(st.none(), st.booleans(), numbers, texts),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)
#: Ids of real memories, filled by the fixture: the fuzzer's own and a victim's in another scope.
KNOWN: dict[str, str] = {}
known_ids = st.sampled_from(["own", "victim"]).map(lambda owner: KNOWN[owner])
ids = st.one_of(known_ids, st.uuids().map(str), texts)
PARAMS: dict[str, dict[str, st.SearchStrategy]] = {
    "add_memories": {"text": texts, "infer": st.booleans()},
    "search_memories": {"query": texts, "limit": numbers},
    "list_memories": {},
    "delete_all_memories": {},
    "delete_memories": {"memory_ids": st.lists(ids, max_size=5)},
    "update_memory": {"memory_id": ids, "text": texts},
    "memory_history": {"memory_id": ids},
}
extra_args = st.dictionaries(st.sampled_from(["user_id", "client_name", "extra", "__proto__"]), anything, max_size=2)


def arguments(tool: str) -> st.SearchStrategy:
    """Mostly well-shaped objects with odd values, then wild objects, then non-objects."""
    wanted = PARAMS[tool]
    shaped = st.fixed_dictionaries(wanted)
    wild = st.fixed_dictionaries({}, optional={name: st.one_of(s, anything) for name, s in wanted.items()})
    merged = st.builds(lambda given_, extra: {**extra, **given_}, st.one_of(shaped, wild), extra_args)
    return st.one_of(shaped, merged, anything)


def remember(client: RawClient, text: str) -> str:
    [added] = messages(client.call("add_memories", {"text": text, "infer": False}))
    return added["result"]["structuredContent"]["events"][0]["id"]


# ---- the server ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def raw(tmp_path_factory) -> Iterator[RawClient]:
    tmp_path = tmp_path_factory.mktemp("fuzz")
    fake = FakeOpenAI().start()
    env = server_env(tmp_path, TOOL_BLACK_LIST="[]", TABLESTORE_VECTOR_DIMENSION=64, **llm_env(fake, LLM_MAX_RETRIES=0))
    try:
        with HttpServer(env, tmp_path, transport="streamable-http") as server:
            client = RawClient(server.url)
            victim = RawClient(server.url, "fuzz", "victim")
            KNOWN["victim"] = remember(victim, "victim secret")
            yield client
            assert server.process.poll() is None, server.log()
            [listed] = messages(victim.call("list_memories", {}))
            memories = [(m["id"], m["memory"]) for m in listed["result"]["structuredContent"]["memories"]]
            assert memories == [(KNOWN["victim"], "victim secret")], "a call reached another scope"
    finally:
        fake.stop()


@pytest.mark.parametrize("tool", list(PARAMS))
def test_every_tool_answers_any_arguments(raw: RawClient, tool: str):
    seen: dict[str, int] = {}
    KNOWN["own"] = remember(raw, f"own secret for {tool}")  # earlier tools may have deleted the last one

    @FUZZ
    @given(args=arguments(tool), ensure_ascii=st.booleans())
    def fuzz(args: Any, ensure_ascii: bool) -> None:
        kind = check_answer(raw.call(tool, args, ensure_ascii))
        seen[kind] = seen.get(kind, 0) + 1
        assert raw.healthy()

    fuzz()
    print(f"fuzz {tool}: {sum(seen.values())} examples, {seen}")
    assert sum(seen.values()) >= EXAMPLES // 2, seen


def test_unknown_tools_and_bad_names(raw: RawClient):
    seen: dict[str, int] = {}

    @FUZZ
    @given(name=st.one_of(texts, anything), args=anything)
    def fuzz(name: Any, args: Any) -> None:
        kind = check_answer(raw.call(name, args, ensure_ascii=False))
        seen[kind] = seen.get(kind, 0) + 1
        assert raw.healthy()

    fuzz()
    print(f"fuzz tool names: {sum(seen.values())} examples, {seen}")


def test_raw_bytes_inside_arguments(raw: RawClient):
    """Invalid UTF-8, NUL bytes and stray JSON tokens spliced into an otherwise valid call."""
    seen: dict[str, int] = {}
    prefix = b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"add_memories","arguments":{"text":'

    @FUZZ
    @given(
        junk=st.one_of(st.binary(max_size=64), st.sampled_from([b"NaN", b"-Infinity", b"1e999", b'"\xff"', b"\xc3("]))
    )
    def fuzz(junk: bytes) -> None:
        kind = check_answer(raw.post(prefix + junk + b',"infer":false}}}'))
        seen[kind] = seen.get(kind, 0) + 1
        assert raw.healthy()

    fuzz()
    print(f"fuzz raw bytes: {sum(seen.values())} examples, {seen}")


def test_memory_ids_of_real_memories_stay_consistent(raw: RawClient):
    """After the fuzzing, the fuzzer's own scope still lists and deletes cleanly."""
    [listed] = messages(raw.call("list_memories", {}))
    memories = listed["result"]["structuredContent"]["memories"]
    if memories:
        ids = [m["id"] for m in memories] + [str(uuid.uuid4())]
        [deleted] = messages(raw.call("delete_memories", {"memory_ids": ids}))
        assert len(deleted["result"]["structuredContent"]["deleted"]) == len(memories)
    [listed] = messages(raw.call("list_memories", {}))
    assert listed["result"]["structuredContent"]["count"] == 0
