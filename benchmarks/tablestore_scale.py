"""Tablestore at scale: ``python -m benchmarks.tablestore_scale [--scales 1000,10000,100000]``.

For one user with 1k, 10k and 100k memories (three clients, four states, 90 days) on the Tablestore
emulator: RPCs and rows read per operation of the repository and the owner's REST view, the way the
server calls them (in process, no MCP or HTTP in between):

* add (one memory, infer=false path: insert with a dedup key + history), search (top 10),
* ``list_memories`` first page with its total (100), REST browse first page (20, newest first),
* REST apps, REST stats, and export of the first 1,000 memories (with vectors and history);
* narrowed: search (top 10) for a tag only 5 memories have, the least similar of all to the query, ``list_memories``
  with that tag, REST browse by category and event time ("found": how many came back; 5 is right).

"Rows read" = rows the emulator read for the call: GetRow/BatchGetRow rows, every row a GetRange scanned
(filtered out or not, as the service meters it) and every row Search returned; aggregations read none.
Seeding writes rows straight into the emulator (the same columns the store writes, dedup rows and an ADD
event per memory), so 100k rows take seconds, not the LLM flow.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
from tests.tablestore_emulator import TablestoreEmulator
from tests.tablestore_emulator.store import StoredRow, cmp_key

from tablestore_openmemory_mcp.backup.exporter import export_backup
from tablestore_openmemory_mcp.memory.admin import Admin, BrowseRequest
from tablestore_openmemory_mcp.memory.ports import HistoryRecord, NewMemory, Origin, StoredMemory
from tablestore_openmemory_mcp.memory.query_filters import build_query
from tablestore_openmemory_mcp.repository import StoreRepository
from tablestore_openmemory_mcp.scope import Scope
from tablestore_openmemory_mcp.stores.history_events import columns_of, event_ids
from tablestore_openmemory_mcp.stores.row_format import dedup_key, text_hash, to_payload
from tablestore_openmemory_mcp.stores.tablestore import TablestoreStore
from tablestore_openmemory_mcp.stores.tablestore.history import TablestoreHistoryLog, history_table_name
from tablestore_openmemory_mcp.stores.tablestore.rows import encode_rows
from tablestore_openmemory_mcp.stores.tablestore.schema import COL_DEDUP, COL_TARGET, DEDUP_SUFFIX

TABLE = "mem0"
DIMS = 384
CLIENTS = ("cursor", "claude", "cline")
STATES = ("active",) * 17 + ("paused", "archived", "deleted")
DAYS = 90
INDEX_DELAY = 1.0
RARE = 5
RARE_FIELDS = {"metadata": {"project": "apollo"}, "event_time": "2020-06-01T00:00:00.000000+00:00"}
RUNS = {"filtered": 3, "add": 10, "search": 5, "list": 3, "browse": 3, "apps": 2, "stats": 2, "export": 1}
EXPORT_ROWS = 1000
WORDS = [
    "tea",
    "coffee",
    "hiking",
    "python",
    "rust",
    "jazz",
    "piano",
    "hangzhou",
    "beijing",
    "bank",
    "startup",
    "cat",
    "dog",
    "garden",
    "chess",
]
ORIGIN = Origin(source="mcp")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def sentence(rng: random.Random, i: int) -> str:
    a, b, c = rng.sample(WORDS, 3)
    return f"Memory {i}: the user likes {a} and {b}, especially {c} on weekends"


def unit_vectors(count: int, seed: int) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((count, DIMS)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


class Meter:
    """RPCs per API and rows read, from the emulator's own counters."""

    def __init__(self, emulator: TablestoreEmulator) -> None:
        self.emulator = emulator

    def reset(self) -> None:
        self.emulator.reset_counts()
        rows = getattr(self.emulator.api, "rows_read", None)
        if rows is not None:
            rows.clear()

    def read(self) -> tuple[Counter[str], int]:
        rows = getattr(self.emulator.api, "rows_read", None)
        return Counter(self.emulator.counts), (sum(rows.values()) if rows is not None else -1)


def rare_ids(count: int) -> list[int]:
    """The memories a filtered search or list looks for: 5, spread over the range, all active."""
    step = count // RARE
    return [k * step + 1 for k in range(RARE)]


def seed(emulator: TablestoreEmulator, user: str, count: int, rng_seed: int, far: np.ndarray) -> None:
    """``count`` memories of ``user`` written straight into the emulator: rows, dedup rows, history.

    :func:`rare_ids` are tagged ``project=apollo``, in category ``rare`` and happened in 2020 (event time); their
    vector is ``far``, the opposite of the filtered search's query: the least similar rows of all."""
    rng = random.Random(rng_seed)
    vectors = unit_vectors(count, rng_seed)
    rare = set(rare_ids(count))
    for i in rare:
        vectors[i] = far
    start = datetime(2026, 1, 1, tzinfo=UTC)
    store = emulator.store
    now = time.monotonic()
    table = store.get_table(TABLE)
    history = store.get_table(history_table_name(TABLE))
    for lo in range(0, count, 5000):
        hi = min(count, lo + 5000)
        memories: list[StoredMemory] = []
        for i in range(lo, hi):
            text = sentence(rng, i)
            at = (start + timedelta(seconds=int(i * DAYS * 86400 / count))).isoformat()
            memories.append(
                StoredMemory(
                    id=f"m{i:07d}",
                    text=text,
                    user_id=user,
                    client=CLIENTS[i % len(CLIENTS)],
                    created_at=at,
                    updated_at=at,
                    hash=text_hash(text),
                    state=STATES[i % len(STATES)],  # type: ignore[arg-type]
                    metadata={"role": "user", **(RARE_FIELDS if i in rare else {})},
                    categories=("rare",) if i in rare else (),
                )
            )
        payloads = [to_payload(m) for m in memories]
        encoded = encode_rows([m.id for m in memories], vectors[lo:hi].tolist(), payloads, DIMS)
        ms = int(time.time() * 1000)
        with store.lock:
            for m, row in zip(memories, encoded, strict=True):
                columns = {name: (value, ms) for name, value in row.columns}
                key = None
                if m.state == "active":
                    key = dedup_key(Scope(m.client or "rest", user), m.hash)
                    columns[COL_DEDUP] = (key, ms)
                    pk = [("user_id", user + DEDUP_SUFFIX), ("memory_id", key)]
                    ck = cmp_key([v for _, v in pk])
                    store.commit(table, ck, StoredRow(ck, pk, {COL_TARGET: (m.id, ms)}, time.time()), now)
                pk = [("user_id", user), ("memory_id", m.id)]
                ck = cmp_key([v for _, v in pk])
                store.commit(table, ck, StoredRow(ck, pk, columns, time.time()), now)
                record = HistoryRecord(m.id, "ADD", None, m.text, m.created_at, client=m.client)
                (event,) = event_ids([record])
                hpk = [("user_id", user), ("memory_id", m.id), ("event_id", event)]
                hk = cmp_key([v for _, v in hpk])
                hcols = {n: (v, ms) for n, v in columns_of(record)}
                store.commit(history, hk, StoredRow(hk, hpk, hcols, time.time()), now)


class _Stop(Exception):
    pass


def measure(meter: Meter, runs: list[Callable[[], Any]]) -> dict[str, Any]:
    rpcs: Counter[str] = Counter()
    rows = 0
    ms: list[float] = []
    for run in runs:
        meter.reset()
        began = time.perf_counter()
        run()
        ms.append((time.perf_counter() - began) * 1000)
        counts, read = meter.read()
        rpcs.update(counts)
        rows += read
    n = len(runs)
    return {
        "rpcs": sum(rpcs.values()) / n,
        "by_api": {api: round(c / n, 2) for api, c in sorted(rpcs.items())},
        "rows": rows / n,
        "ms": sorted(ms)[n // 2],
    }


def bench_scale(emulator: TablestoreEmulator, repo: StoreRepository, admin: Admin, scale: int) -> dict[str, Any]:
    user = f"user{scale}"
    log(f"scale {scale:,}: seeding")
    t0 = time.perf_counter()
    emulator.index_delay = 0
    far = -unit_vectors(1, scale + 3)[0]
    seed(emulator, user, scale, scale, far)
    emulator.flush_index()
    emulator.index_delay = INDEX_DELAY
    log(f"  seeded in {time.perf_counter() - t0:.1f} s")
    meter = Meter(emulator)
    rng = random.Random(scale + 1)
    queries = unit_vectors(RUNS["search"] + RUNS["add"], scale + 2)
    scope = Scope(CLIENTS[0], user)
    out: dict[str, Any] = {}

    def add(i: int) -> Callable[[], Any]:
        return lambda: repo.add(scope, [NewMemory(f"New note {i}: {sentence(rng, i)}", queries[i].tolist())], ORIGIN)

    def reads(suffix: str) -> None:
        out[f"list first page + total{suffix}"] = measure(
            meter, [lambda: repo.list_page(scope, limit=100)] * RUNS["list"]
        )
        out[f"REST browse page{suffix}"] = measure(
            meter, [lambda: admin.browse(BrowseRequest(user_id=user))] * RUNS["browse"]
        )
        out[f"REST apps{suffix}"] = measure(meter, [lambda: admin.apps(user)] * RUNS["apps"])
        out[f"REST stats{suffix}"] = measure(meter, [lambda: admin.stats(user)] * RUNS["stats"])

    def export() -> None:
        with tempfile.TemporaryDirectory() as tmp:

            def stop(written: int) -> None:
                if written >= EXPORT_ROWS:
                    raise _Stop

            with contextlib.suppress(_Stop):
                export_backup(repo, user, Path(tmp) / "x.jsonl", progress=stop, embedding_model="bench")

    owner = Scope(CLIENTS[0], user, shared=True)
    tagged = build_query(metadata={"project": "apollo"})
    found: dict[str, int] = {}

    def filtered(name: str, run: Callable[[], int]) -> None:
        def counted() -> None:
            found[name] = run()

        out[name] = {**measure(meter, [counted] * RUNS["filtered"]), "found": found[name]}

    reads("")  # this process wrote nothing lately (as on another replica): the index alone answers
    filtered(  # the 5 tagged memories are the least similar to the query: a bounded over-fetch misses them
        "search, tagged (5 match, least similar)",
        lambda: len(repo.search(owner, "likes tea", (-far).tolist(), 10, -1.0, where=tagged)),
    )
    filtered("list first page + total, tagged", lambda: len(repo.list_page(owner, limit=100, where=tagged).items))
    filtered(
        "REST browse page, category + event time",
        lambda: (
            admin.browse(BrowseRequest(user_id=user, category="rare", since="2020-01-01", until="2021-01-01")).total
        ),
    )
    out[f"export of {EXPORT_ROWS:,}"] = measure(meter, [export] * RUNS["export"])
    out["add"] = measure(meter, [add(i) for i in range(RUNS["add"])])
    reads(", after own adds")  # within the window this process reconciles its own writes with the lagging index
    out["search"] = measure(
        meter,
        [
            lambda i=i: repo.search(scope, "likes tea", queries[RUNS["add"] + i].tolist(), 10, None)
            for i in range(RUNS["search"])
        ],
    )
    for op, figures in out.items():
        log(f"  {op}: {json.dumps(figures)}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", default="1000,10000,100000")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    scales = [int(s) for s in args.scales.split(",")]
    results: dict[int, dict[str, Any]] = {}
    with TablestoreEmulator() as emulator:
        rules = getattr(emulator, "rules", None)
        relaxed = sorted(getattr(rules, "_relaxed", ())) if rules is not None else None
        strict = "no rule registry" if rules is None else (f"relaxed {relaxed}" if relaxed else "all enforced")
        store = TablestoreStore(
            collection_name=TABLE,
            **emulator.credentials(),
            embedding_model_dims=DIMS,
            timeout=120.0,  # the emulator sorts and groups 100k rows in Python: seconds on a busy machine
            recent_window=3600.0,  # "after own adds" stays within the window however slow the emulator is
        )
        history = TablestoreHistoryLog(store.client, history_table_name(TABLE), endpoint=emulator.endpoint)
        repo = StoreRepository(store, history)
        admin = Admin(SimpleNamespace(repository=repo))  # type: ignore[arg-type]
        try:
            for scale in scales:
                results[scale] = bench_scale(emulator, repo, admin, scale)
        finally:
            store.close()
        if emulator.last_internal_error is not None:
            raise RuntimeError(f"emulator bug: {emulator.last_internal_error!r}")
    ops = list(results[scales[0]])
    head = " | ".join(f"{s:,}: RPCs / rows read" for s in scales)
    print(f"| operation | {head} | 100k ÷ 1k (RPCs / rows) |")
    print("|---|" + "---:|" * (len(scales) + 1))
    for op in ops:
        cells = [f"{results[s][op]['rpcs']:.3g} / {results[s][op]['rows']:.4g}" for s in scales]
        cells = [
            c + (f" (found {results[s][op]['found']})" if "found" in results[s][op] else "")
            for c, s in zip(cells, scales, strict=True)
        ]
        first, last = results[scales[0]][op], results[scales[-1]][op]
        ratio = f"{last['rpcs'] / max(first['rpcs'], 1e-9):.2f} / {last['rows'] / max(first['rows'], 1):.2f}"
        print(f"| {op} | " + " | ".join(cells) + f" | {ratio} |")
    print(f"\nTablestore emulator (index delay {INDEX_DELAY:g} s, strict rules: {strict}), {DIMS} dims.")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
