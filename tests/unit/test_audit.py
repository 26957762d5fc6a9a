"""Apps and the access log (audit.py) on the history log the embedded store keeps (SQLite in tmp_path).

The access log's point is that reads never wait for a write: hits queue in memory and go out in one write per
user per flush. Writes are counted on the real log (no clocks): ``flush_seconds`` is long, so only ``flush()``
and ``close()`` write.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from tablestore_openmemory_mcp.memory.audit import APP_PREFIX, AccessLog, AppDirectory
from tablestore_openmemory_mcp.memory.ports import HistoryRecord
from tablestore_openmemory_mcp.stores.history_sqlite import SqliteHistoryLog

NEVER = 3600.0  # a flush interval no test reaches: writes happen on flush() and close() only


class CountingLog(SqliteHistoryLog):
    """The real SQLite history log, counting the writes made to it."""

    def __init__(self, data_dir: Path) -> None:
        super().__init__(data_dir, filename="access.sqlite3")
        self.appends: list[tuple[str, int]] = []

    def append(self, user_id: str, records: Sequence[HistoryRecord]) -> None:
        self.appends.append((user_id, len(records)))
        super().append(user_id, records)


@pytest.fixture
def log(tmp_path: Path) -> Iterator[CountingLog]:
    history = CountingLog(tmp_path)
    try:
        yield history
    finally:
        history.close()


def test_pausing_an_app_is_an_event_every_replica_reads(log: CountingLog) -> None:
    directory = AppDirectory(log)
    assert directory.is_paused("alice", "cline") is False
    state = directory.set_paused("alice", "cline", True)
    assert state.paused is True and state.changed_at
    assert directory.is_paused("alice", "cline") is True
    replica = AppDirectory(log)  # another process on the same store, with an empty cache
    assert replica.is_paused("alice", "cline") is True
    assert replica.is_paused("bob", "cline") is False and replica.is_paused("alice", "cursor") is False
    [event] = log.for_memory("alice", APP_PREFIX + "cline")
    assert (event.event, event.old_state, event.new_state, event.source) == ("APP", "active", "paused", "rest")
    directory.set_paused("alice", "cline", False, source="mcp")
    assert AppDirectory(log).state("alice", "cline").paused is False


def test_hits_queue_without_writing_and_flush_writes_once_per_user(log: CountingLog) -> None:
    access = AccessLog(log, flush_seconds=NEVER)
    access.record("alice", "cline", ["m1", "m2", "m1"], "tea " * 100)
    access.record("alice", "cursor", ["m1"], None)
    access.record("bob", "cline", ["m9"], "q")
    access.record("bob", "cline", [], "nothing found")  # no hits: nothing queued
    assert log.appends == [], "a read never waits for a write"
    pending = access.for_memory("alice", "m1")
    assert [(r.event, r.client) for r in pending] == [("ACCESS", "cline"), ("ACCESS", "cursor")], "deduplicated"
    assert pending[0].new_memory == ("tea " * 100)[:200], "the query, cut to 200 characters"
    access.flush()
    assert sorted(log.appends) == [("alice", 5), ("bob", 2)], "hits plus one app entry per record, one write per user"
    assert [r.client for r in access.for_memory("alice", "m1")] == ["cline", "cursor"]
    assert access.last_access("alice", "cursor") is not None and access.last_access("alice", "other") is None
    access.flush()
    assert len(log.appends) == 2, "nothing queued: nothing written"
    access.close()


def test_erase_removes_queued_and_written_entries(log: CountingLog) -> None:
    access = AccessLog(log, flush_seconds=NEVER)
    access.record("alice", "cline", ["m1"], "q")
    access.flush()
    access.record("alice", "cline", ["m1", "m2"], "q")
    assert access.erase("alice", ["m1"]) == 2, "one queued, one written"
    assert access.for_memory("alice", "m1") == [] and len(access.for_memory("alice", "m2")) == 1
    access.close()


def test_a_full_queue_drops_and_counts_instead_of_growing(log: CountingLog) -> None:
    access = AccessLog(log, flush_seconds=NEVER, max_queue=5)
    access.record("alice", "cline", ["m1", "m2"], None)  # 2 hits + 1 app entry
    access.record("alice", "cline", ["m3", "m4", "m5"], None)  # would make 7
    assert access.dropped == 3 and access.for_memory("alice", "m3") == []
    access.close()
    assert log.appends == [("alice", 3)], "close() flushes what was queued"


def test_closed_log_takes_no_more_hits_and_old_entries_expire(tmp_path: Path) -> None:
    log = CountingLog(tmp_path)
    old = HistoryRecord(
        memory_id="m1", event="ACCESS", old_memory=None, new_memory=None, at="2000-01-01T00:00:00+00:00"
    )
    log.append("alice", [old])
    access = AccessLog(log, flush_seconds=NEVER, retention_days=30)
    assert access.for_memory("alice", "m1") == [], "older than the retention"
    access.close()
    access.record("alice", "cline", ["m1"], None)
    assert log.appends == [("alice", 1)], "nothing queued or written after close"
