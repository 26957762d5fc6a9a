"""Hostile input against backups, ids and paused apps, on both stores (embedded, Tablestore via the emulator).

In-process (the REST routes over httpx's ASGI transport, the MCP tools over the SDK's in-memory client) for
behaviour, with Python's allocation peak (tracemalloc) bounding memory; one real server process per store for
the resident-set peak read from /proc. Refusals are bounded by the byte counts they report, never by time.
"""

from __future__ import annotations

import json
import os
import subprocess
import tracemalloc
import zipfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp import Client
from mcp.server.mcpserver import MCPServer
from starlette.applications import Starlette

from tablestore_openmemory_mcp.backup.online import UserBackups
from tablestore_openmemory_mcp.edge.tools import register_tools
from tablestore_openmemory_mcp.memory.audit import AppDirectory
from tablestore_openmemory_mcp.memory.flow import ClassicFlow
from tablestore_openmemory_mcp.memory.ports import NewMemory, Origin
from tablestore_openmemory_mcp.memory.service import MemoryService
from tablestore_openmemory_mcp.repository import StoreRepository
from tablestore_openmemory_mcp.rest.app import api_routes
from tablestore_openmemory_mcp.scope import Scope
from tablestore_openmemory_mcp.settings import Settings
from tests.hostile_files import (
    GOOD_IDS,
    MiB,
    blank_lines_gz,
    bomb_zip,
    deep_jsonl,
    odd_ids_jsonl,
    peak_rss,
    refused_after,
)
from tests.server_process import SCRIPT, HttpServer, error_text, server_env, structured, tablestore_env
from tests.test_backup import FakeEmbedder, embedded_repo, tablestore_repo, unit

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The hostile files, built once: each is under 300 KB on disk."""
    d = tmp_path_factory.mktemp("hostile")
    return {
        "bomb": bomb_zip(d / "bomb.zip", 256),
        "json_only_bomb": bomb_zip(d / "json-only.zip", 64, with_jsonl=False),
        "blank": blank_lines_gz(d / "blank.jsonl.gz", 200),
        "deep": deep_jsonl(d / "deep.jsonl"),
        "odd": odd_ids_jsonl(d / "odd.jsonl"),
    }


@dataclass
class Stack:
    repo: StoreRepository
    service: MemoryService
    rest: httpx.AsyncClient

    @asynccontextmanager
    async def mcp(self, client: str, user: str) -> AsyncIterator[Client]:
        server = MCPServer(name="test")
        config = Settings(transport="stdio", tool_black_list=[])

        async def get_service() -> MemoryService:
            return self.service

        class Identity:
            def resolve(self, ctx: Any, user_id: str | None = None) -> Scope:
                return Scope(client, user)

        register_tools(server, get_service, config, Identity())  # type: ignore[arg-type]
        async with Client(server) as connected:
            yield connected

    async def upload(self, path: Path, user: str = "alice") -> httpx.Response:
        with path.open("rb") as fh:
            return await self.rest.post(
                "/api/v1/backup/import", data={"user_id": user}, files={"file": (path.name, fh)}
            )


@pytest.fixture(params=["embedded", "tablestore"])
async def stack(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Stack]:
    if request.param == "embedded":
        base = embedded_repo(tmp_path / "store")
    else:
        base = tablestore_repo(request.getfixturevalue("tablestore_emulator"))
    repo = StoreRepository(base.store, base.history_log, apps=AppDirectory(base.history_log))
    embedder = FakeEmbedder()
    service = MemoryService(ClassicFlow(repo, embedder, None), repo, backups=UserBackups(repo, embedder))

    async def get_service() -> MemoryService:
        return service

    app = Starlette(routes=api_routes(get_service, Settings(transport="stdio")))
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t", timeout=60) as rest:
            yield Stack(repo, service, rest)
    finally:
        repo.close()


def texts(repo: StoreRepository, user: str) -> list[str]:
    scope = Scope("any", user, shared=True)
    return sorted(m.text for page in repo.iter_all(scope) for m in page)


async def test_a_bomb_json_member_beside_json_lines_is_never_parsed(stack: Stack, files: dict[str, Path]) -> None:
    tracemalloc.start()
    try:
        answer = await stack.upload(files["bomb"])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert answer.status_code == 200, answer.text
    assert answer.json()["imported"] == 2
    assert peak < 16 * MiB, f"256 MiB of '{{}},' unpacked would take gigabytes parsed; peak was {peak // MiB} MiB"
    assert texts(stack.repo, "alice") == ["good memory 0", "good memory 1"]


async def test_a_json_document_alone_is_capped_and_depth_checked(stack: Stack, tmp_path: Path, files: dict[str, Path]):
    tracemalloc.start()
    try:
        answer = await stack.upload(files["json_only_bomb"])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert answer.status_code == 413 and "larger than 8 MiB" in answer.json()["message"]
    assert peak < 16 * MiB
    deep = tmp_path / "deep.zip"
    with zipfile.ZipFile(deep, "w") as zf:
        zf.writestr("memories.json", '{"memories": [' + "[" * 100_000 + "]" * 100_000 + "]}")
    answer = await stack.upload(deep)
    assert answer.status_code == 400 and "nested deeper than 32 levels" in answer.json()["message"]
    assert texts(stack.repo, "alice") == []


async def test_empty_lines_are_refused_after_a_bounded_read(stack: Stack, files: dict[str, Path]) -> None:
    answer = await stack.upload(files["blank"])
    assert answer.status_code == 413, answer.text
    message = answer.json()["message"]
    assert "more than 10000 empty lines" in message
    assert message.startswith("'blank.jsonl.gz' has") and "memories_import_" not in message, "the upload's name"
    assert refused_after(message) <= 64 * 1024, "refused within the first 64 KiB of 200 MiB"
    assert texts(stack.repo, "alice") == [], "nothing is written before the whole file passed its checks"


async def test_a_record_nested_100000_deep_is_skipped_and_the_rest_imported(stack: Stack, files: dict[str, Path]):
    answer = await stack.upload(files["deep"])
    assert answer.status_code == 200, answer.text
    summary = answer.json()
    assert summary["imported"] == 2 and sum(summary["skipped"].values()) == 1
    # 100,000 brackets trip the object count before any parse; a shallower pile trips the depth check
    assert set(summary["skipped"]) <= {"more than 100000 objects and arrays", "nested deeper than 32 levels"}
    assert texts(stack.repo, "alice") == ["after", "before the deep one"]
    summary = (await stack.upload(deep_jsonl(files["deep"].with_name("deep-900.jsonl"), depth=900))).json()
    assert summary["skipped"] == {"nested deeper than 32 levels": 1}


async def test_a_line_of_a_million_empty_objects_is_skipped_before_parsing(stack: Stack, tmp_path: Path) -> None:
    path = tmp_path / "dicts.jsonl"
    path.write_bytes(b'{"content": "dicts", "metadata": {"a": [' + b"{}," * 1_000_000 + b'{}]}}\n{"content": "ok"}\n')
    tracemalloc.start()
    try:
        summary = (await stack.upload(path)).json()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert summary["imported"] == 1 and summary["skipped"] == {"more than 100000 objects and arrays": 1}
    assert peak < 16 * MiB, f"parsed, the line would take ~70 MiB; peak was {peak // MiB} MiB"


async def test_imported_odd_ids_get_memory_ids_that_rest_and_mcp_accept(stack: Stack, files: dict[str, Path]):
    summary = (await stack.upload(files["odd"])).json()
    renamed = summary["renamed_ids"]
    assert summary["imported"] == 4 and summary["renamed"] == 4
    assert set(renamed) == {"x", "../../etc/passwd", "12345", "A" * 100}
    again = (await stack.upload(files["odd"])).json()
    assert again["imported"] == 0 and again["existing"] == 4, "the new ids are stable: a re-run finds them"
    new = [renamed["x"], renamed["../../etc/passwd"], renamed["12345"], renamed["A" * 100]]
    for memory_id in new:
        got = await stack.rest.get(f"/api/v1/memories/{memory_id}", params={"user_id": "alice"})
        assert got.status_code == 200 and got.json()["client"] == "claude"
    edited = await stack.rest.put(f"/api/v1/memories/{new[0]}", json={"user_id": "alice", "text": "odd id, edited"})
    assert edited.status_code == 200, edited.text
    async with stack.mcp("claude", "alice") as mcp:
        history = structured(await mcp.call_tool("memory_history", {"memory_id": new[0]}))["history"]
        assert [h["event"] for h in history][-1] == "UPDATE"
        deleted = structured(await mcp.call_tool("delete_memories", {"memory_ids": new[:2]}))
        assert deleted["deleted"] == new[:2]
    purged = await stack.rest.request(
        "DELETE", "/api/v1/memories", params={"purge": "true"}, json={"user_id": "alice", "memory_ids": new}
    )
    assert sorted(purged.json()["purged"]) == sorted(new)
    assert texts(stack.repo, "alice") == []


async def test_odd_ids_stored_by_earlier_versions_can_be_erased(stack: Stack) -> None:
    scope = Scope("claude", "alice")
    odd = ["x", "../../etc/passwd", "12345", "A" * 900]
    stack.repo.add(scope, [NewMemory(text=f"legacy {i}", vector=unit(i), id=i) for i in odd], Origin())
    unknown = "00000000-0000-4000-8000-000000000009"
    body = {"user_id": "alice", "memory_ids": [odd[0], "never-stored", unknown, odd[3]], "state": "archived"}
    changed = (await stack.rest.post("/api/v1/memories/state", json=body)).json()
    assert changed["changed"] == [odd[0], odd[3]] and changed["unchanged"] == [unknown]
    assert [i["id"] for i in changed["invalid"]] == ["never-stored"] and "is not a memory id" in changed["invalid"][0][
        "error"
    ]
    async with stack.mcp("claude", "alice") as mcp:
        assert "is not a memory id" in error_text(
            await mcp.call_tool("delete_memories", {"memory_ids": ["never-stored"]})
        )
        deleted = structured(await mcp.call_tool("delete_memories", {"memory_ids": [odd[1]]}))
        assert deleted["deleted"] == [odd[1]]
        all_deleted = structured(await mcp.call_tool("delete_all_memories", {}))
        assert all_deleted["deleted_count"] == 1  # "12345", the only one still active
    body = {"user_id": "alice", "memory_ids": [*odd, "never-stored"]}
    purged = (await stack.rest.request("DELETE", "/api/v1/memories", params={"purge": "true"}, json=body)).json()
    assert sorted(purged["purged"]) == sorted(odd) and [i["id"] for i in purged["invalid"]] == ["never-stored"]
    assert purged["history_events"] >= 4
    assert texts(stack.repo, "alice") == []


async def test_a_paused_app_is_paused_everywhere_it_acts(stack: Stack) -> None:
    created = await stack.rest.post(
        "/api/v1/memories", json={"user_id": "alice", "client": "claude", "text": "Tea", "infer": False}
    )
    memory_id = created.json()["events"][0]["id"]
    assert (await stack.rest.put("/api/v1/apps/claude", params={"user_id": "alice"}, json={"paused": True})).json()[
        "paused"
    ]
    refused = await stack.rest.post(
        "/api/v1/memories", json={"user_id": "alice", "client": "claude", "text": "Coffee", "infer": False}
    )
    assert refused.status_code == 409 and refused.json()["error"] == "app_paused"
    async with stack.mcp("claude", "alice") as mcp:
        for tool, args in [
            ("add_memories", {"text": "Coffee", "infer": False}),
            ("memory_history", {"memory_id": memory_id}),
            ("update_memory", {"memory_id": memory_id, "text": "x"}),
            ("delete_memories", {"memory_ids": [memory_id]}),
            ("set_memory_state", {"memory_ids": [memory_id], "state": "archived"}),
        ]:
            assert "is paused" in error_text(await mcp.call_tool(tool, args)), tool
        assert structured(await mcp.call_tool("list_memories", {}))["memories"] == []
        assert structured(await mcp.call_tool("search_memories", {"query": "Tea"}))["results"] == []
    # the owner keeps control of the paused app's memories
    edit = await stack.rest.put(f"/api/v1/memories/{memory_id}", json={"user_id": "alice", "text": "Green tea"})
    assert edit.status_code == 200, edit.text
    for state in ("archived", "active"):
        moved = await stack.rest.post(
            "/api/v1/memories/state", json={"user_id": "alice", "memory_ids": [memory_id], "state": state}
        )
        assert moved.json()["changed"] == [memory_id]
    assert texts(stack.repo, "alice") == ["Green tea"]
    async with stack.mcp("cursor", "alice") as other:  # another app of the same user is not paused
        assert not (await other.call_tool("add_memories", {"text": "Coffee", "infer": False})).is_error


def test_cli_import_refuses_the_empty_lines_file(tmp_path: Path, files: dict[str, Path]) -> None:
    env = server_env(tmp_path)
    done = subprocess.run(
        [SCRIPT, "import", str(files["blank"]), "--user-id", "alice"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode != 0 and "more than 10000 empty lines" in done.stderr, done.stderr[-2000:]


# --- a real server process: its resident-set peak, read from /proc ----------------------------------------------


@pytest.fixture(params=["embedded", "tablestore"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[HttpServer]:
    extra: dict[str, str] = {}
    if request.param == "tablestore":
        extra.update(tablestore_env(request.getfixturevalue("tablestore_emulator")))
    with HttpServer(server_env(tmp_path, **extra), tmp_path, transport="streamable-http") as running:
        yield running


def test_hostile_uploads_keep_the_server_small(server: HttpServer, files: dict[str, Path]) -> None:
    """Each attack against a running server: the answer, and the server's peak RSS stays within 100 MiB of
    what it had after a warm-up import (before: the bomb took ~9 bytes of memory per unpacked byte)."""
    api = httpx.Client(base_url=f"{server.url}/api/v1", timeout=300)

    def upload(path: Path) -> httpx.Response:
        with path.open("rb") as fh:
            return api.post("/backup/import", data={"user_id": "alice"}, files={"file": (path.name, fh)})

    with api:
        warm = tmp_path_of(files) / "warm.jsonl"
        warm.write_text(json.dumps({"id": GOOD_IDS[0], "content": "warm up"}) + "\n")
        assert upload(warm).status_code == 200
        rss, peak = peak_rss(server.process.pid)
        baseline = max(rss, peak)
        expected = {"bomb": 200, "json_only_bomb": 413, "blank": 413, "deep": 200, "odd": 200}
        for name, status in expected.items():
            answer = upload(files[name])
            assert answer.status_code == status, (name, answer.text)
            _, peak = peak_rss(server.process.pid)
            assert peak - baseline < 100 * MiB, f"{name}: server peak RSS grew by {(peak - baseline) // MiB} MiB"
        assert api.get("/health").status_code in (200, 404)
    assert os.path.exists(f"/proc/{server.process.pid}"), "the server survived every attack"


def tmp_path_of(files: dict[str, Path]) -> Path:
    return files["bomb"].parent
