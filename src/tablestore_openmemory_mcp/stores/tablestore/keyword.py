"""Keyword scores without a second Search RPC.

mem0's ``Memory.search`` calls ``store.search(query, ...)`` and right after it
``store.keyword_search(lemmatize_for_bm25(query), ...)`` with the same filters, and only uses
keyword scores of ids already among the semantic candidates. A second Search RPC would double the
latency and cost of every ``search_memories`` for scores mem0 applies to rows we already hold.

So ``search`` stashes its candidates here, keyed by (filters, active scope); a ``keyword_search``
whose query equals the stashed query (or its mem0 lemmatization) and whose filters/scope match takes
them (each stash is used at most once) and scores them locally with BM25 over
``stores.tokenize.tokens``. The stash is process-wide rather than thread-local because
``AsyncMemory`` runs the two calls through ``asyncio.to_thread``, possibly on different threads;
keying by scope keeps one user's candidates from ever answering another user's call, and entries
expire after :data:`TTL` seconds. The stash holds rows already checked against the table; the store
drops deleted or updated ids from it. Anything else falls back to a real MatchQuery Search.
"""

from __future__ import annotations

import json
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


def filters_key(filters: Mapping[str, Any] | None, scope: Mapping[str, Any] | None) -> str:
    """A stable key for a (filters, scope) pair."""
    return json.dumps([filters or {}, scope or {}], sort_keys=True, default=str, ensure_ascii=False)


@dataclass
class _Entry:
    query: str
    rows: list[Found]
    created: float = field(default_factory=time.monotonic)
    lemma: str | None = None


def _lemmatize(text: str) -> str:
    """The keyword query as the repository sends it. It lemmatizes only when spaCy is installed (mem0's BM25
    lemmatizer needs it); a lemmatized query that differs from the stashed one just misses the stash."""
    return text


class CandidateStash:
    """Bounded, thread-safe map of recent search candidates, consumed by keyword_search."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, list[_Entry]] = OrderedDict()

    def put(self, key: str, query: str, rows: Sequence[Found]) -> None:
        with self._lock:
            bucket = self._entries.setdefault(key, [])
            bucket.append(_Entry(query, list(rows)))
            del bucket[:-4]
            self._entries.move_to_end(key)
            while len(self._entries) > _MAX_ENTRIES:
                self._entries.popitem(last=False)

    def take(self, key: str, query: str) -> list[Found] | None:
        """The candidates stashed for ``key`` whose query matches ``query`` (removed), else None."""
        now = time.monotonic()
        with self._lock:
            bucket = self._entries.get(key)
            if not bucket:
                return None
            bucket[:] = [e for e in bucket if now - e.created <= TTL]
            candidates = list(reversed(bucket))
        for entry in candidates:
            if entry.query != query:
                if entry.lemma is None:
                    entry.lemma = _lemmatize(entry.query)
                if entry.lemma != query:
                    continue
            with self._lock:
                bucket = self._entries.get(key) or []
                if entry in bucket:
                    bucket.remove(entry)
                    return entry.rows
        return None

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
