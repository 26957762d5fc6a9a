"""Stored vectors by id, for export: a backup that carries them is imported without embedding anything again.

Why: without them, moving 100k memories to another instance or store embedded every one of them again,
at the embedding service's price and rate. The vector column is the current one (a reembed may have
moved it); the payload is read too, so rows outside the caller's scope are left out like everywhere else.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .rows import MAX_KEY_BYTES, attr_dict, decode
from .schema import COL_PAYLOAD
from .selection import Who

if TYPE_CHECKING:
    from .store import TablestoreStore


def read_vectors(store: TablestoreStore, ids: Sequence[str], who: Who) -> dict[str, list[float]]:
    """``id -> vector`` for the caller's rows that have one; one BatchGetRow per 100 ids."""
    user = who.user
    wanted = [i for i in dict.fromkeys(str(i) for i in ids) if i and len(i.encode("utf-8")) <= MAX_KEY_BYTES]
    column = store.vector_column
    raws = store._batches.get(store.collection_name, [store._pk(user, i) for i in wanted], [COL_PAYLOAD, column])
    out: dict[str, list[float]] = {}
    for raw in raws:
        found = decode(raw)
        if found is None or raw is None or not who.owns(found.memory):
            continue
        encoded = attr_dict(raw[1]).get(column)
        try:
            vector = json.loads(encoded) if isinstance(encoded, str | bytes | bytearray) else None
        except ValueError:
            vector = None
        if isinstance(vector, list) and vector and all(isinstance(x, int | float) for x in vector):
            out[found.id] = [float(x) for x in vector]
    return out
