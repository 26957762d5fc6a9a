"""Export / import: OpenMemory's backup zip (version 1) and JSON Lines, between the embedded store and
Tablestore (emulator), and every kind of bad input (a clear error before any write, or a per-record skip)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import math
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tablestore_openmemory_mcp.backup.exporter import export_backup, export_zip
from tablestore_openmemory_mcp.backup.fileformat import MAX_RECORD_BYTES, BackupFormatError
from tablestore_openmemory_mcp.backup.importer import import_file
from tablestore_openmemory_mcp.errors import InvalidIdentity, UserInputError
from tablestore_openmemory_mcp.memory.ports import NewMemory, Origin
from tablestore_openmemory_mcp.repository import StoreRepository
from tablestore_openmemory_mcp.scope import Scope
from tablestore_openmemory_mcp.stores.embedded import EmbeddedStore
from tablestore_openmemory_mcp.stores.history_sqlite import SqliteHistoryLog
from tests.fakes.tablestore_fixture import tablestore_emulator  # noqa: F401  (fixture)
from tests.tablestore_emulator import TablestoreEmulator

DIMS = 8


def unit(seed: str, dims: int = DIMS) -> list[float]:
    raw = [b - 127.5 for b in hashlib.sha256(seed.encode()).digest()[:dims]]
    norm = math.sqrt(sum(v * v for v in raw))
    return [v / norm for v in raw]


class FakeEmbedder:
    def __init__(self, name: str = "fake-embedder", dims: int = DIMS) -> None:
        self.name, self.dimension = name, dims
        self.calls = 0
        self.texts = 0

    def embed(self, text: str, memory_action: Any = None) -> list[float]:
        return self.embed_batch([text])[0]

    def embed_batch(self, texts: list[str], memory_action: str = "add") -> list[list[float]]:
        self.calls += 1
        self.texts += len(texts)
        return [unit(t, self.dimension) for t in texts]


def embedded_repo(path: Path) -> StoreRepository:
    store = EmbeddedStore(collection_name="memories", path=str(path), embedding_model_dims=DIMS)
    return StoreRepository(store, SqliteHistoryLog(path))


def tablestore_repo(emulator: TablestoreEmulator, table: str = "backup_target") -> StoreRepository:
    from tablestore_openmemory_mcp.stores.tablestore import TablestoreStore
    from tablestore_openmemory_mcp.stores.tablestore.history import TablestoreHistoryLog

    store = TablestoreStore(
        collection_name=table,
        **emulator.credentials(),
        embedding_model_dims=DIMS,
    )
    return StoreRepository(store, TablestoreHistoryLog(store.client, f"{table}_history", endpoint=store.endpoint))


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[StoreRepository]:
    repository = embedded_repo(tmp_path / "source")
    try:
        yield repository
    finally:
        repository.close()


def seed(repo: StoreRepository, user: str = "alice") -> dict[str, str]:
    """Memories of ``user`` from two clients, one of them updated (so it has history)."""
    texts = {}
    for client in ("cline", "cursor"):
        scope = Scope(client, user)
        added = repo.add(
            scope,
            [NewMemory(text=f"{client} fact {i}", vector=unit(f"{client} fact {i}")) for i in range(3)],
            Origin(),
        )
        texts.update({a.memory.id: a.memory.text for a in added})
    scope = Scope("cline", user)
    first = next(m for m in repo.iter_all(scope) for m in m if m.text == "cline fact 0")
    repo.update(scope, first, "cline fact 0, revised", unit("cline fact 0, revised"), Origin())
    texts[first.id] = "cline fact 0, revised"
    return texts


def everything(repo: StoreRepository, user: str) -> dict[str, tuple[str, str | None]]:
    scope = Scope("any", user, shared=True)
    return {m.id: (m.text, m.client) for page in repo.iter_all(scope) for m in page}


def test_round_trip_embedded_to_embedded_keeps_ids_clients_times_and_history(repo: StoreRepository, tmp_path: Path):
    texts = seed(repo)
    summary = export_backup(repo, "alice", tmp_path / "alice.zip", embedding_model="fake-embedder")
    assert summary.memories == 6 and summary.history_events >= 7
    with zipfile.ZipFile(summary.path) as zf:
        assert set(zf.namelist()) == {"memories.json", "memories.jsonl.gz"}
        dump = json.loads(zf.read("memories.json"))
        assert dump["export_meta"]["version"] == "1" and len(dump["memories"]) == 6
        assert {a["name"] for a in dump["apps"]} == {"cline", "cursor"}
    target = embedded_repo(tmp_path / "target")
    try:
        embedder = FakeEmbedder()
        result = import_file(target, embedder, summary.path, None, "skip")
        assert result.imported == 6 and not result.skipped, result.line()
        assert result.reembedded in (0, 6)  # 0 once the store exports vectors (get_vectors), else re-embedded
        assert everything(target, "alice") == everything(repo, "alice")
        source_one = {m.id: m for page in repo.iter_all(Scope("x", "alice", shared=True)) for m in page}
        for page in target.iter_all(Scope("x", "alice", shared=True)):
            for m in page:
                assert (m.created_at, m.updated_at) == (source_one[m.id].created_at, source_one[m.id].updated_at)
        revised = next(i for i, t in texts.items() if t.endswith("revised"))
        events = target.history(Scope("cline", "alice"), revised)
        assert [e.event for e in events] == ["ADD", "UPDATE"]  # the backup's history, not a second ADD
        again = import_file(target, embedder, summary.path, None, "skip")
        assert again.imported == 0 and again.existing == 6  # a re-run changes nothing
    finally:
        target.close()


def test_round_trip_embedded_to_tablestore_and_back(
    repo: StoreRepository,
    tmp_path: Path,
    tablestore_emulator: TablestoreEmulator,  # noqa: F811
):
    seed(repo)
    first = export_backup(repo, "alice", tmp_path / "laptop.jsonl.gz", embedding_model="fake-embedder").path
    cloud = tablestore_repo(tablestore_emulator)
    try:
        assert import_file(cloud, FakeEmbedder(), first, None, "skip").imported == 6
        assert everything(cloud, "alice") == everything(repo, "alice")
        back = export_zip(cloud, "alice", tmp_path / "cloud.zip", embedding_model="fake-embedder")
    finally:
        cloud.close()
    home = embedded_repo(tmp_path / "home")
    try:
        assert import_file(home, FakeEmbedder(), back, None, "skip").imported == 6
        assert everything(home, "alice") == everything(repo, "alice")
    finally:
        home.close()


def openmemory_zip(path: Path, records: list[dict[str, Any]], *, with_jsonl: bool = True) -> Path:
    """A backup exactly as OpenMemory's /api/v1/backup/export writes it."""
    app_id, cat_id, user_uuid = "11111111-1111-1111-1111-111111111111", "22222222-2222-2222-2222-222222222222", "u-1"
    dump = {
        "user": {
            "id": user_uuid,
            "user_id": "om-user",
            "name": None,
            "email": None,
            "metadata": {},
            "created_at": "2025-01-01T00:00:00+00:00",
            "updated_at": None,
        },
        "apps": [
            {
                "id": app_id,
                "owner_id": user_uuid,
                "name": "claude",
                "description": None,
                "metadata": {},
                "is_active": True,
                "created_at": None,
                "updated_at": None,
            }
        ],
        "categories": [
            {"id": cat_id, "name": "preferences", "description": None, "created_at": None, "updated_at": None}
        ],
        "memories": [
            {
                "id": r["id"],
                "user_id": user_uuid,
                "app_id": app_id,
                "content": r["content"],
                "metadata": {},
                "state": r.get("state", "active"),
                "created_at": r.get("created_at"),
                "updated_at": r.get("updated_at"),
                "archived_at": None,
                "deleted_at": None,
                "category_ids": [cat_id],
            }
            for r in records
        ],
        "memory_categories": [],
        "status_history": [],
        "access_controls": [],
        "export_meta": {
            "app_id_filter": None,
            "from_date": None,
            "to_date": None,
            "version": "1",
            "generated_at": "2025-08-01T00:00:00+00:00",
        },
    }
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb") as gz:
        for r in records:
            line = {
                "id": r["id"],
                "content": r["content"],
                "metadata": {},
                "created_at": r.get("created_at"),
                "updated_at": r.get("updated_at"),
                "state": r.get("state", "active"),
                "app": "claude",
                "categories": ["preferences"],
            }
            gz.write((json.dumps(line) + "\n").encode())
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("memories.json", json.dumps(dump, indent=2))
        if with_jsonl:
            zf.writestr("memories.jsonl.gz", buf.getvalue())
    return path


OM_RECORDS = [
    {
        "id": "aaaaaaaa-0000-0000-0000-000000000001",
        "content": "Prefers dark mode",
        "created_at": "2025-03-01T12:00:00+00:00",
        "updated_at": "2025-03-02T12:00:00+00:00",
    },
    {
        "id": "aaaaaaaa-0000-0000-0000-000000000002",
        "content": "Works in Hangzhou",
        "state": "archived",
        "created_at": "2025-03-03T12:00:00+00:00",
    },
    {"id": "aaaaaaaa-0000-0000-0000-000000000003", "content": "Old thing", "state": "deleted"},
]


@pytest.mark.parametrize("with_jsonl", [True, False], ids=["jsonl.gz", "memories.json only"])
def test_openmemory_backup_imports(repo: StoreRepository, tmp_path: Path, with_jsonl: bool):
    path = openmemory_zip(tmp_path / "om.zip", OM_RECORDS, with_jsonl=with_jsonl)
    embedder = FakeEmbedder()
    summary = import_file(repo, embedder, path, None, "skip")  # user from memories.json
    assert summary.imported == 3 and not summary.skipped, summary.line()
    assert embedder.texts == 3  # no vectors in OpenMemory backups: re-embedded, in one batch
    one = repo.get(Scope("claude", "om-user"), OM_RECORDS[0]["id"])
    assert one is not None and one.text == "Prefers dark mode" and one.categories == ("preferences",)
    assert one.created_at == "2025-03-01T12:00:00+00:00" and one.updated_at == "2025-03-02T12:00:00+00:00"
    archived = repo.get(Scope("claude", "om-user"), OM_RECORDS[1]["id"])
    assert archived is not None and archived.state == "archived"
    deleted = repo.get(Scope("claude", "om-user"), OM_RECORDS[2]["id"])
    assert deleted is not None and deleted.state == "deleted"  # soft-deleted, as in OpenMemory
    active = repo.list_page(Scope("claude", "om-user"), limit=10)
    assert [m.text for m in active.items] == ["Prefers dark mode"]  # what MCP tools see
    to_bob = import_file(repo, embedder, path, "bob", "skip")  # --user-id wins
    assert to_bob.imported == 3 and to_bob.new_ids == 3  # the embedded file's ids are om-user's now
    assert sorted(t for t, _ in everything(repo, "bob").values()) == [
        "Old thing",
        "Prefers dark mode",
        "Works in Hangzhou",
    ]


def test_overwrite_replaces_text_and_records_it(repo: StoreRepository, tmp_path: Path):
    path = openmemory_zip(tmp_path / "om.zip", OM_RECORDS[:1])
    import_file(repo, FakeEmbedder(), path, "carol", "skip")
    changed = [dict(OM_RECORDS[0], content="Prefers light mode now")]
    path2 = openmemory_zip(tmp_path / "om2.zip", changed)
    assert import_file(repo, FakeEmbedder(), path2, "carol", "skip").existing == 1
    summary = import_file(repo, FakeEmbedder(), path2, "carol", "overwrite")
    assert summary.overwritten == 1
    memory = repo.get(Scope("claude", "carol"), OM_RECORDS[0]["id"])
    assert memory is not None and memory.text == "Prefers light mode now"
    events = repo.history(Scope("claude", "carol"), memory.id)
    assert events[-1].event == "UPDATE" and events[-1].source == "import"
    assert import_file(repo, FakeEmbedder(), path2, "carol", "overwrite").unchanged == 1


def jsonl(path: Path, lines: list[Any]) -> Path:
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    return path


def test_bad_records_are_skipped_and_counted(repo: StoreRepository, tmp_path: Path):
    good = {
        "id": "good-1",
        "content": "fine",
        "app": "cline",
        "vector": unit("fine"),
        "embedding_model": "fake-embedder",
    }
    path = jsonl(
        tmp_path / "mixed.jsonl",
        [
            good,
            {"id": "no-content", "app": "cline"},
            {"id": "blank", "content": "   "},
            "{not json",
            {"id": "short-vector", "content": "short", "vector": [1.0, 0.0], "embedding_model": "fake-embedder"},
            {"id": "nan-vector", "content": "nan", "vector": ["x"]},
            {"id": "bad-state", "content": "s", "state": "exploded"},
            {"id": "bad-app", "content": "app with spaces", "app": "my app"},
            {"id": "good-1", "content": "fine"},  # same id again
        ],
    )
    embedder = FakeEmbedder()
    summary = import_file(repo, embedder, path, "dave", "skip")
    assert summary.read == 9
    assert summary.imported == 3, summary.line()  # good-1, short-vector (re-embedded), bad-app (default app)
    assert summary.reembedded == 2  # short-vector, bad-app (no vector)
    assert summary.skipped == {
        "no content": 2,
        "not valid JSON": 1,
        "vector is not a list of numbers": 1,
        "unknown state 'exploded'": 1,
        "id repeated in the file": 1,
    }
    assert summary.renamed == 4 and set(summary.renamed_ids) == {"good-1", "short-vector", "bad-app"}
    assert repo.get(Scope("openmemory", "dave"), summary.renamed_ids["bad-app"]) is not None
    again = import_file(repo, embedder, path, "dave", "skip")
    assert again.imported == 0 and again.existing == 3


def test_an_id_of_another_users_memory_gets_a_new_id(repo: StoreRepository, tmp_path: Path):
    theirs = repo.add(Scope("cline", "erin"), [NewMemory(text="erin's secret", vector=unit("e"))], Origin())[0].memory
    path = jsonl(tmp_path / "steal.jsonl", [{"id": theirs.id, "content": "frank's note", "app": "cline"}])
    summary = import_file(repo, FakeEmbedder(), path, "frank", "overwrite")
    assert summary.imported == 1 and summary.new_ids == 1, summary.line()
    assert repo.get(Scope("cline", "erin"), theirs.id).text == "erin's secret"  # untouched
    assert list(everything(repo, "frank").values()) == [("frank's note", "cline")]
    assert import_file(repo, FakeEmbedder(), path, "frank", "overwrite").imported == 0  # re-run: no second copy


def test_damaged_or_foreign_files_are_refused_before_any_write(repo: StoreRepository, tmp_path: Path):
    good = openmemory_zip(tmp_path / "om.zip", OM_RECORDS[:2]).read_bytes()
    truncated = tmp_path / "truncated.zip"
    truncated.write_bytes(good[: len(good) // 2])
    foreign = tmp_path / "foreign.zip"
    with zipfile.ZipFile(foreign, "w") as zf:
        zf.writestr("photo.jpg", b"\xff\xd8")
    bad_gzip = tmp_path / "bad.jsonl.gz"
    lines = b"".join(json.dumps({"id": f"x{i}", "content": f"line {i}"}).encode() + b"\n" for i in range(2000))
    bad_gzip.write_bytes(gzip.compress(lines)[:-200])
    future = tmp_path / "future.zip"
    with zipfile.ZipFile(future, "w") as zf:
        zf.writestr("memories.json", json.dumps({"memories": [], "export_meta": {"version": "2"}}))
    not_zip = tmp_path / "notes.zip"
    not_zip.write_text("just some notes\n")
    binary = tmp_path / "photo.jsonl"
    binary.write_bytes(b"\xff\xd8\xff\xe0 JFIF\n")
    for path in (truncated, foreign, bad_gzip, future, not_zip, binary):
        with pytest.raises(BackupFormatError):
            import_file(repo, FakeEmbedder(), path, "gina", "skip")
    assert everything(repo, "gina") == {}
    with pytest.raises(InvalidIdentity):
        import_file(repo, FakeEmbedder(), jsonl(tmp_path / "ok.jsonl", [{"content": "x"}]), "bad user", "skip")
    with pytest.raises(UserInputError):
        import_file(repo, FakeEmbedder(), tmp_path / "ok.jsonl", "gina", "merge")  # type: ignore[arg-type]


def test_a_huge_record_is_skipped_without_reading_it_whole(repo: StoreRepository, tmp_path: Path):
    path = tmp_path / "huge.jsonl"
    with path.open("wb") as fh:
        fh.write(json.dumps({"content": "before"}).encode() + b"\n")
        fh.write(b'{"content": "' + b"x" * (MAX_RECORD_BYTES + 10) + b'"}\n')
        fh.write(json.dumps({"content": "after"}).encode() + b"\n")
    summary = import_file(repo, FakeEmbedder(), path, "hank", "skip")
    assert summary.imported == 2 and sum(summary.skipped.values()) == 1, summary.line()


def test_records_without_user_need_a_user_id(repo: StoreRepository, tmp_path: Path):
    path = jsonl(tmp_path / "nouser.jsonl", [{"content": "orphan"}, {"content": "owned", "user_id": "ivy"}])
    summary = import_file(repo, FakeEmbedder(), path, None, "skip")
    assert summary.imported == 1 and summary.skipped == {"no user_id (pass --user-id)": 1}
    assert [t for t, _ in everything(repo, "ivy").values()] == ["owned"]


class FlakyEmbedder(FakeEmbedder):
    """Fails on its second batch, like an embedding service going down mid-import."""

    def embed_batch(self, texts: list[str], memory_action: str = "add") -> list[list[float]]:
        if self.calls == 1:
            self.calls += 1
            raise ConnectionError("embedding service unreachable")
        return super().embed_batch(texts, memory_action)


def test_an_interrupted_import_finishes_on_a_rerun(repo: StoreRepository, tmp_path: Path):
    path = jsonl(tmp_path / "many.jsonl", [{"id": f"m-{i:04d}", "content": f"memory {i}"} for i in range(250)])
    with pytest.raises(ConnectionError):
        import_file(repo, FlakyEmbedder(), path, "jack", "skip", batch=100)
    assert len(everything(repo, "jack")) == 100  # the first batch landed, whole
    rerun = import_file(repo, FakeEmbedder(), path, "jack", "skip", batch=100)
    assert (rerun.existing, rerun.imported) == (100, 150)
    assert len(everything(repo, "jack")) == 250


def test_cli_export_and_import_on_the_embedded_default(tmp_path: Path):
    import subprocess

    from tests.server_process import SCRIPT, server_env

    env = server_env(tmp_path)
    source = jsonl(tmp_path / "in.jsonl", [{"content": "likes green tea", "app": "cline"}, {"app": "cline"}])

    def cli(*args: str) -> str:
        done = subprocess.run([SCRIPT, *args], env=env, capture_output=True, text=True, timeout=300, check=False)
        assert done.returncode == 0, done.stderr
        assert "Traceback" not in done.stderr
        return done.stdout

    assert "1 imported" in cli("import", str(source), "--user-id", "kim") and "1 no content" in cli(
        "import", str(source), "--user-id", "kim"
    )
    out = tmp_path / "kim.zip"
    assert "exported 1 memories (1 with vectors" in cli("export", "--user-id", "kim", str(out))
    with zipfile.ZipFile(out) as zf, gzip.open(zf.open("memories.jsonl.gz")) as lines:
        record = json.loads(lines.readline())
    assert (record["content"], record["app"], record["user_id"]) == ("likes green tea", "cline", "kim")
    assert record["embedding_model"] and len(record["vector"]) > 0
    bad = subprocess.run([SCRIPT, "import", str(tmp_path / "missing.zip")], env=env, capture_output=True, text=True)
    assert bad.returncode == 1 and "missing.zip" in bad.stderr and "Traceback" not in bad.stderr


def test_export_from_tablestore_carries_vectors_and_reads_history_by_range(
    tmp_path: Path,
    tablestore_emulator: TablestoreEmulator,  # noqa: F811
):
    """A Tablestore export carries every vector (get_vectors) and reads history per page, not per memory; an
    import with the same embedder, into a fresh embedded store and into a fresh Tablestore, embeds nothing."""
    cloud = tablestore_repo(tablestore_emulator, "export_source")
    try:
        texts = seed(cloud)
        tablestore_emulator.reset_counts()
        summary = export_backup(cloud, "alice", tmp_path / "cloud.jsonl", embedding_model="fake-embedder")
        history_reads = tablestore_emulator.calls_on("export_source_history").get("GetRange", 0)
        assert summary.memories == 6 and summary.vectors == 6 and summary.history_events == 7
        assert history_reads == 1  # one range for the page of 6 memories (it was one GetRange per memory)
        source = everything(cloud, "alice")
    finally:
        cloud.close()
    for name, target in (
        ("embedded", embedded_repo(tmp_path / "fresh")),
        ("tablestore", tablestore_repo(tablestore_emulator, "export_target")),
    ):
        try:
            embedder = FakeEmbedder()
            result = import_file(target, embedder, summary.path, None, "skip")
            assert result.imported == 6 and result.reembedded == 0 and embedder.calls == 0, (name, result.line())
            assert everything(target, "alice") == source, name
            revised = next(i for i, t in texts.items() if t.endswith("revised"))
            assert [e.event for e in target.history(Scope("cline", "alice"), revised)] == ["ADD", "UPDATE"], name
            with_vectors = target.vectors(Scope("x", "alice", shared=True), [revised])
            assert with_vectors[revised] == pytest.approx(unit("cline fact 0, revised"), abs=1e-6), name
        finally:
            target.close()
