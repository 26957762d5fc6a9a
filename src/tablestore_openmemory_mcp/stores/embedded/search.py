"""Ranking in the embedded store: which rows a search reads, in which order, and when it stops.

Why apart from the store: the store owns the file (transactions, the vector cache, SQL); this module owns
the walk. Both searches score first from what is at hand (cached vectors; FTS text and per-scope BM25
statistics), then read payloads best first in batches until ``limit`` rows pass the typed check
(:class:`.rows.Visible`: a row read after its selection may have changed since), so a search reads about
``limit`` rows, not the scope.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from ...memory.ports import StoredMemory
from ...memory.store_port import KeywordHit
from .keywords import ScopeStats, doc_terms
from .rows import Row, Visible, scope_terms
from .schema import Names
from .vectors import F32, Snapshot, dot, dot_at

#: Payload rows by rowid (missing: deleted since); the store counts what it reads.
ReadRows = Callable[[Sequence[int]], dict[int, Row]]

_PRUNE_MIN_ROWS = 1000


def nearest_all(
    snap: Snapshot, q: F32, visible: Visible, limit: int, read: ReadRows, reads: Counter[str]
) -> list[StoredMemory]:
    """Score the whole slab; read payloads best first until ``limit`` rows pass ``visible``."""
    n = len(snap.mat)
    alive = n - len(snap.dead)
    if alive <= 0:
        return []
    scores = dot(snap.mat, q)
    reads["vectors"] += n
    if len(snap.dead):
        scores[snap.dead] = -np.inf
    want = min(limit, alive)
    # A little slack for rows deleted since the snapshot or filtered out (a state filter rarely
    # drops any); when too few pass, the candidate set grows fourfold and only new rows are read.
    m = min(n, want + max(16, want // 4))
    out: list[StoredMemory] = []
    done = 0
    seen: set[int] = set()
    while True:
        if m < n:
            top = np.argpartition(-scores, m - 1)[:m]
            order = top[np.argsort(-scores[top], kind="stable")]
        else:
            order = np.argsort(-scores, kind="stable")
        batch = [int(i) for i in order[done:] if int(i) not in seen and scores[i] > -np.inf]
        seen.update(batch)
        done = len(order)
        rows = read([snap.rids[i] for i in batch])
        for i in batch:
            row = rows.get(snap.rids[i])
            memory = visible(row, max(0.0, float(scores[i]))) if row is not None else None
            if memory is None:
                continue  # deleted or moved since the snapshot, or filtered out
            out.append(memory)
            if len(out) >= want:
                return out
        if m >= n:
            return out
        m = min(n, 4 * m)


def nearest_among(
    snap: Snapshot, q: F32, visible: Visible, limit: int, read: ReadRows, reads: Counter[str]
) -> list[StoredMemory]:
    """Score the snapshot's selected positions only; read payloads best first until ``limit`` pass ``visible``."""
    only = snap.only if snap.only is not None else np.empty(0, dtype=np.intp)
    scores = dot_at(snap.mat, q, only)
    reads["vectors"] += len(only)
    order = np.argsort(-scores, kind="stable")
    out: list[StoredMemory] = []
    step = limit + max(16, limit // 4)
    for start in range(0, len(order), step):
        batch = [int(i) for i in order[start : start + step]]
        rows = read([snap.rids[only[i]] for i in batch])
        for i in batch:
            row = rows.get(snap.rids[only[i]])
            memory = visible(row, max(0.0, float(scores[i]))) if row is not None else None
            if memory is None:
                continue  # deleted or changed since the selection
            out.append(memory)
            if len(out) >= limit:
                return out
    return out


def keyword_matches(
    conn: sqlite3.Connection,
    n: Names,
    who: Mapping[str, str],
    terms: Sequence[str],
    stats: ScopeStats,
    limit: int,
    narrowed: tuple[str, Sequence[Any]] | None,
    visible: Visible,
    read: ReadRows,
) -> list[KeywordHit]:
    """Score every row of the scope's identity that FTS5 says contains a query term, from its FTS text
    alone; then read rows best first until ``limit`` pass ``visible``. ``narrowed`` (a WHERE clause on
    the memory table and its values) limits the matches to the rows it selects."""
    match_terms = list(terms)
    if stats.docs >= _PRUNE_MIN_ROWS:
        # a term in more than half the scope's rows barely moves BM25 but would make us score them all
        match_terms = [t for t in terms if stats.df[t] * 2 <= stats.docs]
    if not match_terms:
        return []
    match = "text : (" + " OR ".join('"' + t.replace('"', '""') + '"' for t in match_terms) + ")"
    for term in scope_terms(who):
        match += f' AND scope : "{term}"'
    sql, values = f"SELECT rowid, text FROM {n.fts} WHERE {n.fts} MATCH ?", [match]
    if narrowed is not None:
        sql += f" AND rowid IN (SELECT rid FROM {n.table}{narrowed[0]})"
        values += narrowed[1]
    ranked = [
        (score, int(rid))
        for rid, text in conn.execute(sql, values)
        if (score := stats.score(terms, doc_terms(text))) > 0
    ]
    ranked.sort(key=lambda sr: (-sr[0], sr[1]))
    found: list[KeywordHit] = []
    step = max(2 * limit, 64)
    for start in range(0, len(ranked), step):
        batch = ranked[start : start + step]
        rows = read([rid for _, rid in batch])
        for score, rid in batch:
            row = rows.get(rid)
            if row is not None and visible(row) is not None:  # also catches hash collisions
                found.append(KeywordHit(row.id, score))
        if len(found) >= limit:
            break
    return best(found, limit)


def best(hits: list[KeywordHit], limit: int) -> list[KeywordHit]:
    """The ``limit`` best hits with a positive score, ties by id."""
    return sorted((hit for hit in hits if hit.score > 0), key=lambda hit: (-hit.score, hit.memory_id))[:limit]
