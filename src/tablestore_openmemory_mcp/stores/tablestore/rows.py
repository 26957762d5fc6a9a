"""Row encoding: validation before any write, payload <-> columns, and decoding SDK row shapes.

Limits (checked before anything is written, so a bad batch writes nothing):

* vector: exactly ``dimension`` finite floats (float32 range);
* memory text (``payload["data"]``): at most 64 KiB of UTF-8;
* whole row (payload JSON + vector text): at most 1 MiB (Tablestore allows 2 MB per cell; the
  margin keeps BatchWriteRow requests, capped at 4 MB, to a useful number of rows);
* the partition key (``user_id``) and the id: at most 1000 bytes each (Tablestore's limit for an
  indexed primary-key string).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tablestore_openmemory_mcp.errors import UserInputError
from tablestore_openmemory_mcp.memory.ports import StoredMemory

from .. import row_format
from .narrowing import narrowing_columns
from .schema import COL_DATA, COL_DAY, COL_PAYLOAD, COL_VECTOR, KEYWORD_COLUMNS, PK_ID, PK_USER

MAX_DATA_BYTES = 64 * 1024
MAX_ROW_BYTES = 1024 * 1024
MAX_KEY_BYTES = 1000
_FLOAT32_MAX = 3.4028234663852886e38

#: Partition used for rows whose payload has no ``user_id`` (agent- or run-only memories).
#: Tablestore rejects empty primary-key strings, so a reserved one-character value is used.
NO_USER = "\x00"


@dataclass(frozen=True)
class EncodedRow:
    """One row ready to write: its primary key, attribute columns and approximate size."""

    user: str
    memory_id: str
    columns: list[tuple[str, str]]
    size: int

    @property
    def primary_key(self) -> list[tuple[str, str]]:
        return [(PK_USER, self.user), (PK_ID, self.memory_id)]


def partition_of(payload: Mapping[str, Any] | None) -> str:
    """The ``user_id`` primary-key value for a payload."""
    user = (payload or {}).get("user_id")
    return user if isinstance(user, str) and user else NO_USER


def encode_vector(vector: Any, dimension: int) -> str:
    """Validate a vector and render it as the JSON float array Tablestore's VECTOR field reads."""
    try:
        values = [float(x) for x in vector]
    except (TypeError, ValueError) as exc:
        raise UserInputError(f"vector must be a sequence of {dimension} numbers: {exc}") from None
    if len(values) != dimension:
        raise UserInputError(
            f"vector has {len(values)} dimensions but the Tablestore index expects {dimension} "
            "(TABLESTORE_VECTOR_DIMENSION)"
        )
    for x in values:
        if not math.isfinite(x) or abs(x) > _FLOAT32_MAX:
            raise UserInputError(f"vector contains a non-finite or out-of-range value ({x!r}); nothing was written")
    # 9 significant digits round-trip float32 exactly and keep rows small.
    return "[" + ",".join(f"{x:.9g}" for x in values) + "]"


def _check_key(kind: str, value: str) -> None:
    if not value:
        raise UserInputError(f"{kind} must not be empty")
    if len(value.encode("utf-8")) > MAX_KEY_BYTES:
        raise UserInputError(f"{kind} is longer than Tablestore's {MAX_KEY_BYTES}-byte key limit")


def payload_columns(payload: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Columns derived from a payload: text, keyword copies and narrowing terms for pushdown, and the full JSON."""
    data = payload.get("data")
    if data is not None and not isinstance(data, str):
        raise UserInputError("payload['data'] (the memory text) must be a string")
    if isinstance(data, str) and len(data.encode("utf-8")) > MAX_DATA_BYTES:
        raise UserInputError(f"memory text is larger than {MAX_DATA_BYTES // 1024} KiB; nothing was written")
    try:
        blob = json.dumps(dict(payload), ensure_ascii=False, default=str)
    except (TypeError, ValueError) as exc:
        raise UserInputError(f"payload is not JSON-serialisable: {exc}") from None
    cols: list[tuple[str, str]] = []
    if isinstance(data, str):
        cols.append((COL_DATA, data))
    for name in KEYWORD_COLUMNS:
        value = payload.get(name)
        # KEYWORD values above 4 KB are rejected by the index; such values stay only in the JSON.
        if isinstance(value, str) and value and len(value.encode("utf-8")) <= 4096:
            cols.append((name, value))
    created = payload.get("created_at")
    if isinstance(created, str) and len(created) >= 10:  # the statistics' day (see schema.COL_DAY)
        cols.append((COL_DAY, created[:10]))
    cols += narrowing_columns(payload)  # event time, category and tag terms for the index (``narrowing``)
    cols.append((COL_PAYLOAD, blob))
    return cols


def encode_row(
    memory_id: Any, vector: Any, payload: Mapping[str, Any] | None, dimension: int, column: str = COL_VECTOR
) -> EncodedRow:
    """Validate and encode one insert; raises ValueError with the reason, before any write."""
    if not isinstance(memory_id, str):
        memory_id = str(memory_id)
    _check_key("memory id", memory_id)
    payload = dict(payload or {})
    user = partition_of(payload)
    _check_key("user_id", user)
    cols = payload_columns(payload)
    cols.append((column, encode_vector(vector, dimension)))
    size = sum(len(v.encode("utf-8")) for _, v in cols)
    if size > MAX_ROW_BYTES:
        raise UserInputError(f"memory row is {size} bytes, above the {MAX_ROW_BYTES // 1024} KiB limit")
    return EncodedRow(user, memory_id, cols, size + len(memory_id) + len(user))


def encode_rows(
    ids: Sequence[Any],
    vectors: Sequence[Any],
    payloads: Sequence[Mapping[str, Any] | None],
    dimension: int,
    column: str = COL_VECTOR,
) -> list[EncodedRow]:
    """Encode a whole insert; the first invalid row aborts everything (nothing written yet)."""
    if not (len(ids) == len(vectors) == len(payloads)):
        raise UserInputError(
            f"insert needs as many ids, vectors and payloads (got {len(ids)}, {len(vectors)}, {len(payloads)})"
        )
    if len(set(map(str, ids))) != len(ids):
        raise UserInputError("insert got the same id twice")
    out = []
    for i, (mid, vec, pl) in enumerate(zip(ids, vectors, payloads, strict=True)):
        try:
            out.append(encode_row(mid, vec, pl, dimension, column))
        except ValueError as exc:
            raise UserInputError(f"memory {i} ({mid}): {exc}") from None
    return out


def batches(rows: Sequence[EncodedRow], max_rows: int = 200, max_bytes: int = 3_500_000) -> Iterable[list[EncodedRow]]:
    """Split rows for BatchWriteRow: <= 200 rows and < 4 MB per request."""
    chunk: list[EncodedRow] = []
    size = 0
    for row in rows:
        if chunk and (len(chunk) >= max_rows or size + row.size > max_bytes):
            yield chunk
            chunk, size = [], 0
        chunk.append(row)
        size += row.size
    if chunk:
        yield chunk


def attr_dict(columns: Iterable[Sequence[Any]] | None) -> dict[str, Any]:
    """Attribute columns as a dict; the SDK yields (name, value) or (name, value, timestamp)."""
    return {c[0]: c[1] for c in columns or []}


def decode_payload(
    pk: Iterable[Sequence[Any]] | None, columns: Iterable[Sequence[Any]] | None
) -> tuple[str, dict[str, Any]]:
    """``(memory_id, payload)`` from a returned row (GetRow, GetRange or Search)."""
    keys = attr_dict(pk)
    attrs = attr_dict(columns)
    memory_id = str(keys.get(PK_ID, attrs.get(PK_ID, "")))
    raw = attrs.get(COL_PAYLOAD)
    payload: dict[str, Any]
    try:
        payload = json.loads(raw) if isinstance(raw, str | bytes | bytearray) else {}
    except ValueError:
        payload = {}
    if not isinstance(payload, dict):
        payload = {}
    if not payload and COL_DATA in attrs:  # a row written by another tool: rebuild what we can
        payload = {k: v for k, v in attrs.items() if k not in (COL_PAYLOAD, COL_VECTOR)}
        user = keys.get(PK_USER)
        if isinstance(user, str) and user != NO_USER:
            payload.setdefault("user_id", user)
    return memory_id, payload


class Found:
    """A row read from the table: its id, its payload (the stored format, :mod:`..row_format`) and a score.

    The memory is made from the payload once, when first asked for (``memory``); the payload stays for what
    only the stored format has (the BM25 text ``text_lemmatized``)."""

    __slots__ = ("_memory", "id", "payload", "score")

    def __init__(self, memory_id: str, payload: dict[str, Any], score: float | None = None) -> None:
        self.id = memory_id
        self.payload = payload
        self.score = score
        self._memory: StoredMemory | None = None

    @property
    def memory(self) -> StoredMemory:
        if self._memory is None:
            self._memory = row_format.to_memory(self.id, self.payload, self.score)
        return self._memory

    def scored(self, score: float | None) -> Found:
        return Found(self.id, self.payload, score)


def decode(raw: tuple[Any, Any] | None, score: float | None = None) -> Found | None:
    """A returned row (primary key, attribute columns) as :class:`Found`; None for a missing row."""
    if raw is None:
        return None
    memory_id, payload = decode_payload(*raw)
    return Found(memory_id, payload, score)
