"""The whole server on the strict Tablestore emulator: bulk state changes of long memories, lists, export and
delete_all (issue 20), then throttling and 5xx bursts through every kind of operation.

Real processes and sockets: the server (streamable HTTP, REST + MCP), the fake OpenAI server, the emulator with
every documented rule on. Bursts are injected with the emulator's fault injection; the server retries them within
``TABLESTORE_MAX_RETRY_SECONDS`` and, past it, answers one line, having reported nothing it did not do.
"""

from __future__ import annotations

import io
import json
import uuid
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from tablestore_openmemory_mcp.memory.ports import StoredMemory
from tablestore_openmemory_mcp.memory.store_port import NewRow
from tablestore_openmemory_mcp.scope import Scope
from tablestore_openmemory_mcp.stores.row_format import now_iso, text_hash
from tablestore_openmemory_mcp.stores.tablestore import TablestoreStore
from tests.fakes.openai_server import FakeOpenAI, embed_text
from tests.server_process import HttpServer, llm_env, server_env, structured, tablestore_env
from tests.tablestore_emulator import TablestoreEmulator

pytestmark = pytest.mark.anyio

DIMS = 64
TOKENS = "alice-token:alice,admin-token"


@contextmanager
def running(tmp_path: Path, emulator: TablestoreEmulator, fake: FakeOpenAI, **extra: Any) -> Iterator[HttpServer]:
    env = server_env(
        tmp_path,
        **llm_env(fake, LLM_MAX_RETRIES=0),
        **tablestore_env(emulator),
        TABLESTORE_VECTOR_DIMENSION=DIMS,
        TOOL_BLACK_LIST="[]",
        MCP_AUTH_TOKENS=TOKENS,
        **extra,
    )
    with HttpServer(env, tmp_path, transport="streamable-http") as server:
        yield server


def rest(server: HttpServer) -> httpx.Client:
    return httpx.Client(base_url=f"{server.url}/api/v1", headers={"Authorization": "Bearer admin-token"}, timeout=120)


def mcp(server: HttpServer, client: str = "cline", user: str = "alice") -> Client:
    http = create_mcp_http_client(headers={"Authorization": f"Bearer {user}-token"})
    return Client(streamable_http_client(f"{server.url}/mcp/{client}/http/{user}", http_client=http))


def load(emulator: TablestoreEmulator, texts: list[str], client: str = "cline", user: str = "alice") -> list[str]:
    """Memories written straight into the server's table, in the repository's payload format."""
    store = TablestoreStore(
        collection_name="mem0",
        **emulator.credentials(),
        embedding_model_dims=DIMS,
    )
    now = now_iso()
    memories = [StoredMemory(str(uuid.uuid4()), t, user, client, now, now, text_hash(t)) for t in texts]
    try:
        for start in range(0, len(memories), 50):
            chunk = memories[start : start + 50]
            store.put(Scope(client, user), [NewRow(m, embed_text(m.text, DIMS).tolist()) for m in chunk])
    finally:
        store.close()
    return [m.id for m in memories]


def exported(http: httpx.Client, user: str = "alice") -> list[dict[str, Any]]:
    response = http.post("/backup/export", json={"user_id": user})
    assert response.status_code == 200, response.text
    with zipfile.ZipFile(io.BytesIO(response.content)) as zf:
        return list(json.loads(zf.read("memories.json"))["memories"])


async def test_bulk_archive_of_200_long_memories_then_lists_export_and_delete_all(
    tmp_path: Path, fake_openai: FakeOpenAI, tablestore_emulator: TablestoreEmulator
) -> None:
    """Before: the archive failed (OTSParameterInvalid: over 4,194,304 bytes), and every list, the export and
    delete_all saw nothing (the filter columns were not read)."""
    with running(tmp_path, tablestore_emulator, fake_openai) as server, rest(server) as http:
        ids = load(tablestore_emulator, [f"{i:03d} " + "a long memory. " * 1_066 for i in range(200)])  # 16,000 chars
        archived = http.post("/memories/state", json={"user_id": "alice", "memory_ids": ids, "state": "archived"})
        assert archived.status_code == 200, archived.text
        assert sorted(archived.json()["changed"]) == sorted(ids)

        page = http.get("/memories", params={"user_id": "alice", "state": "archived", "size": 20}).json()
        assert page["total"] == 200 and len(page["items"]) == 20
        assert len(exported(http)) == 200

        back = http.post("/memories/state", json={"user_id": "alice", "memory_ids": ids[:30], "state": "active"})
        assert len(back.json()["changed"]) == 30
        async with mcp(server) as session:
            listed = structured(await session.call_tool("list_memories", {}))
            assert (listed["count"], listed["total"]) == (30, 30)
            assert structured(await session.call_tool("delete_all_memories", {}))["deleted_count"] == 30
            assert structured(await session.call_tool("list_memories", {}))["total"] == 0


async def test_throttling_and_5xx_bursts_are_retried_then_reported_in_one_line(
    tmp_path: Path, fake_openai: FakeOpenAI, tablestore_emulator: TablestoreEmulator
) -> None:
    """Bursts longer than the old retry (4 attempts in ~0.7 s) through add, list, search, bulk state changes,
    export and import; past the budget one line, and nothing reported done that is not."""
    em = tablestore_emulator
    with running(tmp_path, em, fake_openai, TABLESTORE_MAX_RETRY_SECONDS=8) as server, rest(server) as http:
        async with mcp(server) as session:
            # each burst: 4 failures in a row, one more than the old retry's 4 attempts could take
            em.inject("PutRow", "OTSServerBusy", times=2)  # the dedup claim
            em.inject("PutRow", "http503", times=2)
            em.inject("BatchWriteRow", "OTSPartitionUnavailable", times=4)  # the history rows
            added = structured(await session.call_tool("add_memories", {"text": "Likes green tea", "infer": False}))
            tea = added["events"][0]["id"]

            em.inject("GetRange", "OTSServerBusy", times=2)
            em.inject("GetRange", "http502", times=2)
            assert [m["id"] for m in structured(await session.call_tool("list_memories", {}))["memories"]] == [tea]

            em.flush_index()
            em.inject("Search", "OTSOperationThrottled", times=2)
            em.inject("Search", "OTSInternalServerError", times=2)
            found = structured(await session.call_tool("search_memories", {"query": "green tea"}))
            assert [m["id"] for m in found["results"]] == [tea]

        more = load(em, [f"memory {i}" for i in range(40)])
        em.inject("BatchWriteRow", "OTSServerBusy", times=2)
        em.inject("BatchWriteRow", "http503_after", times=2)  # applied, answer lost: settled by re-reading
        paused = http.post("/memories/state", json={"user_id": "alice", "memory_ids": more, "state": "paused"})
        assert sorted(paused.json()["changed"]) == sorted(more)

        em.inject("GetRange", "OTSServerBusy", times=4)
        records = exported(http)
        assert len(records) == 41

        backup = tmp_path / "backup.jsonl"
        backup.write_text("".join(json.dumps({"content": f"imported {i}", "app": "cline"}) + "\n" for i in range(5)))
        em.inject("BatchWriteRow", "OTSNotEnoughCapacityUnit", times=4)
        with backup.open("rb") as fh:
            imported = http.post("/backup/import", data={"user_id": "alice"}, files={"file": ("b.jsonl", fh)})
        assert imported.status_code == 200 and imported.json()["imported"] == 5, imported.text

        em.inject("BatchWriteRow", "OTSServerBusy", rate=1.0, seed=7)  # longer than the budget
        failed = http.post("/memories/state", json={"user_id": "alice", "memory_ids": more, "state": "archived"})
        em.clear_faults()
        assert failed.status_code == 503, failed.text
        message = failed.json()["message"]
        assert "\n" not in message and "BatchWriteRow" in message and "TABLESTORE_MAX_RETRY_SECONDS" in message
        page = http.get("/memories", params={"user_id": "alice", "state": "paused", "size": 100}).json()
        assert page["total"] == 40  # nothing archived, nothing lost
        again = http.post("/memories/state", json={"user_id": "alice", "memory_ids": more, "state": "archived"})
        assert sorted(again.json()["changed"]) == sorted(more)
