"""Isolation under a seeded random workload: no tool ever returns, changes or deletes another scope's memory.

Every (store, transport) pair runs the same kind of random sequence of add, search, list, update, delete,
delete_all and history calls, spread over many scopes (client_name, user_id). A model (scope -> {id: text})
predicts every answer; after each operation the acting scope is listed and must equal its model exactly,
and whenever an operation aimed at another scope's id, that scope is listed too. At the end every scope's
list equals its model.

HTTP runs (SSE, streamable HTTP) use 5 users x 3 clients against one server process per store. stdio
needs one process per scope (~6 s of start-up each), so it uses 3 scopes: two clients of one user and
one client of another, three processes sharing the same data directory or table, started in parallel.
Adds use ``infer=false`` so no LLM is involved and the model is exact.

``ISOLATION_SEED`` and ``ISOLATION_OPS`` change the seed and the number of random operations per run.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
import uuid
from collections.abc import Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes.openai_server import FakeOpenAI
from tests.server_process import HttpServer, connect, error_text, llm_env, server_env, structured, tablestore_env
from tests.tablestore_emulator import TablestoreEmulator

pytestmark = pytest.mark.anyio

SEED = int(os.environ.get("ISOLATION_SEED", "20250604"))
OPS = int(os.environ.get("ISOLATION_OPS", "120"))
CLIENTS = ("cline", "cursor", "cherry")
USERS = 5
STDIO_SCOPES = [("cline", "stdio-user0"), ("cursor", "stdio-user0"), ("cline", "stdio-user1")]
VOCAB = ("tea", "jazz", "python", "hangzhou", "cat", "rust", "coffee", "piano", "茶", "猫")
NOT_FOUND = "No memory with id"
#: The fake OpenAI server's hash embeddings instead of the offline model: the stores are under test, not
#: the embedder, and the offline model's ~100 ms per text on a small CI machine would dominate the run.
EMBEDDER = {"LLM_PROVIDER": "none", "TABLESTORE_VECTOR_DIMENSION": "64"}

Scope = tuple[str, str]  # (client_name, user_id)


@dataclass
class Store:
    name: str
    env: dict[str, str]
    tmp_path: Path


@pytest.fixture(scope="module")
def embedder() -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI().start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture(scope="module", params=["embedded", "tablestore"])
def store(request, tmp_path_factory, embedder: FakeOpenAI) -> Iterator[Store]:
    tmp_path = tmp_path_factory.mktemp(request.param)
    env = server_env(tmp_path, TOOL_BLACK_LIST="[]", **llm_env(embedder, **EMBEDDER))
    if request.param == "embedded":
        yield Store("embedded", env, tmp_path)
        return
    emulator = TablestoreEmulator(access_key_id="akid", access_key_secret="secret", instance_name="isolation")
    emulator.start()
    try:
        yield Store("tablestore", {**env, **tablestore_env(emulator)}, tmp_path)
    finally:
        emulator.stop()
    assert emulator.last_internal_error is None, emulator.last_internal_error


@pytest.fixture(scope="module")
def http_server(store: Store) -> Iterator[HttpServer]:
    with HttpServer(store.env, store.tmp_path) as server:
        yield server


@dataclass
class Run:
    """The model, one session per scope, and the checks."""

    rng: random.Random
    sessions: dict[Scope, Any]
    rest_url: str | None = None  # HTTP runs also act through the REST API, as each scope's user
    model: dict[Scope, dict[str, str]] = field(default_factory=dict)
    updates: dict[str, int] = field(default_factory=dict)
    calls: int = 0
    ops: int = 0
    counter: int = 0

    @property
    def scopes(self) -> list[Scope]:
        return list(self.sessions)

    async def call(self, scope: Scope, tool: str, args: dict[str, Any]) -> Any:
        self.calls += 1
        return await self.sessions[scope].call_tool(tool, args)

    def owner(self, memory_id: str) -> Scope | None:
        return next((s for s, memories in self.model.items() if memory_id in memories), None)

    def foreign_id(self, scope: Scope) -> tuple[str, Scope | None]:
        """An id of another scope's memory (or, when there is none yet, an id nobody has)."""
        others = [(i, s) for s, memories in self.model.items() if s != scope for i in memories]
        return self.rng.choice(others) if others else (str(uuid.uuid4()), None)

    async def check_list(self, scope: Scope) -> None:
        listed = structured(await self.call(scope, "list_memories", {}))
        got = {m["id"]: m["memory"] for m in listed["memories"]}
        assert got == self.model.setdefault(scope, {}), f"{scope} after {self.ops} ops"
        assert listed["count"] == len(got)

    # ---- operations ------------------------------------------------------------------------------
    async def op_add(self, scope: Scope) -> Scope | None:
        self.counter += 1
        text = f"{self.rng.choice(VOCAB)} {self.rng.choice(VOCAB)} note {self.counter} of {scope[1]}"
        events = structured(await self.call(scope, "add_memories", {"text": text, "infer": False}))["events"]
        assert [(e["event"], e["memory"]) for e in events] == [("ADD", text)]
        assert self.owner(events[0]["id"]) is None, "an add reused another memory's id"
        self.model.setdefault(scope, {})[events[0]["id"]] = text
        return None

    async def op_search(self, scope: Scope) -> Scope | None:
        limit = self.rng.randint(1, 20)
        args = {"query": self.rng.choice(VOCAB), "limit": limit}
        results = structured(await self.call(scope, "search_memories", args))["results"]
        own = self.model.get(scope, {})
        assert len(results) <= limit
        for found in results:
            assert own.get(found["id"]) == found["memory"], f"{scope} found {found} outside its scope"
        return None

    async def op_list(self, scope: Scope) -> Scope | None:
        return None  # every operation is followed by a list of the acting scope

    async def op_update(self, scope: Scope) -> Scope | None:
        own = self.model.get(scope, {})
        self.counter += 1
        text = f"{self.rng.choice(VOCAB)} updated {self.counter}"
        if own and self.rng.random() < 0.6:
            memory_id = self.rng.choice(sorted(own))
            result = structured(await self.call(scope, "update_memory", {"memory_id": memory_id, "text": text}))
            assert (result["id"], result["memory"], result["previous_memory"]) == (memory_id, text, own[memory_id])
            own[memory_id] = text
            self.updates[memory_id] = self.updates.get(memory_id, 0) + 1
            return None
        memory_id, victim = self.foreign_id(scope)
        result = await self.call(scope, "update_memory", {"memory_id": memory_id, "text": text})
        assert NOT_FOUND in error_text(result)
        return victim

    async def op_delete(self, scope: Scope) -> Scope | None:
        own = sorted(self.model.get(scope, {}))
        mine = self.rng.sample(own, min(len(own), self.rng.randint(0, 2)))
        foreign, victim = self.foreign_id(scope) if self.rng.random() < 0.6 or not mine else (None, None)
        ids = mine + ([foreign] if foreign else [])
        self.rng.shuffle(ids)
        answer = structured(await self.call(scope, "delete_memories", {"memory_ids": ids}))
        assert sorted(answer["deleted"]) == sorted(mine), "unknown and foreign ids are reported, never deleted"
        assert answer["not_found"] == ([foreign] if foreign else [])
        for memory_id in mine:
            del self.model[scope][memory_id]
        return victim

    async def op_delete_all(self, scope: Scope) -> Scope | None:
        answer = structured(await self.call(scope, "delete_all_memories", {}))
        assert answer["deleted_count"] == len(self.model.get(scope, {}))
        self.model[scope] = {}
        others = [s for s, memories in self.model.items() if memories and s != scope]
        return self.rng.choice(others) if others else None

    async def op_history(self, scope: Scope) -> Scope | None:
        own = self.model.get(scope, {})
        if own and self.rng.random() < 0.5:
            memory_id = self.rng.choice(sorted(own))
            events = structured(await self.call(scope, "memory_history", {"memory_id": memory_id}))["history"]
            changes = [e["event"] for e in events if e["event"] != "STATE"]  # REST pauses/resumes add STATE
            assert changes == ["ADD"] + ["UPDATE"] * self.updates.get(memory_id, 0)
            return None
        memory_id, victim = self.foreign_id(scope)
        assert NOT_FOUND in error_text(await self.call(scope, "memory_history", {"memory_id": memory_id}))
        return victim

    def other_users_id(self, scope: Scope) -> tuple[str, Scope | None]:
        """An id of a memory that belongs to another *user* (the REST API spans a user's clients)."""
        others = [(i, s) for s, memories in self.model.items() if s[1] != scope[1] for i in memories]
        return self.rng.choice(others) if others else (str(uuid.uuid4()), None)

    async def op_rest(self, scope: Scope) -> Scope | None:
        """The owner's REST view: the same memories MCP shows; another user's ids are 404 and unchanged."""
        assert self.rest_url is not None
        client, user = scope
        own = self.model.get(scope, {})
        async with httpx.AsyncClient(base_url=self.rest_url, timeout=60) as rest:
            self.calls += 1
            listed = (await rest.get("/memories", params={"user_id": user, "client": client, "size": 200})).json()
            assert {m["id"]: m["memory"] for m in listed["items"]} == own, f"REST list of {scope}"
            memory_id, victim = self.other_users_id(scope)
            self.calls += 3
            assert (await rest.get(f"/memories/{memory_id}", params={"user_id": user})).status_code == 404
            edit = await rest.put(f"/memories/{memory_id}", json={"user_id": user, "text": "hijack"})
            assert edit.status_code == 404
            state = await rest.post(
                "/memories/state", json={"user_id": user, "memory_ids": [memory_id], "state": "paused"}
            )
            assert state.json()["changed"] == []
            if own:  # pause and resume one of its own: invisible to MCP meanwhile, back afterwards
                mine = self.rng.choice(sorted(own))
                self.calls += 3
                paused = await rest.post(
                    "/memories/state", json={"user_id": user, "memory_ids": [mine], "state": "paused"}
                )
                assert paused.json()["changed"] == [mine]
                listed_now = structured(await self.call(scope, "list_memories", {}))
                assert mine not in {m["id"] for m in listed_now["memories"]}
                back = await rest.post(
                    "/memories/state", json={"user_id": user, "memory_ids": [mine], "state": "active"}
                )
                assert back.json()["changed"] == [mine]
        return victim

    async def play(self, count: int) -> None:
        await asyncio.gather(*map(self.check_list, self.scopes))  # stdio processes finish starting in parallel
        weights = {"add": 30, "search": 14, "list": 8, "update": 16, "delete": 14, "delete_all": 3, "history": 15}
        if self.rest_url is not None:
            weights["rest"] = 12
        names, odds = list(weights), list(weights.values())
        for _ in range(count):
            scope = self.rng.choice(self.scopes)
            op = self.rng.choices(names, odds)[0]
            victim = await getattr(self, f"op_{op}")(scope)
            self.ops += 1
            await self.check_list(scope)
            if victim is not None and victim != scope:
                await self.check_list(victim)
        for scope in self.scopes:
            await self.check_list(scope)


@pytest.mark.parametrize("transport", ["stdio", "sse", "http"])
async def test_random_operations_never_cross_scopes(request, store: Store, transport: str):
    server = request.getfixturevalue("http_server") if transport != "stdio" else None
    scopes = (
        STDIO_SCOPES if transport == "stdio" else [(c, f"{transport}-user{u}") for u in range(USERS) for c in CLIENTS]
    )
    started, failure = time.monotonic(), None
    async with AsyncExitStack() as stack:
        sessions = {s: await stack.enter_async_context(connect(server, store.env, transport, *s)) for s in scopes}
        rest_url = f"{server.url}/api/v1" if server is not None else None
        run = Run(random.Random(f"{SEED}-{store.name}-{transport}"), sessions, rest_url)
        try:
            await run.play(OPS)
        except AssertionError as exc:  # raised outside the sessions' task groups, so it reads plainly
            failure = exc
    report = (
        f"isolation {store.name}/{transport}: {run.ops} random operations, {run.calls} tool calls, "
        f"{len(scopes)} scopes, {sum(map(len, run.model.values()))} memories left, "
        f"{time.monotonic() - started:.1f} s, seed {SEED}"
    )
    print(report)
    if failure is not None:
        raise AssertionError(f"{report}: {failure}") from failure
    assert run.ops == OPS, report
