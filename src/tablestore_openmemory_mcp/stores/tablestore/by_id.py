"""Reads of rows by id in the caller's range: GetRow, BatchGetRow per 100 ids, the dedup key's holder.

Why: every answer of the store is read back from the table by id (the index only proposes ids), so this is
the one place a returned row is decoded (:class:`.rows.Found`) and checked against the scope: a row outside
it is absent, whatever its id. Strongly consistent.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .dedup import check_key
from .dedup_sweep import drop_if_stale
from .rows import MAX_KEY_BYTES, Found, attr_dict, decode
from .schema import COL_DEDUP, COL_PAYLOAD
from .selection import Who

if TYPE_CHECKING:
    from .store import TablestoreStore

logger = logging.getLogger(__name__)

_ROW_COLUMNS = [COL_PAYLOAD]


def row_ids(memory_ids: Sequence[str]) -> list[str]:
    """Distinct ids a row can have (non-empty, within the primary-key limit), in order."""
    return [i for i in dict.fromkeys(str(i) for i in memory_ids) if i and len(i.encode("utf-8")) <= MAX_KEY_BYTES]


def _owned(who: Who, found: Found | None) -> Found | None:
    return found if found is not None and who.owns(found.memory) else None


class IdReads:
    """The by-id reads of one :class:`TablestoreStore` (see the module docstring)."""

    def __init__(self, store: TablestoreStore) -> None:
        self.store = store

    def one(self, who: Who, memory_id: str) -> Found | None:
        """One GetRow in the caller's range; None when missing or outside the scope."""
        store = self.store
        if not memory_id or len(memory_id.encode("utf-8")) > MAX_KEY_BYTES:
            return None
        _, row, _ = store._call(
            "GetRow",
            lambda: store.client.get_row(
                store.collection_name, store._pk(who.user, memory_id), columns_to_get=_ROW_COLUMNS, max_version=1
            ),
        )
        if row is None or not row.primary_key:
            return None
        return _owned(who, decode((row.primary_key, row.attribute_columns)))

    def in_order(self, who: Who, ids: Sequence[str]) -> list[Found | None]:
        """The caller's rows of ``ids`` in order (None: missing or outside the scope); BatchGetRow per 100."""
        store = self.store
        raws = store._batches.get(store.collection_name, [store._pk(who.user, i) for i in ids], _ROW_COLUMNS)
        return [_owned(who, decode(raw)) for raw in raws]

    def rows(self, who: Who, ids: Sequence[str]) -> dict[str, Found]:
        """The caller's rows of ``ids`` by id (missing ones absent); one BatchGetRow per 100 ids."""
        return {row.id: row for row in self.in_order(who, row_ids(ids)) if row is not None}

    def holder(self, who: Who, key: str) -> Found | None:
        """The live row in scope holding ``key``: the dedup row's target, verified (2 GetRow)."""
        store = self.store
        user = who.user
        target = store._dedup.lookup(user, check_key(key))
        if target is None:
            return None
        _, row, _ = store._call(
            "GetRow",
            lambda: store.client.get_row(
                store.collection_name, store._pk(user, target), columns_to_get=[COL_PAYLOAD, COL_DEDUP], max_version=1
            ),
        )
        if row is None or not row.primary_key:
            return None  # an orphan claim (its writer died, or is between its writes): the add completes it
        if attr_dict(row.attribute_columns).get(COL_DEDUP) != key:
            try:  # the memory no longer has this text: remove the stale claim (``dedup_sweep``), best effort
                drop_if_stale(store, user, key, target)
            except Exception:
                logger.warning("could not remove a stale dedup row; the next sweep will", exc_info=True)
            return None
        return _owned(who, decode((row.primary_key, row.attribute_columns)))


__all__ = ["IdReads", "row_ids"]
