"""Which user owns a memory id: what mem0's id-only calls (``get``/``update``/``delete``/``history``) need.

Why: our stores key rows by ``(user_id, memory_id)`` and refuse any call without the caller's scope,
but mem0's ``Memory.get(memory_id)`` names no user. The provider records ``id -> (user, row id)`` when
it inserts (before the row itself, so no stored row lacks its owner) and reads it back for id-only
calls, on a strongly consistent path (a SQLite table, or a Tablestore table keyed by the id) — never
the search index, which lags. ``row id`` differs from ``id`` when the store kept an existing row for a
duplicate text: mem0 then holds an id of its own that must lead to the row that holds the text.

Inside the server (``MEMORY_ENGINE=mem0``) every call already carries its scope and no directory is
written.
"""

from __future__ import annotations

import functools
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

#: Ids remembered in memory per provider (a hit costs no read).
CACHE_SIZE = 10_000


class OwnerDirectory(Protocol):
    """``id -> (user_id, row id)``, durable and strongly consistent."""

    def put(self, entries: Mapping[str, tuple[str, str]]) -> None: ...

    def get(self, memory_id: str) -> tuple[str, str] | None: ...

    def remove(self, memory_ids: Iterable[str]) -> None: ...

    def close(self) -> None: ...


class CachedOwners:
    """An :class:`OwnerDirectory` with a bounded in-process cache in front (writes go through)."""

    def __init__(self, directory: OwnerDirectory, size: int = CACHE_SIZE) -> None:
        self.directory = directory
        self._size = size
        self._cache: OrderedDict[str, tuple[str, str]] = OrderedDict()
        self._lock = threading.Lock()

    def remember(self, entries: Mapping[str, tuple[str, str]]) -> None:
        """Cache what a scoped read just showed (no write)."""
        with self._lock:
            for key, value in entries.items():
                self._cache[key] = value
                self._cache.move_to_end(key)
            while len(self._cache) > self._size:
                self._cache.popitem(last=False)

    def put(self, entries: Mapping[str, tuple[str, str]]) -> None:
        if entries:
            self.directory.put(entries)
            self.remember(entries)

    def get(self, memory_id: str) -> tuple[str, str] | None:
        with self._lock:
            hit = self._cache.get(memory_id)
        if hit is not None:
            return hit
        found = self.directory.get(memory_id)
        if found is not None:
            self.remember({memory_id: found})
        return found

    def remove(self, memory_ids: Iterable[str]) -> None:
        ids = list(memory_ids)
        with self._lock:
            for key in ids:
                self._cache.pop(key, None)
        if ids:
            self.directory.remove(ids)

    def close(self) -> None:
        self.directory.close()


class SqliteOwners:
    """The directory as a table in ``<path>/mem0_owners.sqlite3`` (beside the embedded store's file)."""

    def __init__(self, path: str | Path, collection: str) -> None:
        Path(path).mkdir(parents=True, exist_ok=True)
        self._table = "owners_" + "".join(c if c.isalnum() else "_" for c in collection)
        self._conn = sqlite3.connect(str(Path(path) / "mem0_owners.sqlite3"), check_same_thread=False, timeout=30)
        self._lock = threading.Lock()
        with self._lock, self._conn:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute(
                f"CREATE TABLE IF NOT EXISTS {self._table} "
                "(id TEXT PRIMARY KEY, user_id TEXT NOT NULL, row_id TEXT NOT NULL)"
            )

    def put(self, entries: Mapping[str, tuple[str, str]]) -> None:
        rows = [(key, user, row) for key, (user, row) in entries.items()]
        with self._lock, self._conn:
            self._conn.executemany(f"INSERT OR REPLACE INTO {self._table} VALUES (?, ?, ?)", rows)

    def get(self, memory_id: str) -> tuple[str, str] | None:
        with self._lock:
            found = self._conn.execute(
                f"SELECT user_id, row_id FROM {self._table} WHERE id = ?", (memory_id,)
            ).fetchone()
        return (str(found[0]), str(found[1])) if found else None

    def remove(self, memory_ids: Iterable[str]) -> None:
        with self._lock, self._conn:
            self._conn.executemany(f"DELETE FROM {self._table} WHERE id = ?", [(i,) for i in memory_ids])

    def close(self) -> None:
        with self._lock:
            self._conn.close()


class TablestoreOwners:
    """The directory as the Tablestore table ``<collection>_owners`` (primary key: the id), on the store's client.

    put = 1 BatchWriteRow per 200 ids; get = 1 GetRow; remove = 1 BatchWriteRow per 200 ids. Every RPC
    goes through the same bounded retry as the store."""

    def __init__(self, client: Any, endpoint: str, collection: str) -> None:
        from tablestore_openmemory_mcp.stores.tablestore.readiness import Readiness
        from tablestore_openmemory_mcp.stores.tablestore.retry import Retrier
        from tablestore_openmemory_mcp.stores.tablestore.tables import create_table, describe_primary_key

        self._client = client
        self._retry = Retrier(endpoint)
        self.table = f"{collection}_owners"

        def error(api: str, exc: Exception) -> Exception:
            return RuntimeError(f"Tablestore {api} on table {self.table} failed: {exc}")

        if describe_primary_key(client, self._retry, self.table, error) is None:
            create_table(client, self._retry, self.table, [("memory_id", "STRING")], error)
        # a new table (ours, or another process's just now) is not usable for seconds: wait as the store does
        Readiness(endpoint).table(client, self.table, [("memory_id", "STRING")])

    def _batch(self, items: list[Any]) -> None:
        from tablestore import BatchWriteRowRequest, TableInBatchWriteRowItem

        for start in range(0, len(items), 200):
            request = BatchWriteRowRequest()
            request.add(TableInBatchWriteRowItem(self.table, items[start : start + 200]))
            result = self._retry.call("BatchWriteRow", functools.partial(self._client.batch_write_row, request))
            failed = [*result.get_failed_of_put(), *result.get_failed_of_delete()]
            if failed:
                raise RuntimeError(f"Tablestore BatchWriteRow on {self.table} failed for {len(failed)} row(s)")

    def put(self, entries: Mapping[str, tuple[str, str]]) -> None:
        from tablestore import Condition, PutRowItem, Row, RowExistenceExpectation

        items = [
            PutRowItem(
                Row([("memory_id", key)], [("user_id", user), ("row_id", row)]),
                Condition(RowExistenceExpectation.IGNORE),
            )
            for key, (user, row) in entries.items()
        ]
        self._batch(items)

    def get(self, memory_id: str) -> tuple[str, str] | None:
        _, row, _ = self._retry.call(
            "GetRow", lambda: self._client.get_row(self.table, [("memory_id", memory_id)], max_version=1)
        )
        if row is None or not row.primary_key:
            return None
        columns = {name: value for name, value, *_ in row.attribute_columns}
        user = columns.get("user_id")
        return (str(user), str(columns.get("row_id") or memory_id)) if user else None

    def remove(self, memory_ids: Iterable[str]) -> None:
        from tablestore import Condition, DeleteRowItem, Row, RowExistenceExpectation

        items = [
            DeleteRowItem(Row([("memory_id", key)]), Condition(RowExistenceExpectation.IGNORE)) for key in memory_ids
        ]
        self._batch(items)

    def close(self) -> None:
        """The client belongs to the store, which closes it."""
