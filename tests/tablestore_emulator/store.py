"""In-memory tables, rows and search-index visibility, guarded by one lock.

Why one lock: every API call is short (KNN over 10k rows is a numpy matmul), so a single RLock keeps
the semantics obvious (each request is atomic, like a single-row transaction on the real service)
while the SDK hammers the server from many threads.
Rows are immutable snapshots: a write replaces the StoredRow, so search indexes can keep the old
version visible until `index_delay` has passed, while GetRow/GetRange read the newest one.
"""

from __future__ import annotations

import bisect
import re
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import plainbuffer as pbuf
from .errors import OTSError, invalid, table_not_exist
from .rules import Rules

if TYPE_CHECKING:
    from .search import SearchIndex

NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")
MAX_COLUMN_VALUE_BYTES = 2 * 1024 * 1024
MAX_PK_VALUE_BYTES = 1024
MAX_WRITE_BYTES = 4 * 1024 * 1024
PK_INTEGER, PK_STRING, PK_BINARY = 1, 2, 3
_PK_PY_TYPES: dict[int, tuple[type, ...]] = {PK_INTEGER: (int,), PK_STRING: (str,), PK_BINARY: (bytes,)}

CKey = tuple[tuple[int, Any], ...]


def cmp_key(values: list[Any]) -> CKey:
    """Comparable key; INF_MIN/INF_MAX sort below/above any real value of the column."""
    out = []
    for v in values:
        if v is pbuf.INF_MIN:
            out.append((0, 0))
        elif v is pbuf.INF_MAX:
            out.append((2, 0))
        else:
            out.append((1, v))
    return tuple(out)


def value_size(value: Any) -> int:
    if isinstance(value, str):
        return len(value.encode("utf-8"))
    if isinstance(value, (bytes, bytearray)):
        return len(value)
    return 8


@dataclass(slots=True, eq=False)
class StoredRow:
    """One immutable row version. Encoded cells are cached because rows are re-read far more than written."""

    key: CKey
    primary_key: list[tuple[str, Any]]
    columns: dict[str, tuple[Any, int]]  # name -> (value, timestamp ms)
    written_at: float = 0.0
    _pk_cells: list[tuple[bytes, int]] | None = None
    _cells: dict[tuple[str, bool], tuple[bytes, int]] = field(default_factory=dict)
    index_cache: dict[str, Any] = field(default_factory=dict)  # parsed field values per index

    def pk_cells(self) -> list[tuple[bytes, int]]:
        if self._pk_cells is None:
            self._pk_cells = [pbuf.encode_cell(n, v, None, primary=True) for n, v in self.primary_key]
        return self._pk_cells

    def encode_body(self, columns: list[str] | None, *, with_timestamps: bool = True) -> bytes:
        """Row body (no header) with the chosen columns (None = all, sorted by name like the service)."""
        names = sorted(self.columns) if columns is None else [c for c in columns if c in self.columns]
        cells = []
        for name in names:
            ck = (name, with_timestamps)
            enc = self._cells.get(ck)
            if enc is None:
                value, ts = self.columns[name]
                enc = pbuf.encode_cell(name, value, ts if with_timestamps else None)
                self._cells[ck] = enc
            cells.append(enc)
        return pbuf.encode_row_body(self.pk_cells(), cells)

    def encode_pk_only(self) -> bytes:
        return pbuf.encode_row_body(self.pk_cells(), [])

    def size(self) -> int:
        return sum(value_size(v) for _, v in self.primary_key) + sum(
            len(n) + value_size(v) for n, (v, _) in self.columns.items()
        )


@dataclass
class Table:
    name: str
    pk_schema: list[tuple[str, int, bool]]  # (name, pb PrimaryKeyType, auto_increment)
    defined_columns: list[tuple[str, int]]
    time_to_live: int = -1
    max_versions: int = 1
    deviation: int = 86400
    allow_update: bool = True
    read_cu: int = 0
    write_cu: int = 0
    created: float = field(default_factory=time.time)
    rows: dict[CKey, StoredRow] = field(default_factory=dict)
    keys: list[CKey] = field(default_factory=list)
    indexes: dict[str, SearchIndex] = field(default_factory=dict)
    visible: dict[CKey, StoredRow] = field(default_factory=dict)
    pending: deque[tuple[float, CKey, StoredRow | None]] = field(default_factory=deque)
    last_visible_at: float = 0.0
    autoinc: int = 0
    ready_at: float = 0.0  # monotonic time from which row operations are served (rule table_not_ready)
    throughput_changed_at: float | None = None  # monotonic time of the last reserved-throughput change


class Store:
    """All tables of one emulated instance."""

    def __init__(self, rules: Rules | None = None) -> None:
        self.lock = threading.RLock()
        self.tables: dict[str, Table] = {}
        self.index_delay: float = 0.0
        self.rules = rules if rules is not None else Rules()
        #: Seconds a new table answers OTSTableNotReady to row operations (rule table_not_ready).
        self.table_ready_seconds: float = 0.0
        #: Seconds a new search index stays in its FULL sync phase, answering no rows (rule index_initializing).
        self.index_ready_seconds: float = 0.0

    # ---- tables -------------------------------------------------------------------------
    def check_name(self, name: str, what: str = "table") -> None:
        if not name or (self.rules.on("names") and not NAME_RE.match(name)):
            raise invalid(f"Invalid {what} name: '{name}'.")

    def get_table(self, name: str) -> Table:
        table = self.tables.get(name)
        if table is None:
            raise table_not_exist()
        return table

    def ready_table(self, name: str) -> Table:
        """The table, for a row operation: a table younger than table_ready_seconds is not served yet."""
        table = self.get_table(name)
        self.check_ready(table)
        return table

    def check_ready(self, table: Table) -> None:
        if self.rules.on("table_not_ready") and time.monotonic() < table.ready_at:
            raise OTSError("OTSTableNotReady", "The table is not ready.")

    def add_table(self, table: Table) -> None:
        self.check_name(table.name)
        if table.name in self.tables:
            raise OTSError("OTSObjectAlreadyExist", "Requested table already exists.")
        table.ready_at = time.monotonic() + self.table_ready_seconds
        if not 1 <= len(table.pk_schema) <= 4:
            raise invalid("The number of primary key columns must be in range: [1, 4].")
        seen: set[str] = set()
        for name, pk_type, _ in table.pk_schema:
            self.check_name(name, "primary key column")
            if pk_type not in _PK_PY_TYPES:
                raise invalid(f"Unsupported primary key type of column '{name}'.")
            if name in seen:
                raise invalid(f"Duplicated primary key name: '{name}'.")
            seen.add(name)
        self.tables[table.name] = table

    # ---- primary keys --------------------------------------------------------------------
    def check_pk(
        self, table: Table, pk: list[tuple[str, Any]], *, allow_inf: bool = False, allow_auto: bool = False
    ) -> list[tuple[str, Any]]:
        if len(pk) != len(table.pk_schema):
            raise invalid(f"Validate PK size fail. Input: {len(pk)}, Meta: {len(table.pk_schema)}.")
        out = []
        for (name, value), (sname, stype, auto) in zip(pk, table.pk_schema, strict=True):
            if name != sname:
                raise invalid(f"Validate PK name fail. Input: {name}, Meta: {sname}.")
            if value is pbuf.INF_MIN or value is pbuf.INF_MAX:
                if not allow_inf:
                    raise invalid("INF_MIN or INF_MAX is not allowed in a row's primary key.")
            elif value is pbuf.AUTO_INCREMENT:
                if not (allow_auto and auto):
                    raise invalid(f"Column '{name}' is not an auto-increment primary key column.")
                table.autoinc += 1
                value = int(time.time() * 1_000_000) * 1000 + table.autoinc % 1000
            elif not isinstance(value, _PK_PY_TYPES[stype]) or isinstance(value, bool):
                raise invalid(f"Validate PK type fail. Input: {type(value).__name__}, Meta: {stype}.")
            elif value_size(value) > MAX_PK_VALUE_BYTES and self.rules.on("pk_string_bytes"):
                raise invalid(f"The length of primary key column: '{name}' exceeds the MaxLength:1024.")
            out.append((name, value))
        return out

    # ---- writes and index visibility --------------------------------------------------------
    def commit(self, table: Table, key: CKey, row: StoredRow | None, now: float) -> None:
        """Make a write current for reads now, and for search indexes after index_delay."""
        if row is None:
            if table.rows.pop(key, None) is not None:
                i = bisect.bisect_left(table.keys, key)
                del table.keys[i]
        else:
            if key not in table.rows:
                bisect.insort(table.keys, key)
            table.rows[key] = row
        visible_at = max(now + self.index_delay, table.last_visible_at)
        table.last_visible_at = visible_at
        if visible_at <= now and not table.pending:
            self._apply(table, key, row)
        else:
            table.pending.append((visible_at, key, row))

    def advance(self, table: Table, now: float) -> None:
        """Apply every write whose index delay has elapsed."""
        while table.pending and table.pending[0][0] <= now:
            _, key, row = table.pending.popleft()
            self._apply(table, key, row)

    @staticmethod
    def _apply(table: Table, key: CKey, row: StoredRow | None) -> None:
        if row is None:
            table.visible.pop(key, None)
            for index in table.indexes.values():
                index.remove(key)
        else:
            table.visible[key] = row
            for index in table.indexes.values():
                index.upsert(row)

    # ---- range reads ------------------------------------------------------------------------
    def range_keys(self, table: Table, start: CKey, end: CKey, forward: bool) -> tuple[int, int]:
        """Indices into table.keys for [start, end) forward or (end, start] backward."""
        if forward:
            return bisect.bisect_left(table.keys, start), bisect.bisect_left(table.keys, end)
        return bisect.bisect_right(table.keys, end), bisect.bisect_right(table.keys, start)


def check_column(name: str, value: Any, rules: Rules) -> None:
    if not name or (rules.on("names") and not NAME_RE.match(name)):
        raise invalid(f"Invalid column name: '{name}'.")
    if value is not None and value_size(value) > MAX_COLUMN_VALUE_BYTES and rules.on("attribute_bytes"):
        raise invalid(
            f"The length of attribute column: '{name}' exceeds the MaxLength:{MAX_COLUMN_VALUE_BYTES} "
            f"with CurrentLength:{value_size(value)}."
        )
