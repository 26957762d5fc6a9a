"""The documented Tablestore rules the emulator enforces, each strict by default and switchable off by name.

Why a registry: every rule must be traceable to the documentation page it comes from (README.md lists them, a test
checks that table against this registry), and a failing test must be diagnosable by relaxing one rule at a time
(``TablestoreEmulator(relax=[...])`` or ``TABLESTORE_EMULATOR_RELAX=name,name``) without weakening the others.
Relaxing is for diagnosis only: every test starts the emulator strict.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass

#: Environment variable listing rules to relax (comma separated), read when an emulator is constructed.
RELAX_ENV = "TABLESTORE_EMULATOR_RELAX"


@dataclass(frozen=True)
class Rule:
    name: str
    summary: str


RULES: dict[str, Rule] = {
    r.name: r
    for r in (
        Rule("filter_columns_read", "a GetRow/BatchGetRow/GetRange filter sees only the columns it reads"),
        Rule("filter_conditions", "a filter has at most 10 sub-conditions"),
        Rule("get_range_scan", "GetRange scans at most 5,000 rows / 4 MB per call (empty pages with a next key)"),
        Rule("table_not_ready", "a new table answers OTSTableNotReady to row operations for a while"),
        Rule("index_initializing", "a new search index returns nothing until it has initialized"),
        Rule("batch_write_rows", "BatchWriteRow carries at most 200 rows"),
        Rule("write_bytes", "a row write or a BatchWriteRow request carries at most 4 MB"),
        Rule("write_columns", "one row write carries at most 1,024 attribute columns"),
        Rule("batch_get_rows", "BatchGetRow reads at most 100 rows"),
        Rule("attribute_bytes", "an attribute column value is at most 2 MB"),
        Rule("pk_string_bytes", "a string or binary primary-key value is at most 1 KB"),
        Rule("names", "table, index and column names match [A-Za-z_][A-Za-z0-9_]{0,254}"),
        Rule("columns_to_get", "a read asks for at most 128 columns"),
        Rule("search_limit", "Search limit <= 100 with table columns, <= 1,000 with keys or index columns only"),
        Rule("search_offset", "Search offset + limit <= 100,000; deeper pages need next_token"),
        Rule("knn_top_k", "KnnVectorQuery top_k is within [1, 1,000]"),
        Rule("vector_field", "one vector field per index, float32, dimension within [1, 4,096]"),
        Rule("wildcard_pattern", "a wildcard query pattern is at most 32 bytes"),
        Rule("conditions", "row-existence and column conditions fail with OTSConditionCheckFail"),
        Rule("update_table_frequency", "reserved throughput changes at most once per 2 minutes"),
        Rule("table_operations_rate", "an instance serves at most 10 table metadata operations per second"),
    )
}


class Rules:
    """Which rules are enforced; thread-safe so tests may relax one at run time while the server answers."""

    def __init__(self, relax: Iterable[str] = ()) -> None:
        self._lock = threading.Lock()
        self._relaxed: set[str] = set()
        self.relax(*relax)

    @classmethod
    def from_env(cls, relax: Iterable[str] = ()) -> Rules:
        env = [n.strip() for n in os.environ.get(RELAX_ENV, "").split(",") if n.strip()]
        return cls([*relax, *env])

    def relax(self, *names: str) -> None:
        """Switch rules off (diagnosis only). Unknown names fail loudly: a typo must not pass for a relaxed rule."""
        unknown = [n for n in names if n not in RULES]
        if unknown:
            raise ValueError(f"unknown emulator rule(s) {unknown}; known: {sorted(RULES)}")
        with self._lock:
            self._relaxed.update(names)

    def enforce(self, *names: str) -> None:
        with self._lock:
            self._relaxed.difference_update(names)

    def on(self, name: str) -> bool:
        """True when ``name`` is enforced."""
        if name not in RULES:
            raise KeyError(name)
        return name not in self._relaxed

    @property
    def relaxed(self) -> frozenset[str]:
        with self._lock:
            return frozenset(self._relaxed)
