"""Tablestore backend benchmark: ``python -m benchmarks.tablestore_rpc [--store|--server]`` prints a markdown table.

For 1,000 and for 10,000 memories in one scope: RPCs per operation (the emulator's per-API counters on the
memory table) and latency p50/p95 in ms.

* ``--store`` (default): the store alone (``TablestoreStore``) through the typed store port (``StorePort``),
  under the labels of the row methods each call replaced: add with a dedup key (new text, and a duplicate:
  ``put``), find_by_dedup_key (``holder``), get_many (100 ids: ``read``), search top 10 (``nearest`` +
  ``keyword_hits`` on its hits), list_page (100: ``page``), page_total (the count shown with a page; the row
  methods' ``count`` scanned keys instead), update (conditional: ``rewrite``), delete_many (100: ``remove``).
  Needs a store with the port (main since issue 21's bridge); the shims for stores before it are gone.
* ``--server``: the installed server over streamable HTTP with the offline embedder, through a real MCP
  client: add (infer=false), search, list, delete_all. RPCs on other tables (history, access log) are
  not counted here.

The emulator runs in process with an index delay of 1 s (writes reach Search late, as on the service) and
no faults. Latency is dominated by the emulator (pure Python PlainBuffer, numpy KNN) and, for the server,
the MCP round trip: read it as relative cost; the RPC counts are what a real instance would see.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import numpy as np
from tests.server_process import HttpServer, server_env, structured, tablestore_env
from tests.tablestore_emulator import TablestoreEmulator

from tablestore_openmemory_mcp.memory.ports import ALL_STATES, StoredMemory
from tablestore_openmemory_mcp.memory.query_filters import EVERYTHING
from tablestore_openmemory_mcp.memory.store_port import NewRow, RowChange
from tablestore_openmemory_mcp.scope import Scope
from tablestore_openmemory_mcp.stores.tablestore import TablestoreStore

SCALES = (1_000, 10_000)
CLIENT = "bench"
TABLE = "mem0"
INDEX_DELAY = 1.0
DIMS = 384  # the offline embedder's dimension
RUNS = 20
ADDS = 20
SEARCHES = 20
LISTS = {1_000: 10, 10_000: 5}
DELETE_ALLS = {1_000: 3, 10_000: 2}
STARTUP_TIMEOUT = 180.0

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
    "running",
    "sushi",
    "noodles",
    "vim",
    "linux",
    "kubernetes",
    "postgres",
    "tennis",
    "swimming",
    "novel",
    "poetry",
    "camera",
    "violin",
    "football",
    "cycling",
    "yoga",
]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def sentence(rng: random.Random, i: int) -> str:
    a, b, c = rng.sample(WORDS, 3)
    return f"Memory {i}: the user likes {a} and {b}, especially {c} on weekends"


def dedup_key(user: str, text: str) -> str:
    return hashlib.sha256(f"{user}\x00{CLIENT}\x00{text}".encode()).hexdigest()[:40]


ACTIVE = ALL_STATES  # no state condition, as the row methods' identity-only filters had


def memory(user: str, text: str, memory_id: str) -> StoredMemory:
    now = datetime.now(UTC).isoformat()
    digest = hashlib.md5(text.encode()).hexdigest()
    return StoredMemory(id=memory_id, text=text, user_id=user, client=CLIENT, created_at=now, updated_at=now,
                        hash=digest, metadata={"role": "user"})  # fmt: skip


def open_store(emulator: TablestoreEmulator) -> TablestoreStore:
    return TablestoreStore(
        collection_name=TABLE,
        **emulator.credentials(),
        embedding_model_dims=DIMS,
    )


def unit_vectors(count: int, seed: int) -> np.ndarray:
    vectors = np.random.default_rng(seed).standard_normal((count, DIMS)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def bulk_load(store: TablestoreStore, user: str, count: int, seed: int) -> list[str]:
    """``count`` memories in (CLIENT, user) with dedup keys, 1,000 rows per insert call."""
    rng = random.Random(seed)
    vectors = unit_vectors(count, seed)
    ids: list[str] = []
    scope = Scope(CLIENT, user)
    for start in range(0, count, 1000):
        stop = min(count, start + 1000)
        texts = [sentence(rng, i) for i in range(start, stop)]
        chunk = [str(uuid.uuid4()) for _ in texts]
        rows = [
            NewRow(memory(user, t, mid), v, dedup_key(user, t))
            for t, mid, v in zip(texts, chunk, vectors[start:stop].tolist(), strict=True)
        ]
        store.put(scope, rows)
        ids += chunk
    return ids


def rpc_summary(counts: Counter[str], runs: int) -> str:
    """RPCs per operation, e.g. ``Search 1 + BatchGetRow 1``."""
    parts = []
    for api, total in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        per = total / runs
        parts.append(f"{api} {per:g}" if per == int(per) else f"{api} {per:.2f}")
    return " + ".join(parts) or "none"


def percentile(samples: list[float], q: int) -> float:
    """The q-th percentile (inclusive method; a single sample is its own percentile)."""
    if len(samples) == 1:
        return samples[0]
    return statistics.quantiles(sorted(samples), n=100, method="inclusive")[q - 1]


class Recorder:
    """Latency samples and RPC counts (memory table only) per (scale, operation)."""

    def __init__(self, emulator: TablestoreEmulator) -> None:
        self.emulator = emulator
        self.rows: list[dict[str, Any]] = []

    def _calls(self) -> dict[str, int]:
        calls_on = getattr(self.emulator, "calls_on", None)
        return calls_on(TABLE) if calls_on else dict(self.emulator.counts)

    def record(self, scale: int, op: str, samples: list[float], counts: Counter[str]) -> None:
        row = {"scale": scale, "op": op, "runs": len(samples), "rpcs": rpc_summary(counts, len(samples)),
               "p50": statistics.median(samples), "p95": percentile(samples, 95)}  # fmt: skip
        self.rows.append(row)
        log(f"  {op}: {row}")

    def measure(self, scale: int, op: str, calls: list[Callable[[], Any]]) -> list[Any]:
        samples: list[float] = []
        counts: Counter[str] = Counter()
        results = []
        for call in calls:
            self.emulator.reset_counts()
            started = time.perf_counter()
            results.append(call())
            samples.append((time.perf_counter() - started) * 1000)
            counts.update(self._calls())
        self.record(scale, op, samples, counts)
        return results

    async def measure_async(self, scale: int, op: str, calls: list[Any]) -> list[Any]:
        samples: list[float] = []
        counts: Counter[str] = Counter()
        results = []
        for call in calls:
            self.emulator.reset_counts()
            started = time.perf_counter()
            results.append(await call())
            samples.append((time.perf_counter() - started) * 1000)
            counts.update(self._calls())
        self.record(scale, op, samples, counts)
        return results

    def table(self) -> str:
        lines = [
            "| memories in scope | operation | runs | RPCs per operation | p50 ms | p95 ms |",
            "|---:|---|---:|---|---:|---:|",
        ]
        for r in self.rows:
            lines.append(
                f"| {r['scale']:,} | {r['op']} | {r['runs']} | {r['rpcs']} | {r['p50']:.1f} | {r['p95']:.1f} |"
            )
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------ store


def bench_store_scale(store: TablestoreStore, rec: Recorder, scale: int) -> None:
    user = f"user{scale}"
    log(f"scale {scale:,}: loading {scale:,} memories")
    ids = bulk_load(store, user, scale, seed=scale)
    rec.emulator.flush_index()
    rng = random.Random(scale + 1)
    queries = unit_vectors(RUNS, scale + 2)
    new_texts = [f"New note {i}: {sentence(rng, i)}" for i in range(RUNS)]
    scope = Scope(CLIENT, user)

    def add(i: int, text: str) -> Callable[[], Any]:
        return lambda: store.put(
            scope, [NewRow(memory(user, text, str(uuid.uuid4())), queries[i].tolist(), dedup_key(user, text))]
        )

    added = rec.measure(scale, "add (new text, dedup key)", [add(i, t) for i, t in enumerate(new_texts)])
    rec.measure(scale, "add (exact duplicate)", [add(i, t) for i, t in enumerate(new_texts)])
    rec.measure(scale, "find_by_dedup_key", [lambda t=t: store.holder(scope, dedup_key(user, t)) for t in new_texts])
    sample = ids[:100]
    rec.measure(scale, "get_many (100 ids)", [lambda: store.read(scope, sample)] * RUNS)

    def search(i: int) -> Callable[[], Any]:
        def run() -> Any:
            hits = store.nearest(scope, queries[i].tolist(), 10, states=ACTIVE, query=EVERYTHING)
            store.keyword_hits(scope, "likes tea", 10, states=ACTIVE, query=EVERYTHING, candidates=[h.id for h in hits])
            assert len(hits) == 10
            return hits

        return run

    rec.measure(scale, "search top 10 (+ keyword on its hits)", [search(i) for i in range(RUNS)])
    rec.measure(
        scale, "list_page (100)", [lambda: store.page(scope, states=ACTIVE, query=EVERYTHING, limit=100)] * RUNS
    )
    rec.measure(
        scale,
        "page_total (the count with a page)",
        [lambda: store.page_total(scope, states=ACTIVE, query=EVERYTHING)] * LISTS.get(scale, 5),
    )
    current = store.read(scope, [a[0] for a in added])

    def update(mid: str) -> Callable[[], Any]:
        row = current[mid]
        text = row.text + " (edited)"
        new = replace(
            row, text=text, hash=hashlib.md5(text.encode()).hexdigest(), updated_at=datetime.now(UTC).isoformat()
        )
        change = RowChange(mid, new, expected_updated_at=row.updated_at, dedup_key=dedup_key(user, text))
        return lambda: store.rewrite(scope, change)

    rec.measure(scale, "update (conditional, new key)", [update(a[0]) for a in added])
    batches = [ids[i * 100 : (i + 1) * 100] for i in range(min(RUNS, scale // 100))]
    deleted = rec.measure(scale, "delete_many (100 ids)", [lambda b=b: store.remove(scope, b) for b in batches])
    assert all(len(d) == 100 for d in deleted)


def run_store(scales: tuple[int, ...] = SCALES) -> Recorder:
    with TablestoreEmulator() as emulator:
        emulator.index_delay = INDEX_DELAY
        store = open_store(emulator)
        rec = Recorder(emulator)
        try:
            for scale in scales:
                bench_store_scale(store, rec, scale)
        finally:
            store.close()
        if emulator.last_internal_error is not None:
            raise RuntimeError(f"emulator bug: {emulator.last_internal_error!r}")
    return rec


# ------------------------------------------------------------------------------------------ server


async def bench_server_scale(server: HttpServer, store: TablestoreStore, rec: Recorder, scale: int) -> None:
    user = f"user{scale}"
    log(f"scale {scale:,}: loading {scale:,} memories")
    bulk_load(store, user, scale, seed=scale)
    rec.emulator.flush_index()
    rng = random.Random(scale + 1)
    async with server.http(CLIENT, user) as client:

        def call(tool: str, args: dict[str, Any]) -> Any:
            async def run() -> Any:
                return structured(await client.call_tool(tool, args))

            return run

        adds = [
            call("add_memories", {"text": f"New note {i}: {sentence(rng, i)}", "infer": False}) for i in range(ADDS)
        ]
        for result in await rec.measure_async(scale, "add (infer=false)", adds):
            assert result["events"][0]["event"] == "ADD", result
        searches = [call("search_memories", {"query": sentence(rng, i), "limit": 10}) for i in range(SEARCHES)]
        for result in await rec.measure_async(scale, "search (limit 10)", searches):
            assert len(result["results"]) == 10, result
        total = scale + ADDS
        for result in await rec.measure_async(
            scale, "list (first page)", [call("list_memories", {})] * LISTS.get(scale, 5)
        ):
            assert result["total"] == total, (result["total"], total)
        samples: list[float] = []
        counts: Counter[str] = Counter()
        for run in range(DELETE_ALLS.get(scale, 2)):
            if run:
                bulk_load(store, user, total, seed=scale + 100 + run)
            rec.emulator.reset_counts()
            t0 = time.perf_counter()
            result = await call("delete_all_memories", {})()
            samples.append((time.perf_counter() - t0) * 1000)
            counts.update(rec._calls())
            assert result["deleted_count"] == total, (result, total)
        rec.record(scale, f"delete_all ({total:,} rows)", samples, counts)


async def run_server(scales: tuple[int, ...] = SCALES) -> Recorder:
    with tempfile.TemporaryDirectory(prefix="bench-tablestore-") as tmp_dir, TablestoreEmulator() as emulator:
        emulator.index_delay = INDEX_DELAY
        tmp = Path(tmp_dir)
        env = server_env(tmp, **tablestore_env(emulator, TOOL_BLACK_LIST="[]", LOG_LEVEL="WARNING"))
        log("starting the server (streamable HTTP, offline embedder, emulator)")
        with HttpServer(env, tmp, transport="streamable-http").wait_ready(STARTUP_TIMEOUT) as server:
            store = open_store(emulator)
            rec = Recorder(emulator)
            async with server.http(CLIENT, "warmup") as client:  # first calls load models and caches
                for i in range(3):
                    await client.call_tool("add_memories", {"text": f"warm-up note {i}", "infer": False})
                    await client.call_tool("search_memories", {"query": f"warm-up {i}"})
            try:
                for scale in scales:
                    await bench_server_scale(server, store, rec, scale)
            finally:
                store.close()
        if emulator.last_internal_error is not None:
            raise RuntimeError(f"emulator bug: {emulator.last_internal_error!r}")
    return rec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--store", action="store_true", help="the store alone (default)")
    mode.add_argument("--server", action="store_true", help="the whole server through an MCP client")
    parser.add_argument("--scales", default=",".join(str(s) for s in SCALES), help="memories per scope, e.g. 1000")
    args = parser.parse_args()
    scales = tuple(int(s) for s in args.scales.split(","))
    began = time.perf_counter()
    rec = anyio.run(run_server, scales) if args.server else run_store(scales)
    print(rec.table())
    what = "server over streamable HTTP, offline embedder" if args.server else "store in process"
    print(f"\nTablestore emulator on 127.0.0.1 (index delay {INDEX_DELAY:g} s), {what} ({DIMS} dims); "
          f"total {time.perf_counter() - began:.0f}s.")  # fmt: skip


if __name__ == "__main__":
    main()
