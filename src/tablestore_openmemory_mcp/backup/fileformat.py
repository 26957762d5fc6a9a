"""Backup files: OpenMemory's zip (version 1) and plain JSON Lines, read as a stream, written in one pass.

The zip holds ``memories.json`` (OpenMemory's relational dump: ``user``, ``apps``, ``categories``,
``memories``, ``memory_categories``, ``status_history``, ``access_controls``, ``export_meta`` with
``version: "1"``) and ``memories.jsonl.gz`` (one record per memory, see :mod:`.records`). Reading
prefers the JSON Lines member and falls back to ``memories.json``'s memories, as OpenMemory does.
``.jsonl`` and ``.jsonl.gz`` files hold the records alone.

Nothing is read whole: lines stream out of the gzip member, one record may be at most
:data:`MAX_RECORD_BYTES` (a longer one is a per-record skip), and ``memories.json`` is parsed only
when there are no JSON Lines, up to :data:`MAX_JSON_BYTES`. Damage (a corrupt or foreign zip, a
truncated gzip) raises :class:`BackupFormatError` naming the file and the record.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import tempfile
import zipfile
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from tablestore_openmemory_mcp.errors import UserInputError

JSONL_MEMBER = "memories.jsonl.gz"
JSON_MEMBER = "memories.json"
VERSION = "1"
MAX_RECORD_BYTES = 4 * 1024 * 1024
MAX_JSON_BYTES = 512 * 1024 * 1024
_DAMAGE = (zipfile.BadZipFile, gzip.BadGzipFile, zlib.error, EOFError, OSError, UnicodeDecodeError)


class BackupFormatError(UserInputError):
    """The file is not a backup this server can read, or it is damaged; nothing was imported."""


@dataclass(frozen=True, slots=True)
class Line:
    """One record's raw text (``error`` set when it cannot even be read), with its 1-based number."""

    number: int
    data: Any = None
    error: str | None = None


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


def _lines(stream: IO[bytes], where: str) -> Iterator[Line]:
    number = 0
    try:
        while True:
            raw = stream.readline(MAX_RECORD_BYTES + 1)
            if not raw:
                return
            number += 1
            if len(raw) > MAX_RECORD_BYTES and not raw.endswith(b"\n"):
                while raw and not raw.endswith(b"\n"):  # skip the rest of the oversized line
                    raw = stream.readline(MAX_RECORD_BYTES)
                yield Line(number, error=f"record larger than {MAX_RECORD_BYTES // (1024 * 1024)} MiB")
                continue
            text = raw.strip()
            if not text:
                number -= 1
                continue
            try:
                yield Line(number, json.loads(text))
            except ValueError:
                yield Line(number, error="not valid JSON")
    except _DAMAGE as exc:
        raise BackupFormatError(f"{where} is damaged after record {number}: {exc}") from None


def _from_relational(dump: Mapping[str, Any]) -> Iterator[Line]:
    """OpenMemory's ``memories.json`` memories as records (its fallback when the JSON Lines are missing)."""
    apps = {a.get("id"): a.get("name") for a in dump.get("apps") or [] if isinstance(a, Mapping)}
    cats = {c.get("id"): c.get("name") for c in dump.get("categories") or [] if isinstance(c, Mapping)}
    for number, m in enumerate(dump.get("memories") or [], start=1):
        if not isinstance(m, Mapping):
            yield Line(number, error="not a JSON object")
            continue
        yield Line(
            number,
            {
                "id": m.get("id"),
                "content": m.get("content"),
                "metadata": m.get("metadata") or {},
                "created_at": m.get("created_at"),
                "updated_at": m.get("updated_at"),
                "state": m.get("state"),
                "app": apps.get(m.get("app_id")),
                "categories": [cats[c] for c in m.get("category_ids") or [] if c in cats],
            },
        )


def read_relational(zf: zipfile.ZipFile, member: str, where: str) -> dict[str, Any]:
    info = zf.getinfo(member)
    if info.file_size > MAX_JSON_BYTES:
        raise BackupFormatError(f"{where}: {member} is larger than {MAX_JSON_BYTES // (1024 * 1024)} MiB")
    try:
        dump = json.loads(zf.read(member))
    except _DAMAGE as exc:
        raise BackupFormatError(f"{where}: {member} is damaged: {exc}") from None
    except ValueError:
        raise BackupFormatError(f"{where}: {member} is not valid JSON") from None
    if not isinstance(dump, dict):
        raise BackupFormatError(f"{where}: {member} is not an OpenMemory backup (not an object)")
    version = str((dump.get("export_meta") or {}).get("version") or VERSION)
    if version != VERSION:
        raise BackupFormatError(f"{where}: backup version {version!r} is not supported (only {VERSION!r})")
    return dump


class BackupReader:
    """Records of one backup file; :meth:`lines` may be called more than once (validate, then import)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise BackupFormatError(f"{self.path} is not a file")
        self.kind = kind_of(self.path)
        self.user_id: str | None = None  # memories.json's user, for records without one
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
                # memories.json gives the user (and the version); beside JSON Lines it may be skipped if huge
                if relational is not None and (jsonl is None or zf.getinfo(relational).file_size <= MAX_JSON_BYTES):
                    owner = read_relational(zf, relational, str(self.path)).get("user")
                    user = owner.get("user_id") if isinstance(owner, dict) else None
                    self.user_id = user if isinstance(user, str) and user else None
        except zipfile.BadZipFile as exc:
            raise BackupFormatError(f"{self.path} is not a readable zip file: {exc}") from None

    @contextlib.contextmanager
    def _open(self) -> Iterator[Iterable[Line]]:
        where = str(self.path)
        if self.kind == "gzip":
            with gzip.open(self.path, "rb") as stream:
                yield _lines(stream, where)  # type: ignore[arg-type]
        elif self.kind == "jsonl":
            with open(self.path, "rb") as stream:
                yield _lines(stream, where)
        else:
            try:
                with zipfile.ZipFile(self.path) as zf:
                    names = zf.namelist()
                    jsonl = _member(names, JSONL_MEMBER)
                    if jsonl is None:
                        relational = _member(names, JSON_MEMBER)
                        assert relational is not None
                        yield _from_relational(read_relational(zf, relational, where))
                        return
                    with zf.open(jsonl) as raw, gzip.GzipFile(fileobj=raw, mode="rb") as stream:
                        yield _lines(stream, f"{where}:{jsonl}")  # type: ignore[arg-type]
            except zipfile.BadZipFile as exc:
                raise BackupFormatError(f"{where} is damaged: {exc}") from None

    def lines(self) -> Iterator[Line]:
        with self._open() as lines:
            yield from lines

    def check(self) -> int:
        """Read the whole file once without parsing records: raises on damage, returns the line count."""
        where = str(self.path)
        if self.kind == "zip":
            try:
                with zipfile.ZipFile(self.path) as zf:
                    jsonl = _member(zf.namelist(), JSONL_MEMBER)
                    if jsonl is None:
                        return sum(1 for _ in self.lines())
                    with zf.open(jsonl) as raw, gzip.GzipFile(fileobj=raw, mode="rb") as stream:
                        return _count_lines(stream, f"{where}:{jsonl}")
            except zipfile.BadZipFile as exc:
                raise BackupFormatError(f"{where} is damaged: {exc}") from None
        opener = gzip.open if self.kind == "gzip" else open
        with opener(self.path, "rb") as stream:
            return _count_lines(stream, where)


def _count_lines(stream: IO[bytes] | gzip.GzipFile, where: str) -> int:
    lines = 0
    try:
        while chunk := stream.read(1 << 20):
            lines += chunk.count(b"\n")
    except _DAMAGE as exc:
        raise BackupFormatError(f"{where} is damaged after about {lines} records: {exc}") from None
    return lines


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
        self._lines: IO[bytes] = (
            self._tmp_lines
            if self.kind == "jsonl"
            else gzip.GzipFile(fileobj=self._tmp_lines, mode="wb", compresslevel=1)  # type: ignore[assignment]
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
        now = datetime.now(UTC).isoformat()
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
    "BackupWriter",
    "Line",
    "kind_of",
]
