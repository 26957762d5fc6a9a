"""Transport benchmarks of issue 10: ``python -m benchmarks.transport`` prints a markdown table.

(a) server RSS idle, then with 300 idle SSE sessions open;
(b) server RSS while one SSE session that never reads its stream receives up to 1,000 posts of a large answer
    (bounded: the session is closed after MCP_SSE_MAX_PENDING unread answers);
(c) p50/p95 of a short search by one user, alone and while another user adds 16,000-character texts
    (embedded store, offline embedder, infer=false).

Everything runs the installed console script on 127.0.0.1; every phase has a fixed count and a timeout; the
server and its temp dir are cleaned up even when a phase fails.
"""

from __future__ import annotations

import json
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import httpx
from tests.server_process import HttpServer, server_env

from benchmarks.core import rss_mb

IDLE_SESSIONS = 300
POSTS = 1_000
LONG_TEXT_CHARS = 16_000
SEARCHES = 60
LONG_ADDS = 5
PHASE_TIMEOUT = 300.0
HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
LONG_TEXT = ("我喜欢在杭州西湖边散步，也喜欢喝龙井茶。" * 1000)[: LONG_TEXT_CHARS - 8]  # plus a short numbered prefix


def call(name: str, arguments: dict[str, Any], id_: int) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": id_, "method": "tools/call", "params": {"name": name, "arguments": arguments}}


async def tool(http: httpx.AsyncClient, url: str, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    response = await http.post(url, json=call(name, arguments, 1), headers=HEADERS)
    response.raise_for_status()
    line = next(line for line in response.text.splitlines() if line.startswith("data:"))
    answer = json.loads(line[5:])
    assert not answer["result"].get("isError"), answer
    return dict(answer["result"])


async def open_stream(http: httpx.AsyncClient, url: str, opened: list[str], done: anyio.Event) -> None:
    """One idle SSE session: read the endpoint event, then hold the stream until ``done``."""
    async with http.stream("GET", url) as stream:
        lines = stream.aiter_lines()  # held: a dropped line iterator closes the stream when collected
        async for line in lines:
            if line.startswith("data:"):
                opened.append(line[5:].strip())
                break
        await done.wait()


async def bench_idle_sessions(server: HttpServer) -> dict[str, float]:
    idle = rss_mb(server.process.pid)
    opened: list[str] = []
    done = anyio.Event()
    limits = httpx.Limits(max_connections=IDLE_SESSIONS + 10, max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=PHASE_TIMEOUT, limits=limits) as http:
        with anyio.fail_after(PHASE_TIMEOUT):
            async with anyio.create_task_group() as group:
                for n in range(IDLE_SESSIONS):
                    group.start_soon(open_stream, http, f"{server.url}/mcp/bench/sse/idle{n}", opened, done)
                while len(opened) < IDLE_SESSIONS:  # condition wait: every stream announced its session
                    await anyio.sleep(0.05)
                with_sessions = rss_mb(server.process.pid)
                health = server.health()
                done.set()
    return {"idle": idle, "sessions": with_sessions, "connections": float(health.get("connections", -1))}


async def bench_non_reading_session(server: HttpServer) -> dict[str, float]:
    async with httpx.AsyncClient(timeout=PHASE_TIMEOUT) as http:
        for n in range(3):  # large answers fill the socket buffers after a few dozen
            await tool(
                http,
                f"{server.url}/mcp/bench/http/hoarder",
                "add_memories",
                {"text": f"{n} {LONG_TEXT}", "infer": False},
            )
        answer = await http.post(
            f"{server.url}/mcp/bench/http/hoarder", json=call("list_memories", {}, 1), headers=HEADERS
        )
        before = rss_mb(server.process.pid)
        peak, accepted, refused = before, 0, 0
        async with http.stream("GET", f"{server.url}/mcp/bench/sse/hoarder") as stream:
            endpoint = ""
            lines = stream.aiter_lines()  # held: a dropped line iterator closes the stream when collected
            async for line in lines:  # the endpoint event; the stream is never read again
                if line.startswith("data:"):
                    endpoint = line[5:].strip()
                    break
            with anyio.fail_after(PHASE_TIMEOUT):
                for n in range(POSTS):
                    response = await http.post(
                        f"{server.url}{endpoint}", json=call("list_memories", {}, n), headers=HEADERS
                    )
                    if response.status_code == 202:
                        accepted += 1
                    else:
                        refused += 1
                    if n % 50 == 0:
                        peak = max(peak, rss_mb(server.process.pid))
        peak = max(peak, rss_mb(server.process.pid))
    return {"before": before, "peak": peak, "accepted": accepted, "refused": refused, "kb": len(answer.content) / 1024}


async def search_series(http: httpx.AsyncClient, url: str, count: int) -> list[float]:
    latencies = []
    for _ in range(count):
        started = time.perf_counter()
        await tool(http, url, "search_memories", {"query": "tea", "limit": 5})
        latencies.append((time.perf_counter() - started) * 1000)
    return latencies


async def bench_search_under_long_adds(server: HttpServer) -> dict[str, float]:
    searcher = f"{server.url}/mcp/bench/http/searcher"
    writer = f"{server.url}/mcp/bench/http/writer"
    adds: list[float] = []
    async with httpx.AsyncClient(timeout=PHASE_TIMEOUT) as http:
        await tool(http, searcher, "add_memories", {"text": "I drink oolong tea every morning", "infer": False})
        alone = await search_series(http, searcher, SEARCHES)
        stop = anyio.Event()

        async def add_forever() -> None:
            n = 0
            while not stop.is_set():
                started = time.perf_counter()
                await tool(http, writer, "add_memories", {"text": f"{n} {LONG_TEXT}", "infer": False})
                adds.append(time.perf_counter() - started)
                n += 1

        with anyio.fail_after(PHASE_TIMEOUT):
            async with anyio.create_task_group() as group:
                group.start_soon(add_forever)
                loaded: list[float] = []
                while len(adds) < LONG_ADDS:  # search for as long as the long adds take
                    loaded += await search_series(http, searcher, 1)
                stop.set()
    return {
        "alone_p50": statistics.median(alone),
        "alone_p95": statistics.quantiles(alone, n=20)[18],
        "loaded_p50": statistics.median(loaded),
        "loaded_p95": statistics.quantiles(loaded, n=20)[18],
        "loaded_max": max(loaded),
        "adds": float(len(adds)),
        "searches": float(len(loaded)),
        "add_s": statistics.median(adds) if adds else float("nan"),
    }


async def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-transport-") as tmp:
        server = HttpServer(server_env(Path(tmp), LOG_LEVEL="WARNING"), Path(tmp)).wait_ready(timeout=120)
        try:
            sessions = await bench_idle_sessions(server)
            hoarder = await bench_non_reading_session(server)
            search = await bench_search_under_long_adds(server)
        finally:
            server.stop()
    idle_kb = (sessions["sessions"] - sessions["idle"]) * 1024 / IDLE_SESSIONS
    rows = [
        ("server RSS idle", f"{sessions['idle']:.0f} MB"),
        (f"RSS with {IDLE_SESSIONS} idle SSE sessions", f"{sessions['sessions']:.0f} MB ({idle_kb:.0f} kB each)"),
        ("... connections the server counted meanwhile", f"{sessions['connections']:.0f}"),
        (
            f"one non-reading SSE session, {POSTS} posts of a {hoarder['kb']:.0f} kB answer: RSS before / peak",
            f"{hoarder['before']:.0f} / {hoarder['peak']:.0f} MB",
        ),
        (
            "... posts accepted before the session was closed / refused after it (404)",
            f"{hoarder['accepted']:.0f} / {hoarder['refused']:.0f}",
        ),
        ("short search p50 / p95, alone", f"{search['alone_p50']:.1f} / {search['alone_p95']:.1f} ms"),
        (
            f"short search p50 / p95 / max while another user adds {LONG_TEXT_CHARS:,}-character texts",
            f"{search['loaded_p50']:.1f} / {search['loaded_p95']:.1f} / {search['loaded_max']:.1f} ms",
        ),
        (
            "... searches during the long adds / long adds / median time of one add",
            f"{search['searches']:.0f} / {search['adds']:.0f} / {search['add_s']:.2f} s",
        ),
    ]
    machine = f"{platform.machine()}, Python {platform.python_version()}, embedded store, offline embedder"
    print(f"\nTransport benchmark ({machine})\n\n| figure | result |\n|---|---|")
    for figure, result in rows:
        print(f"| {figure} | {result} |")


if __name__ == "__main__":
    anyio.run(main)
