"""Copy the reference's memories into our store: idempotent, resumable, with counts and progress.

* **Idempotent.** Before writing a page, the ids already in our store are skipped (one ``get_many``
  per scope); an exact duplicate text already in the scope under another id is not stored twice
  (the repository's dedup). A finished copy is marked done and never runs again, so a memory the
  user deleted after the upgrade is not brought back.
* **Resumable.** The reference is read in primary-key order; after each stored page the marker
  records its last key, so an interrupted copy continues after it.
* **Vectors** are reused when their dimension matches the embedder's; otherwise the texts are
  re-embedded, one batch per page.
* **History.** Where mem0's ``history.db`` is found its events come along (``source="migration"``),
  owned by the memory's user and client; the copy's own ADD event is recorded only for memories
  that history does not already describe.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from tablestore_openmemory_mcp.memory.ports import HistoryLog, HistoryRecord, NewMemory, Origin
from tablestore_openmemory_mcp.migrate.marker import Marker, MarkerState
from tablestore_openmemory_mcp.migrate.reference import Converted, ReferenceTable, convert
from tablestore_openmemory_mcp.repository import StoreRepository
from tablestore_openmemory_mcp.scope import Scope
from tablestore_openmemory_mcp.stores.history_mem0_import import migrate_mem0_history

logger = logging.getLogger(__name__)

ORIGIN = Origin(source="migration")
#: ``progress(rows_seen)`` after every page.
Progress = Callable[[int], None]


@dataclass
class CopyCounts:
    """What a copy did (or, with ``dry_run``, would do)."""

    seen: int = 0
    copied: int = 0
    present: int = 0  # already in our store (an earlier, interrupted run)
    duplicates: int = 0  # the same text already stored in the scope under another id
    reembedded: int = 0
    history_copied: int = 0
    history_skipped: int = 0
    skipped: Counter[str] = field(default_factory=Counter)  # reason -> rows not copied
    already_done: bool = False
    finished: bool = False

    def as_dict(self) -> dict[str, int]:
        out = {
            k: int(getattr(self, k))
            for k in ("seen", "copied", "present", "duplicates", "reembedded", "history_copied", "history_skipped")
        }
        out.update({f"skipped:{reason}": n for reason, n in self.skipped.items()})
        return out

    @classmethod
    def from_dict(cls, data: dict[str, int]) -> CopyCounts:
        counts = cls()
        for key, value in data.items():
            if key.startswith("skipped:"):
                counts.skipped[key.split(":", 1)[1]] = int(value)
            elif hasattr(counts, key):
                setattr(counts, key, int(value))
        return counts

    def summary(self) -> str:
        skipped = sum(self.skipped.values())
        reasons = ", ".join(f"{n} {reason}" for reason, n in self.skipped.most_common())
        return (
            f"{self.seen} reference rows: {self.copied} copied, {self.present} already here, "
            f"{self.duplicates} duplicate texts, {skipped} skipped{f' ({reasons})' if reasons else ''}, "
            f"{self.reembedded} re-embedded; history: {self.history_copied} events copied, "
            f"{self.history_skipped} without an owner"
        )


class SkipOwnAdds:
    """The history log, minus the copy's own ADD events for memories mem0's history already has."""

    def __init__(self, inner: HistoryLog, described: set[str]) -> None:
        self.inner = inner
        self.described = described

    def append(self, user_id: str, records: Sequence[HistoryRecord]) -> None:
        kept = [r for r in records if not (r.event == "ADD" and r.memory_id in self.described)]
        if kept:
            self.inner.append(user_id, kept)

    def for_memory(self, user_id: str, memory_id: str) -> list[HistoryRecord]:
        return self.inner.for_memory(user_id, memory_id)

    def erase(self, user_id: str, memory_ids: Sequence[str]) -> int:
        return self.inner.erase(user_id, memory_ids)

    def close(self) -> None:  # the server's log: closed by the server
        pass


class _WithClient:
    """Fills in the client of mem0's history records (mem0 kept none) from the reference rows."""

    def __init__(self, inner: HistoryLog, clients: dict[str, tuple[str, str]]) -> None:
        self.inner = inner
        self.clients = clients

    def append(self, user_id: str, records: Sequence[HistoryRecord]) -> None:
        self.inner.append(
            user_id, [replace(r, client=self.clients.get(r.memory_id, (user_id, None))[1]) for r in records]
        )

    def for_memory(self, user_id: str, memory_id: str) -> list[HistoryRecord]:
        return self.inner.for_memory(user_id, memory_id)

    def erase(self, user_id: str, memory_ids: Sequence[str]) -> int:
        return self.inner.erase(user_id, memory_ids)

    def close(self) -> None:
        self.inner.close()


def mem0_history_ids(db_path: Path | None) -> set[str]:
    """Memory ids that have events in mem0's history.db (empty when there is none)."""
    if db_path is None or not Path(db_path).is_file():
        return set()
    db = sqlite3.connect(f"{Path(db_path).resolve().as_uri()}?mode=ro", uri=True)
    try:
        if db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='history'").fetchone() is None:
            return set()
        return {str(r[0]) for r in db.execute("SELECT DISTINCT memory_id FROM history WHERE memory_id IS NOT NULL")}
    finally:
        db.close()


class ReferenceCopy:
    """One copy run from the reference table into ``repository`` (see the module docstring)."""

    def __init__(
        self,
        source: ReferenceTable,
        repository: StoreRepository,
        embedder: Any,
        dimension: int,
        marker: Marker,
        *,
        history_db: Path | None = None,
        page_size: int = 200,
    ) -> None:
        self.source = source
        self.repository = repository
        self.embedder = embedder
        self.dimension = dimension
        self.marker = marker
        self.history_db = history_db
        self.page_size = page_size
        self.owners: dict[str, tuple[str, str]] = {}  # memory id -> (user, client)

    def run(
        self, *, dry_run: bool = False, progress: Progress | None = None, stop: threading.Event | None = None
    ) -> CopyCounts:
        state = self.marker.load() or MarkerState()
        if state.done:
            counts = CopyCounts.from_dict(state.counts)
            counts.already_done = counts.finished = True
            return counts
        counts = CopyCounts() if dry_run else CopyCounts.from_dict(state.counts)
        resumed = state.last_key is not None and not dry_run
        described = mem0_history_ids(self.history_db)
        writer = StoreRepository(self.repository.store, SkipOwnAdds(self.repository.history_log, described))
        for page in self.source.pages(after=None if dry_run else state.last_key, limit=self.page_size):
            if stop is not None and stop.is_set():
                return counts
            self._copy_page(page, writer, counts, dry_run)
            if not dry_run:
                state.last_key = page[-1].key
                state.counts = counts.as_dict()
                self.marker.save(state)
            if progress is not None:
                progress(counts.seen)
        if stop is not None and stop.is_set():
            return counts
        self._copy_history(counts, resumed, dry_run)
        counts.finished = True
        if not dry_run:
            state.done = True
            state.counts = counts.as_dict()
            self.marker.save(state)
        return counts

    def _copy_page(self, page: Sequence[Any], writer: StoreRepository, counts: CopyCounts, dry_run: bool) -> None:
        by_scope: dict[Scope, list[Converted]] = {}
        for row in page:
            counts.seen += 1
            item = convert(row)
            if item.scope is None or item.memory is None:
                counts.skipped[item.reason or "unusable"] += 1
                continue
            self.owners[row.document_id] = (item.scope.user_id, item.scope.client_name)
            by_scope.setdefault(item.scope, []).append(item)
        for scope, items in by_scope.items():
            present = self.repository.get_many(scope, [str(i.memory.id) for i in items if i.memory])
            todo = [i.memory for i in items if i.memory is not None and i.memory.id not in present]
            counts.present += len(items) - len(todo)
            if not todo:
                continue
            todo = self._with_vectors(todo, counts, dry_run)
            if dry_run:
                counts.copied += len(todo)
                continue
            for added in writer.add(scope, todo, ORIGIN):
                if added.created:
                    counts.copied += 1
                else:
                    counts.duplicates += 1

    def _with_vectors(self, items: list[NewMemory], counts: CopyCounts, dry_run: bool) -> list[NewMemory]:
        """Reuse vectors of the embedder's dimension; re-embed the others in one batch."""
        stale = [i for i, m in enumerate(items) if len(m.vector) != self.dimension]
        counts.reembedded += len(stale)
        if not stale or dry_run:
            return items
        vectors = self.embedder.embed_batch([items[i].text for i in stale], "add")
        fresh = list(items)
        for i, vector in zip(stale, vectors, strict=True):
            fresh[i] = replace(items[i], vector=vector)
        return fresh

    def _copy_history(self, counts: CopyCounts, resumed: bool, dry_run: bool) -> None:
        if self.history_db is None or not Path(self.history_db).is_file():
            return
        if resumed:  # rows copied by the earlier run are not in self.owners yet
            for page in self.source.pages(limit=1000):
                for row in page:
                    item = convert(row)
                    if item.scope is not None:
                        self.owners[row.document_id] = (item.scope.user_id, item.scope.client_name)
        if dry_run:
            ids = mem0_history_ids(self.history_db)
            counts.history_copied = sum(1 for i in ids if i in self.owners)
            return
        log = _WithClient(self.repository.history_log, self.owners)
        copied, skipped = migrate_mem0_history(
            Path(self.history_db),
            lambda memory_id: self.owners.get(memory_id, (None, None))[0],
            log,
        )
        counts.history_copied, counts.history_skipped = copied, skipped


__all__ = ["CopyCounts", "ReferenceCopy", "SkipOwnAdds", "mem0_history_ids"]
