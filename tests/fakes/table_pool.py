"""New, empty Tablestore tables made ahead in batches, for store tests that each open a store on a table of its own.

Why: the strict emulator keeps a new table unusable for a while and a new search index initializing, as the service
does, so a store opened on a new table waits ~1.3 s; a module of 50 such tests waited a minute one table after
another. Here the store's own startup code makes a batch of tables at once (every rule on), and they wait together.
Each test still gets a new, empty table no other test touches. A table is only handed out when the test would have
made the same one itself: on the same emulator, under the same not-ready windows; a test about creating or waiting
for tables names its table, passes store options, or changes the windows, and makes its own.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tests.tablestore_emulator import TablestoreEmulator

#: Tables made at once: each costs 2 table operations (DescribeTable, CreateTable), and an instance takes 10 a second
#: (the emulator's table_operations_rate rule, as the service: more are answered OTSQuotaExhausted and retried later).
BATCH = 5


def _rules(em: TablestoreEmulator) -> tuple[str, float, float]:
    """What a new table depends on: the emulator, and its not-ready windows for tables and indexes."""
    return em.endpoint, em.table_ready_seconds, em.index_ready_seconds


class TablePool:
    """Free table names per emulator and windows; filled by :meth:`top_up`, emptied by :meth:`take`."""

    def __init__(self, prefix: str = "t_") -> None:
        self._prefix = prefix
        self._free: dict[tuple[str, float, float], list[str]] = {}

    def top_up(self, em: TablestoreEmulator, open_store: Callable[[str], Any], least: int = 3) -> None:
        """Make a batch when fewer than ``least`` are free. Call it from a fixture, before the test's own faults and
        count resets, so none of these RPCs meets a fault meant for the test or shows in its counts."""
        free = self._free.setdefault(_rules(em), [])
        if len(free) >= least:
            return
        names = [f"{self._prefix}{uuid.uuid4().hex[:10]}" for _ in range(BATCH)]
        with ThreadPoolExecutor(len(names)) as pool:
            for store in pool.map(open_store, names):
                store.close()
        free.extend(names)

    def take(self, em: TablestoreEmulator) -> str | None:
        """A table made under ``em``'s current windows, never handed out before (None when there is none)."""
        free = self._free.get(_rules(em))
        return free.pop() if free else None
