"""Export one user's memories (every client) to a backup file, with vectors and history when available."""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tablestore_openmemory_mcp.backup.fileformat import BackupWriter
from tablestore_openmemory_mcp.backup.records import to_record
from tablestore_openmemory_mcp.scope import Scope

logger = logging.getLogger(__name__)

#: Scope client used for exports: a shared scope sees the user's memories from every client.
EXPORT_CLIENT = "backup"


@dataclass(frozen=True)
class ExportSummary:
    path: Path
    memories: int
    vectors: int
    history_events: int

    def line(self) -> str:
        return (
            f"exported {self.memories} memories ({self.vectors} with vectors, {self.history_events} history events) "
            f"to {self.path}"
        )


def export_backup(
    repository: Any,
    user_id: str,
    path: Path | str,
    *,
    embedding_model: str | None = None,
    include_history: bool = True,
    progress: Callable[[int], None] | None = None,
    page: int = 500,
) -> ExportSummary:
    """Write every memory of ``user_id`` to ``path`` (zip unless it ends in .jsonl / .jsonl.gz)."""
    scope = Scope(client_name=EXPORT_CLIENT, user_id=user_id, shared=True)
    writer = BackupWriter(path, user_id)
    vectors_ok = True
    n_vectors = n_events = 0
    try:
        for memories in repository.iter_all(scope, batch=page):
            vectors: dict[str, list[float]] = {}
            if vectors_ok:
                try:
                    vectors = repository.vectors(scope, [m.id for m in memories])
                except NotImplementedError as exc:
                    logger.info("exporting without vectors: %s", exc)
                    vectors_ok = False
            histories = _histories(repository, scope, [m.id for m in memories]) if include_history else {}
            for memory in memories:
                history = histories.get(memory.id, [])
                vector = vectors.get(memory.id)
                n_vectors += vector is not None
                n_events += len(history)
                writer.add(to_record(memory, vector=vector, embedding_model=embedding_model, history=history))
            if progress is not None:
                progress(writer.count)
        written = writer.close()
    except BaseException:
        writer.abort()
        raise
    return ExportSummary(written, writer.count, n_vectors, n_events)


def _histories(repository: Any, scope: Scope, ids: list[str]) -> dict[str, list[Any]]:
    """A page's history: one range read per page where the repository offers it, else one per memory."""
    many = getattr(repository, "histories", None)
    if many is not None:
        found: dict[str, list[Any]] = many(scope, ids)
        return found
    return {memory_id: repository.history(scope, memory_id) for memory_id in ids}


def export_zip(repository: Any, user_id: str, path: Path | str | None = None, **kwargs: Any) -> Path:
    """REST's entry point: the user's backup zip at ``path`` (a new temporary file when None)."""
    if path is None:
        fd, path = tempfile.mkstemp(prefix=f"memories_export_{user_id}_", suffix=".zip")
        os.close(fd)
    return export_backup(repository, user_id, path, **kwargs).path


__all__ = ["ExportSummary", "export_backup", "export_zip"]
