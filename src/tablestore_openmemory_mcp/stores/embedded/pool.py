"""A small pool of SQLite connections shared by every thread of one store.

A pool rather than ``threading.local``: callers run store calls on short-lived worker threads, so
per-thread connections would leak. Connections are in autocommit mode (callers ``BEGIN``/``COMMIT``
explicitly), WAL, ``synchronous=NORMAL`` (a commit survives ``kill -9``), and wait up to
``busy_timeout_s`` for another process's write instead of failing.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class ConnectionPool:
    """Up to ``size`` connections to one database file; borrow one with :meth:`connection`."""

    def __init__(self, db_path: str, size: int = 8, busy_timeout_s: float = 30.0) -> None:
        self._db_path = db_path
        self._busy_timeout_s = busy_timeout_s
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(max(1, size))
        self._idle: list[sqlite3.Connection] = []
        self._max_idle = max(1, size)
        self._closed = False

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self._db_path, timeout=self._busy_timeout_s, isolation_level=None, check_same_thread=False
        )
        conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_s * 1000)}")
        conn.execute("PRAGMA synchronous = NORMAL")
        return conn

    @contextmanager
    def connection(self) -> Iterator[sqlite3.Connection]:
        """Borrow a connection; an open transaction is rolled back when it comes back."""
        self._slots.acquire()
        try:
            with self._lock:
                if self._closed:
                    raise RuntimeError("EmbeddedStore is closed")
                conn = self._idle.pop() if self._idle else None
            if conn is None:
                conn = self._connect()
            try:
                yield conn
            finally:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                keep = False
                with self._lock:
                    if not self._closed and len(self._idle) < self._max_idle:
                        self._idle.append(conn)
                        keep = True
                if not keep:
                    conn.close()
        finally:
            self._slots.release()

    def close(self) -> None:
        """Close idle connections; borrowed ones close when returned. Idempotent."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
