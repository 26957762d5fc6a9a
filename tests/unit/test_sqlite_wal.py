"""Switching to WAL waits out another connection's lock (two processes opening a new file together)."""

from __future__ import annotations

import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tablestore_openmemory_mcp.stores.sqlite_wal import use_wal


class _Counting:
    """A connection that counts the statements run and says when one failed (as a lock does)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn, self.calls, self.failed = conn, 0, threading.Event()

    def execute(self, sql: str) -> Any:
        self.calls += 1
        try:
            return self.conn.execute(sql)
        except sqlite3.OperationalError:
            self.failed.set()
            raise


def _locked(path: Path) -> sqlite3.Connection:
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN EXCLUSIVE")
    return holder


def test_the_switch_is_retried_until_the_lock_is_released(tmp_path: Path) -> None:
    path = tmp_path / "new.sqlite3"
    holder = _locked(path)
    # timeout=0: no busy handler at all, so only our retry can wait
    opener = _Counting(sqlite3.connect(path, timeout=0, isolation_level=None, check_same_thread=False))
    with ThreadPoolExecutor(1) as pool:
        switched = pool.submit(use_wal, opener, 30.0, str(path))  # type: ignore[arg-type]
        assert opener.failed.wait(10), "the switch never met the lock"
        holder.execute("COMMIT")
        switched.result(timeout=30)
    assert opener.calls >= 2
    assert opener.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    opener.conn.close()
    holder.close()


def test_a_lock_held_past_the_timeout_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "busy.sqlite3"
    holder = _locked(path)
    opener = sqlite3.connect(path, timeout=0, isolation_level=None)
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        use_wal(opener, 0.05, str(path))
    opener.close()
    holder.close()
