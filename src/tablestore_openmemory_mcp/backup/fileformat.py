"""Backup files: OpenMemory's zip (version 1) and plain JSON Lines, read as a stream, written in one pass.

The zip holds ``memories.json`` (OpenMemory's relational dump: ``user``, ``apps``, ``categories``,
``memories``, ``memory_categories``, ``status_history``, ``access_controls``, ``export_meta`` with
``version: "1"``) and ``memories.jsonl.gz`` (one record per memory, see :mod:`.records`). Reading
prefers the JSON Lines member and falls back to ``memories.json``'s memories, as OpenMemory does.
``.jsonl`` and ``.jsonl.gz`` files hold the records alone.

Nothing is read whole, and every limit of :class:`~.limits.Limits` is checked as the data streams:
unpacked bytes (absolute and as a ratio to the packed bytes: a compression bomb is refused after
64 MiB, not after gigabytes), records, empty lines, one record's length (a longer one is a per-record
skip) and nesting depth (deeper is a per-record skip). ``memories.json`` is parsed only when there
are no JSON Lines, and only up to :data:`MAX_JSON_BYTES`; beside JSON Lines its first 64 KiB are
searched for the user and version, never parsed. A broken limit raises :class:`BackupTooLarge` (HTTP
413); damage (a corrupt or foreign zip, a truncated gzip) raises :class:`BackupFormatError` naming the
file and the record. Either way nothing has been written: the importer reads the file once first.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import re
import tempfile
import zipfile
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any

from tablestore_openmemory_mcp.backup.limits import DEFAULT_LIMITS, CountingReader, Limits, MiB, too_deep
from tablestore_openmemory_mcp.errors import BackupFormatError as BackupFormatError
from tablestore_openmemory_mcp.errors import BackupTooLarge as BackupTooLarge
from tablestore_openmemory_mcp.memory.clock import now_iso

JSONL_MEMBER = "memories.jsonl.gz"
JSON_MEMBER = "memories.json"
VERSION = "1"
MAX_RECORD_BYTES = DEFAULT_LIMITS.line_bytes
MAX_JSON_BYTES = DEFAULT_LIMITS.json_bytes
HEAD_BYTES = 64 * 1024  # of memories.json, searched (not parsed) for its user and version beside JSON Lines
_DAMAGE = (zipfile.BadZipFile, gzip.BadGzipFile, zlib.error, EOFError, OSError, UnicodeDecodeError)
_HEAD_USER = re.compile(rb'"user"\s*:\s*\{(?:[^{}]|\{[^{}]*\})*?"user_id"\s*:\s*("(?:[^"\\]|\\.){1,512}")')
_HEAD_VERSION = re.compile(rb'"export_meta"\s*:\s*\{(?:[^{}]|\{[^{}]*\})*?"version"\s*:\s*"([^"\\]{0,32})"')


@dataclass(frozen=True, slots=True)
class Line:
    """One record's raw text (``error`` set when it cannot even be read), with its 1-based number."""

    number: int
    data: Any = None
    error: str | None = None


@dataclass
class Meter:
    """What one pass has read so far, checked against the limits line by line."""

    limits: Limits
    where: str
    packed: CountingReader | None = None  # the compressed side, for the ratio check
    unpacked: int = 0
    records: int = 0
    blank_lines: int = 0

    def bytes(self, n: int) -> None:
        self.unpacked += n
        lim = self.limits
        if self.unpacked > lim.unpacked_bytes:
            raise BackupTooLarge(
                f"{self.where} unpacks to more than {lim.unpacked_bytes // MiB} MiB; nothing was imported "
                f"(refused after reading {self.unpacked} bytes)"
            )
        packed = self.packed.count if self.packed is not None else None
        if packed is not None and self.unpacked > max(lim.ratio_slack, lim.ratio * packed):
            raise BackupTooLarge(
                f"{self.where} unpacks to more than {lim.ratio} times its packed size (a compression bomb?); "
                f"nothing was imported (refused after reading {self.unpacked} bytes)"
            )

    def record(self) -> None:
        self.records += 1
        if self.records > self.limits.records:
            raise BackupTooLarge(
                f"{self.where} holds more than {self.limits.records} records; split it into smaller files "
                f"(refused after reading {self.unpacked} bytes)"
            )

    def blank(self) -> None:
        self.blank_lines += 1
        if self.blank_lines > self.limits.blank_lines:
            raise BackupTooLarge(
                f"{self.where} has more than {self.limits.blank_lines} empty lines: not a backup; nothing was "
                f"imported (refused after reading {self.unpacked} bytes)"
            )


def kind_of(path: Path) -> str:
    """``zip``, ``gzip`` or ``jsonl``, by the file's first bytes (not its name)."""
    with open(path, "rb") as fh:
        head = fh.read(4)
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return "zip"
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    return "jsonl"


def _member(names: list[str], filename: str) -> str | None:
    for name in names:
        if not name.endswith("/") and name.rsplit("/", 1)[-1] == filename:
            return name
    return None


def _parse(text: bytes, limits: Limits) -> tuple[Any, str | None]:
    """One record's JSON, or why not; nesting deeper than ``limits.depth`` is refused, never a RecursionError."""
    if text.count(b"{") + text.count(b"[") > limits.line_containers:  # counted in C before any parse
        return None, f"more than {limits.line_containers} objects and arrays"
    try:
        data = json.loads(text)
    except RecursionError:
        return None, f"nested deeper than {limits.depth} levels"
    except ValueError:
        return None, "not valid JSON"
    if too_deep(data, limits.depth):
        return None, f"nested deeper than {limits.depth} levels"
    return data, None


def _lines(stream: IO[bytes] | gzip.GzipFile, meter: Meter, *, parse: bool = True) -> Iterator[Line]:
    """Records as they stream; with ``parse=False`` only the limits are checked (the check-first pass)."""
    limit = meter.limits.line_bytes
    number = 0
    try:
        while True:
            raw = stream.readline(limit + 1)
            if not raw:
                return
            meter.bytes(len(raw))
            if len(raw) > limit and not raw.endswith(b"\n"):
                while raw and not raw.endswith(b"\n"):  # skip the rest of the oversized line, a chunk at a time
                    raw = stream.readline(limit)
                    meter.bytes(len(raw))
                number += 1
                meter.record()
                yield Line(number, error=f"record larger than {limit // MiB} MiB")
                continue
            text = raw.strip()
            if not text:
                meter.blank()
                continue
            number += 1
            meter.record()
            if not parse:
                yield Line(number)
                continue
            data, error = _parse(text, meter.limits)
            yield Line(number, data, error)
    except _DAMAGE as exc:
        raise BackupFormatError(f"{meter.where} is damaged after record {number}: {exc}") from None


def _from_relational(dump: Mapping[str, Any]) -> Iterator[Line]:
    """OpenMemory's ``memories.json`` memories as records (its fallback when the JSON Lines are missing)."""
    apps = {_key(a.get("id")): a.get("name") for a in dump.get("apps") or [] if isinstance(a, Mapping)}
    cats = {_key(c.get("id")): c.get("name") for c in dump.get("categories") or [] if isinstance(c, Mapping)}
    memories = dump.get("memories") or []
    for number, m in enumerate(memories if isinstance(memories, list) else [], start=1):
        if not isinstance(m, Mapping):
            yield Line(number, error="not a JSON object")
            continue
        category_ids = m.get("category_ids") or []
        yield Line(
            number,
            {
                "id": m.get("id"),
                "content": m.get("content"),
                "metadata": m.get("metadata") or {},
                "created_at": m.get("created_at"),
                "updated_at": m.get("updated_at"),
                "state": m.get("state"),
                "app": apps.get(_key(m.get("app_id"))),
                "categories": [
                    cats[_key(c)] for c in (category_ids if isinstance(category_ids, list) else []) if _key(c) in cats
                ],
            },
        )


def _key(value: object) -> str | None:
    """An id usable as a dict key (a hostile file may put lists or objects where ids belong)."""
    return value if isinstance(value, str) else None


def read_relational(zf: zipfile.ZipFile, member: str, where: str, limits: Limits = DEFAULT_LIMITS) -> dict[str, Any]:
    """``memories.json`` whole: only read when there are no JSON Lines, and only when small (see limits)."""
    info = zf.getinfo(member)
    too_big = (
        f"{where}: {member} is larger than {limits.json_bytes // MiB} MiB; a backup that big must carry "
        f"{JSONL_MEMBER} (OpenMemory's exports do)"
    )
    if info.file_size > limits.json_bytes:
        raise BackupTooLarge(too_big)
    try:
        with zf.open(member) as fh:
            raw = fh.read(limits.json_bytes + 1)
    except _DAMAGE as exc:
        raise BackupFormatError(f"{where}: {member} is damaged: {exc}") from None
    if len(raw) > limits.json_bytes:
        raise BackupTooLarge(too_big)
    if raw.count(b"{") + raw.count(b"[") > limits.json_containers:
        raise BackupTooLarge(f"{where}: {member} holds more than {limits.json_containers} objects and arrays")
    dump, error = _parse(raw, replace(limits, line_containers=limits.json_containers))
    if error is not None:
        raise BackupFormatError(f"{where}: {member} is {'not valid JSON' if error == 'not valid JSON' else error}")
    if not isinstance(dump, dict):
        raise BackupFormatError(f"{where}: {member} is not an OpenMemory backup (not an object)")
    meta = dump.get("export_meta")
    version = str((meta if isinstance(meta, dict) else {}).get("version") or VERSION)
    if version != VERSION:
        raise BackupFormatError(f"{where}: backup version {version!r} is not supported (only {VERSION!r})")
    return dump


def _head_of_relational(zf: zipfile.ZipFile, member: str, where: str) -> str | None:
    """Beside JSON Lines, ``memories.json`` is not parsed: its first 64 KiB are searched for the backup's
    version (checked) and its user (returned; OpenMemory writes ``user`` first)."""
    try:
        with zf.open(member) as fh:
            head = fh.read(HEAD_BYTES)
    except _DAMAGE as exc:
        raise BackupFormatError(f"{where}: {member} is damaged: {exc}") from None
    version = _HEAD_VERSION.search(head)
    if version is not None and version.group(1).decode("utf-8", "replace") != VERSION:
        shown = version.group(1).decode("utf-8", "replace")
        raise BackupFormatError(f"{where}: backup version {shown!r} is not supported (only {VERSION!r})")
    found = _HEAD_USER.search(head)
    if found is None:
        return None
    try:
        user = json.loads(found.group(1))
    except ValueError:
        return None
    return user if isinstance(user, str) and user else None


class BackupReader:
    """Records of one backup file; :meth:`lines` may be called more than once (validate, then import)."""

    def __init__(self, path: Path | str, limits: Limits = DEFAULT_LIMITS) -> None:
        self.path = Path(path)
        self.limits = limits
        if not self.path.is_file():
            raise BackupFormatError(f"{self.path} is not a file")
        self.kind = kind_of(self.path)
        self.user_id: str | None = None  # memories.json's user, for records without one
        self.meter: Meter | None = None  # the last pass's counts (bytes unpacked, records)
        if self.kind == "zip":
            self._check_zip()
        elif self.path.name.lower().endswith(".zip"):
            raise BackupFormatError(f"{self.path} is named .zip but is not a zip file")
        else:
            self._check_first_line()

    def _check_first_line(self) -> None:
        """A file whose first record is not JSON is not JSON Lines at all (a foreign or binary file)."""
        for line in self.lines():
            if line.error == "not valid JSON":
                raise BackupFormatError(f"{self.path} is not a backup: its first line is not JSON")
            return

    def _check_zip(self) -> None:
        try:
            with zipfile.ZipFile(self.path) as zf:
                names = zf.namelist()
                jsonl, relational = _member(names, JSONL_MEMBER), _member(names, JSON_MEMBER)
                if jsonl is None and relational is None:
                    raise BackupFormatError(
                        f"{self.path} is a zip but not an OpenMemory backup: it has neither {JSONL_MEMBER} "
                        f"nor {JSON_MEMBER}"
                    )
                if jsonl is not None:
                    info = zf.getinfo(jsonl)
                    if info.file_size > self.limits.ratio * info.compress_size + self.limits.ratio_slack:
                        raise BackupTooLarge(
                            f"{self.path}: {jsonl} unpacks to more than {self.limits.ratio} times its packed size "
                            "(a compression bomb?); nothing was imported"
                        )
                if relational is None:
                    return
                if jsonl is None:  # the only member: parsed (small ones only), for its records, user and version
                    owner = read_relational(zf, relational, str(self.path), self.limits).get("user")
                    user = owner.get("user_id") if isinstance(owner, dict) else None
                    self.user_id = user if isinstance(user, str) and user else None
                else:  # never parsed beside JSON Lines
                    self.user_id = _head_of_relational(zf, relational, str(self.path))
        except zipfile.BadZipFile as exc:
            raise BackupFormatError(f"{self.path} is not a readable zip file: {exc}") from None

    @contextlib.contextmanager
    def _open(self, parse: bool) -> Iterator[Iterable[Line]]:
        where = str(self.path)
        if self.kind == "jsonl":
            with open(self.path, "rb") as stream:
                self.meter = Meter(self.limits, where)
                yield _lines(stream, self.meter, parse=parse)
        elif self.kind == "gzip":
            with open(self.path, "rb") as raw:
                packed = CountingReader(raw)
                with gzip.GzipFile(fileobj=packed, mode="rb") as stream:
                    self.meter = Meter(self.limits, where, packed)
                    yield _lines(stream, self.meter, parse=parse)
        else:
            try:
                with zipfile.ZipFile(self.path) as zf:
                    names = zf.namelist()
                    jsonl = _member(names, JSONL_MEMBER)
                    if jsonl is None:
                        relational = _member(names, JSON_MEMBER)
                        assert relational is not None
                        yield _from_relational(read_relational(zf, relational, where, self.limits))
                        return
                    with zf.open(jsonl) as member:
                        packed = CountingReader(member)
                        with gzip.GzipFile(fileobj=packed, mode="rb") as stream:
                            self.meter = Meter(self.limits, f"{where}:{jsonl}", packed)
                            yield _lines(stream, self.meter, parse=parse)
            except zipfile.BadZipFile as exc:
                raise BackupFormatError(f"{where} is damaged: {exc}") from None

    def lines(self) -> Iterator[Line]:
        with self._open(parse=True) as lines:
            yield from lines

    def check(self) -> int:
        """Read the whole file once without parsing records: raises on damage or a broken limit, returns the
        number of records."""
        with self._open(parse=False) as lines:
            return sum(1 for _ in lines)


class BackupWriter:
    """Writes records to ``path``: a zip (OpenMemory layout) unless the name ends in .jsonl or .jsonl.gz.

    Streams to temporary files beside the target and renames at the end, so a failed export never
    leaves a half-written backup under the requested name.
    """

    def __init__(self, path: Path | str, user_id: str) -> None:
        self.path = Path(path)
        self.user_id = user_id
        name = self.path.name.lower()
        self.kind = "jsonl" if name.endswith(".jsonl") else "gzip" if name.endswith(".jsonl.gz") else "zip"
        self.count = 0
        self._apps: set[str] = set()
        self._categories: set[str] = set()
        directory = self.path.parent
        directory.mkdir(parents=True, exist_ok=True)
        self._tmp_lines = tempfile.NamedTemporaryFile(dir=directory, prefix=".export-", delete=False)  # noqa: SIM115  (open across add() calls; close() or abort() ends it)
        self._lines: IO[bytes] | gzip.GzipFile = (
            self._tmp_lines
            if self.kind == "jsonl"
            else gzip.GzipFile(fileobj=self._tmp_lines, mode="wb", compresslevel=1)
        )
        self._tmp_json: IO[str] | None = None
        if self.kind == "zip":
            self._tmp_json = tempfile.NamedTemporaryFile(  # noqa: SIM115  (as above)
                "w", dir=directory, prefix=".export-", suffix=".json", delete=False, encoding="utf-8"
            )
            self._tmp_json.write('{"memories": [')

    def add(self, record: Mapping[str, Any]) -> None:
        self._lines.write(json.dumps(record, ensure_ascii=False).encode("utf-8") + b"\n")
        if self._tmp_json is not None:
            app = record.get("app")
            if app:
                self._apps.add(str(app))
            self._categories.update(str(c) for c in record.get("categories") or [])
            entry = {
                "id": record.get("id"),
                "user_id": self.user_id,
                "app_id": _stable_id("app", app) if app else None,
                "content": record.get("content"),
                "metadata": record.get("metadata") or {},
                "state": record.get("state") or "active",
                "created_at": record.get("created_at"),
                "updated_at": record.get("updated_at"),
                "archived_at": None,
                "deleted_at": None,
                "category_ids": [_stable_id("category", c) for c in record.get("categories") or []],
            }
            self._tmp_json.write(("," if self.count else "") + json.dumps(entry, ensure_ascii=False))
        self.count += 1

    def _finish_json(self) -> None:
        assert self._tmp_json is not None
        now = now_iso()
        rest = {
            "user": {
                "id": _stable_id("user", self.user_id),
                "user_id": self.user_id,
                "name": None,
                "email": None,
                "metadata": {},
                "created_at": None,
                "updated_at": None,
            },
            "apps": [
                {
                    "id": _stable_id("app", a),
                    "owner_id": _stable_id("user", self.user_id),
                    "name": a,
                    "description": None,
                    "metadata": {},
                    "is_active": True,
                    "created_at": None,
                    "updated_at": None,
                }
                for a in sorted(self._apps)
            ],
            "categories": [
                {
                    "id": _stable_id("category", c),
                    "name": c,
                    "description": None,
                    "created_at": None,
                    "updated_at": None,
                }
                for c in sorted(self._categories)
            ],
            "memory_categories": [],
            "status_history": [],
            "access_controls": [],
            "export_meta": {
                "app_id_filter": None,
                "from_date": None,
                "to_date": None,
                "version": VERSION,
                "generated_at": now,
                "generator": "tablestore-openmemory-mcp",
            },
        }
        tail = json.dumps(rest, ensure_ascii=False)
        self._tmp_json.write("], " + tail[1:])
        self._tmp_json.close()

    def close(self) -> Path:
        """Finish the file and move it into place; returns its path."""
        if self._lines is not self._tmp_lines:
            self._lines.close()
        self._tmp_lines.close()
        if self.kind != "zip":
            os.replace(self._tmp_lines.name, self.path)
            return self.path
        self._finish_json()
        assert self._tmp_json is not None
        tmp_zip = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            with zipfile.ZipFile(tmp_zip, "w", compression=zipfile.ZIP_DEFLATED) as zf:
                zf.write(self._tmp_json.name, JSON_MEMBER)
                zf.write(self._tmp_lines.name, JSONL_MEMBER, compress_type=zipfile.ZIP_STORED)  # already gzip
            os.replace(tmp_zip, self.path)
        finally:
            for name in (self._tmp_json.name, self._tmp_lines.name, str(tmp_zip)):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(name)
        return self.path

    def abort(self) -> None:
        """Drop the temporary files (after a failure)."""
        for fh in (self._lines, self._tmp_lines, self._tmp_json):
            if fh is not None:
                with contextlib.suppress(Exception):
                    fh.close()
        for fh in (self._tmp_lines, self._tmp_json):
            if fh is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(fh.name)


def _stable_id(kind: str, name: object) -> str:
    """A UUID derived from a name, so apps and categories keep one id across exports."""
    import uuid

    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"tablestore-openmemory-mcp:{kind}:{name}"))


__all__ = [
    "JSONL_MEMBER",
    "JSON_MEMBER",
    "MAX_RECORD_BYTES",
    "BackupFormatError",
    "BackupReader",
    "BackupTooLarge",
    "BackupWriter",
    "Line",
    "kind_of",
]
