"""Import a backup (OpenMemory zip, or JSON Lines) into the repository: checked first, then written in batches.

Safety rules, so a bad file never leaves a state a re-run cannot finish:

* **The whole file is read once before anything is written.** A damaged zip or gzip, a foreign zip or
  an unsupported version is a :class:`~.fileformat.BackupFormatError` and nothing is imported.
* **Bad records are skipped and counted** (no content, bad vector, unknown state, larger than
  ``max_text_chars``...), never fatal.
* **Idempotent by id.** A record whose id is already among the user's memories is left alone
  (``skip``) or has its text replaced (``overwrite``, recorded in the history as an import). An id
  held by *another* user's memory gets a new id instead (as OpenMemory does); exact duplicate texts
  in a scope are not stored twice. So re-running an import, complete or interrupted, finishes it.
* **Ids that are not memory ids** (``x``, ``../../etc/passwd``, ``12345``...) get a new one, derived from the
  user and the old id (so a re-run finds it again); ``renamed_ids`` in the summary maps old to new (the
  first :data:`MAX_RENAMES_SHOWN`), so every imported memory can be read, changed and erased by its id.
* **Limits** (:mod:`.limits`): a file that unpacks too far, holds too many records or too many empty lines is
  refused before anything is written; a record too long or nested too deep is skipped.
* **Vectors** are reused when the record's ``embedding_model`` is the server's embedder and the
  dimension matches; other records are re-embedded, one batch at a time.
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from tablestore_openmemory_mcp.backup.fileformat import BackupReader
from tablestore_openmemory_mcp.backup.limits import DEFAULT_LIMITS, Limits
from tablestore_openmemory_mcp.backup.records import BackupRecord, BadRecord, from_record
from tablestore_openmemory_mcp.errors import InvalidIdentity, UserInputError
from tablestore_openmemory_mcp.memory.ports import ALL_STATES, HistoryRecord, NewMemory, Origin, State
from tablestore_openmemory_mcp.migrate.runner import SkipOwnAdds
from tablestore_openmemory_mcp.repository import StoreRepository
from tablestore_openmemory_mcp.scope import Scope

logger = logging.getLogger(__name__)

Mode = Literal["skip", "overwrite"]
ORIGIN = Origin(source="import")
#: OpenMemory's app for imported memories; ours too when a record names no (usable) app.
DEFAULT_APP = "openmemory"
BATCH = 1000
MAX_RENAMES_SHOWN = 1000
MAX_SKIP_REASONS = 50
_RENAME_NAMESPACE = uuid.UUID("6f0d3c1e-5b0a-4e47-9c52-8a1f2f3b7d10")


@dataclass
class ImportSummary:
    """What an import did; ``skipped`` maps a reason to the number of records it applied to."""

    read: int = 0
    imported: int = 0
    existing: int = 0  # skip mode: already among the user's memories
    overwritten: int = 0
    unchanged: int = 0  # overwrite mode, same text
    duplicates: int = 0  # same text already stored in the scope under another id
    new_ids: int = 0  # the id belonged to another user's memory
    renamed: int = 0  # the id was not a memory id (a UUID): given one
    renamed_ids: dict[str, str] = field(default_factory=dict)  # old (cut to 100 characters) -> new, the first 1000
    reembedded: int = 0
    history_events: int = 0
    skipped: Counter[str] = field(default_factory=Counter)

    def line(self) -> str:
        skipped = sum(self.skipped.values())
        reasons = ", ".join(f"{n} {r}" for r, n in self.skipped.most_common())
        return (
            f"read {self.read} records: {self.imported} imported, {self.existing} already present, "
            f"{self.overwritten} overwritten, {self.unchanged} unchanged, {self.duplicates} duplicate texts, "
            f"{self.new_ids} given new ids, {self.renamed} renamed (not memory ids), "
            f"{skipped} skipped{f' ({reasons})' if reasons else ''}; "
            f"{self.reembedded} re-embedded, {self.history_events} history events"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            **{k: getattr(self, k) for k in ("read", "imported", "existing", "overwritten", "unchanged")},
            **{k: getattr(self, k) for k in ("duplicates", "new_ids", "renamed", "reembedded", "history_events")},
            "renamed_ids": dict(self.renamed_ids),
            "skipped": dict(self.skipped),
        }


@dataclass(frozen=True)
class _Item:
    scope: Scope
    record: BackupRecord


class Importer:
    def __init__(
        self,
        repository: StoreRepository,
        embedder: Any,
        *,
        mode: Mode = "skip",
        dimension: int | None = None,
        max_text_chars: int = 16000,
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        if mode not in ("skip", "overwrite"):
            raise UserInputError(f"import mode must be 'skip' or 'overwrite', not {mode!r}")
        self.repository = repository
        self.embedder = embedder
        self.mode = mode
        self.dimension = dimension or getattr(embedder, "dimension", None)
        self.max_text_chars = max_text_chars
        self.limits = limits
        self.embedder_name = str(getattr(embedder, "name", ""))
        self.summary = ImportSummary()
        self._seen: set[str] = set()

    def _skip(self, reason: str) -> None:
        """Count a skipped record; distinct reasons are capped (a hostile file could make each one unique)."""
        skipped = self.summary.skipped
        skipped[reason if reason in skipped or len(skipped) < MAX_SKIP_REASONS else "other reasons"] += 1

    # --- records -> scoped items ------------------------------------------------------------------
    def _item(self, raw: Any, user_id: str | None, fallback_user: str | None) -> _Item | None:
        try:
            record = from_record(raw)
        except BadRecord as exc:
            self._skip(str(exc))
            return None
        if len(record.content) > self.max_text_chars:
            self._skip("content too long")
            return None
        user = user_id or record.user_id or fallback_user
        if not user:
            self._skip("no user_id (pass --user-id)")
            return None
        try:
            scope = Scope(client_name=record.app or DEFAULT_APP, user_id=user)
        except InvalidIdentity:
            try:
                scope = Scope(client_name=DEFAULT_APP, user_id=user)
            except InvalidIdentity:
                self._skip("unusable user_id")
                return None
        if record.id is not None:
            record = self._memory_id(record, user)
            memory_id = str(record.id)
            if memory_id in self._seen:
                self._skip("id repeated in the file")
                return None
            self._seen.add(memory_id)
        return _Item(scope, record)

    def _memory_id(self, record: BackupRecord, user: str) -> BackupRecord:
        """A UUID as our ids are written; any other id is replaced by one derived from (user, old id)."""
        assert record.id is not None
        try:
            canonical = str(uuid.UUID(record.id)) if len(record.id) <= 45 else None
        except ValueError:
            canonical = None
        if canonical is None:
            canonical = str(uuid.uuid5(_RENAME_NAMESPACE, f"{user}\x00{record.id}"))
            self.summary.renamed += 1
            if len(self.summary.renamed_ids) < MAX_RENAMES_SHOWN:
                self.summary.renamed_ids[record.id[:100]] = canonical
        if canonical == record.id:
            return record
        history = tuple(replace(h, memory_id=canonical) for h in record.history)
        return replace(record, id=canonical, history=history)

    # --- writing -----------------------------------------------------------------------------------
    def _vectors(self, records: Sequence[BackupRecord]) -> list[list[float]]:
        out: list[list[float] | None] = [
            r.vector
            if r.vector is not None
            and r.embedding_model == self.embedder_name
            and (self.dimension is None or len(r.vector) == self.dimension)
            else None
            for r in records
        ]
        stale = [i for i, v in enumerate(out) if v is None]
        if stale:
            fresh = self.embedder.embed_batch([records[i].content for i in stale], "add")
            for i, vector in zip(stale, fresh, strict=True):
                out[i] = list(vector)
            self.summary.reembedded += len(stale)
        return [v for v in out if v is not None]

    def _new(self, record: BackupRecord, vector: list[float]) -> NewMemory:
        metadata = dict(record.metadata)
        metadata.pop("state", None)  # states are set through the repository (history, dedup keys)
        if record.categories:
            metadata["categories"] = list(record.categories)  # NewMemory has no field: the payload carries them
        return NewMemory(
            text=record.content,
            vector=vector,
            id=record.id,
            created_at=record.created_at,
            updated_at=record.updated_at,
            metadata=metadata,
        )

    def _flush(self, items: list[_Item]) -> None:
        by_scope: dict[Scope, list[BackupRecord]] = {}
        for item in items:
            by_scope.setdefault(item.scope, []).append(item.record)
        for scope, records in by_scope.items():
            self._write_scope(scope, records)

    def _write_scope(self, scope: Scope, records: list[BackupRecord]) -> None:
        unique = {r.id: r for r in records if r.id is not None}
        anonymous = [r for r in records if r.id is None]
        present = self.repository.get_many(scope, list(unique))
        todo = anonymous + [r for i, r in unique.items() if i not in present]
        updates = [(present[i], r) for i, r in unique.items() if i in present]
        if self.mode == "skip":
            self.summary.existing += len(updates)
        else:
            changed = [(cur, r) for cur, r in updates if cur.text != r.content]
            restated = [(cur, r) for cur, r in updates if cur.text == r.content and cur.state != r.state]
            self.summary.unchanged += len(updates) - len(changed) - len(restated)
            vectors = self._vectors([r for _, r in changed]) if changed else []
            for (current, record), vector in zip(changed, vectors, strict=True):
                self.repository.update(scope, current, record.content, vector, ORIGIN)
            self._set_states(scope, [(cur.id, r.state) for cur, r in changed + restated if cur.state != r.state])
            self.summary.overwritten += len(changed) + len(restated)
        if todo:
            self._add(scope, todo)

    def _add(self, scope: Scope, records: list[BackupRecord]) -> None:
        vectors = self._vectors(records)
        items = [self._new(r, v) for r, v in zip(records, vectors, strict=True)]
        described = {r.id for r in records if r.id and r.history}
        writer = StoreRepository(self.repository.store, SkipOwnAdds(self.repository.history_log, described))
        try:
            outcomes = writer.add(scope, items, ORIGIN)
        except (ValueError, UserInputError):  # one bad row fails the batch: find it, keep the rest
            for record, item in zip(records, items, strict=True):
                self._add_one(writer, scope, record, item)
            return
        self._count(scope, records, items, outcomes)

    def _add_one(self, writer: StoreRepository, scope: Scope, record: BackupRecord, item: NewMemory) -> None:
        try:
            self._count(scope, [record], [item], writer.add(scope, [item], ORIGIN))
            return
        except (ValueError, UserInputError) as exc:
            if item.id is None:
                self._skip(_reason(exc))
                return
        # The store refused the id: it holds another user's memory (the embedded store keys rows by id
        # alone). Import under a new id, as OpenMemory does; a row that fails again is skipped.
        fresh = replace(item, id=None)
        try:
            outcome = writer.add(scope, [fresh], ORIGIN)
        except (ValueError, UserInputError) as exc:
            self._skip(_reason(exc))
            return
        self.summary.new_ids += sum(1 for a in outcome if a.created)
        self._count(scope, [record], [fresh], outcome)  # its history moves to the new id

    def _set_states(self, scope: Scope, targets: Sequence[tuple[str, str]]) -> None:
        """Move imported memories to their recorded state (new memories are stored active)."""
        by_state: dict[State, list[str]] = {}
        for memory_id, state in targets:
            known = next((s for s in ALL_STATES if s == state), None)  # the records checked it already
            if known is not None:
                by_state.setdefault(known, []).append(memory_id)
        for known, ids in by_state.items():
            self.repository.set_state(scope, ids, known, ORIGIN)

    def _count(self, scope: Scope, records: Sequence[BackupRecord], items: Sequence[NewMemory], outcomes: Any) -> None:
        history: list[HistoryRecord] = []
        states: list[tuple[str, str]] = []
        for record, added in zip(records, outcomes, strict=True):
            if added.created:
                self.summary.imported += 1
                if record.history:
                    history.extend(replace(h, memory_id=added.memory.id) for h in record.history)
                if record.state != "active":
                    states.append((added.memory.id, record.state))
            else:
                self.summary.duplicates += 1
        self._set_states(scope, states)
        if history:
            try:
                self.repository.history_log.append(scope.user_id, history)
                self.summary.history_events += len(history)
            except UserInputError as exc:
                self._skip(f"history: {exc}")

    # --- the run -----------------------------------------------------------------------------------
    def run(
        self,
        path: Path | str,
        user_id: str | None = None,
        *,
        progress: Callable[[int, int], None] | None = None,
        batch: int = BATCH,
    ) -> ImportSummary:
        if user_id is not None:
            Scope(client_name=DEFAULT_APP, user_id=user_id)  # a bad --user-id is an error, not a skip count
        reader = BackupReader(path, self.limits)
        total = reader.check()  # the whole file once: damage raises before any write
        pending: list[_Item] = []
        for line in reader.lines():
            self.summary.read += 1
            if line.error is not None:
                self._skip(line.error)
            else:
                item = self._item(line.data, user_id, reader.user_id)
                if item is not None:
                    pending.append(item)
            if len(pending) >= batch:
                self._flush(pending)
                pending = []
                if progress is not None:
                    progress(self.summary.read, total)
        if pending:
            self._flush(pending)
        if progress is not None:
            progress(self.summary.read, total)
        return self.summary


def _reason(exc: BaseException) -> str:
    text = str(exc).split(";")[0].strip()
    return text[:80] or type(exc).__name__


def import_file(
    repository: StoreRepository,
    embedder: Any,
    path: Path | str,
    user_id: str | None = None,
    mode: Mode = "skip",
    **kwargs: Any,
) -> ImportSummary:
    """REST and CLI entry point: import ``path`` (see the module docstring)."""
    progress = kwargs.pop("progress", None)
    batch = kwargs.pop("batch", BATCH)
    return Importer(repository, embedder, mode=mode, **kwargs).run(path, user_id, progress=progress, batch=batch)


__all__ = ["ImportSummary", "Importer", "import_file"]
