"""Keyword scores without a second Search RPC.

The repository's hybrid search calls ``nearest`` and right after it ``keyword_hits`` with the same
selection and the nearest rows' ids as ``candidates``: a second Search RPC plus a re-read would double the
latency and cost of every ``search_memories`` for scores given to rows we already hold.

So ``nearest`` stashes its rows here, keyed by its selection (scope, states, query); a ``keyword_hits`` of
the same selection takes the candidates it holds (ids it lacks cost one BatchGetRow) and scores them locally
with BM25 over ``stores.tokenize.tokens``. The stash is process-wide rather than thread-local because the
two calls may run on different threads (``asyncio.to_thread``); keying by the selection keeps one user's
rows from ever answering another user's call, and entries expire after :data:`TTL` seconds. The stash
holds rows already checked against the table; the store drops deleted or updated ids from it.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..tokenize import BM25_B as _B
from ..tokenize import BM25_K1 as _K1
from ..tokenize import tokens
from .rows import Found

TTL = 30.0
_MAX_ENTRIES = 256


@dataclass
class _Entry:
    rows: list[Found]
    created: float = field(default_factory=time.monotonic)


class CandidateStash:
    """Bounded, thread-safe map of recent search rows, read by keyword_hits."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, list[_Entry]] = OrderedDict()

    def put(self, key: str, rows: Sequence[Found]) -> None:
        with self._lock:
            bucket = self._entries.setdefault(key, [])
            bucket.append(_Entry(list(rows)))
            del bucket[:-4]
            self._entries.move_to_end(key)
            while len(self._entries) > _MAX_ENTRIES:
                self._entries.popitem(last=False)

    def rows(self, key: str) -> dict[str, Found]:
        """Every unexpired candidate stashed for ``key`` by id (not consumed), newest search winning."""
        now = time.monotonic()
        out: dict[str, Found] = {}
        with self._lock:
            for entry in self._entries.get(key) or []:
                if now - entry.created <= TTL:
                    out.update((row.id, row) for row in entry.rows)
        return out

    def forget(self, ids: set[str]) -> None:
        """Drop rows that were deleted or changed, so no stash answers with them."""
        with self._lock:
            for bucket in self._entries.values():
                for entry in bucket:
                    entry.rows = [row for row in entry.rows if row.id not in ids]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


def _doc_tokens(payload: Mapping[str, Any] | None) -> list[str]:
    payload = payload or {}
    parts = [payload.get("data"), payload.get("text_lemmatized")]
    out: list[str] = []
    for part in parts:
        if isinstance(part, str) and part:
            out.extend(t.lower() for t in tokens(part))
    return out


def bm25(query: str, rows: Sequence[Found], top_k: int) -> list[Found]:
    """Okapi BM25 of ``query`` over the candidate rows; rows with no matching term are dropped."""
    q_terms = list(dict.fromkeys(t.lower() for t in tokens(query or "")))
    if not q_terms or not rows:
        return []
    docs = [Counter(_doc_tokens(r.payload)) for r in rows]
    lengths = [sum(d.values()) for d in docs]
    avg = (sum(lengths) / len(lengths)) or 1.0
    n = len(docs)
    idf = {}
    for t in q_terms:
        df = sum(1 for d in docs if t in d)
        idf[t] = math.log(1 + (n - df + 0.5) / (df + 0.5))
    scored = []
    for row, doc, length in zip(rows, docs, lengths, strict=True):
        score = 0.0
        for t in q_terms:
            tf = doc.get(t, 0)
            if tf:
                score += idf[t] * tf * (_K1 + 1) / (tf + _K1 * (1 - _B + _B * length / avg))
        if score > 0:
            scored.append(row.scored(score))
    scored.sort(key=lambda r: r.score or 0.0, reverse=True)
    return scored[:top_k]
