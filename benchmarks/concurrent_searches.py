"""Concurrent searches with a remote embedder (issue 23, item 6): ``python -m benchmarks.concurrent_searches``.

16 users, each with its own MCP session over streamable HTTP, search at once; the embedder is the
fake OpenAI-compatible server answering every request after 300 ms (a remote model's round trip).
Reported: one search alone (median of a few), the 16 concurrent searches' wall time (median of a few
rounds: one round alone swung 0.5-1.1 s on a shared machine) and the ratio (the target is at most 1.3: a
search must not queue behind another user's), with the load average, since other processes' CPU inflates
every figure here. The fake server runs in
its own process with DashScope's rules (at most 10 inputs a request; more is an error). How many
requests the searches make is asserted in tests/test_search_concurrency.py, not here.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import AsyncExitStack, contextmanager
from pathlib import Path
from typing import Any

import anyio

USERS = 16
ALONE = 5
ROUNDS = 5
LATENCY = 0.3
PHASE_TIMEOUT = 300.0


@contextmanager
def fake_embedder(latency: float) -> Iterator[str]:
    """The fake OpenAI-compatible server in a process of its own (DashScope's rules: at most 10 inputs a
    request), so its work does not compete with the MCP clients here for one interpreter."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.openai_server", "--dashscope", "--embed-latency", str(latency)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        yield process.stdout.readline().strip()
    finally:
        process.terminate()
        process.wait(15)


async def measure(
    users: int = USERS, latency: float = LATENCY, src: str | None = None, rounds: int = ROUNDS
) -> dict[str, Any]:
    from tests.server_process import HttpServer, server_env, structured

    tmp = Path(tempfile.mkdtemp(prefix="concurrent-searches-"))
    extra = {"PYTHONPATH": src} if src else {}
    with fake_embedder(latency) as base_url:
        env = server_env(
            tmp,
            OPENAI_API_KEY="test-key",
            OPENAI_BASE_URL=base_url,
            LLM_PROVIDER="none",
            EMBEDDER_PROVIDER="openai",
            **extra,
        )
        with HttpServer(env, tmp, transport="streamable-http") as server:
            async with AsyncExitStack() as stack:
                clients = [await stack.enter_async_context(server.http("bench", f"user{i}")) for i in range(users)]

                async def seed(i: int, client: Any) -> None:
                    for text in (f"User {i} lives in Hangzhou", f"User {i} has a cat called Mochi"):
                        structured(await client.call_tool("add_memories", {"text": text, "infer": False}))

                async with anyio.create_task_group() as tg:
                    for i, client in enumerate(clients):
                        tg.start_soon(seed, i, client)

                async def search(client: Any, i: int) -> float:
                    start = time.perf_counter()
                    structured(await client.call_tool("search_memories", {"query": f"where does user {i} live"}))
                    return time.perf_counter() - start

                load = os.getloadavg()[0]
                walls: list[float] = []
                with anyio.fail_after(PHASE_TIMEOUT):
                    # Each client's first search compiles the tool's output-schema validator (the SDK's client
                    # caches it per session): a one-off client cost, paid here before anything is timed.
                    start = time.perf_counter()
                    async with anyio.create_task_group() as tg:
                        for i, client in enumerate(clients):
                            tg.start_soon(search, client, i)
                    cold = time.perf_counter() - start
                    alone = [await search(clients[i % users], i) for i in range(ALONE)]
                    for _ in range(rounds):
                        start = time.perf_counter()
                        async with anyio.create_task_group() as tg:
                            for i, client in enumerate(clients):
                                tg.start_soon(search, client, i)
                        walls.append(time.perf_counter() - start)
    one, wall = statistics.median(alone), statistics.median(walls)
    return {"one": one, "wall": wall, "ratio": wall / one, "load": load, "walls": walls, "cold": cold}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=USERS)
    parser.add_argument("--latency", type=float, default=LATENCY, help="seconds the fake embedder takes a request")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=ROUNDS, help="concurrent rounds per run (the median is shown)")
    parser.add_argument("--src", help="run this checkout's src directory instead of the installed package")
    args = parser.parse_args()
    rows = [anyio.run(measure, args.users, args.latency, args.src, args.rounds) for _ in range(args.runs)]
    print(f"{args.users} concurrent searches of {args.users} users, remote embedder {args.latency * 1000:.0f} ms")
    print(f"({os.cpu_count()} CPUs; load average at the start of each run)\n")
    print(
        "| run | load | one search (ms) | all at once (ms, median of rounds) | rounds (ms) | ratio (target ≤ 1.3) "
        "| first round, cold clients (ms) |"
    )
    print("|---:|---:|---:|---:|---|---:|---:|")
    for n, r in enumerate(rows, 1):
        each = " ".join(f"{w * 1000:.0f}" for w in r["walls"])
        print(
            f"| {n} | {r['load']:.1f} | {r['one'] * 1000:.0f} | {r['wall'] * 1000:.0f} | {each} | {r['ratio']:.2f} "
            f"| {r['cold'] * 1000:.0f} |"
        )
    print(f"\nmedian ratio: {statistics.median(r['ratio'] for r in rows):.2f}")


if __name__ == "__main__":
    main()
