"""Scale benchmark of issue 16: ``python -m benchmarks.scale`` prints one markdown table.

For each size (default 1k, 10k, 100k memories in one scope) it seeds a fresh data directory directly
through the embedded store (vectors built from offline-embedder word vectors of a small vocabulary,
so they are real, varied and cheap), starts the installed server over streamable HTTP, and measures
through a real MCP client: search p50/p95, the first ``list_memories`` answer, ``update_memory`` p50,
single-id ``delete_memories`` p50, ``add_memories(infer=false)`` throughput with 16 concurrent
clients, and the server's peak RSS (VmHWM).

``--src DIR`` runs another checkout's ``src`` (server and seeding), e.g. the previous release for
"before" figures: ``git archive <rev> src | tar -x -C /tmp/before``. ``--direct`` also measures
the store in-process (no MCP): it needs no server layer, so it works while the layers above change.
Servers and temporary directories are always cleaned up.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import random
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio

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
    "emacs",
    "linux",
    "kubernetes",
    "postgres",
    "sqlite",
    "tennis",
    "swimming",
    "novel",
    "poetry",
    "camera",
    "painting",
    "violin",
    "football",
    "basketball",
    "cycling",
    "yoga",
    "baking",
    "spicy",
    "vegan",
    "travel",
    "japan",
    "paris",
    "museum",
    "history",
    "physics",
    "chemistry",
    "biology",
    "math",
    "statistics",
    "marathon",
    "climbing",
    "skiing",
    "surfing",
    "乌龙茶",
    "咖啡",
    "杭州",
    "北京",
    "工作",
    "猫",
]
VERBS = ("likes", "dislikes", "studies", "prefers", "plans", "learns", "writes", "collects")
CLIENT, USER = "bench", "scale"
DIMS = 384
SEARCHES = 200
SEARCH_BUDGET_S = 30.0
WRITES = 30
ADDS = 160
ADD_CLIENTS = 16
CALL_TIMEOUT_S = 300.0


def parse_size(text: str) -> int:
    text = text.strip().lower()
    return int(float(text[:-1]) * 1000) if text.endswith("k") else int(text)


def texts_for(n: int, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    return [f"user {rng.choice(VERBS)} {' '.join(rng.sample(WORDS, 3))} note{i}" for i in range(n)]


def word_table() -> tuple[dict[str, int], Any]:
    import numpy as np

    from tablestore_openmemory_mcp.embedders import OfflineEmbedder

    vocab = list(dict.fromkeys([*WORDS, *VERBS]))
    table = np.asarray(OfflineEmbedder().embed_batch(vocab, "add"), dtype=np.float32)
    return {w: i for i, w in enumerate(vocab)}, table


def vectors_for(texts: list[str], words: dict[str, int], table: Any, rng: Any) -> Any:
    """Sum of the words' embeddings plus a little noise: distinct, semantically placed vectors."""
    import numpy as np

    out = np.empty((len(texts), table.shape[1]), dtype=np.float32)
    for i, text in enumerate(texts):
        idx = [words[w] for w in text.split() if w in words]
        out[i] = table[idx].sum(0) + rng.normal(0, 0.02, table.shape[1])
    return out


def memory_for(memory_id: str, text: str, created: datetime) -> Any:
    """One memory of (CLIENT, USER) as the repository stores it (the payload keys 2.0.0 wrote)."""
    from tablestore_openmemory_mcp.memory.ports import StoredMemory

    stamp = created.isoformat()
    return StoredMemory(
        id=memory_id,
        text=text,
        user_id=USER,
        client=CLIENT,
        created_at=stamp,
        updated_at=stamp,
        hash=hashlib.md5(text.encode("utf-8")).hexdigest(),
        metadata={"role": "user"},
    )


def bench_scope() -> Any:
    from tablestore_openmemory_mcp.scope import Scope

    return Scope(CLIENT, USER)


def open_store(data_dir: Path) -> Any:
    from tablestore_openmemory_mcp.stores.embedded import EmbeddedStore

    return EmbeddedStore(collection_name="memories", path=str(data_dir), embedding_model_dims=DIMS)


def seed(data_dir: Path, n: int) -> tuple[list[str], float]:
    """Write ``n`` memories of (CLIENT, USER) straight into the store; returns their ids and the time."""
    import numpy as np

    from tablestore_openmemory_mcp.memory.store_port import NewRow

    words, table = word_table()
    rng = np.random.default_rng(3)
    texts = texts_for(n)
    ids = [f"{i:08d}-0000-4000-8000-{i:012d}" for i in range(n)]
    start = time.perf_counter()
    store = open_store(data_dir)
    scope = bench_scope()
    base = datetime(2025, 1, 1, tzinfo=UTC)
    try:
        for lo in range(0, n, 2000):
            chunk = texts[lo : lo + 2000]
            vectors = vectors_for(chunk, words, table, rng).tolist()
            rows = [
                NewRow(memory_for(ids[lo + i], t, base + timedelta(seconds=lo + i)), vectors[i])
                for i, t in enumerate(chunk)
            ]
            store.put(scope, rows)
    finally:
        store.close()
    return ids, time.perf_counter() - start


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def proc_status(pid: int, key: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


# ----------------------------------------------------------------------------------------- through MCP


async def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    with anyio.fail_after(CALL_TIMEOUT_S):
        result = await fn()
    return (time.perf_counter() - start) * 1000, result


async def stdio_first_call(tmp: Path, extra: dict[str, str]) -> float:
    """Seconds from spawning the stdio server to its first answered tool call (a search of the seeded
    scope, so loading its vectors is included)."""
    from tests.server_process import server_env, stdio_client, structured

    env = {**server_env(tmp, **extra), "MCP_STDIO_CLIENT_NAME": CLIENT, "MCP_STDIO_USER_ID": USER}
    with anyio.fail_after(CALL_TIMEOUT_S):
        start = time.perf_counter()
        async with stdio_client(env) as client:
            structured(await client.call_tool("search_memories", {"query": "warm up tea"}))
            return time.perf_counter() - start


async def rest_pages(url: str) -> dict[str, float]:
    """Milliseconds of what the memory browser page loads first: a page of memories, apps, statistics."""
    import httpx

    out: dict[str, float] = {}
    async with httpx.AsyncClient(base_url=f"{url}/api/v1", timeout=CALL_TIMEOUT_S) as http:
        for name in ("memories", "apps", "stats"):
            start = time.perf_counter()
            response = await http.get(f"/{name}", params={"user_id": USER})
            response.raise_for_status()
            out[name] = (time.perf_counter() - start) * 1000
    return out


async def bench_mcp(tmp: Path, n: int, ids: list[str], src: str | None) -> dict[str, Any]:
    from tests.server_process import HttpServer, server_env, structured

    extra = {"PYTHONPATH": src} if src else {}
    rng = random.Random(11)
    out: dict[str, Any] = {"stdio_first_call_s": await stdio_first_call(tmp, extra)}
    spawned = time.perf_counter()
    server = HttpServer(server_env(tmp, **extra), tmp, transport="streamable-http")
    try:
        server.wait_ready(timeout=90)
        async with server.http(CLIENT, USER) as client:
            ms, _ = await timed(lambda: client.call_tool("search_memories", {"query": "warm up tea"}))
            out["first_search_ms"] = ms
            out["http_first_call_s"] = time.perf_counter() - spawned
            lat = []
            deadline = time.monotonic() + SEARCH_BUDGET_S
            while len(lat) < SEARCHES and time.monotonic() < deadline:
                query = f"who {rng.choice(VERBS)} {rng.choice(WORDS)} or {rng.choice(WORDS)}?"
                ms, result = await timed(lambda q=query: client.call_tool("search_memories", {"query": q}))
                assert structured(result)["results"], query
                lat.append(ms)
            out["search_p50"], out["search_p95"], out["searches"] = (
                statistics.median(lat),
                percentile(lat, 0.95),
                len(lat),
            )
            ms, result = await timed(lambda: client.call_tool("list_memories", {}))
            listed = structured(result)
            out["list_s"] = ms / 1000
            out["list_rows"] = len(listed.get("memories", listed.get("results", [])))
            out["list_total"] = listed.get("total", listed.get("count"))
            out["rest_ms"] = await rest_pages(server.url)

            victims = rng.sample(ids, 2 * WRITES)
            upd = []
            for i, mid in enumerate(victims[:WRITES]):
                text = f"user now prefers {rng.choice(WORDS)} and {rng.choice(WORDS)} edit{i}"
                ms, result = await timed(
                    lambda m=mid, t=text: client.call_tool("update_memory", {"memory_id": m, "text": t})
                )
                structured(result)
                upd.append(ms)
            out["update_p50"] = statistics.median(upd)
            dele = []
            for mid in victims[WRITES:]:
                ms, result = await timed(lambda m=mid: client.call_tool("delete_memories", {"memory_ids": [m]}))
                structured(result)
                dele.append(ms)
            out["delete_p50"] = statistics.median(dele)

        queue = iter(range(ADDS))

        async def adder(k: int) -> None:
            async with server.http(CLIENT, USER) as worker:
                for i in queue:
                    text = f"client {k} adds fact {i}: {' '.join(rng.sample(WORDS, 4))}"
                    result = await worker.call_tool("add_memories", {"text": text, "infer": False})
                    structured(result)

        start = time.perf_counter()
        with anyio.fail_after(CALL_TIMEOUT_S):
            async with anyio.create_task_group() as tg:
                for k in range(ADD_CLIENTS):
                    tg.start_soon(adder, k)
        out["adds_per_s"] = ADDS / (time.perf_counter() - start)
        out["peak_rss_mb"] = proc_status(server.process.pid, "VmHWM")
        out["rss_mb"] = proc_status(server.process.pid, "VmRSS")
    finally:
        server.stop()
    return out


# ------------------------------------------------------------------------------------------ in process


def bench_direct(data_dir: Path, n: int, ids: list[str]) -> dict[str, Any]:
    """The store alone, in this process, through its port: cold load (with peak-RSS growth), search, page,
    update, delete. Every state is read (as the store's search and list did before the port had states)."""
    import numpy as np

    from tablestore_openmemory_mcp.memory.ports import ALL_STATES
    from tablestore_openmemory_mcp.memory.query_filters import MemoryQuery
    from tablestore_openmemory_mcp.memory.store_port import RowChange

    words, table = word_table()
    rng = np.random.default_rng(5)
    pyrng = random.Random(5)
    out: dict[str, Any] = {}
    store = open_store(data_dir)
    scope, everything = bench_scope(), MemoryQuery()

    def nearest(vector: Any, limit: int) -> Any:
        return store.nearest(scope, vector.tolist(), limit, states=ALL_STATES, query=everything)

    try:
        hwm0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        q = vectors_for(["user likes tea"], words, table, rng)[0]
        start = time.perf_counter()
        nearest(q, 60)
        out["cold_ms"] = (time.perf_counter() - start) * 1000
        out["load_peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - hwm0
        out["vectors_mb"] = n * DIMS * 4 / 2**20

        def lat(fn: Callable[[int], Any], reps: int) -> list[float]:
            times = []
            for i in range(reps):
                start = time.perf_counter()
                fn(i)
                times.append((time.perf_counter() - start) * 1000)
            return times

        queries = [f"{pyrng.choice(VERBS)} {pyrng.choice(WORDS)} {pyrng.choice(WORDS)}" for _ in range(100)]
        qvecs = vectors_for(queries, words, table, rng)

        def search(i: int) -> None:
            hits = nearest(qvecs[i], 60)
            candidates = [h.id for h in hits]
            store.keyword_hits(scope, queries[i], 60, states=ALL_STATES, query=everything, candidates=candidates)

        s = lat(search, 100)
        out["search_p50"], out["search_p95"] = statistics.median(s), percentile(s, 0.95)

        def page(_: int) -> None:
            store.page(scope, states=ALL_STATES, query=everything, limit=100)

        out["list_ms"] = statistics.median(lat(page, 5 if n < 50_000 else 2))
        victims = pyrng.sample(ids, 2 * WRITES)
        newvecs = vectors_for([f"user prefers {w}" for w in WORDS[:WRITES]], words, table, rng)

        def update(i: int) -> None:
            text = f"user prefers {WORDS[i]} edit"
            memory = memory_for(victims[i], text, datetime(2025, 1, 1, tzinfo=UTC))
            store.rewrite(scope, RowChange(victims[i], memory, newvecs[i].tolist()))

        def then_search(i: int) -> None:  # the write is visible to the next search (cache patched in place)
            nearest(qvecs[i], 5)

        out["update_ms"] = statistics.median(lat(update, WRITES))
        out["after_write_search_ms"] = statistics.median(lat(then_search, 10))

        def delete(i: int) -> None:
            store.remove(scope, [victims[WRITES + i]])

        out["delete_ms"] = statistics.median(lat(delete, WRITES))
    finally:
        store.close()
    return out


# ---------------------------------------------------------------------------------------------- report


def fmt(value: Any, spec: str = ".1f") -> str:
    return "—" if value is None else format(value, spec)


def report(results: dict[int, dict[str, Any]], direct: bool, mcp: bool) -> str:
    sizes = sorted(results)
    head = "| memories in scope | " + " | ".join(f"{n:,}" for n in sizes) + " |"
    lines = [head, "|---|" + "---:|" * len(sizes)]

    def add(label: str, cell: Callable[[dict[str, Any]], str]) -> None:
        lines.append(f"| {label} | " + " | ".join(cell(results[n]) for n in sizes) + " |")

    add("seed through the store (s)", lambda r: fmt(r["seed_s"]))
    if mcp:
        add(
            "MCP: spawn to first answered tool call, stdio / HTTP (s)",
            lambda r: f"{r['mcp']['stdio_first_call_s']:.2f} / {r['mcp']['http_first_call_s']:.2f}",
        )
        add("MCP: first search, cold (ms)", lambda r: fmt(r["mcp"]["first_search_ms"], ".0f"))
        add(
            "MCP: search p50 / p95 (ms)",
            lambda r: f"{r['mcp']['search_p50']:.1f} / {r['mcp']['search_p95']:.1f} (n={r['mcp']['searches']})",
        )
        add(
            "MCP: list_memories first answer (s) / rows",
            lambda r: f"{r['mcp']['list_s']:.2f} / {r['mcp']['list_rows']:,}",
        )
        add(
            "REST: first page of memories / apps / stats (ms)",
            lambda r: " / ".join(f"{r['mcp']['rest_ms'][k]:.0f}" for k in ("memories", "apps", "stats")),
        )
        add("MCP: update p50 (ms)", lambda r: fmt(r["mcp"]["update_p50"]))
        add("MCP: delete p50 (ms)", lambda r: fmt(r["mcp"]["delete_p50"]))
        add(f"MCP: adds/s, {ADD_CLIENTS} clients, infer=false", lambda r: fmt(r["mcp"]["adds_per_s"]))
        add("MCP: server peak RSS (MB)", lambda r: fmt(r["mcp"]["peak_rss_mb"], ".0f"))
    if direct:
        add("store: cold load + search (ms)", lambda r: fmt(r["direct"]["cold_ms"], ".0f"))
        add(
            "store: peak RSS growth while loading / vectors (MB)",
            lambda r: f"{r['direct']['load_peak_mb']:.0f} / {r['direct']['vectors_mb']:.0f}",
        )
        add(
            "store: search+keyword p50 / p95 (ms)",
            lambda r: f"{r['direct']['search_p50']:.2f} / {r['direct']['search_p95']:.2f}",
        )
        add("store: first page of 100 (ms)", lambda r: fmt(r["direct"]["list_ms"], ".2f"))
        add("store: update p50 (ms)", lambda r: fmt(r["direct"]["update_ms"], ".2f"))
        add("store: delete p50 (ms)", lambda r: fmt(r["direct"]["delete_ms"], ".2f"))
    return "\n".join(lines + targets(results, direct, mcp))


def targets(results: dict[int, dict[str, Any]], direct: bool, mcp: bool) -> list[str]:
    """Issue 16's figures against its targets (only those this run measured)."""
    sizes = sorted(results)
    small, big = sizes[0], sizes[-1]
    rows = ["", "| target (issue 16) | measured | met |", "|---|---:|:-:|"]

    def check(label: str, value: float, limit: float, unit: str = "") -> None:
        rows.append(f"| {label} ≤ {limit:g}{unit} | {value:.2f}{unit} | {'yes' if value <= limit else 'NO'} |")

    if mcp and big != small:
        m = {n: results[n]["mcp"] for n in sizes}
        check(f"search p50 {big:,} ÷ {small:,}", m[big]["search_p50"] / m[small]["search_p50"], 1.5, "x")
        check(f"update p50 {big:,} ÷ {small:,}", m[big]["update_p50"] / m[small]["update_p50"], 1.5, "x")
        check(f"delete p50 {big:,} ÷ {small:,}", m[big]["delete_p50"] / m[small]["delete_p50"], 1.5, "x")
    if mcp:
        if 10_000 in results:
            check("search p50 at 10,000", results[10_000]["mcp"]["search_p50"], 30, " ms")
        check(f"list_memories first answer at {big:,}", results[big]["mcp"]["list_s"], 2, " s")
        first = max(max(r["mcp"]["stdio_first_call_s"], r["mcp"]["http_first_call_s"]) for r in results.values())
        check("spawn to first answered tool call (worst size, stdio or HTTP)", first, 3, " s")
    if direct:
        d = results[big]["direct"]
        growth = d["load_peak_mb"] / d["vectors_mb"]
        check(f"peak RSS growth while loading {big:,} vectors ÷ their size", growth, 1.5, "x")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1k,10k,100k", help="comma-separated, e.g. 1k,10k,100k")
    parser.add_argument("--src", help="run this checkout's src directory instead of the installed package")
    parser.add_argument("--direct", action="store_true", help="also measure the store in-process")
    parser.add_argument("--no-mcp", action="store_true", help="skip the MCP measurements (store only)")
    args = parser.parse_args()
    if args.src:
        sys.path.insert(0, str(Path(args.src).resolve()))
    os.environ.setdefault("MEM0_TELEMETRY", "False")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    load = os.getloadavg()[0]
    results: dict[int, dict[str, Any]] = {}
    for n in (parse_size(s) for s in args.sizes.split(",")):
        with tempfile.TemporaryDirectory(prefix=f"scale-{n}-") as root:
            tmp = Path(root)
            os.environ.setdefault("MEM0_DIR", str(tmp / "mem0"))
            ids, seed_s = seed(tmp / "data", n)
            res: dict[str, Any] = {"seed_s": seed_s}
            if args.direct:
                res["direct"] = bench_direct(tmp / "data", n, ids[n // 2 :])  # MCP writes the other half
            if not args.no_mcp:
                src = str(Path(args.src).resolve()) if args.src else None
                res["mcp"] = anyio.run(bench_mcp, tmp, n, ids[: n // 2], src)
            results[n] = res
            print(f"... {n:,} done: {res}", file=sys.stderr, flush=True)
    print(
        f"Machine: {os.cpu_count()} cores ({platform.machine()}), Python {platform.python_version()}, "
        f"load average at start {load:.1f}; src {args.src or 'installed'}\n"
    )
    print(report(results, args.direct, not args.no_mcp))


if __name__ == "__main__":
    main()
