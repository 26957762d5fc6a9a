"""Split writes into BatchWriteRow requests that fit both of its limits: 200 rows and 4 MB.

Why bytes as well as rows: rows of long memories are large (the text is stored twice, as a column and in the
payload JSON), so 200 of them can exceed the 4 MB a request may carry (limits-on-widecolumn-model) and the
whole request is refused with OTSParameterInvalid. Sizes are estimated from the SDK row items before they
are encoded, on the high side (every cell's name, value and a fixed per-cell encoding overhead), and the
budget stops at :data:`MAX_BYTES`, leaving room for the request's own framing (table name, conditions).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

T = TypeVar("T")

#: Tablestore's BatchWriteRow limits.
MAX_ROWS = 200
LIMIT_BYTES = 4 * 1024 * 1024
#: What we put in one request: 3.5 MB, well under the 4 MB limit (framing, conditions, estimate error).
MAX_BYTES = 3_500_000
#: Plain-buffer bytes around each cell (tags, lengths, type, checksum, an update's op and timestamp).
CELL_OVERHEAD = 32
ROW_OVERHEAD = 32


def value_bytes(value: Any) -> int:
    """Encoded size of one cell value."""
    if isinstance(value, str):
        return len(value.encode("utf-8"))
    if isinstance(value, bytes | bytearray):
        return len(value)
    return 8  # integers, floats, booleans, INF_MIN/INF_MAX


def cells_bytes(cells: Iterable[Any]) -> int:
    """Size of ``[(name, value[, timestamp])]`` cells, or of bare column names (a delete's)."""
    total = 0
    for cell in cells:
        if isinstance(cell, str):
            total += len(cell.encode("utf-8")) + CELL_OVERHEAD
        else:
            name = cell[0]
            value = cell[1] if len(cell) > 1 else None
            total += len(str(name).encode("utf-8")) + value_bytes(value) + CELL_OVERHEAD
    return total


def row_bytes(primary_key: Sequence[Any], columns: Any = None) -> int:
    """Size of a row: its primary key plus its attribute columns (a list for PutRow, a dict of
    ``{"PUT": [...], "DELETE_ALL": [...]}`` for UpdateRow)."""
    total = ROW_OVERHEAD + cells_bytes(primary_key or [])
    if isinstance(columns, dict):
        for cells in columns.values():
            total += cells_bytes(cells or [])
    elif columns:
        total += cells_bytes(columns)
    return total


def item_bytes(item: Any) -> int:
    """Size of an SDK ``PutRowItem`` / ``UpdateRowItem`` / ``DeleteRowItem``."""
    row = item.row
    return row_bytes(row.primary_key, getattr(row, "attribute_columns", None))


def chunks(
    items: Sequence[T], size_of: Callable[[T], int], max_rows: int = MAX_ROWS, max_bytes: int = MAX_BYTES
) -> Iterator[list[T]]:
    """Consecutive runs of ``items`` of at most ``max_rows`` items and ``max_bytes`` estimated bytes
    (an item larger than ``max_bytes`` alone goes in a run of its own: the service then judges it)."""
    run: list[T] = []
    size = 0
    for item in items:
        n = size_of(item)
        if run and (len(run) >= max_rows or size + n > max_bytes):
            yield run
            run, size = [], 0
        run.append(item)
        size += n
    if run:
        yield run


__all__ = ["LIMIT_BYTES", "MAX_BYTES", "MAX_ROWS", "chunks", "item_bytes", "row_bytes"]
