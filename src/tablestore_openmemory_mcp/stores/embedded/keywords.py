"""Per-scope BM25: statistics kept per scope, scores computed here for the rows that match.

SQLite's ``bm25()`` takes document frequencies and lengths over the whole FTS table, so one user's
scores would depend on (and reveal) other users' texts. Instead every write updates, per scope key
(the user, and the user + client), each term's document frequency and the scope's document count and
total length; a query reads those few numbers and scores its rows in Python (BM25 with
``tokenize.BM25_K1``/``BM25_B``, Lucene's always-positive idf). FTS5 is used only to find which rows
contain a term.

A scope key is ``u\\x1f<user>`` or ``a\\x1f<user>\\x1f<client>``: the two shapes a caller scope has.
"""

from __future__ import annotations

import math
import sqlite3
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

from ..tokenize import BM25_B as B
from ..tokenize import BM25_K1 as K1


def stats_keys(user_id: object, agent_id: object) -> list[str]:
    """The statistics keys a row with this identity counts towards (none without a user)."""
    if not isinstance(user_id, str):
        return []
    keys = [f"u\x1f{user_id}"]
    if isinstance(agent_id, str):
        keys.append(f"a\x1f{user_id}\x1f{agent_id}")
    return keys


def scope_key(scope: Mapping[str, str]) -> str:
    """The statistics key of a caller scope (``{"user_id"}`` or ``{"user_id", "agent_id"}``)."""
    agent = scope.get("agent_id")
    return f"a\x1f{scope['user_id']}\x1f{agent}" if isinstance(agent, str) else f"u\x1f{scope['user_id']}"


def doc_terms(fts_text: str | None) -> list[str]:
    """The tokens of one stored FTS text (already tokenised, space separated), duplicates kept."""
    return fts_text.split() if fts_text else []


class StatsDelta:
    """Changes to keyword statistics made by one transaction, written in one go by :meth:`flush`."""

    def __init__(self) -> None:
        self.df: Counter[tuple[str, str]] = Counter()
        self.docs: Counter[str] = Counter()
        self.tokens: Counter[str] = Counter()

    def add(self, keys: Iterable[str], terms: Sequence[str], sign: int) -> None:
        """Count (``sign=+1``) or uncount (``-1``) one document with ``terms`` under every key."""
        distinct = set(terms)
        for key in keys:
            self.docs[key] += sign
            self.tokens[key] += sign * len(terms)
            for term in distinct:
                self.df[(key, term)] += sign

    def flush(self, conn: sqlite3.Connection, df_table: str, dl_table: str) -> None:
        changed = [(k, t, d) for (k, t), d in self.df.items() if d]
        conn.executemany(
            f"INSERT INTO {df_table} (scope, term, df) VALUES (?, ?, ?) "
            "ON CONFLICT(scope, term) DO UPDATE SET df = df + excluded.df",
            changed,
        )
        gone = [(k, t) for k, t, d in changed if d < 0]
        if gone:
            conn.executemany(f"DELETE FROM {df_table} WHERE scope = ? AND term = ? AND df <= 0", gone)
        dl = [(k, self.docs[k], self.tokens[k]) for k in set(self.docs) | set(self.tokens)]
        conn.executemany(
            f"INSERT INTO {dl_table} (scope, docs, tokens) VALUES (?, ?, ?) ON CONFLICT(scope) "
            "DO UPDATE SET docs = docs + excluded.docs, tokens = tokens + excluded.tokens",
            [row for row in dl if row[1] or row[2]],
        )
        self.df.clear()
        self.docs.clear()
        self.tokens.clear()


class ScopeStats:
    """The numbers BM25 needs for one scope and one query."""

    __slots__ = ("avgdl", "df", "docs")

    def __init__(self, docs: int, tokens: int, df: Mapping[str, int]) -> None:
        self.docs = docs
        self.avgdl = tokens / docs if docs else 0.0
        self.df = dict(df)

    @classmethod
    def read(cls, conn: sqlite3.Connection, df_table: str, dl_table: str, key: str, terms: Sequence[str]) -> ScopeStats:
        row = conn.execute(f"SELECT docs, tokens FROM {dl_table} WHERE scope = ?", (key,)).fetchone()
        docs, tokens = (int(row[0]), int(row[1])) if row else (0, 0)
        df: dict[str, int] = {}
        if docs and terms:
            marks = ",".join("?" * len(terms))
            sql = f"SELECT term, df FROM {df_table} WHERE scope = ? AND term IN ({marks})"
            df = {term: int(count) for term, count in conn.execute(sql, (key, *terms)) if count > 0}
        return cls(docs, tokens, df)

    def idf(self, term: str) -> float:
        n = self.df.get(term, 0)
        return math.log(1.0 + (self.docs - n + 0.5) / (n + 0.5)) if n else 0.0

    def score(self, terms: Sequence[str], doc: Sequence[str]) -> float:
        """BM25 of one document (its token list) for the distinct query ``terms``."""
        if not doc or not self.docs:
            return 0.0
        norm = K1 * (1.0 - B + B * len(doc) / (self.avgdl or 1.0))
        total = 0.0
        for term in terms:
            f = doc.count(term)
            if f:
                total += self.idf(term) * f * (K1 + 1.0) / (f + norm)
        return total
