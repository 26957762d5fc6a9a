"""Strongly consistent reads of one user's primary-key range (GetRange): pages, counts, every row.

Why: the table, not the lagging index, is the truth for lists and totals whenever the index cannot answer
exactly. The user is the range itself; the client and the states are a GetRange column filter
(:meth:`.selection.Selection.column_filter`), so the table skips rows we would drop anyway and a count reads
primary keys only; the query's narrowing is checked on each row read (:meth:`.selection.Selection.keeps`).

RPCs: page = GetRange (limit + 1 rows; more only when rows are filtered out); count = a keys-only GetRange
scan, free right after a page (same thread and selection) that covered the whole range; every row = pages
of 1,000.
"""

from __future__ import annotations

import base64
import binascii
import json
import threading
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from tablestore import INF_MAX, INF_MIN

from tablestore_openmemory_mcp.errors import UserInputError

from .rows import Found, attr_dict, decode
from .schema import COL_PAYLOAD, PK_ID
from .selection import Selection

if TYPE_CHECKING:
    from .store import TablestoreStore

_ROW_COLUMNS = (COL_PAYLOAD,)
#: Rows per page when every row is read (the owner's views when the index cannot answer).
EVERY_PAGE = 1000


def encode_cursor(memory_id: str) -> str:
    return base64.urlsafe_b64encode(json.dumps({"v": 1, "next": memory_id}).encode()).decode()


def decode_cursor(cursor: str) -> str:
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        memory_id = data["next"]
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise UserInputError("invalid cursor: pass back the cursor a previous page returned") from None
    if not isinstance(memory_id, str) or not memory_id:
        raise UserInputError("invalid cursor: pass back the cursor a previous page returned")
    return memory_id


def row_parts(row: Any) -> tuple[Any, Any]:
    """(primary_key, attribute_columns) from a Row object or a (pk, attrs) tuple."""
    if hasattr(row, "primary_key"):
        return row.primary_key, row.attribute_columns
    return row[0], row[1]


def check_limit(limit: Any) -> None:
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise UserInputError("limit must be a positive integer")


class RangeReads:
    """The GetRange reads of one :class:`TablestoreStore` (see the module docstring)."""

    def __init__(self, store: TablestoreStore) -> None:
        self.store = store
        self._local = threading.local()  # per thread: the count of the last whole-range page

    def forget(self) -> None:
        """Drop the count memo (a write happened)."""
        self._local.count = None

    def memo(self, key: str) -> int | None:
        """The count of the last whole-range page of this selection in this thread, if nothing changed since."""
        memo = getattr(self._local, "count", None)
        return int(memo[1]) if memo is not None and memo[0] == key else None

    def get_range(
        self, user: str, start_id: Any, limit: int | None, column_filter: Any, columns: Sequence[str] = _ROW_COLUMNS
    ) -> tuple[list[Any], Any]:
        """One GetRange of ``user``'s range from ``start_id``: (rows, the id the next call starts at or None)."""
        store = self.store
        start = store._pk(user, start_id)
        end = store._pk(user, INF_MAX)
        _, next_pk, rows, _ = store._call(
            "GetRange",
            lambda: store.client.get_range(
                store.collection_name, "FORWARD", start, end, list(columns), limit, column_filter, max_version=1
            ),
        )
        next_id = dict((c[0], c[1]) for c in next_pk).get(PK_ID) if next_pk else None
        return list(rows or []), next_id

    def page(self, sel: Selection, limit: int, cursor: str | None) -> tuple[list[Found], str | None]:
        """Up to ``limit`` rows in primary-key order from ``cursor``, and the cursor of the next page.

        The cursor is the id the next page starts at, so rows added or deleted between pages never make
        another row repeat or vanish. GetRange pages of limit + 1 rows: usually one RPC per page.
        """
        check_limit(limit)
        self.forget()
        start: Any = decode_cursor(cursor) if cursor else INF_MIN
        cf = sel.column_filter()
        columns = [*_ROW_COLUMNS, *cf.columns]  # the filter's columns too, or the service filters every row out
        page: list[Found] = []
        while start is not None:
            rows, start = self.get_range(sel.who.user, start, limit - len(page) + 1, cf.condition, columns)
            for row in rows:
                found = decode(row_parts(row))
                if found is None or not sel.keeps(found.memory):
                    continue
                if len(page) == limit:
                    return page, encode_cursor(found.id)
                page.append(found)
        if cursor is None:  # the whole range: a count right after this needs no scan of its own
            self._local.count = (sel.key(), len(page))
        return page, None

    def count(self, sel: Selection) -> int:
        """How many rows of ``sel`` there are; strongly consistent.

        Right after a :meth:`page` (same thread and selection) that read the whole range, its count (no RPC).
        When the column filter decides every row, primary keys only; else every payload is read and checked.
        """
        known = self.memo(sel.key())
        self.forget()
        if known is not None:
            return known
        cf = sel.column_filter()
        if not cf.exact:
            return sum(1 for _ in self._scan(sel))
        total = 0
        start: Any = INF_MIN
        while start is not None:  # primary keys and the filtered columns only
            rows, start = self.get_range(sel.who.user, start, None, cf.condition, [PK_ID, *cf.columns])
            total += sum(sel.columns_pass(attr_dict(row_parts(row)[1])) for row in rows)
        return total

    def _scan(self, sel: Selection) -> Iterator[Found]:
        """Every row of ``sel``, unpaged GetRange calls (the service's own pages)."""
        cf = sel.column_filter()
        start: Any = INF_MIN
        while start is not None:  # the filter's columns are read too, or the service filters every row out
            rows, start = self.get_range(sel.who.user, start, None, cf.condition, [*_ROW_COLUMNS, *cf.columns])
            for row in rows:
                found = decode(row_parts(row))
                if found is not None and sel.keeps(found.memory):
                    yield found

    def every(self, sel: Selection) -> Iterator[Found]:
        """Every row of ``sel``, read in pages of :data:`EVERY_PAGE`."""
        cursor: str | None = None
        while True:
            page, cursor = self.page(sel, EVERY_PAGE, cursor)
            yield from page
            if cursor is None:
                return


__all__ = ["RangeReads", "decode_cursor", "encode_cursor"]
