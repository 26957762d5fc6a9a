"""SqliteHistoryLog (embedded history) and import_mem0_history (reading mem0's history.db)."""

from __future__ import annotations

import os
import queue
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import pytest

from tablestore_openmemory_mcp.errors import ScopeMissing, UserInputError
from tablestore_openmemory_mcp.memory.ports import HistoryRecord
from tablestore_openmemory_mcp.stores.history_mem0_import import import_mem0_history, migrate_mem0_history
from tablestore_openmemory_mcp.stores.history_sqlite import DB_FILENAME, SqliteHistoryLog

BIG = "记忆🧠" * (64 * 1024 // 11)  # ~64 KiB of UTF-8, 4-byte code points included
STARTUP_DEADLINE = 90.0


def rec(memory_id: str, event: str, new: str | None, second: int, **kw: Any) -> HistoryRecord:
    return HistoryRecord(
        memory_id=memory_id,
        event=event,
        old_memory=kw.pop("old", None),
        new_memory=new,
        at=f"2026-01-01T00:00:{second:02d}.000001+00:00",
        **kw,
    )


@pytest.fixture
def log(tmp_path: Path) -> Iterator[SqliteHistoryLog]:
    h = SqliteHistoryLog(tmp_path)
    try:
        yield h
    finally:
        h.close()


def test_round_trip_keeps_every_field_unicode_and_64k_texts(log: SqliteHistoryLog) -> None:
    full = HistoryRecord(
        memory_id="m1",
        event="UPDATE",
        old_memory="likes tea 茶",
        new_memory=BIG,
        at="2026-01-01T08:00:00+08:00",
        client="cline",
        source="rest",
        model="qwen-plus",
        reason="用户改变了偏好",
        old_state="active",
        new_state="paused",
    )
    log.append("alice", [full])
    assert log.for_memory("alice", "m1") == [full]


def test_events_are_listed_oldest_first_whatever_the_append_order(log: SqliteHistoryLog) -> None:
    log.append("alice", [rec("m1", "DELETE", None, 30, old="b")])
    log.append("alice", [rec("m1", "ADD", "a", 10), rec("m1", "UPDATE", "b", 20, old="a")])
    # one instant, one batch: the caller's order is kept
    same = [rec("m1", "STATE", None, 40, new_state="paused"), rec("m1", "STATE", None, 40, new_state="archived")]
    log.append("alice", same)
    events = [(r.event, r.new_state) for r in log.for_memory("alice", "m1")]
    assert events == [("ADD", None), ("UPDATE", None), ("DELETE", None), ("STATE", "paused"), ("STATE", "archived")]


def test_two_users_with_the_same_memory_id_never_see_or_erase_each_other(log: SqliteHistoryLog) -> None:
    log.append("alice", [rec("m1", "ADD", "alice's", 1)])
    log.append("bob", [rec("m1", "ADD", "bob's", 2), rec("m1", "DELETE", None, 3, old="bob's")])
    assert [r.new_memory for r in log.for_memory("alice", "m1")] == ["alice's"]
    assert [r.event for r in log.for_memory("bob", "m1")] == ["ADD", "DELETE"]
    assert log.for_memory("carol", "m1") == []
    assert log.erase("carol", ["m1"]) == 0
    assert log.erase("bob", ["m1", "m1", "unknown"]) == 2
    assert log.for_memory("bob", "m1") == []
    assert [r.new_memory for r in log.for_memory("alice", "m1")] == ["alice's"]


def test_erase_removes_only_the_named_memories(log: SqliteHistoryLog) -> None:
    log.append("alice", [rec(f"m{i}", "ADD", str(i), i) for i in range(5)])
    assert log.erase("alice", ["m1", "m3"]) == 2
    assert [m for m in ("m0", "m1", "m2", "m3", "m4") if log.for_memory("alice", m)] == ["m0", "m2", "m4"]
    assert log.erase("alice", []) == 0


def test_appending_the_same_batch_again_adds_nothing(log: SqliteHistoryLog) -> None:
    batch = [rec("m1", "ADD", "a", 1), rec("m1", "UPDATE", "b", 2, old="a")]
    log.append("alice", batch)
    log.append("alice", batch)  # a retry after a timeout
    assert len(log.for_memory("alice", "m1")) == 2
    # two identical events in one batch are two events
    twice = [rec("m2", "STATE", None, 5, new_state="paused")] * 2
    log.append("alice", twice)
    assert len(log.for_memory("alice", "m2")) == 2


def test_scope_and_input_are_checked_before_anything_is_written(log: SqliteHistoryLog) -> None:
    with pytest.raises(ScopeMissing):
        log.append("", [rec("m1", "ADD", "a", 1)])
    with pytest.raises(ScopeMissing):
        log.for_memory("", "m1")
    with pytest.raises(ScopeMissing):
        log.erase("", ["m1"])
    bad_time = HistoryRecord(memory_id="m1", event="ADD", old_memory=None, new_memory="x", at="yesterday")
    with pytest.raises(UserInputError):
        log.append("alice", [rec("m1", "ADD", "a", 1), bad_time])
    with pytest.raises(UserInputError):
        log.append("alice", [rec("", "ADD", "a", 1)])
    assert log.for_memory("alice", "m1") == []


def test_history_survives_reopening_and_closed_logs_refuse(tmp_path: Path) -> None:
    first = SqliteHistoryLog(tmp_path)
    first.append("alice", [rec("m1", "ADD", "a", 1)])
    first.close()
    first.close()  # idempotent
    with pytest.raises(RuntimeError):
        first.for_memory("alice", "m1")
    again = SqliteHistoryLog(tmp_path)
    try:
        assert [r.new_memory for r in again.for_memory("alice", "m1")] == ["a"]
    finally:
        again.close()


# ------------------------------------------------------------------ several processes


_WORKER = """
import sys
from tablestore_openmemory_mcp.memory.ports import HistoryRecord
from tablestore_openmemory_mcp.stores.history_sqlite import SqliteHistoryLog

data_dir, name, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
log = SqliteHistoryLog(data_dir)
print("ready", flush=True)
sys.stdin.readline()
for i in range(count):
    at = f"2026-01-01T00:00:00.{i:06d}+00:00"
    shared = HistoryRecord("shared", "UPDATE", None, f"{name}-{i}", at, client=name)
    own = HistoryRecord(f"{name}-mem", "ADD", None, str(i), at, client=name)
    log.append("alice", [shared, own])
print("appended", flush=True)
sys.stdin.readline()
log.close()
"""


class Worker:
    """A python subprocess running _WORKER, spoken to over stdin/stdout lines."""

    def __init__(self, data_dir: Path, name: str, count: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _WORKER, str(data_dir), name, str(count)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self._lines: queue.Queue[str] = queue.Queue()
        assert self.proc.stdout is not None
        threading.Thread(target=self._pump, args=(self.proc.stdout,), daemon=True).start()

    def _pump(self, out: IO[str]) -> None:
        for line in out:
            self._lines.put(line.strip())
        self._lines.put("<eof>")

    def expect(self, word: str, timeout: float = STARTUP_DEADLINE) -> None:
        line = self._lines.get(timeout=timeout)
        assert line == word, f"worker said {line!r}, expected {word!r}"

    def send(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)


def test_two_processes_append_to_one_file_at_once(tmp_path: Path) -> None:
    count = 150
    workers = [Worker(tmp_path, name, count) for name in ("p1", "p2")]
    try:
        for w in workers:
            w.expect("ready")
        for w in workers:  # both start appending together
            w.send()
        for w in workers:
            w.expect("appended")
        for w in workers:
            w.send()
            assert w.proc.wait(timeout=60) == 0
    finally:
        for w in workers:
            w.stop()
    log = SqliteHistoryLog(tmp_path)
    try:
        shared = log.for_memory("alice", "shared")
        assert len(shared) == 2 * count
        assert sorted(r.new_memory or "" for r in shared) == sorted(
            f"{n}-{i}" for n in ("p1", "p2") for i in range(count)
        )
        assert [r.at for r in shared] == sorted(r.at for r in shared)
        for name in ("p1", "p2"):
            assert [r.new_memory for r in log.for_memory("alice", f"{name}-mem")] == [str(i) for i in range(count)]
    finally:
        log.close()


def test_an_acknowledged_append_survives_kill_9(tmp_path: Path) -> None:
    worker = Worker(tmp_path, "p1", 20)
    try:
        worker.expect("ready")
        worker.send()
        worker.expect("appended")
        os.kill(worker.proc.pid, signal.SIGKILL)
        worker.proc.wait(timeout=30)
    finally:
        worker.stop()
    log = SqliteHistoryLog(tmp_path)
    try:
        assert len(log.for_memory("alice", "p1-mem")) == 20
    finally:
        log.close()


# ------------------------------------------------------------------ mem0 import


def _mem0_db(path: Path) -> sqlite3.Connection:
    """A history table exactly as mem0's SQLiteManager creates it."""
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE IF NOT EXISTS history (id TEXT PRIMARY KEY, memory_id TEXT, old_memory TEXT, "
        "new_memory TEXT, event TEXT, created_at DATETIME, updated_at DATETIME, is_deleted INTEGER, "
        "actor_id TEXT, role TEXT)"
    )
    return db


def _row(
    db: sqlite3.Connection, n: int, memory_id: str, old: str | None, new: str | None, event: str, *times: object
) -> None:
    created, updated = [*times, None, None][:2]
    db.execute(
        "INSERT INTO history VALUES (?, ?, ?, ?, ?, ?, ?, 0, NULL, 'user')",
        (f"uuid-{n:03d}-{memory_id}", memory_id, old, new, event, created, updated),
    )


def test_mem0_history_is_read_in_insertion_order_with_event_times(tmp_path: Path) -> None:
    path = tmp_path / "history.db"
    db = _mem0_db(path)
    created = "2025-03-01T10:00:00.000000-08:00"  # mem0 wrote US/Pacific times
    _row(db, 9, "m1", None, "likes tea", "ADD", created, created)
    _row(db, 1, "m1", "likes tea", "likes coffee", "UPDATE", created, "2025-03-02T00:00:00+00:00")
    _row(db, 5, "m1", "likes coffee", None, "DELETE")  # older mem0: a DELETE without times
    _row(db, 2, "m2", None, "住在杭州", "add", "2025-01-01 08:00:00", None)  # naive = UTC, lower-case event
    _row(db, 3, "", None, "orphan", "ADD", created, created)  # no memory id: skipped
    db.commit()
    db.close()
    got = list(import_mem0_history(path))
    assert [(m, r.event) for m, r in got] == [("m1", "ADD"), ("m1", "UPDATE"), ("m1", "DELETE"), ("m2", "ADD")]
    m1 = [r for m, r in got if m == "m1"]
    assert m1[0].at == "2025-03-01T18:00:00+00:00"
    assert m1[1].at == "2025-03-02T00:00:00+00:00" and m1[1].old_memory == "likes tea"
    assert m1[2].at == "2025-03-02T00:00:00.000001+00:00" and m1[2].new_memory is None
    assert got[3][1].at == "2025-01-01T08:00:00+00:00" and got[3][1].new_memory == "住在杭州"
    assert {r.source for _, r in got} == {"migration"}


def test_mem0_import_feeds_the_log_in_the_same_file(tmp_path: Path) -> None:
    """Existing installs keep mem0's table in <data_dir>/history.sqlite3; ours lives beside it."""
    db = _mem0_db(tmp_path / DB_FILENAME)
    _row(db, 1, "m1", None, "a", "ADD", "2025-01-01T00:00:00+00:00", "2025-01-01T00:00:00+00:00")
    _row(db, 2, "m1", "a", "b", "UPDATE", "2025-01-01T00:00:00+00:00", "2025-01-02T00:00:00+00:00")
    db.commit()
    db.close()
    log = SqliteHistoryLog(tmp_path)
    try:
        owner = {"m1": "alice"}
        for _ in range(2):  # a re-run of the migration adds nothing
            for memory_id, record in import_mem0_history(tmp_path / DB_FILENAME):
                log.append(owner[memory_id], [record])
        assert [(r.event, r.new_memory) for r in log.for_memory("alice", "m1")] == [("ADD", "a"), ("UPDATE", "b")]
    finally:
        log.close()


def test_mem0_import_without_table_is_empty_and_a_wrong_path_fails(tmp_path: Path) -> None:
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    assert list(import_mem0_history(empty)) == []
    with pytest.raises(FileNotFoundError):
        list(import_mem0_history(tmp_path / "missing.db"))


def test_mem0_import_reads_a_file_written_by_mem0_itself(tmp_path: Path) -> None:
    storage = pytest.importorskip("mem0.memory.storage")
    manager = storage.SQLiteManager(str(tmp_path / "history.db"))
    try:
        manager.add_history("m1", None, "a", "ADD", created_at="2025-01-01T00:00:00+00:00")
        manager.add_history(
            "m1", "a", "b", "UPDATE", created_at="2025-01-01T00:00:00+00:00", updated_at="2025-01-03T00:00:00+00:00"
        )
    finally:
        manager.close()
    got = list(import_mem0_history(tmp_path / "history.db"))
    assert [(r.event, r.at) for _, r in got] == [
        ("ADD", "2025-01-01T00:00:00+00:00"),
        ("UPDATE", "2025-01-03T00:00:00+00:00"),
    ]


class CountingLog(SqliteHistoryLog):
    """Counts append calls and their sizes."""

    appends: list[int]

    def append(self, user_id: str, records: Sequence[HistoryRecord]) -> None:
        self.appends.append(len(records))
        super().append(user_id, records)


def test_migration_scopes_each_memory_to_its_owner_in_batches_and_can_rerun(tmp_path: Path) -> None:
    path = tmp_path / "history.db"
    db = _mem0_db(path)
    n = 0
    for m in range(30):  # 30 memories x 15 events; m0..m19 are alice's, m20..m27 bob's, m28/m29 unknown
        for i in range(15):
            n += 1
            _row(db, n, f"m{m}", None, f"{m}.{i}", "UPDATE", None, f"2025-01-01T00:00:{i:02d}+00:00")
    db.commit()
    db.close()
    owners = {f"m{m}": ("alice" if m < 20 else "bob") for m in range(28)}
    log = CountingLog(tmp_path / "data")
    log.appends = []
    try:
        assert migrate_mem0_history(path, owners.get, log) == (28 * 15, 2 * 15)
        assert all(size <= 200 for size in log.appends) and len(log.appends) <= 4
        assert [r.new_memory for r in log.for_memory("alice", "m3")] == [f"3.{i}" for i in range(15)]
        assert len(log.for_memory("bob", "m25")) == 15
        assert log.for_memory("alice", "m25") == [] and log.for_memory("alice", "m29") == []
        migrate_mem0_history(path, owners.get, log)  # again: nothing doubles
        assert len(log.for_memory("alice", "m3")) == 15
    finally:
        log.close()


def test_a_file_from_before_a_new_record_field_gains_the_column(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / DB_FILENAME)
    db.execute(
        "CREATE TABLE history_events (seq INTEGER PRIMARY KEY, user_id TEXT NOT NULL, memory_id TEXT NOT NULL, "
        "event_id TEXT NOT NULL, event TEXT NOT NULL, old_memory TEXT, new_memory TEXT, at TEXT NOT NULL, "
        "client TEXT, source TEXT NOT NULL)"
    )
    db.commit()
    db.close()
    log = SqliteHistoryLog(tmp_path)
    try:
        record = rec("m1", "STATE", None, 1, model="qwen-plus", reason="why", old_state="active", new_state="paused")
        log.append("alice", [record])
        assert log.for_memory("alice", "m1") == [record]
    finally:
        log.close()
