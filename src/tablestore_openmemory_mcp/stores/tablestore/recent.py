"""This process's recent writes, so a search right after an add or update finds it (read-your-writes).

The search index syncs a few seconds behind the table (p99 3 s). Rows this process wrote in the last
``window`` seconds are kept here with their unit vectors; ``search`` scores them locally and adds them to
the index's candidates, and the one BatchGetRow that checks every candidate against the table drops the
ones deleted since. Writes made by other processes show up in search once the index has synced.
Bounded: at most ``max_rows`` rows (the newest), each expiring after ``window`` seconds. A user whose rows
the bound dropped before they expired, or who has more than the readers can reconcile, gets no list from
:meth:`touched` (None) until they expire: the readers then ask the table instead of answering short.

A new search index answers nothing until it has initialized, which can take a minute: longer than the
window. While the store knows its index is still initializing it holds the rows (:meth:`hold`: none expires);
after :meth:`release` each row expires ``window`` seconds after the later of its write and the release.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Sequence

import numpy as np

#: How long a write is kept: well above the index's documented 3 s sync latency.
WINDOW = 30.0
MAX_ROWS = 2048
#: Seconds between checks of an initializing index (one DescribeSearchIndex, from a search).
RECHECK = 5.0


class RecentWrites:
    """Thread-safe, bounded map (user, id) -> (unit vector, written at)."""

    def __init__(self, window: float = WINDOW, max_rows: int = MAX_ROWS) -> None:
        self.window = window
        self.max_rows = max_rows
        self._lock = threading.Lock()
        self._rows: OrderedDict[tuple[str, str], tuple[np.ndarray | None, float]] = OrderedDict()
        #: Rows this process deleted lately: the index may still count them (``touched``).
        self._removed: OrderedDict[tuple[str, str], float] = OrderedDict()
        #: user -> when the bound last dropped one of their rows still within the window (``touched``: None).
        self._lost: dict[str, float] = {}
        self._held = False
        self._released_at = float("-inf")
        self._next_check = 0.0

    def hold(self) -> None:
        """Keep every row (still bounded by ``max_rows``) until :meth:`release`: the index is initializing."""
        with self._lock:
            self._held = True
            self._next_check = time.monotonic() + RECHECK

    def release(self) -> None:
        """The index has initialized: rows expire ``window`` seconds from now at the earliest."""
        with self._lock:
            self._held = False
            self._released_at = time.monotonic()

    def held(self) -> bool:
        return self._held

    def recheck_due(self) -> bool:
        """True at most once per :data:`RECHECK` seconds while held (when to ask the index again)."""
        with self._lock:
            now = time.monotonic()
            if now < self._next_check:
                return False
            self._next_check = now + RECHECK
            return True

    def note(self, user: str, ids: Sequence[str], vectors: Sequence[Sequence[float] | None]) -> None:
        """Remember rows just written (a None vector keeps the one already known, if any)."""
        if self.window <= 0:
            return
        now = time.monotonic()
        with self._lock:
            for memory_id, vector in zip(ids, vectors, strict=True):
                key = (user, memory_id)
                unit: np.ndarray | None = None
                if vector is not None:
                    arr = np.asarray(vector, dtype=np.float32)
                    norm = float(np.linalg.norm(arr))
                    unit = arr / norm if norm > 0 else arr
                elif key in self._rows:
                    unit = self._rows[key][0]
                self._rows.pop(key, None)
                self._rows[key] = (unit, now)
            while len(self._rows) > self.max_rows:
                (lost, _), _ = self._rows.popitem(last=False)
                self._lost[lost] = now

    def forget(self, user: str, ids: Iterable[str]) -> None:
        """Drop deleted rows (they are still listed by :meth:`touched` for ``window`` seconds)."""
        now = time.monotonic()
        with self._lock:
            for memory_id in ids:
                self._rows.pop((user, memory_id), None)
                if self.window > 0:
                    self._removed.pop((user, memory_id), None)
                    self._removed[(user, memory_id)] = now
            while len(self._removed) > self.max_rows:
                (lost, _), _ = self._removed.popitem(last=False)
                self._lost[lost] = now

    def touched(self, user: str, limit: int) -> list[str] | None:
        """Every id of ``user``'s rows this process wrote or deleted lately, newest first: where the lagging
        index may disagree with the table (totals and counts reconcile them). None when there are more than
        ``limit`` or the bound dropped some still within the window: a reconciliation would answer short
        (2,100 rows just written, 500 reconciled: a total of 500), so the caller asks the table."""
        with self._lock:
            self._expire()
            if user in self._lost:
                return None
            written = [mid for (u, mid) in reversed(self._rows) if u == user]
            removed = [mid for (u, mid) in reversed(self._removed) if u == user]
        ids = list(dict.fromkeys([*written, *removed]))
        return ids if len(ids) <= limit else None

    def ids(self, user: str) -> list[str]:
        """Ids of ``user``'s recent writes, newest first."""
        with self._lock:
            self._expire()
            return [mid for (u, mid) in reversed(self._rows) if u == user]

    def nearest(self, user: str, query: Sequence[float], limit: int) -> list[tuple[str, float]]:
        """Up to ``limit`` of ``user``'s recent rows as (id, cosine similarity), best first."""
        with self._lock:
            self._expire()
            mine = [(mid, vec) for (u, mid), (vec, _) in self._rows.items() if u == user and vec is not None]
        if not mine or limit <= 0:
            return []
        q = np.asarray(query, dtype=np.float32)
        norm = float(np.linalg.norm(q))
        q = q / norm if norm > 0 else q
        mine = [(mid, vec) for mid, vec in mine if vec.shape == q.shape]
        if not mine:
            return []
        scores = np.clip(np.stack([vec for _, vec in mine]) @ q, -1.0, 1.0)
        top = np.argsort(-scores, kind="stable")[:limit]
        return [(mine[int(i)][0], float(scores[int(i)])) for i in top]

    def clear(self) -> None:
        with self._lock:
            self._rows.clear()
            self._removed.clear()
            self._lost.clear()

    def _expire(self) -> None:
        cutoff = time.monotonic() - self.window
        if self._held or self._released_at >= cutoff:
            return
        while self._rows:
            _, (_, written) = next(iter(self._rows.items()))
            if written >= cutoff:
                break
            self._rows.popitem(last=False)
        while self._removed and next(iter(self._removed.values())) < cutoff:
            self._removed.popitem(last=False)
        for user in [u for u, at in self._lost.items() if at < cutoff]:
            del self._lost[user]
