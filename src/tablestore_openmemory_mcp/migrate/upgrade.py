"""Upgrade in place from the reference deployment: which table we use, and the background copy.

The rule: when ``TABLESTORE_TABLE_NAME`` (default ``mem0``) names a table with the reference's primary
key ``(document_id, tenant_id)``, our memories live in ``<name>_v2`` (index ``<name>_v2_search_index``,
history ``<name>_v2_history``) and the reference's rows are copied into it in the background. The
reference table is only read. Wiring (bootstrap)::

    plan = plan_upgrade(settings)            # before prepare_mem0_environment (reads MEM0_DIR)
    if plan: settings = plan.apply(settings)
    ... build store, history log, embedder, repository from settings ...
    if plan: handle = start_background_copy(plan, repository, embedder, dimension)
    ... on shutdown: handle.stop()
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tablestore_openmemory_mcp.migrate.marker import TablestoreMarker
from tablestore_openmemory_mcp.migrate.reference import ReferenceTable
from tablestore_openmemory_mcp.migrate.runner import CopyCounts, Progress, ReferenceCopy
from tablestore_openmemory_mcp.repository import StoreRepository
from tablestore_openmemory_mcp.settings import Settings

logger = logging.getLogger(__name__)

SUFFIX = "_v2"
#: Seconds between progress lines in the server log.
LOG_EVERY = 10.0


@dataclass(frozen=True)
class UpgradePlan:
    """The reference table found under the configured name, and where our memories go instead."""

    reference_table: str
    table_name: str
    history_db: Path | None
    settings: Settings

    def apply(self, settings: Settings) -> Settings:
        """Settings whose table is ours (``<name>_v2``); the index name follows the table unless set."""
        update: dict[str, Any] = {"tablestore_table_name": self.table_name}
        index = settings.tablestore_index_name
        if index and index in (f"{self.reference_table}_search_index", "mem0_search_index"):
            update["tablestore_index_name"] = None
        return settings.model_copy(update=update)

    @property
    def marker_name(self) -> str:
        return f"reference:{self.reference_table}"


def mem0_history_path() -> Path | None:
    """mem0's history.db of the reference (``$MEM0_DIR`` or ``~/.mem0``), when it exists."""
    base = os.environ.get("MEM0_DIR") or str(Path.home() / ".mem0")
    path = Path(base).expanduser() / "history.db"
    return path if path.is_file() else None


def tablestore_client(settings: Settings) -> Any:
    """An SDK client with the server's Tablestore settings (the SDK's default retries: reads only here)."""
    from tablestore import WriteRetryPolicy

    from tablestore_openmemory_mcp.stores.tablestore.maintenance import client_from_settings

    return client_from_settings(
        settings, retry_policy=WriteRetryPolicy(), logger_name=f"{__name__}.sdk", what="the upgrade from the reference"
    )


def plan_upgrade(settings: Settings, client: Any | None = None) -> UpgradePlan | None:
    """An :class:`UpgradePlan` when the configured Tablestore table is the reference's, else None.

    One DescribeTable. An unreachable store returns None: opening the store reports it properly.
    """
    if not settings.uses_tablestore:
        return None
    name = settings.tablestore_table_name
    from tablestore_openmemory_mcp.stores.tablestore.maintenance import validate_name

    try:
        validate_name("table", name)
    except ValueError:
        return None  # opening the store names the problem, before any request
    try:
        client = client or tablestore_client(settings)
        if not ReferenceTable(client, name).exists_with_reference_key():
            return None
    except Exception as exc:
        logger.debug("upgrade check skipped: %s", exc)
        return None
    plan = UpgradePlan(name, f"{name}{SUFFIX}", mem0_history_path(), settings)
    logger.info(
        "Tablestore table %s is the reference deployment's: this server keeps its memories in %s and copies "
        "the reference's memories into it (the table %s is only read)",
        name,
        plan.table_name,
        name,
    )
    return plan


def build_copy(plan: UpgradePlan, repository: StoreRepository, embedder: Any, dimension: int) -> ReferenceCopy:
    client = tablestore_client(plan.settings)
    return ReferenceCopy(
        ReferenceTable(client, plan.reference_table),
        repository,
        embedder,
        dimension,
        TablestoreMarker(client, plan.table_name, plan.marker_name),
        history_db=plan.history_db,
    )


def _log_progress(started: float) -> Progress:
    last = [started]

    def report(seen: int) -> None:
        now = time.monotonic()
        if now - last[0] >= LOG_EVERY:
            last[0] = now
            logger.info("copying the reference's memories: %d rows read so far", seen)

    return report


class CopyHandle:
    """The background copy: ``stop()`` asks it to stop after the current page; ``done`` is set when it ends."""

    def __init__(self, copy: ReferenceCopy) -> None:
        self.copy = copy
        self.stop_event = threading.Event()
        self.done = threading.Event()
        self.counts: CopyCounts | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="reference-copy", daemon=True)

    def _run(self) -> None:
        started = time.monotonic()
        try:
            self.counts = self.copy.run(progress=_log_progress(started), stop=self.stop_event)
            if self.counts.already_done:
                logger.debug("reference copy already done: %s", self.counts.summary())
            elif self.counts.finished:
                logger.info(
                    "copied the reference's memories in %.1f s: %s", time.monotonic() - started, self.counts.summary()
                )
            else:
                logger.info("reference copy paused (resumes on the next start): %s", self.counts.summary())
        except Exception as exc:
            self.error = exc
            logger.error(
                "copying the reference's memories failed (it resumes on the next start, or run "
                "`tablestore-openmemory-mcp migrate`): %s",
                exc,
            )
            logger.debug("reference copy failure", exc_info=True)
        finally:
            self.done.set()

    def stop(self, timeout: float = 30.0) -> None:
        self.stop_event.set()
        self.thread.join(timeout)


def start_background_copy(plan: UpgradePlan, repository: StoreRepository, embedder: Any, dimension: int) -> CopyHandle:
    """Start copying the reference's rows in a daemon thread; tools keep working meanwhile."""
    handle = CopyHandle(build_copy(plan, repository, embedder, dimension))
    handle.thread.start()
    return handle


__all__ = ["CopyHandle", "UpgradePlan", "build_copy", "plan_upgrade", "start_background_copy", "tablestore_client"]
