"""Where a copy from the reference records how far it got, so it resumes instead of starting over.

The marker lives beside our memories, not on the machine: a Tablestore deployment keeps it as one row
of our own table in the partition ``#migration`` (no user id can contain ``#``, and the row has no
vector and no text, so no query of ours ever returns it). Local runs and tests use a JSON file.
A finished copy is marked ``done``; a server that finds ``done`` copies nothing, so memories deleted
after the upgrade are never brought back.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from tablestore_openmemory_mcp.migrate.reference import Key

MARKER_PARTITION = "#migration"


@dataclass
class MarkerState:
    """How far a copy got: the last reference key whose page is stored, the counts so far, and done."""

    done: bool = False
    last_key: Key | None = None
    counts: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, raw: str) -> MarkerState:
        data = json.loads(raw)
        last = data.get("last_key")
        return cls(
            done=bool(data.get("done")),
            last_key=(str(last[0]), str(last[1])) if isinstance(last, list | tuple) and len(last) == 2 else None,
            counts={str(k): int(v) for k, v in (data.get("counts") or {}).items()},
        )


class Marker(Protocol):
    def load(self) -> MarkerState | None: ...

    def save(self, state: MarkerState) -> None: ...


class FileMarker:
    """The marker as a JSON file, replaced atomically."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def load(self) -> MarkerState | None:
        try:
            return MarkerState.from_json(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None

    def save(self, state: MarkerState) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        tmp.write_text(state.to_json(), encoding="utf-8")
        os.replace(tmp, self.path)


class TablestoreMarker:
    """The marker as one row ``(#migration, <name>)`` of our memory table (PK ``user_id, memory_id``)."""

    COLUMN = "migration_state"

    def __init__(self, client: Any, table: str, name: str) -> None:
        self.client = client
        self.table = table
        self.name = name

    def _pk(self) -> list[tuple[str, str]]:
        from tablestore_openmemory_mcp.stores.tablestore.maintenance import PK_ID, PK_USER

        return [(PK_USER, MARKER_PARTITION), (PK_ID, self.name)]

    def load(self) -> MarkerState | None:
        _, row, _ = self.client.get_row(self.table, self._pk(), [self.COLUMN], None, 1)
        if row is None:
            return None
        values = {str(c[0]): c[1] for c in row.attribute_columns or []}
        raw = values.get(self.COLUMN)
        return MarkerState.from_json(str(raw)) if raw else None

    def save(self, state: MarkerState) -> None:
        from tablestore import Condition, Row, RowExistenceExpectation

        row = Row(self._pk(), [(self.COLUMN, state.to_json())])
        self.client.put_row(self.table, row, Condition(RowExistenceExpectation.IGNORE))


__all__ = ["MARKER_PARTITION", "FileMarker", "Marker", "MarkerState", "TablestoreMarker"]
