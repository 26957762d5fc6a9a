"""Apps and the access log: who may write, and who read what.

Both live in :class:`~.memory.ports.HistoryLog` tables beside the memories (the embedded SQLite file or
Tablestore tables), so every replica sees the same state:

* **Apps** are the user's clients. Pausing one is an event in the history log under the pseudo memory id
  ``app:<client>``; the latest event wins. Reads are cached for a couple of seconds per user, so a pause
  reaches every replica within :data:`APP_CACHE_SECONDS` without an extra store call per tool call.
* **Access log**: every search or list hit is queued in memory and written by a background thread in
  batches (one write per user per flush, never on the request path), with the client, time and query.
  Retention is enforced by the store (Tablestore table TTL; SQLite pruning at flush).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from tablestore_openmemory_mcp.memory.clock import now_iso
from tablestore_openmemory_mcp.memory.ports import HistoryLog, HistoryRecord, Source

logger = logging.getLogger(__name__)

APP_CACHE_SECONDS = 2.0
APP_PREFIX = "app:"


@dataclass(frozen=True, slots=True)
class AppState:
    name: str
    paused: bool
    changed_at: str | None


class AppDirectory:
    """Per-user pause switches for clients, kept in the history log."""

    def __init__(self, log: HistoryLog) -> None:
        self.log = log
        self._lock = threading.Lock()
        self._cache: dict[tuple[str, str], tuple[float, AppState]] = {}

    def state(self, user_id: str, client: str) -> AppState:
        key = (user_id, client)
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None and time.monotonic() - cached[0] < APP_CACHE_SECONDS:
                return cached[1]
        events = self.log.for_memory(user_id, APP_PREFIX + client)
        last = events[-1] if events else None
        state = AppState(client, last is not None and last.new_state == "paused", last.at if last else None)
        with self._lock:
            self._cache[key] = (time.monotonic(), state)
        return state

    def is_paused(self, user_id: str, client: str) -> bool:
        return self.state(user_id, client).paused

    def set_paused(self, user_id: str, client: str, paused: bool, source: Source = "rest") -> AppState:
        before = self.state(user_id, client)
        at = now_iso()
        self.log.append(
            user_id,
            [
                HistoryRecord(
                    memory_id=APP_PREFIX + client,
                    event="APP",
                    old_memory=None,
                    new_memory=None,
                    at=at,
                    client=client,
                    source=source,
                    old_state="paused" if before.paused else "active",
                    new_state="paused" if paused else "active",
                )
            ],
        )
        state = AppState(client, paused, at)
        with self._lock:
            self._cache[(user_id, client)] = (time.monotonic(), state)
        return state


@dataclass(frozen=True, slots=True)
class Access:
    memory_id: str
    client: str
    at: str
    query: str | None


class AccessLog:
    """Queues read hits and writes them in batches from a background thread."""

    def __init__(
        self,
        log: HistoryLog,
        *,
        flush_seconds: float = 1.0,
        retention_days: int = 30,
        max_queue: int = 100_000,
    ) -> None:
        self.log = log
        self.flush_seconds = flush_seconds
        self.retention = timedelta(days=retention_days)
        self.max_queue = max_queue
        self._pending: dict[str, list[HistoryRecord]] = defaultdict(list)
        self._count = 0
        self._cond = threading.Condition()
        self._closed = False
        self._flushes = 0
        self._thread: threading.Thread | None = None
        self.dropped = 0

    def record(self, user_id: str, client: str, memory_ids: Sequence[str], query: str | None) -> None:
        """Queue one hit per memory; returns at once."""
        if not memory_ids:
            return
        at = now_iso()
        shown = query[:200] if query else None
        with self._cond:
            if self._closed:
                return
            if self._count + len(memory_ids) > self.max_queue:
                self.dropped += len(memory_ids)  # the store is unreachable for long: keep memory bounded
                return
            self._pending[user_id].extend(
                HistoryRecord(
                    memory_id=memory_id, event="ACCESS", old_memory=None, new_memory=shown, at=at, client=client
                )
                for memory_id in dict.fromkeys(memory_ids)
            )
            self._pending[user_id].append(
                HistoryRecord(
                    memory_id=APP_PREFIX + client,
                    event="ACCESS",
                    old_memory=None,
                    new_memory=shown,
                    at=at,
                    client=client,
                )
            )
            self._count += len(memory_ids) + 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="access-log", daemon=True)
                self._thread.start()
            self._cond.notify()

    def for_memory(self, user_id: str, memory_id: str) -> list[HistoryRecord]:
        """The memory's access entries, oldest first (pending ones included)."""
        with self._cond:
            pending = [r for r in self._pending.get(user_id, ()) if r.memory_id == memory_id]
        cutoff = (datetime.now(UTC) - self.retention).isoformat()
        return [r for r in self.log.for_memory(user_id, memory_id) if r.at >= cutoff] + pending

    def last_access(self, user_id: str, client: str) -> str | None:
        entries = self.for_memory(user_id, APP_PREFIX + client)
        return entries[-1].at if entries else None

    def erase(self, user_id: str, memory_ids: Sequence[str]) -> int:
        wanted = set(memory_ids)
        with self._cond:
            kept = [r for r in self._pending.get(user_id, ()) if r.memory_id not in wanted]
            dropped = len(self._pending.get(user_id, ())) - len(kept)
            if user_id in self._pending:
                self._pending[user_id] = kept
                self._count -= dropped
        return dropped + self.log.erase(user_id, list(memory_ids))

    def flush(self) -> None:
        """Write everything queued now (also called by the background thread)."""
        with self._cond:
            batch, self._pending = dict(self._pending), defaultdict(list)
            self._count = 0
        for user_id, records in batch.items():
            if not records:
                continue
            try:
                self.log.append(user_id, records)
            except Exception:
                logger.warning("could not write %d access-log entries; they are dropped", len(records), exc_info=True)
        prune = getattr(self.log, "prune_before", None)
        self._flushes += 1
        if callable(prune) and self._flushes % 60 == 1:
            try:
                prune((datetime.now(UTC) - self.retention).isoformat())
            except Exception:
                logger.warning("could not prune the access log", exc_info=True)

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._count > 0 or self._closed)
                if self._closed:
                    return
                # Gather a batch for up to flush_seconds (close() cuts it short and flushes itself).
                if self._cond.wait_for(lambda: self._closed, timeout=self.flush_seconds):
                    return
            self.flush()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self.flush()
        self.log.close()
