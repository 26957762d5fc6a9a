"""Tablestore backend benchmark: ``python -m benchmarks.tablestore_rpc`` prints a markdown table.

For 1,000 and for 10,000 memories in one scope: RPCs per operation (the emulator's per-API counters) and
latency (p50/p95 ms, measured by a real MCP client) of add (infer=false), search, list and delete_all.

The installed console script serves streamable HTTP against an in-process Tablestore emulator (no index
delay, no faults), with the offline embedder (no OPENAI_API_KEY). The scope is filled directly through
``TablestoreStore`` in 200-row BatchWriteRows, in the payload format ``mem0_bridge.create_memories`` writes
(random unit vectors: the KNN cost does not depend on their content); timed operations go through the server.
Latency is dominated by the emulator (pure Python PlainBuffer, numpy KNN) and the MCP round trip, so
read it as relative cost; the RPC counts are what a real instance would see.
"""

from __future__ import annotations

import math
import random
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
import numpy as np
from tests.server_process import HttpServer, server_env, structured, tablestore_env
from tests.tablestore_emulator import TablestoreEmulator

from tablestore_openmemory_mcp import mem0_bridge
from tablestore_openmemory_mcp.embedders import OFFLINE_DIMENSION
from tablestore_openmemory_mcp.stores.base import ACTIVE_SCOPE
from tablestore_openmemory_mcp.stores.tablestore import TablestoreStore

SCALES = (1_000, 10_000)
CLIENT = "bench"
ADDS = 20
SEARCHES = 20
LISTS = {1_000: 10, 10_000: 5}
DELETE_ALLS = {1_000: 3, 10_000: 2}
STARTUP_TIMEOUT = 180.0

WORDS = (
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
)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def sentence(rng: random.Random, i: int) -> str:
    a, b, c = rng.sample(WORDS, 3)
    return f"Memory {i}: the user likes {a} and {b}, especially {c} on weekends"


def bulk_load(store: TablestoreStore, user: str, count: int, seed: int) -> None:
    """``count`` memories in (CLIENT, user), written the way the server writes them, 200 rows a call."""
    rng = random.Random(seed)
    metadata = {"user_id": user, "agent_id": CLIENT, "role": "user"}
    vectors = np.random.default_rng(seed).standard_normal((count, store.embedding_model_dims)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    token = ACTIVE_SCOPE.set({"user_id": user, "agent_id": CLIENT})
    try:
        for start in range(0, count, 1000):
            stop = min(count, start + 1000)
            store.insert(
                vectors=vectors[start:stop].tolist(),
                payloads=[mem0_bridge.new_payload(sentence(rng, i), metadata) for i in range(start, stop)],
                ids=[str(uuid.uuid4()) for _ in range(start, stop)],
            )
    finally:
        ACTIVE_SCOPE.reset(token)


def rpc_summary(counts: Counter[str], runs: int) -> str:
    """RPCs per operation, e.g. ``Search 1 + PutRow 1``."""
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
    """Latency samples and RPC counts per (scale, operation)."""

    def __init__(self, emulator: TablestoreEmulator) -> None:
        self.emulator = emulator
        self.rows: list[dict[str, Any]] = []

    async def measure(self, scale: int, op: str, calls: list[Any]) -> list[Any]:
        """Run each zero-argument coroutine function in ``calls`` in turn, timing each one."""
        samples: list[float] = []
        counts: Counter[str] = Counter()
        results = []
        for call in calls:
            self.emulator.reset_counts()
            started = time.perf_counter()
            results.append(await call())
            samples.append((time.perf_counter() - started) * 1000)
            counts.update(self.emulator.counts)
        self.rows.append(
            {
                "scale": scale,
                "op": op,
                "runs": len(calls),
                "rpcs": rpc_summary(counts, len(calls)),
                "p50": statistics.median(samples),
                "p95": percentile(samples, 95),
            }
        )
        log(f"  {op}: {self.rows[-1]}")
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


async def bench_scale(server: HttpServer, store: TablestoreStore, rec: Recorder, scale: int) -> None:
    user = f"user{scale}"
    log(f"scale {scale:,}: loading {scale:,} memories")
    started = time.perf_counter()
    bulk_load(store, user, scale, seed=scale)
    log(f"  loaded in {time.perf_counter() - started:.1f}s")
    rng = random.Random(scale + 1)
    async with server.http(CLIENT, user) as client:

        def call(tool: str, args: dict[str, Any]) -> Any:
            async def run() -> Any:
                return structured(await client.call_tool(tool, args))

            return run

        # The scope holds `scale` memories while add is measured (plus the ADDS - 1 before it at most).
        adds = [
            call("add_memories", {"text": f"New note {i}: {sentence(rng, i)}", "infer": False}) for i in range(ADDS)
        ]
        for result in await rec.measure(scale, "add (infer=false)", adds):
            assert result["events"][0]["event"] == "ADD", result
        searches = [call("search_memories", {"query": sentence(rng, i), "limit": 10}) for i in range(SEARCHES)]
        for result in await rec.measure(scale, "search (limit 10)", searches):
            assert len(result["results"]) == 10, result
        total = scale + ADDS
        for result in await rec.measure(scale, "list", [call("list_memories", {})] * LISTS[scale]):
            assert result["count"] == total, (result["count"], total)

        # delete_all is destructive: refill the scope (untimed) before each further run.
        samples: list[float] = []
        counts: Counter[str] = Counter()
        for run in range(DELETE_ALLS[scale]):
            if run:
                bulk_load(store, user, total, seed=scale + 100 + run)
            rec.emulator.reset_counts()
            t0 = time.perf_counter()
            result = await call("delete_all_memories", {})()
            samples.append((time.perf_counter() - t0) * 1000)
            counts.update(rec.emulator.counts)
            assert result["deleted_count"] == total, (result, total)
            assert counts["BatchWriteRow"] == (run + 1) * math.ceil(total / 200), counts
        rec.rows.append(
            {
                "scale": scale,
                "op": f"delete_all ({total:,} rows)",
                "runs": len(samples),
                "rpcs": rpc_summary(counts, len(samples)),
                "p50": statistics.median(samples),
                "p95": percentile(samples, 95),
            }
        )
        log(f"  delete_all: {rec.rows[-1]}")
        assert structured(await client.call_tool("list_memories", {}))["count"] == 0


async def main() -> None:
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-tablestore-") as tmp_dir, TablestoreEmulator() as emulator:
        tmp = Path(tmp_dir)
        env = server_env(tmp, **tablestore_env(emulator, TOOL_BLACK_LIST="[]", LOG_LEVEL="WARNING"))
        log("starting the server (streamable HTTP, offline embedder, emulator)")
        with HttpServer(env, tmp, transport="streamable-http").wait_ready(STARTUP_TIMEOUT) as server:
            store = TablestoreStore(
                collection_name="mem0",
                endpoint=emulator.endpoint,
                instance_name=emulator.instance_name,
                access_key_id=emulator.access_key_id,
                access_key_secret=emulator.access_key_secret,
                embedding_model_dims=OFFLINE_DIMENSION,
            )
            rec = Recorder(emulator)
            async with server.http(CLIENT, "warmup") as client:  # first calls load models and caches
                for i in range(3):
                    await client.call_tool("add_memories", {"text": f"warm-up note {i}", "infer": False})
                    await client.call_tool("search_memories", {"query": f"warm-up {i}"})
                await client.call_tool("list_memories", {})
            try:
                for scale in SCALES:
                    await bench_scale(server, store, rec, scale)
            finally:
                store.close()
        if emulator.last_internal_error is not None:
            raise RuntimeError(f"emulator bug: {emulator.last_internal_error!r}")
    print(rec.table())
    print(
        f"\nTablestore emulator on 127.0.0.1, server over streamable HTTP, offline embedder "
        f"({OFFLINE_DIMENSION} dims); total {time.perf_counter() - began:.0f}s."
    )


if __name__ == "__main__":
    anyio.run(main)
