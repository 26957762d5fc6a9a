"""Protobuf request handlers: one method per Tablestore API, all run under the store lock.

Every handler takes the raw request body and returns a serialized response, raising OTSError for
service errors. proto2 `required` response fields are always filled (the SDK's parser insists).
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

from tablestore.protobuf import search_pb2 as spb
from tablestore.protobuf import table_store_filter_pb2 as fpb
from tablestore.protobuf import table_store_pb2 as pb

from . import plainbuffer as pbuf
from .errors import OTSError, invalid, table_not_exist
from .search import SearchIndex, SearchPage, run_search
from .store import MAX_WRITE_BYTES, CKey, Store, StoredRow, Table, check_column, cmp_key

MAX_BATCH_WRITE_ROWS = 200
MAX_BATCH_GET_ROWS = 100
MAX_RANGE_ROWS = 5000
MAX_RANGE_BYTES = 4 * 1024 * 1024
MAX_FILTER_CONDITIONS = 10
MAX_COLUMNS_TO_GET = 128
#: Seconds between two reserved-throughput changes of one table (rule update_table_frequency).
THROUGHPUT_CHANGE_INTERVAL = 120.0
MAX_WRITE_COLUMNS = 1024
#: Table metadata operations an instance serves per second (rule table_operations_rate).
MAX_TABLE_OPERATIONS_PER_SECOND = 10
TABLE_OPERATIONS = frozenset({"CreateTable", "ListTable", "DescribeTable", "UpdateTable", "DeleteTable"})


def _now_ms() -> int:
    return int(time.time() * 1000)


def _decode_row(data: bytes) -> pbuf.DecodedRow:
    try:
        return pbuf.decode_row(data)
    except pbuf.PlainBufferError as exc:
        raise invalid(f"Invalid plain buffer: {exc}.") from exc


def _consumed(msg: Any, read: int = 0, write: int = 0) -> None:
    msg.capacity_unit.read = read
    msg.capacity_unit.write = write


def _compare(stored: Any, wanted: Any, comparator: int) -> bool:
    if isinstance(stored, bool) != isinstance(wanted, bool):
        return comparator == fpb.CT_NOT_EQUAL
    try:
        return {
            fpb.CT_EQUAL: lambda: stored == wanted,
            fpb.CT_NOT_EQUAL: lambda: stored != wanted,
            fpb.CT_GREATER_THAN: lambda: stored > wanted,
            fpb.CT_GREATER_EQUAL: lambda: stored >= wanted,
            fpb.CT_LESS_THAN: lambda: stored < wanted,
            fpb.CT_LESS_EQUAL: lambda: stored <= wanted,
        }[comparator]()
    except (TypeError, KeyError):
        return comparator == fpb.CT_NOT_EQUAL


def count_conditions(raw: bytes) -> int:
    """Single-column conditions in a filter tree (what the "at most 10 sub-conditions" rule counts)."""
    flt = fpb.Filter()
    flt.ParseFromString(raw)
    if flt.type != fpb.FT_COMPOSITE_COLUMN_VALUE:
        return 1
    comp = fpb.CompositeColumnValueFilter()
    comp.ParseFromString(flt.filter)
    return sum(count_conditions(sub.SerializeToString()) for sub in comp.sub_filters)


def compile_filter(raw: bytes, readable: frozenset[str] | None = None) -> Callable[[StoredRow | None], bool]:
    """A column filter (SingleColumnValueFilter / CompositeColumnValueFilter) as a row predicate.

    Parsed once per request: a GetRange evaluates it on every row of the range. ``readable``: the columns the
    read returns (None = all); a column outside it is missing to the filter, as on the service.
    """
    flt = fpb.Filter()
    flt.ParseFromString(raw)
    if flt.type == fpb.FT_SINGLE_COLUMN_VALUE:
        single = fpb.SingleColumnValueFilter()
        single.ParseFromString(flt.filter)
        name, comparator, if_missing = single.column_name, single.comparator, single.filter_if_missing
        wanted = None if comparator in (fpb.CT_EXIST, fpb.CT_NOT_EXIST) else pbuf.decode_variant(single.column_value)

        def single_passes(row: StoredRow | None) -> bool:
            columns = row.columns if row is not None else {}
            if name not in columns or (readable is not None and name not in readable):
                if comparator == fpb.CT_NOT_EXIST:
                    return True
                return comparator != fpb.CT_EXIST and not if_missing
            if comparator in (fpb.CT_EXIST, fpb.CT_NOT_EXIST):
                return comparator == fpb.CT_EXIST
            return _compare(columns[name][0], wanted, comparator)

        return single_passes
    if flt.type == fpb.FT_COMPOSITE_COLUMN_VALUE:
        comp = fpb.CompositeColumnValueFilter()
        comp.ParseFromString(flt.filter)
        subs = [compile_filter(sub.SerializeToString(), readable) for sub in comp.sub_filters]
        combinator = comp.combinator

        def composite_passes(row: StoredRow | None) -> bool:
            if combinator == fpb.LO_NOT:
                return not subs[0](row) if subs else True
            results = (sub(row) for sub in subs)
            return all(results) if combinator == fpb.LO_AND else any(results)

        return composite_passes
    raise invalid("Unsupported filter type.")


def filter_passes(raw: bytes, row: StoredRow | None) -> bool:
    """Evaluate a column filter on one row."""
    return compile_filter(raw)(row)


class Api:
    def __init__(self, store: Store) -> None:
        self.store = store
        #: Rows read per table (benchmarks): (Batch)GetRow rows, GetRange rows scanned, Search rows.
        self.rows_read: Counter[str] = Counter()
        self.handlers: dict[str, Callable[[bytes], bytes]] = {name: getattr(self, name) for name in API_NAMES}
        self._table_operations: deque[float] = deque()  # monotonic times of the last second's table operations

    def dispatch(self, api: str, body: bytes) -> bytes:
        handler = self.handlers.get(api)
        if handler is None:
            raise OTSError("OTSUnsupportOperation", f"API {api} is not supported by the emulator.")
        with self.store.lock:
            if api in TABLE_OPERATIONS and self._on("table_operations_rate"):
                self._count_table_operation()
            return handler(body)

    def _count_table_operation(self) -> None:
        now = time.monotonic()
        while self._table_operations and now - self._table_operations[0] >= 1.0:
            self._table_operations.popleft()
        if len(self._table_operations) >= MAX_TABLE_OPERATIONS_PER_SECOND:
            raise OTSError("OTSQuotaExhausted", "Too frequent table operations.")
        self._table_operations.append(now)

    def _on(self, rule: str) -> bool:
        return self.store.rules.on(rule)

    def _read_filter(self, raw: bytes, columns: list[str]) -> Callable[[StoredRow | None], bool] | None:
        """A read's filter, under the filter rules: at most 10 conditions, and it sees only the columns read."""
        if not raw:
            return None
        if self._on("filter_conditions") and count_conditions(raw) > MAX_FILTER_CONDITIONS:
            raise invalid(f"The number of filter conditions exceeds the limit: {MAX_FILTER_CONDITIONS}.")
        readable = frozenset(columns) if columns and self._on("filter_columns_read") else None
        return compile_filter(raw, readable)

    def _check_columns_to_get(self, columns: list[str]) -> None:
        if len(columns) > MAX_COLUMNS_TO_GET and self._on("columns_to_get"):
            raise invalid(f"The number of columns to get exceeds the limit: {MAX_COLUMNS_TO_GET}.")

    @staticmethod
    def _parse(cls: type, body: bytes) -> Any:
        msg = cls()
        try:
            msg.ParseFromString(body)
        except Exception as exc:
            raise invalid(f"Failed to parse {cls.__name__}: {exc}") from exc
        return msg

    # ---- table management ---------------------------------------------------------------
    def CreateTable(self, body: bytes) -> bytes:
        req = self._parse(pb.CreateTableRequest, body)
        meta, opts = req.table_meta, req.table_options
        table = Table(
            name=meta.table_name,
            pk_schema=[
                (p.name, p.type, p.HasField("option") and p.option == pb.AUTO_INCREMENT) for p in meta.primary_key
            ],
            defined_columns=[(d.name, d.type) for d in meta.defined_column],
            time_to_live=opts.time_to_live if opts.HasField("time_to_live") else -1,
            max_versions=opts.max_versions if opts.HasField("max_versions") else 1,
            deviation=opts.deviation_cell_version_in_sec if opts.HasField("deviation_cell_version_in_sec") else 86400,
            allow_update=opts.allow_update if opts.HasField("allow_update") else True,
            read_cu=req.reserved_throughput.capacity_unit.read,
            write_cu=req.reserved_throughput.capacity_unit.write,
        )
        self.store.add_table(table)
        return pb.CreateTableResponse().SerializeToString()

    def ListTable(self, body: bytes) -> bytes:
        resp = pb.ListTableResponse()
        resp.table_names.extend(sorted(self.store.tables))
        return resp.SerializeToString()

    def DeleteTable(self, body: bytes) -> bytes:
        req = self._parse(pb.DeleteTableRequest, body)
        self.store.get_table(req.table_name)
        del self.store.tables[req.table_name]
        return pb.DeleteTableResponse().SerializeToString()

    def _fill_options(self, table: Table, opts: Any, rtd: Any) -> None:
        opts.time_to_live = table.time_to_live
        opts.max_versions = table.max_versions
        opts.deviation_cell_version_in_sec = table.deviation
        opts.allow_update = table.allow_update
        rtd.capacity_unit.read = table.read_cu
        rtd.capacity_unit.write = table.write_cu
        rtd.last_increase_time = int(table.created)

    def DescribeTable(self, body: bytes) -> bytes:
        req = self._parse(pb.DescribeTableRequest, body)
        table = self.store.get_table(req.table_name)
        resp = pb.DescribeTableResponse()
        resp.table_meta.table_name = table.name
        for name, ptype, auto in table.pk_schema:
            p = resp.table_meta.primary_key.add(name=name, type=ptype)
            if auto:
                p.option = pb.AUTO_INCREMENT
        for name, ctype in table.defined_columns:
            resp.table_meta.defined_column.add(name=name, type=ctype)
        self._fill_options(table, resp.table_options, resp.reserved_throughput_details)
        return resp.SerializeToString()

    def UpdateTable(self, body: bytes) -> bytes:
        req = self._parse(pb.UpdateTableRequest, body)
        table = self.store.get_table(req.table_name)
        if req.HasField("table_options"):
            o = req.table_options
            if o.HasField("time_to_live"):
                table.time_to_live = o.time_to_live
            if o.HasField("max_versions"):
                table.max_versions = o.max_versions
            if o.HasField("deviation_cell_version_in_sec"):
                table.deviation = o.deviation_cell_version_in_sec
            if o.HasField("allow_update"):
                table.allow_update = o.allow_update
        if req.HasField("reserved_throughput"):
            now = time.monotonic()
            last = table.throughput_changed_at
            if last is not None and now - last < THROUGHPUT_CHANGE_INTERVAL and self._on("update_table_frequency"):
                raise OTSError(
                    "OTSTooFrequentReservedThroughputAdjustment", "Reserved throughput adjustment is too frequent."
                )
            table.throughput_changed_at = now
            cu = req.reserved_throughput.capacity_unit
            table.read_cu = cu.read if cu.HasField("read") else table.read_cu
            table.write_cu = cu.write if cu.HasField("write") else table.write_cu
        resp = pb.UpdateTableResponse()
        self._fill_options(table, resp.table_options, resp.reserved_throughput_details)
        return resp.SerializeToString()

    # ---- single-row operations --------------------------------------------------------------
    def _check_condition(self, table: Table, key: CKey, cond: Any) -> None:
        column_condition = cond.column_condition if cond.HasField("column_condition") else b""
        # "You can specify up to 10 column-based conditions for a conditional update."
        too_many = column_condition and count_conditions(column_condition) > MAX_FILTER_CONDITIONS
        if too_many and self._on("filter_conditions"):
            raise invalid(f"The number of column conditions exceeds the limit: {MAX_FILTER_CONDITIONS}.")
        if not self._on("conditions"):
            return
        exists = key in table.rows
        if cond.row_existence == pb.EXPECT_EXIST and not exists:
            raise OTSError("OTSConditionCheckFail", "Condition check failed.")
        if cond.row_existence == pb.EXPECT_NOT_EXIST and exists:
            raise OTSError("OTSConditionCheckFail", "Condition check failed.")
        if column_condition and not filter_passes(column_condition, table.rows.get(key)):
            raise OTSError("OTSConditionCheckFail", "Condition check failed.")

    def _put(self, table: Table, raw: bytes, cond: Any) -> StoredRow:
        row = _decode_row(raw)
        pk = self.store.check_pk(table, row.primary_key, allow_auto=True)
        key = cmp_key([v for _, v in pk])
        self._check_write_columns(len(row.cells))
        self._check_condition(table, key, cond)
        now_ms = _now_ms()
        columns: dict[str, tuple[Any, int]] = {}
        for cell in row.cells:
            if not cell.has_value or cell.op is not None:
                raise invalid(f"PutRow column '{cell.name}' must carry a value.")
            check_column(cell.name, cell.value, self.store.rules)
            columns[cell.name] = (cell.value, cell.timestamp if cell.timestamp is not None else now_ms)
        stored = StoredRow(key, pk, columns, time.time())
        self.store.commit(table, key, stored, time.monotonic())
        return stored

    def _update(self, table: Table, raw: bytes, cond: Any) -> StoredRow:
        row = _decode_row(raw)
        pk = self.store.check_pk(table, row.primary_key)
        key = cmp_key([v for _, v in pk])
        self._check_write_columns(len(row.cells))
        self._check_condition(table, key, cond)
        old = table.rows.get(key)
        columns = dict(old.columns) if old is not None else {}
        now_ms = _now_ms()
        for cell in row.cells:
            check_column(cell.name, cell.value, self.store.rules)
            if cell.op is None:
                if not cell.has_value:
                    raise invalid(f"UpdateRow PUT column '{cell.name}' must carry a value.")
                columns[cell.name] = (cell.value, cell.timestamp if cell.timestamp is not None else now_ms)
            elif cell.op == pbuf.OP_DELETE_ALL:
                columns.pop(cell.name, None)
            elif cell.op == pbuf.OP_DELETE_ONE:
                cur = columns.get(cell.name)
                if cur is not None and (cell.timestamp is None or cur[1] == cell.timestamp):
                    del columns[cell.name]
            elif cell.op == pbuf.OP_INCREMENT:
                cur_value = columns.get(cell.name, (0, 0))[0]
                if not isinstance(cell.value, int) or not isinstance(cur_value, int):
                    raise invalid(f"Increment on column '{cell.name}' requires integer values.")
                columns[cell.name] = (cur_value + cell.value, now_ms)
            else:
                raise invalid(f"Unknown cell operation {cell.op}.")
        stored = StoredRow(key, pk, columns, time.time())
        self.store.commit(table, key, stored, time.monotonic())
        return stored

    def _delete(self, table: Table, raw: bytes, cond: Any) -> StoredRow:
        row = _decode_row(raw)
        pk = self.store.check_pk(table, row.primary_key)
        key = cmp_key([v for _, v in pk])
        self._check_condition(table, key, cond)
        if key in table.rows:
            self.store.commit(table, key, None, time.monotonic())
        return StoredRow(key, pk, {})

    @staticmethod
    def _returned(resp: Any, stored: StoredRow, req: Any) -> None:
        if req.HasField("return_content") and req.return_content.return_type == pb.RT_PK:
            resp.row = pbuf.HEADER_BYTES + stored.encode_pk_only()

    def _check_write_columns(self, count: int) -> None:
        if count > MAX_WRITE_COLUMNS and self._on("write_columns"):
            raise invalid(f"The number of attribute columns in one row write exceeds the limit: {MAX_WRITE_COLUMNS}.")

    def _check_write_size(self, size: int) -> None:
        if size > MAX_WRITE_BYTES and self._on("write_bytes"):
            raise invalid(f"The total data size of the request exceeds the limit: {MAX_WRITE_BYTES} bytes.")

    def PutRow(self, body: bytes) -> bytes:
        req = self._parse(pb.PutRowRequest, body)
        self._check_write_size(len(req.row))
        stored = self._put(self.store.ready_table(req.table_name), req.row, req.condition)
        resp = pb.PutRowResponse()
        _consumed(resp.consumed, write=1)
        self._returned(resp, stored, req)
        return resp.SerializeToString()

    def UpdateRow(self, body: bytes) -> bytes:
        req = self._parse(pb.UpdateRowRequest, body)
        self._check_write_size(len(req.row_change))
        stored = self._update(self.store.ready_table(req.table_name), req.row_change, req.condition)
        resp = pb.UpdateRowResponse()
        _consumed(resp.consumed, write=1)
        self._returned(resp, stored, req)
        return resp.SerializeToString()

    def DeleteRow(self, body: bytes) -> bytes:
        req = self._parse(pb.DeleteRowRequest, body)
        stored = self._delete(self.store.ready_table(req.table_name), req.primary_key, req.condition)
        resp = pb.DeleteRowResponse()
        _consumed(resp.consumed, write=1)
        self._returned(resp, stored, req)
        return resp.SerializeToString()

    def _read_row(
        self, table: Table, raw_pk: bytes, columns: list[str], passes: Callable[[StoredRow | None], bool] | None
    ) -> bytes:
        pk = self.store.check_pk(table, _decode_row(raw_pk).primary_key)
        stored = table.rows.get(cmp_key([v for _, v in pk]))
        self.rows_read[table.name] += stored is not None
        if stored is None or (passes is not None and not passes(stored)):
            return b""
        return pbuf.HEADER_BYTES + stored.encode_body(columns or None)

    def GetRow(self, body: bytes) -> bytes:
        req = self._parse(pb.GetRowRequest, body)
        table = self.store.ready_table(req.table_name)
        columns = list(req.columns_to_get)
        self._check_columns_to_get(columns)
        passes = self._read_filter(req.filter, columns)
        resp = pb.GetRowResponse()
        _consumed(resp.consumed, read=1)
        resp.row = self._read_row(table, req.primary_key, columns, passes)
        return resp.SerializeToString()

    def BatchGetRow(self, body: bytes) -> bytes:
        req = self._parse(pb.BatchGetRowRequest, body)
        total = sum(len(t.primary_key) for t in req.tables)
        if total > MAX_BATCH_GET_ROWS and self._on("batch_get_rows"):
            raise invalid(f"Rows count exceeds the upper limit: {MAX_BATCH_GET_ROWS}.")
        resp = pb.BatchGetRowResponse()
        for treq in req.tables:
            tresp = resp.tables.add(table_name=treq.table_name)
            table = self.store.tables.get(treq.table_name)
            columns = list(treq.columns_to_get)
            self._check_columns_to_get(columns)
            passes = self._read_filter(treq.filter, columns)
            for raw in treq.primary_key:
                item = tresp.rows.add(is_ok=True)
                try:
                    if table is None:
                        raise table_not_exist()
                    self.store.check_ready(table)
                    item.row = self._read_row(table, raw, columns, passes)
                    _consumed(item.consumed, read=1)
                except OTSError as exc:
                    item.is_ok = False
                    item.error.code, item.error.message = exc.code, exc.message
        return resp.SerializeToString()

    def BatchWriteRow(self, body: bytes) -> bytes:
        req = self._parse(pb.BatchWriteRowRequest, body)
        total = sum(len(t.rows) for t in req.tables)
        if total > MAX_BATCH_WRITE_ROWS and self._on("batch_write_rows"):
            raise invalid(f"Rows count exceeds the upper limit: {MAX_BATCH_WRITE_ROWS}.")
        self._check_write_size(sum(len(r.row_change) for t in req.tables for r in t.rows))
        for treq in req.tables:  # duplicated rows fail the whole request, like the service
            pks = [_decode_row(r.row_change).primary_key for r in treq.rows]
            keys = [repr(pk) for pk in pks if not any(v is pbuf.AUTO_INCREMENT for _, v in pk)]
            if len(set(keys)) != len(keys):
                raise invalid("The input parameter is invalid: duplicated primary key in one BatchWriteRow.")
        resp = pb.BatchWriteRowResponse()
        ops = {pb.PUT: self._put, pb.UPDATE: self._update, pb.DELETE: self._delete}
        for treq in req.tables:
            tresp = resp.tables.add(table_name=treq.table_name)
            table = self.store.tables.get(treq.table_name)
            for rreq in treq.rows:
                item = tresp.rows.add(is_ok=True)
                try:
                    if table is None:
                        raise table_not_exist()
                    self.store.check_ready(table)
                    stored = ops[rreq.type](table, rreq.row_change, rreq.condition)
                    _consumed(item.consumed, write=1)
                    self._returned(item, stored, rreq)
                except OTSError as exc:
                    item.is_ok = False
                    item.error.code, item.error.message = exc.code, exc.message
        return resp.SerializeToString()

    def GetRange(self, body: bytes) -> bytes:
        req = self._parse(pb.GetRangeRequest, body)
        table = self.store.ready_table(req.table_name)
        start_pk = self.store.check_pk(table, _decode_row(req.inclusive_start_primary_key).primary_key, allow_inf=True)
        end_pk = self.store.check_pk(table, _decode_row(req.exclusive_end_primary_key).primary_key, allow_inf=True)
        start, end = cmp_key([v for _, v in start_pk]), cmp_key([v for _, v in end_pk])
        forward = req.direction == pb.FORWARD
        if (forward and start > end) or (not forward and start < end):
            raise invalid(
                "The start primary key must be less than the end primary key in FORWARD direction, "
                "and greater in BACKWARD direction."
            )
        if req.HasField("limit") and req.limit <= 0:
            raise invalid("The limit must be greater than 0.")
        limit = min(req.limit if req.HasField("limit") else MAX_RANGE_ROWS, MAX_RANGE_ROWS)
        lo, hi = self.store.range_keys(table, start, end, forward)
        keys = table.keys[lo:hi] if forward else table.keys[lo:hi][::-1]
        self._check_columns_to_get(list(req.columns_to_get))
        columns = list(req.columns_to_get) or None
        passes = self._read_filter(req.filter, list(req.columns_to_get))
        # The service scans at most 5,000 rows / 4 MB per call, whether or not the filter keeps them: a filtered
        # page can be empty and still carry a next key. Relaxed, only the rows returned count.
        scan_cap = self._on("get_range_scan")
        bodies: list[bytes] = []
        size = scanned = scanned_bytes = 0
        next_key: CKey | None = None
        for key in keys:
            if len(bodies) >= limit or size >= MAX_RANGE_BYTES:
                next_key = key
                break
            if scan_cap and (scanned >= MAX_RANGE_ROWS or scanned_bytes >= MAX_RANGE_BYTES):
                next_key = key
                break
            stored = table.rows[key]
            self.rows_read[table.name] += 1
            scanned += 1
            if scan_cap:
                scanned_bytes += stored.size()
            if passes is not None and not passes(stored):
                continue
            row_body = stored.encode_body(columns)
            bodies.append(row_body)
            size += len(row_body)
        resp = pb.GetRangeResponse()
        _consumed(resp.consumed, read=max(1, len(bodies)))
        resp.rows = pbuf.encode_rows(bodies) if bodies else b""
        if next_key is not None:
            resp.next_start_primary_key = pbuf.HEADER_BYTES + table.rows[next_key].encode_pk_only()
        return resp.SerializeToString()

    # ---- search indexes -----------------------------------------------------------------------
    def _index(self, table_name: str, index_name: str) -> tuple[Table, SearchIndex]:
        table = self.store.get_table(table_name)
        index = table.indexes.get(index_name)
        if index is None:
            raise OTSError("OTSObjectNotExist", f"[table_name:{table_name}, index_name:{index_name}] does not exist.")
        return table, index

    def CreateSearchIndex(self, body: bytes) -> bytes:
        req = self._parse(spb.CreateSearchIndexRequest, body)
        table = self.store.get_table(req.table_name)
        self.store.check_name(req.index_name, "index")
        if req.index_name in table.indexes:
            raise OTSError(
                "OTSObjectAlreadyExist",
                f"[table_name:{req.table_name}, index_name:{req.index_name}] already exists.",
            )
        index = SearchIndex(
            table.name,
            req.index_name,
            req.schema,
            req.time_to_live if req.HasField("time_to_live") else -1,
            self.store.rules,
        )
        index.ready_at = time.monotonic() + self.store.index_ready_seconds
        self.store.advance(table, time.monotonic())
        for row in table.visible.values():
            index.upsert(row)
        table.indexes[req.index_name] = index
        return spb.CreateSearchIndexResponse().SerializeToString()

    def ListSearchIndex(self, body: bytes) -> bytes:
        req = self._parse(spb.ListSearchIndexRequest, body)
        resp = spb.ListSearchIndexResponse()
        tables = [self.store.get_table(req.table_name)] if req.table_name else list(self.store.tables.values())
        for table in tables:
            for name in sorted(table.indexes):
                resp.indices.add(table_name=table.name, index_name=name)
        return resp.SerializeToString()

    def DescribeSearchIndex(self, body: bytes) -> bytes:
        req = self._parse(spb.DescribeSearchIndexRequest, body)
        _, index = self._index(req.table_name, req.index_name)
        resp = spb.DescribeSearchIndexResponse()
        resp.schema.CopyFrom(index.schema)
        resp.sync_stat.sync_phase = spb.FULL if self._initializing(index) else spb.INCR
        resp.sync_stat.current_sync_timestamp = int(time.time() * 1_000_000)
        resp.create_time = index.create_time
        resp.time_to_live = index.ttl
        return resp.SerializeToString()

    def UpdateSearchIndex(self, body: bytes) -> bytes:
        req = self._parse(spb.UpdateSearchIndexRequest, body)
        _, index = self._index(req.table_name, req.index_name)
        if req.HasField("time_to_live"):
            index.ttl = req.time_to_live
        return spb.UpdateSearchIndexResponse().SerializeToString()

    def DeleteSearchIndex(self, body: bytes) -> bytes:
        req = self._parse(spb.DeleteSearchIndexRequest, body)
        table, _ = self._index(req.table_name, req.index_name)
        del table.indexes[req.index_name]
        return spb.DeleteSearchIndexResponse().SerializeToString()

    def _initializing(self, index: SearchIndex) -> bool:
        return self._on("index_initializing") and time.monotonic() < index.ready_at

    def Search(self, body: bytes) -> bytes:
        req = self._parse(spb.SearchRequest, body)
        table, index = self._index(req.table_name, req.index_name)
        self.store.advance(table, time.monotonic())
        page = run_search(index, req)
        if self._initializing(index):  # the request is checked, but the index has no rows to give yet
            page = SearchPage(rows=[], scores=[], total=0 if page.total >= 0 else -1)
        self.rows_read[table.name] += len(page.rows)
        resp = spb.SearchResponse(total_hits=page.total, is_all_succeed=True)
        resp.rows.extend(page.rows)
        for score in page.scores:
            resp.search_hits.add(score=score)
        if page.next_token:
            resp.next_token = page.next_token
        for name, data in page.extra.items():  # aggregations (aggregations.py)
            setattr(resp, name, data)
        return resp.SerializeToString()


API_NAMES = (
    "CreateTable",
    "ListTable",
    "DeleteTable",
    "DescribeTable",
    "UpdateTable",
    "PutRow",
    "GetRow",
    "UpdateRow",
    "DeleteRow",
    "BatchGetRow",
    "BatchWriteRow",
    "GetRange",
    "CreateSearchIndex",
    "ListSearchIndex",
    "DescribeSearchIndex",
    "UpdateSearchIndex",
    "DeleteSearchIndex",
    "Search",
)
