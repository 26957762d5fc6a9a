"""PlainBuffer codec: the row encoding Tablestore nests inside its protobuf messages.

Why our own decoder: the SDK's reader cannot parse update cells (delete / delete_all / increment
markers) nor INF_MIN/INF_MAX keys, both of which clients send. Why our own encoder: per-cell bytes
and checksums can be cached on the stored row, which keeps large GetRange/Search pages cheap.
The response side never emits TAG_CELL_TYPE: the SDK's reader crashes on it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

HEADER = 0x75
TAG_ROW_PK, TAG_ROW_DATA, TAG_CELL, TAG_CELL_NAME, TAG_CELL_VALUE = 1, 2, 3, 4, 5
TAG_CELL_TYPE, TAG_CELL_TIMESTAMP, TAG_DELETE_ROW_MARKER, TAG_ROW_CHECKSUM, TAG_CELL_CHECKSUM = 6, 7, 8, 9, 10
VT_INTEGER, VT_DOUBLE, VT_BOOLEAN, VT_STRING, VT_NULL, VT_BLOB = 0, 1, 2, 3, 6, 7
VT_INF_MIN, VT_INF_MAX, VT_AUTO_INCREMENT = 9, 10, 11
OP_DELETE_ALL, OP_DELETE_ONE, OP_INCREMENT = 1, 3, 4


class _Sentinel:
    """Special primary-key values (INF_MIN, INF_MAX, AUTO_INCREMENT); compared by identity."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


INF_MIN = _Sentinel("INF_MIN")
INF_MAX = _Sentinel("INF_MAX")
AUTO_INCREMENT = _Sentinel("AUTO_INCREMENT")


class PlainBufferError(ValueError):
    """Malformed PlainBuffer input; the server maps it to OTSParameterInvalid."""


def _make_table() -> list[int]:
    table = []
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
        table.append(crc)
    return table


CRC8_TABLE = _make_table()


def crc8_bytes(crc: int, data: bytes) -> int:
    table = CRC8_TABLE
    for byte in data:
        crc = table[crc ^ byte]
    return crc


def crc8_int(crc: int, value: int, size: int) -> int:
    table = CRC8_TABLE
    for i in range(size):
        crc = table[crc ^ ((value >> (i * 8)) & 0xFF)]
    return crc


@dataclass(slots=True)
class DecodedCell:
    name: str
    value: Any = None
    has_value: bool = False
    op: int | None = None  # None = put, else OP_DELETE_ALL / OP_DELETE_ONE / OP_INCREMENT
    timestamp: int | None = None


@dataclass(slots=True)
class DecodedRow:
    primary_key: list[tuple[str, Any]] = field(default_factory=list)
    cells: list[DecodedCell] = field(default_factory=list)
    delete_marker: bool = False


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = memoryview(data)
        self.pos = 0

    def byte(self) -> int:
        if self.pos >= len(self.data):
            raise PlainBufferError("unexpected end of plain buffer")
        b = self.data[self.pos]
        self.pos += 1
        return b

    def peek(self) -> int | None:
        return self.data[self.pos] if self.pos < len(self.data) else None

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise PlainBufferError("unexpected end of plain buffer")
        out = bytes(self.data[self.pos : self.pos + n])
        self.pos += n
        return out

    def u32(self) -> int:
        return int(struct.unpack("<I", self.take(4))[0])

    def i64(self) -> int:
        return int(struct.unpack("<q", self.take(8))[0])


def _read_variant(r: _Reader, end: int | None = None) -> Any:
    vtype = r.byte()
    if vtype == VT_INTEGER:
        return r.i64()
    if vtype == VT_DOUBLE:
        return float(struct.unpack("<d", r.take(8))[0])
    if vtype == VT_BOOLEAN:
        return r.byte() != 0
    if vtype == VT_STRING:
        try:
            return r.take(r.u32()).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise PlainBufferError("invalid utf-8 string") from exc
    if vtype == VT_BLOB:
        return r.take(r.u32())
    if vtype == VT_INF_MIN:
        return INF_MIN
    if vtype == VT_INF_MAX:
        return INF_MAX
    if vtype == VT_AUTO_INCREMENT:
        return AUTO_INCREMENT
    if vtype == VT_NULL:
        return None
    raise PlainBufferError(f"unsupported variant type {vtype}")


def decode_variant(data: bytes) -> Any:
    """Decode a bare variant (type byte + payload), as used in TermQuery/RangeQuery/filters."""
    return _read_variant(_Reader(data))


def _read_cell(r: _Reader) -> DecodedCell:
    if r.byte() != TAG_CELL_NAME:
        raise PlainBufferError("expected cell name")
    cell = DecodedCell(name=r.take(r.u32()).decode("utf-8"))
    tag = r.byte()
    if tag == TAG_CELL_VALUE:
        size = r.u32()
        start = r.pos
        cell.value = _read_variant(r)
        cell.has_value = True
        if r.pos != start + size:
            raise PlainBufferError("cell value length mismatch")
        tag = r.byte()
    while tag in (TAG_CELL_TYPE, TAG_CELL_TIMESTAMP):
        if tag == TAG_CELL_TYPE:
            cell.op = r.byte()
        else:
            cell.timestamp = r.i64()
        tag = r.byte()
    if tag != TAG_CELL_CHECKSUM:
        raise PlainBufferError("expected cell checksum")
    r.byte()
    return cell


def decode_rows(data: bytes) -> list[DecodedRow]:
    """Decode one or more rows after a single header. Checksums are not verified (the SDK made them)."""
    r = _Reader(data)
    if len(data) < 4 or struct.unpack("<I", r.take(4))[0] != HEADER:
        raise PlainBufferError("invalid plain buffer header")
    rows: list[DecodedRow] = []
    while r.peek() is not None:
        if r.byte() != TAG_ROW_PK:
            raise PlainBufferError("expected row primary key")
        row = DecodedRow()
        tag = r.byte()
        while tag == TAG_CELL:
            cell = _read_cell(r)
            row.primary_key.append((cell.name, cell.value))
            tag = r.byte()
        if tag == TAG_ROW_DATA:
            tag = r.byte()
            while tag == TAG_CELL:
                row.cells.append(_read_cell(r))
                tag = r.byte()
        if tag == TAG_DELETE_ROW_MARKER:
            row.delete_marker = True
            tag = r.byte()
        if tag != TAG_ROW_CHECKSUM:
            raise PlainBufferError("expected row checksum")
        r.byte()
        rows.append(row)
    return rows


def decode_row(data: bytes) -> DecodedRow:
    rows = decode_rows(data)
    if len(rows) != 1:
        raise PlainBufferError("expected exactly one row")
    return rows[0]


def encode_cell(name: str, value: Any, timestamp: int | None, *, primary: bool = False) -> tuple[bytes, int]:
    """Encode one cell (TAG_CELL .. TAG_CELL_CHECKSUM); return its bytes and its checksum."""
    nb = name.encode("utf-8")
    crc = crc8_bytes(0, nb)
    parts = [bytes((TAG_CELL, TAG_CELL_NAME)), struct.pack("<I", len(nb)), nb, bytes((TAG_CELL_VALUE,))]
    if value is INF_MIN or value is INF_MAX:
        vt = VT_INF_MIN if value is INF_MIN else VT_INF_MAX
        parts.append(struct.pack("<IB", 1, vt))
        crc = CRC8_TABLE[crc ^ vt]
    elif isinstance(value, bool):
        parts.append(struct.pack("<IBB", 2, VT_BOOLEAN, 1 if value else 0))
        crc = CRC8_TABLE[CRC8_TABLE[crc ^ VT_BOOLEAN] ^ (1 if value else 0)]
    elif isinstance(value, int):
        parts.append(struct.pack("<IBq", 9, VT_INTEGER, value))
        crc = crc8_int(CRC8_TABLE[crc ^ VT_INTEGER], value, 8)
    elif isinstance(value, float):
        parts.append(struct.pack("<IBd", 9, VT_DOUBLE, value))
        bits = struct.unpack("<q", struct.pack("<d", value))[0]
        crc = crc8_int(CRC8_TABLE[crc ^ VT_DOUBLE], bits, 8)
    elif isinstance(value, (str, bytes, bytearray)):
        vt = VT_STRING if isinstance(value, str) else VT_BLOB
        raw = value.encode("utf-8") if isinstance(value, str) else bytes(value)
        parts.append(struct.pack("<IBI", len(raw) + 5, vt, len(raw)))
        parts.append(raw)
        crc = crc8_bytes(crc8_int(CRC8_TABLE[crc ^ vt], len(raw), 4), raw)
    else:
        raise TypeError(f"cannot encode value of type {type(value).__name__}")
    if timestamp is not None and not primary:
        parts.append(struct.pack("<Bq", TAG_CELL_TIMESTAMP, timestamp))
        crc = crc8_int(crc, timestamp, 8)
    parts.append(bytes((TAG_CELL_CHECKSUM, crc)))
    return b"".join(parts), crc


def encode_row_body(pk_cells: list[tuple[bytes, int]], cells: list[tuple[bytes, int]]) -> bytes:
    """Assemble a row (without the header) from pre-encoded cells."""
    row_crc = 0
    parts = [bytes((TAG_ROW_PK,))]
    for raw, crc in pk_cells:
        parts.append(raw)
        row_crc = CRC8_TABLE[row_crc ^ crc]
    if cells:
        parts.append(bytes((TAG_ROW_DATA,)))
        for raw, crc in cells:
            parts.append(raw)
            row_crc = CRC8_TABLE[row_crc ^ crc]
    row_crc = CRC8_TABLE[row_crc ^ 0]
    parts.append(bytes((TAG_ROW_CHECKSUM, row_crc)))
    return b"".join(parts)


HEADER_BYTES = struct.pack("<I", HEADER)


def encode_rows(bodies: list[bytes]) -> bytes:
    """One header followed by row bodies (GetRange packs many rows this way)."""
    return HEADER_BYTES + b"".join(bodies)


def encode_simple_row(primary_key: list[tuple[str, Any]], columns: list[tuple[str, Any, int | None]]) -> bytes:
    """Convenience: encode a full row with header, no caching."""
    pk = [encode_cell(n, v, None, primary=True) for n, v in primary_key]
    cells = [encode_cell(n, v, ts) for n, v, ts in columns]
    return HEADER_BYTES + encode_row_body(pk, cells)
