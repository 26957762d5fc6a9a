"""Changing the embedding model: startup names ``reembed``; ``reembed`` rebuilds every vector, resumably,
while a store opened with the old embedder keeps searching until the switch.

Embedder A and B are the fake OpenAI server's embeddings under two model names and dimensions. The
commands run in-process (``commands.main``) with the environment a user would set.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from tablestore_openmemory_mcp.app import commands
from tablestore_openmemory_mcp.app.bootstrap import StartupError, _embedder, build_components
from tablestore_openmemory_mcp.errors import StoreError
from tablestore_openmemory_mcp.memory.ports import NewMemory, Origin, StoredMemory
from tablestore_openmemory_mcp.memory.query_filters import MemoryQuery
from tablestore_openmemory_mcp.memory.store_port import NewRow, RowChange
from tablestore_openmemory_mcp.reembed.embedded import reembed_embedded
from tablestore_openmemory_mcp.scope import Scope
from tablestore_openmemory_mcp.settings import load_settings
from tablestore_openmemory_mcp.stores.embedded import EmbeddedStore
from tablestore_openmemory_mcp.stores.row_format import text_hash
from tests.fakes.openai_server import FakeOpenAI, embed_text
from tests.server_process import SCRIPT, STARTUP_TIMEOUT, free_port, llm_env, server_env

A = {"EMBEDDER_MODEL": "embed-a", "TABLESTORE_VECTOR_DIMENSION": "32"}
B = {"EMBEDDER_MODEL": "embed-b", "TABLESTORE_VECTOR_DIMENSION": "48"}
TEXTS = [f"memory number {i} about topic {i % 7}" for i in range(40)] + ["the user loves green tea in the morning"]


def use_env(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    for key in list(__import__("os").environ):
        if key not in env:
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as done:
        commands.main(argv)
    out, err = capsys.readouterr()
    return int(done.value.code or 0), out, err


@pytest.fixture
def env_for(tmp_path: Path, fake_openai: FakeOpenAI, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.chdir(tmp_path)  # no ./.env of the checkout

    def env_for(model: dict[str, str], **extra: str) -> dict[str, str]:
        return server_env(tmp_path, **llm_env(fake_openai, **model, **extra))

    yield env_for


def fill(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Import TEXTS for two users with the embedder of the current environment."""
    backup = tmp_path / "seed.jsonl"
    with backup.open("w", encoding="utf-8") as out:
        for i, text in enumerate(TEXTS):
            user = "alice" if i % 2 == 0 or "tea" in text else "bob"
            out.write(json.dumps({"content": text, "user_id": user, "app": "cline"}) + "\n")
    code, out_text, err = run(["import", str(backup)], capsys)
    assert code == 0, err
    assert f"{len(TEXTS)} imported" in out_text or str(len(TEXTS)) in out_text


def search(settings_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, query: str) -> list[str]:
    use_env(monkeypatch, settings_env)
    components = build_components(load_settings())
    try:
        found = components.service.flow.search(Scope("cline", "alice"), query, 3)
        return [hit.memory for hit in found.results]
    finally:
        components.service.close()


def test_embedded_store_refuses_a_new_embedder_then_reembed_switches(
    env_for: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    use_env(monkeypatch, env_for(A))
    fill(tmp_path, capsys)
    assert search(env_for(A), monkeypatch, "green tea")[0] == TEXTS[-1]

    use_env(monkeypatch, env_for(B))
    with pytest.raises(StartupError) as refused:
        build_components(load_settings())
    message = str(refused.value)
    assert "\n" not in message and "tablestore-openmemory-mcp reembed" in message
    assert "openai:embed-a (32 dimensions)" in message and "openai:embed-b (48)" in message
    server = subprocess.run(  # the real server exits with that one line
        [SCRIPT, "--transport", "sse", "--port", str(free_port())],
        env=env_for(B),
        capture_output=True,
        text=True,
        timeout=STARTUP_TIMEOUT,
        check=False,
    )
    assert (
        server.returncode == 1 and f"tablestore-openmemory-mcp: cannot start: {message}" in server.stderr.splitlines()
    )

    code, out, _ = run(["reembed", "--dry-run"], capsys)
    assert code == 0 and out.startswith("dry run, nothing written") and f"{len(TEXTS)} memories" in out
    with pytest.raises(StartupError):  # the dry run changed nothing
        build_components(load_settings())

    code, out, err = run(["reembed"], capsys)
    assert code == 0, err
    assert f"{len(TEXTS)} memories, {len(TEXTS)} embedded now" in out and "switched" in out
    marker = json.loads((tmp_path / "data" / "embedder.json").read_text())
    assert marker == {"embedder": "openai:embed-b", "dimension": 48}

    assert search(env_for(B), monkeypatch, "green tea")[0] == TEXTS[-1]
    use_env(monkeypatch, env_for(B))
    code, out, _ = run(["reembed"], capsys)
    assert code == 0 and "already uses openai:embed-b" in out  # idempotent

    use_env(monkeypatch, env_for(A))  # and the old embedder is now the one refused
    with pytest.raises(StartupError, match="reembed"):
        build_components(load_settings())


class Failing:
    """Embedder B that fails on its ``fail_at``-th batch (an interrupted run)."""

    def __init__(self, inner: Any, fail_at: int) -> None:
        self.inner, self.fail_at, self.calls, self.texts = inner, fail_at, 0, 0
        self.name = inner.name

    def embed_batch(self, texts: list[str], memory_action: str = "add") -> list[list[float]]:
        self.calls += 1
        if self.calls == self.fail_at:
            raise KeyboardInterrupt
        self.texts += len(texts)
        vectors: list[list[float]] = self.inner.embed_batch(texts, memory_action)
        return vectors


def test_interrupted_reembed_resumes_and_old_store_searches_until_the_switch(
    env_for: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    use_env(monkeypatch, env_for(A))
    fill(tmp_path, capsys)
    data = tmp_path / "data"
    old = EmbeddedStore(collection_name="memories", path=str(data), embedding_model_dims=32)
    try:
        use_env(monkeypatch, env_for(B))
        embedder, dims = _embedder(load_settings(), check_store=False)
        first = Failing(embedder, fail_at=3)
        with pytest.raises(KeyboardInterrupt):
            reembed_embedded(data, first, dims, batch=8).run()
        assert first.texts == 16

        query = embed_text("green tea", 32).tolist()
        alice = Scope("cline", "alice")  # the old store still searches its vectors
        assert old.nearest(alice, query, 1, states=("active",), query=MemoryQuery())[0].text == TEXTS[-1]

        # the old server edits a memory that already has its new vector: the resumed run embeds it again
        with sqlite3.connect(data / "memories.sqlite3") as db:
            memory_id, user = db.execute("SELECT id, user_id FROM memories ORDER BY rid LIMIT 1").fetchone()
        editor = Scope("cline", user)
        first_row = old.read_one(editor, memory_id)
        assert first_row is not None
        coffee = "the user now drinks only coffee"
        edited = replace(first_row, text=coffee, hash=text_hash(coffee))
        old.rewrite(editor, RowChange(memory_id, edited, embed_text(coffee, 32).tolist()))

        again = Failing(embedder, fail_at=0)
        summary = reembed_embedded(data, again, dims, batch=8).run()
        assert (summary.embedded, summary.reused, summary.state) == (len(TEXTS) - 15, 15, "switched")
        assert again.texts == len(TEXTS) - 15

        late = StoredMemory("late-1", "late", "alice", "cline", first_row.created_at, first_row.created_at, "h")
        with pytest.raises(StoreError, match="reembed"):
            old.put(alice, [NewRow(late, query)])
    finally:
        old.close()
    assert search(env_for(B), monkeypatch, "green tea")[0] == TEXTS[-1]
    assert search(env_for(B), monkeypatch, "drinks only coffee")[0] == "the user now drinks only coffee"


def test_tablestore_reembed_builds_a_new_index_and_switches(
    env_for: Any,
    tmp_path: Path,
    tablestore_emulator: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from tablestore_openmemory_mcp.reembed.tablestore import reembed_tablestore
    from tests.server_process import tablestore_env

    ts = tablestore_env(tablestore_emulator, TABLESTORE_TABLE_NAME="mem_reembed")
    env_a, env_b = env_for(A, **ts), env_for(B, **ts)
    use_env(monkeypatch, env_a)
    fill(tmp_path, capsys)
    tablestore_emulator.flush_index()
    assert search(env_a, monkeypatch, "green tea")[0] == TEXTS[-1]

    use_env(monkeypatch, env_b)
    with pytest.raises(StartupError) as refused:
        build_components(load_settings())
    message = str(refused.value)
    assert "\n" not in message and "tablestore-openmemory-mcp reembed" in message and "openai:embed-a" in message

    use_env(monkeypatch, env_for({"EMBEDDER_MODEL": "embed-c", "TABLESTORE_VECTOR_DIMENSION": "40"}, **ts))
    other, other_dims = _embedder(load_settings(), check_store=False)
    abandoned = reembed_tablestore(load_settings(), Failing(other, fail_at=2), other_dims)
    abandoned.batch = 8
    with pytest.raises(KeyboardInterrupt):  # a run for C, given up: B's run replaces its index
        abandoned.run()

    use_env(monkeypatch, env_b)
    embedder, dims = _embedder(load_settings(), check_store=False)
    first = Failing(embedder, fail_at=3)
    job = reembed_tablestore(load_settings(), first, dims)
    job.batch = 8
    with pytest.raises(KeyboardInterrupt):
        job.run()
    done = first.texts  # pages also hold the table's meta and dedup rows, so not exactly 16
    assert 0 < done < len(TEXTS)
    assert search(env_a, monkeypatch, "green tea")[0] == TEXTS[-1]  # a server on A still searches the old index

    use_env(monkeypatch, env_a)
    old_server = build_components(load_settings())  # still running on A through the switch
    old_server.service.repository.store._switch.interval = 0  # re-read the meta row at each vector call (10 s)
    flow, alice = old_server.service.flow, Scope("cline", "alice")
    try:
        before = flow.embedder.embed("embedded just before the switch", "add")  # by A, in this thread
        use_env(monkeypatch, env_b)
        code, out, _ = run(["reembed", "--dry-run"], capsys)
        assert code == 0 and out.startswith("dry run") and f"{len(TEXTS)} memories, 0 embedded now, {done} from" in out
        code, out, err = run(["reembed", "--drop-old-index"], capsys)
        assert code == 0, err
        assert f"{len(TEXTS)} memories, {len(TEXTS) - done} embedded now, {done} from an earlier run" in out, out
        assert "switched" in out and "dropped the old index mem_reembed_search_index" in out

        # The running server picks the switch up (no restart): A's vector from before it is refused, ...
        with pytest.raises(StoreError, match="switched embedders"):
            old_server.service.repository.add(alice, [NewMemory(text="too late", vector=before)], Origin())
        assert flow.embedder.name == "openai:embed-b"
        late = "the user's cat is called Miso"  # ... and what it writes now is embedded by B, in the new index
        assert flow.add(alice, late, infer=False).events[0].event == "ADD"
        assert flow.search(alice, "green tea", 3).results[0].memory == TEXTS[-1]
        tablestore_emulator.flush_index()
        assert flow.search(alice, "cat called Miso", 3).results[0].memory == late
    finally:
        old_server.service.close()

    assert search(env_b, monkeypatch, "green tea")[0] == TEXTS[-1]
    use_env(monkeypatch, env_b)  # run again once every server is restarted: the late memory gets its vector
    code, out, _ = run(["reembed"], capsys)
    assert code == 0 and "already uses openai:embed-b" in out and "1 memories written since the switch" in out, out
    tablestore_emulator.flush_index()
    assert search(env_b, monkeypatch, "cat called Miso")[0] == late
    use_env(monkeypatch, env_a)
    with pytest.raises(StartupError, match="reembed"):
        build_components(load_settings())


def test_tags_and_event_time_survive_a_reembed_and_still_narrow(
    env_for: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 23: metadata and event time are kept through reembed, and the store still narrows by them."""
    from tablestore_openmemory_mcp.memory.query_filters import add_fields, build_query

    use_env(monkeypatch, env_for(A))
    fill(tmp_path, capsys)
    scope = Scope("cline", "alice")
    components = build_components(load_settings())
    try:
        extra = add_fields({"project": "apollo"}, "2020-05-01T10:00:00Z")
        components.service.flow.add(scope, "the user keeps a sourdough starter", infer=False, extra=extra)
    finally:
        components.service.close()

    use_env(monkeypatch, env_for(B))
    code, _, err = run(["reembed"], capsys)
    assert code == 0, err
    components = build_components(load_settings())
    try:
        flow = components.service.flow
        tagged = flow.search(scope, "sourdough starter", 3, where=build_query(metadata={"project": "apollo"}))
        assert [hit.memory for hit in tagged.results] == ["the user keeps a sourdough starter"]
        old = flow.list_memories(scope, 10, where=build_query(until="2021-01-01"))
        assert [item.memory for item in old.memories] == ["the user keeps a sourdough starter"]
    finally:
        components.service.close()
