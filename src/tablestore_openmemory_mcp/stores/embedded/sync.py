"""Filling and refreshing the vector cache from SQLite: load a scope's slab, replay the change log.

Every write transaction bumps the collection's ``generation`` and logs ``(generation, rid)`` for each
row it touched (see :mod:`.schema`). A process whose cache reflects generation ``old`` catches up to
``gen`` by re-reading just the logged rows, provided the log holds every generation in between; a
pruned log, a batch too big to log or a writer from the previous release (no log) mean a reload.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterable

import numpy as np

from ...errors import StoreError
from . import rows as R
from .schema import META, Names
from .vectors import Identity, RowState, Slab

logger = logging.getLogger(__name__)


def generation(conn: sqlite3.Connection, n: Names) -> int | None:
    """The collection's write generation as seen by ``conn``'s transaction (None: no collection)."""
    got = conn.execute(f"SELECT generation FROM {META} WHERE name = ?", (n.name,)).fetchone()
    return int(got[0]) if got else None


def replay(conn: sqlite3.Connection, n: Names, slabs: Iterable[Slab], old: int, gen: int, keep: int) -> bool:
    """Apply the rows logged in generations ``(old, gen]`` to ``slabs``; False when the log is incomplete."""
    if not 0 < gen - old <= keep:
        return gen == old
    span = (old, gen)
    logged = conn.execute(f"SELECT COUNT(DISTINCT gen) FROM {n.log} WHERE gen > ? AND gen <= ?", span).fetchone()[0]
    if logged != gen - old:
        return False
    rids = [int(r) for (r,) in conn.execute(f"SELECT DISTINCT rid FROM {n.log} WHERE gen > ? AND gen <= ?", span)]
    states = {rid: RowState(rid) for rid in rids}  # rows not found were deleted
    for chunk in R.chunks(rids):
        marks = ",".join("?" * len(chunk))
        sql = f"SELECT rid, id, user_id, agent_id, vector FROM {n.table} WHERE rid IN ({marks})"
        for rid, id_, user_id, agent_id, blob in conn.execute(sql, chunk):
            ident = {"user_id": user_id, "agent_id": agent_id}
            states[rid] = RowState(rid, id_, ident, np.frombuffer(blob, dtype=np.float32))
    for slab in slabs:
        for state in states.values():
            slab.apply(state)
    return True


def load_slab(conn: sqlite3.Connection, n: Names, key: Identity, dims: int) -> Slab:
    """Every vector of one identity, read straight into a preallocated matrix (no intermediate copies).

    Call inside a read transaction, so the count and the rows agree.
    """
    where = " AND ".join(f"{k} = ?" for k, _ in key)
    params = [v for _, v in key]
    total = int(conn.execute(f"SELECT COUNT(*) FROM {n.table} WHERE {where}", params).fetchone()[0])
    slab = Slab(key, dims, total + total // 8)
    rows = conn.execute(f"SELECT rows, dims FROM {META} WHERE name = ?", (n.name,)).fetchone()
    if rows and int(rows[1]) != dims:  # re-embedded by `reembed` since this process opened the store
        raise StoreError(
            f"the memory store was re-embedded with {rows[1]}-dimensional vectors (tablestore-openmemory-mcp "
            "reembed); restart the server with the new embedder settings"
        )
    # most of the table: one sequential scan beats an index walk with a random read per row
    hint = " NOT INDEXED" if rows and total * 4 > int(rows[0]) else ""
    for rid, id_, blob in conn.execute(f"SELECT rid, id, vector FROM {n.table}{hint} WHERE {where}", params):
        slab.append_loaded(int(rid), str(id_), np.frombuffer(blob, dtype=np.float32))
    slab.finish_load()
    logger.debug("loaded %d vectors for %s %s", slab.n, n.name, dict(key))
    return slab
