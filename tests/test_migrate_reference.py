"""Upgrade from the reference deployment: rows written by tablestore-for-agent-memory's own KnowledgeStore
(the reference's storage layer, from PyPI) into the Tablestore emulator are copied into our table.

In-process tests drive :class:`ReferenceCopy` directly (counts, scopes, vectors, idempotence, resume,
history); the end-to-end test starts the real server with the reference's environment and reads the
memories back over MCP.
"""

from __future__ import annotations

import hashlib
import math
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("tablestore_for_agent_memory")

from tablestore_openmemory_mcp.migrate.marker import FileMarker, MarkerState, TablestoreMarker
from tablestore_openmemory_mcp.migrate.reference import ReferenceTable, convert, row_from_sdk
from tablestore_openmemory_mcp.migrate.runner import ReferenceCopy
from tablestore_openmemory_mcp.migrate.upgrade import plan_upgrade, tablestore_client
from tablestore_openmemory_mcp.repository import StoreRepository
from tablestore_openmemory_mcp.scope import Scope
from tablestore_openmemory_mcp.settings import load_settings
from tablestore_openmemory_mcp.stores.tablestore import TablestoreStore
from tablestore_openmemory_mcp.stores.tablestore.history import TablestoreHistoryLog
from tests.fakes.reference_deployment import RefMemory, knowledge_store, write, write_history_db
from tests.fakes.tablestore_fixture import tablestore_emulator  # noqa: F401  (fixture)
from tests.tablestore_emulator import TablestoreEmulator

DIMS = 8


def unit(seed: str, dims: int = DIMS) -> list[float]:
    raw = [b - 127.5 for b in hashlib.sha256(seed.encode()).digest()[:dims]]
    norm = math.sqrt(sum(v * v for v in raw))
    return [v / norm for v in raw]


class CountingEmbedder:
    name = "counting"

    def __init__(self, dims: int = DIMS) -> None:
        self.dims = dims
        self.texts: list[str] = []

    def embed(self, text: str, memory_action: Any = None) -> list[float]:
        return self.embed_batch([text])[0]

    def embed_batch(self, texts: list[str], memory_action: str = "add") -> list[list[float]]:
        self.texts.extend(texts)
        return [unit(t, self.dims) for t in texts]


def reference_memories(n_per_scope: int = 5) -> list[RefMemory]:
    scopes = [("alice", "cline"), ("alice", "cherrystudio"), ("bob", "cline")]
    out = []
    for user, client in scopes:
        for i in range(n_per_scope):
            text = f"{user} via {client}: fact {i}"
            out.append(RefMemory(id=f"{user}-{client}-{i:03d}", text=text, user=user, client=client, vector=unit(text)))
    return out


def our_repository(emulator: TablestoreEmulator, table: str = "mem0_v2") -> StoreRepository:
    store = TablestoreStore(
        collection_name=table,
        **emulator.credentials(),
        embedding_model_dims=DIMS,
    )
    history = TablestoreHistoryLog(store.client, f"{table}_history", endpoint=store.endpoint)
    return StoreRepository(store, history)


def client_of(emulator: TablestoreEmulator) -> Any:
    import tablestore

    return tablestore.OTSClient(
        emulator.endpoint, emulator.access_key_id, emulator.access_key_secret, emulator.instance_name
    )


def all_texts(repo: StoreRepository, scope: Scope) -> dict[str, str]:
    return {m.id: m.text for page in repo.iter_all(scope) for m in page}


@pytest.fixture
def reference(tablestore_emulator: TablestoreEmulator) -> Iterator[tuple[TablestoreEmulator, list[RefMemory]]]:  # noqa: F811
    memories = reference_memories()
    store = knowledge_store(tablestore_emulator, DIMS)
    write(store, memories)
    yield tablestore_emulator, memories


def copy_of(emulator: TablestoreEmulator, repo: StoreRepository, marker: Any, **kw: Any) -> ReferenceCopy:
    return ReferenceCopy(ReferenceTable(client_of(emulator), "mem0"), repo, CountingEmbedder(), DIMS, marker, **kw)


def test_rows_come_back_in_their_scopes_with_ids_text_and_times(reference: Any, tmp_path: Path) -> None:
    emulator, memories = reference
    repo = our_repository(emulator)
    try:
        copy = copy_of(emulator, repo, FileMarker(tmp_path / "marker.json"), page_size=4)
        assert copy.source.count_rows() == len(memories)  # the progress bar's total
        counts = copy.run()
        assert counts.finished and counts.copied == len(memories) and counts.seen == len(memories)
        assert counts.reembedded == 0 and not counts.skipped
        assert copy.embedder.texts == []  # vectors of the right dimension are reused
        for user, client in {(m.user, m.client) for m in memories}:
            expected = {m.id: m.text for m in memories if (m.user, m.client) == (user, client)}
            assert all_texts(repo, Scope(client, user)) == expected
        one = repo.get(Scope("cline", "alice"), "alice-cline-000")
        assert one is not None and one.created_at == "2025-06-01T17:00:00.123456+00:00"  # US/Pacific -> UTC
        assert one.metadata.get("source_app") == "openmemory"
        assert repo.get(Scope("cline", "bob"), "alice-cline-000") is None  # scope holds
    finally:
        repo.close()


def test_second_run_copies_nothing_and_the_reference_is_not_written(reference: Any, tmp_path: Path) -> None:
    emulator, memories = reference
    repo = our_repository(emulator)
    try:
        marker = FileMarker(tmp_path / "marker.json")
        copy_of(emulator, repo, marker).run()
        emulator.reset_counts()
        again = copy_of(emulator, repo, marker).run()
        assert again.already_done and again.copied == len(memories)
        assert not {"PutRow", "BatchWriteRow", "UpdateRow", "DeleteRow"} & set(emulator.counts)
        # without the marker (e.g. lost), ids already here are still not copied twice
        fresh = copy_of(emulator, repo, FileMarker(tmp_path / "other.json")).run()
        assert fresh.copied == 0 and fresh.present == len(memories)
    finally:
        repo.close()


def test_interrupted_copy_resumes_after_the_last_stored_page(reference: Any, tmp_path: Path) -> None:
    emulator, memories = reference
    repo = our_repository(emulator)
    try:
        marker = FileMarker(tmp_path / "marker.json")
        stop = threading.Event()
        first = copy_of(emulator, repo, marker, page_size=4).run(progress=lambda seen: stop.set(), stop=stop)
        assert not first.finished and first.copied == 4
        state = marker.load()
        assert state is not None and not state.done and state.last_key is not None
        emulator.reset_counts()
        second = copy_of(emulator, repo, marker, page_size=4).run()
        assert second.finished and second.copied == len(memories) and second.present == 0
        total = sum(len(all_texts(repo, Scope(c, u))) for u, c in {(m.user, m.client) for m in memories})
        assert total == len(memories)
    finally:
        repo.close()


def test_bad_rows_are_counted_not_copied_and_wrong_dimensions_are_reembedded(
    tablestore_emulator: TablestoreEmulator,  # noqa: F811
    tmp_path: Path,
) -> None:
    store = knowledge_store(tablestore_emulator, DIMS)
    good = RefMemory(id="ok", text="fine", user="carol", client="cline", vector=unit("fine"))
    write(store, [good])
    write(store, [RefMemory(id="spaces", text="x", user="user with spaces", client="cline", vector=unit("x"))])
    # a row whose vector has another dimension (the reference ran another embedder)
    from tablestore_for_agent_memory.base.base_knowledge_store import Document

    store._vector_dimension = 4
    store.put_document(
        Document(
            document_id="short",
            text="short vector",
            embedding=[0.5, 0.5, 0.5, 0.5],
            metadata={"payload": "[]", "payload_source": '{"user_id": "carol", "mcp_client": "cline"}'},
        )
    )
    store.put_document(
        Document(document_id="empty", text=None, embedding=None, metadata={"payload": "[]", "payload_source": "{}"})
    )
    repo = our_repository(tablestore_emulator)
    try:
        copy = copy_of(tablestore_emulator, repo, FileMarker(tmp_path / "m.json"))
        counts = copy.run()
        assert counts.copied == 2 and counts.reembedded == 1
        assert counts.skipped == {"no text": 1, "unusable identity": 1}
        assert copy.embedder.texts == ["short vector"]
        assert set(all_texts(repo, Scope("cline", "carol"))) == {"ok", "short"}
    finally:
        repo.close()


def test_mem0_history_comes_along_with_the_client(reference: Any, tmp_path: Path) -> None:
    emulator, memories = reference
    target = memories[0]  # alice-cline-000
    db = write_history_db(
        tmp_path / "mem0",
        [
            (target.id, None, "old text", "ADD", "2025-06-01T10:00:00-07:00", None),
            (target.id, "old text", target.text, "UPDATE", "2025-06-01T10:00:00-07:00", "2025-06-02T09:00:00-07:00"),
            ("gone-memory", "deleted text", None, "DELETE", "2025-06-01T10:00:00-07:00", "2025-06-03T09:00:00-07:00"),
        ],
    )
    repo = our_repository(emulator)
    try:
        counts = copy_of(emulator, repo, FileMarker(tmp_path / "m.json"), history_db=db).run()
        assert counts.history_copied == 2 and counts.history_skipped == 1
        events = repo.history(Scope("cline", "alice"), target.id)
        assert [e.event for e in events] == ["ADD", "UPDATE"]  # mem0's, not a second ADD from the copy
        assert events[0].new_memory == "old text" and {e.client for e in events} == {"cline"}
        assert all(e.source == "migration" for e in events)
        other = repo.history(Scope("cline", "alice"), memories[1].id)
        assert [e.event for e in other] == ["ADD"]  # no mem0 history: the copy's own event
    finally:
        repo.close()


def test_tablestore_marker_round_trips_in_our_table(reference: Any) -> None:
    emulator, _ = reference
    repo = our_repository(emulator)
    try:
        marker = TablestoreMarker(client_of(emulator), "mem0_v2", "reference:mem0")
        assert marker.load() is None
        marker.save(MarkerState(done=False, last_key=("a", "__default"), counts={"seen": 3}))
        state = marker.load()
        assert state == MarkerState(done=False, last_key=("a", "__default"), counts={"seen": 3})
        assert all_texts(repo, Scope("cline", "alice")) == {}  # invisible to every scope
    finally:
        repo.close()


def test_plan_upgrade_picks_our_own_table_only_for_the_reference_key(reference: Any, monkeypatch: Any) -> None:
    emulator, _ = reference
    for key in ("TABLESTORE_TABLE_NAME", "TABLESTORE_INDEX_NAME", "MEM0_DIR"):
        monkeypatch.delenv(key, raising=False)
    env = {
        "TABLESTORE_ENDPOINT": emulator.endpoint,
        "TABLESTORE_INSTANCE_NAME": emulator.instance_name,
        "TABLESTORE_ACCESS_KEY_ID": emulator.access_key_id,
        "TABLESTORE_ACCESS_KEY_SECRET": emulator.access_key_secret,
        "OPENAI_API_KEY": "sk-test",
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = load_settings(None)
    plan = plan_upgrade(settings)
    assert plan is not None and plan.reference_table == "mem0" and plan.table_name == "mem0_v2"
    assert plan.apply(settings).tablestore_table_name == "mem0_v2"
    monkeypatch.setenv("TABLESTORE_TABLE_NAME", "fresh_table")
    assert plan_upgrade(load_settings(None)) is None  # no such table: nothing to upgrade
    assert tablestore_client(settings) is not None


def test_convert_keeps_metadata_and_reads_sdk_rows() -> None:
    row = row_from_sdk(
        [("document_id", "m1"), ("tenant_id", "__default")],
        [
            ("embedding", "[1.0, 0.0]", None),
            ("payload_source", '{"user_id": "u", "mcp_client": "c", "source_app": "openmemory", "role": "user"}', None),
            ("text", "hello", None),
        ],
    )
    item = convert(row)
    assert item.scope == Scope("c", "u") and item.memory is not None
    assert item.memory.vector == [1.0, 0.0] and item.memory.text == "hello" and item.memory.id == "m1"
    assert dict(item.memory.metadata) == {"source_app": "openmemory", "role": "user"}
    assert convert(row_from_sdk([("document_id", "m2"), ("tenant_id", "t")], [])).reason == "no text"


# --- end to end: the real server, started with the reference's environment ------------------------

E2E_DIMS = 64


def _snapshot(emulator: TablestoreEmulator) -> list[tuple[str, str | None, str]]:
    store = knowledge_store(emulator, E2E_DIMS)
    return sorted((d.document_id, d.text, str(d.metadata)) for d in store.get_all_documents())


async def _list(server: Any, client: str, user: str) -> list[dict]:
    from tests.server_process import structured

    async with server.sse(client, user) as session:
        return list(structured(await session.call_tool("list_memories", {}))["memories"])


async def _wait_for_list(server: Any, client: str, user: str, count: int) -> list[dict]:
    """The listing once it holds ``count`` memories (the copy runs in the background)."""
    from tests.waiting import until

    async def listed() -> list[dict] | None:
        memories = await _list(server, client, user)
        return memories if len(memories) >= count else None

    return await until(listed, f"{count} memories listed for {client}/{user}", timeout=90.0)


@pytest.mark.slow
@pytest.mark.anyio
async def test_server_with_the_reference_environment_serves_its_memories_once(
    tablestore_emulator: TablestoreEmulator,  # noqa: F811
    tmp_path: Path,
) -> None:
    from tests.fakes.openai_server import FakeOpenAI, embed_text
    from tests.server_process import HttpServer, llm_env, server_env, structured, tablestore_env

    memories = [
        RefMemory(
            id=str(uuid.uuid5(uuid.NAMESPACE_URL, m.id)),  # mem0 ids are UUIDs
            text=m.text,
            user=m.user,
            client=m.client,
            vector=embed_text(m.text, E2E_DIMS).tolist(),
        )
        for m in reference_memories(3)
    ]
    write(knowledge_store(tablestore_emulator, E2E_DIMS), memories)
    target = memories[0]
    mem0_dir = tmp_path / "mem0-home"
    write_history_db(
        mem0_dir,
        [
            (target.id, None, "first words", "ADD", "2025-06-01T10:00:00-07:00", None),
            (target.id, "first words", target.text, "UPDATE", "2025-06-01T10:00:00-07:00", "2025-06-02T10:00:00-07:00"),
        ],
    )
    before = _snapshot(tablestore_emulator)
    fake = FakeOpenAI().start()
    try:
        env = server_env(
            tmp_path,
            **llm_env(fake),
            **tablestore_env(tablestore_emulator),
            TABLESTORE_VECTOR_DIMENSION=E2E_DIMS,
            MEM0_DIR=str(mem0_dir),
        )  # TABLESTORE_TABLE_NAME unset: the reference's default, mem0
        with HttpServer(env, tmp_path) as server:
            for user, client in {(m.user, m.client) for m in memories}:
                expected = sorted(m.text for m in memories if (m.user, m.client) == (user, client))
                listed = await _wait_for_list(server, client, user, len(expected))
                assert sorted(m["memory"] for m in listed) == expected
            async with server.sse(target.client, target.user) as session:
                history = structured(await session.call_tool("memory_history", {"memory_id": target.id}))
            assert [(h["event"], h["new_memory"]) for h in history["history"]] == [
                ("ADD", "first words"),
                ("UPDATE", target.text),
            ]
            first_log = server.log()
        assert "copied the reference's memories" in first_log, first_log
        assert "mem0_v2" in first_log
        tablestore_emulator.reset_counts()
        with HttpServer(env, tmp_path) as again:
            listed = await _list(again, "cline", "alice")
            assert len(listed) == 3
            second_log = again.log()
        assert "copied the reference's memories" not in second_log
        assert tablestore_emulator.counts["GetRange"] >= 1 and "reference copy paused" not in second_log
        assert tablestore_emulator.counts["PutRow"] == 0, dict(tablestore_emulator.counts)  # no marker rewrite
    finally:
        fake.stop()
    assert _snapshot(tablestore_emulator) == before  # the reference's table is never modified


def test_migrate_command_dry_run_then_copy_then_nothing(reference: Any, tmp_path: Path) -> None:
    import subprocess

    from tests.server_process import SCRIPT, server_env, tablestore_env

    emulator, memories = reference
    env = server_env(
        tmp_path,
        **tablestore_env(emulator),
        TABLESTORE_VECTOR_DIMENSION=DIMS,
        OPENAI_API_KEY="sk-unused",
        EMBEDDER_MODEL="text-embedding-3-small",  # any dimension
    )

    def migrate(*args: str) -> str:
        done = subprocess.run(
            [SCRIPT, "migrate", *args], env=env, capture_output=True, text=True, timeout=300, check=False
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    dry = migrate("--dry-run")
    assert f"{len(memories)} copied" in dry and "nothing written" in dry
    repo = our_repository(emulator)
    try:
        assert all_texts(repo, Scope("cline", "alice")) == {}
        assert f"{len(memories)} copied" in migrate()
        assert len(all_texts(repo, Scope("cline", "alice"))) == 5
        assert "already migrated" in migrate()
    finally:
        repo.close()
