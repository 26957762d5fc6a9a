"""One user's backup while the server runs (REST ``/backup/export`` and ``/backup/import``).

Why a module of its own: backups are whole-table jobs above the memory core, so the core must not import them.
The wiring (:func:`~..app.bootstrap.build_components`) builds one :class:`UserBackups` on the server's repository
and embedder and hands it to the memory service, which forwards to it (the service's ``Backups`` port).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from tablestore_openmemory_mcp.backup.exporter import export_zip
from tablestore_openmemory_mcp.backup.importer import Mode, import_file
from tablestore_openmemory_mcp.progress import LogProgress

if TYPE_CHECKING:
    from tablestore_openmemory_mcp.repository import StoreRepository


class UserBackups:
    """Export and import one user's memories on the repository the server serves."""

    def __init__(self, repository: StoreRepository, embedder: Any) -> None:
        self.repository = repository
        self.embedder = embedder

    def export(self, user_id: str) -> str:
        """Blocking: write the user's backup zip to a temporary file and return its path (REST streams it)."""
        name = str(getattr(self.embedder, "name", ""))
        progress = LogProgress(f"export for {user_id}")  # a line every 10 s in the server log, and one at the end
        try:
            return str(export_zip(self.repository, user_id, embedding_model=name, progress=progress))
        finally:
            progress.close()

    def import_file(self, path: str, user_id: str, mode: str) -> dict[str, object]:
        """Blocking: import a backup file for ``user_id``; returns the summary (counts and skip reasons)."""
        progress = LogProgress(f"import for {user_id}")
        try:
            # the importer refuses any other mode in one line (REST checks it first)
            summary = import_file(self.repository, self.embedder, path, user_id, cast(Mode, mode), progress=progress)
        finally:
            progress.close()
        return dict(summary.as_dict())
