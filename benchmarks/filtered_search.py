"""Filtered search on the embedded store: pushed into SQL vs checked row by row.

``python -m benchmarks.filtered_search [--sizes 1k,10k] [--dims 384]`` seeds one user with N memories (1% tagged
``project=apollo`` and in category ``work``, the rest ``project=zeus``) and prints, per filter, the median
time of a ``nearest`` (limit 10) and the payload rows it read and vectors it scored, for the store's narrowed
``nearest`` and for the filter checked row by row (:meth:`MemoryQuery.accepts`) on unnarrowed ``nearest``
reads, widened fourfold until 10 rows pass: what the store did before the pushdown (then in one scoring pass;
here each widening scores again). Seeded; in process; nothing leaves the temporary directory.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from collections.abc import Callable

from tablestore_openmemory_mcp.memory.ports import StoredMemory
from tablestore_openmemory_mcp.memory.query_filters import EVERYTHING, MemoryQuery, build_query
from tablestore_openmemory_mcp.memory.store_port import NewRow
from tablestore_openmemory_mcp.scope import Scope
from tablestore_openmemory_mcp.stores import row_format
from tablestore_openmemory_mcp.stores.embedded import EmbeddedStore

SCOPE = Scope("bench", "alice", shared=True)
ACTIVE = ("active",)
STAMP = "2026-01-01T00:00:00.{i:06d}+00:00"


def seed(store: EmbeddedStore, n: int, dims: int) -> None:
    rng = random.Random(23)
    rows = []
    for i in range(n):
        special = i % 100 == 7
        text = f"memory number {i}"
        stamp = STAMP.format(i=i)
        memory = StoredMemory(
            id=f"m{i:07d}",
            text=text,
            user_id=SCOPE.user_id,
            client="bench",
            created_at=stamp,
            updated_at=stamp,
            hash=row_format.text_hash(text),
            categories=("work",) if special else (),
            metadata={"metadata": {"project": "apollo" if special else "zeus"}},
        )
        rows.append(NewRow(memory, [rng.gauss(0, 1) for _ in range(dims)]))
    for start in range(0, n, 1000):
        store.put(SCOPE, rows[start : start + 1000])


def row_by_row(store: EmbeddedStore, vector: list[float], query: MemoryQuery, limit: int = 10) -> list[StoredMemory]:
    """The ``limit`` nearest rows that pass ``query``, checked one by one on unnarrowed reads."""
    want = limit
    while True:
        found = store.nearest(SCOPE, vector, want, states=ACTIVE, query=EVERYTHING)
        passed = [m for m in found if query.accepts(m)]
        if len(passed) >= limit or len(found) < want:
            return passed[:limit]
        want *= 4


def measure(store: EmbeddedStore, fn: Callable[[list[float]], object], dims: int) -> tuple[float, float, float]:
    rng = random.Random(5)
    probes = [[rng.gauss(0, 1) for _ in range(dims)] for _ in range(30)]
    fn(probes[0])  # warm the vector cache
    store.reads.clear()
    times = []
    for probe in probes:
        start = time.perf_counter()
        fn(probe)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), store.reads["rows"] / len(probes), store.reads["vectors"] / len(probes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1k,10k")
    parser.add_argument("--dims", type=int, default=384)
    args = parser.parse_args()
    filters: dict[str, MemoryQuery] = {
        "tag 1%": build_query(metadata={"project": "apollo"}),
        "category 1%": MemoryQuery(category="work"),
        "tag 99%": build_query(metadata={"project": "zeus"}),
        "none": MemoryQuery(),
    }
    print("| memories | filter | pushed down: ms / rows read / vectors scored | row by row: ms / rows / vectors |")
    print("|---:|---|---|---|")
    for size in args.sizes.split(","):
        n = int(size.lower().replace("k", "000"))
        with tempfile.TemporaryDirectory() as tmp:
            store = EmbeddedStore("bench", path=tmp, embedding_model_dims=args.dims)
            try:
                seed(store, n, args.dims)
                newest = build_query(metadata={"project": "zeus"}, since=STAMP.format(i=n - n // 100))
                for name, query in {**filters, "tag 99% + since (newest 1%)": newest}.items():
                    native = measure(
                        store, lambda v, q=query, s=store: s.nearest(SCOPE, v, 10, states=ACTIVE, query=q), args.dims
                    )
                    by_row = measure(store, lambda v, q=query, s=store: row_by_row(s, v, q), args.dims)
                    cells = [f"{ms:.2f} / {rows:.0f} / {vecs:.0f}" for ms, rows, vecs in (native, by_row)]
                    print(f"| {n:,} | {name} | {cells[0]} | {cells[1]} |")
            finally:
                store.close()


if __name__ == "__main__":
    main()
