"""LoCoMo-sized add load of issue 16 (item 4): ``python -m benchmarks.locomo_adds`` prints a table.

LoCoMo (10 long two-person conversations, ~5,900 turns) is the usual long-term memory benchmark; its
data is not bundled here, so this generates conversations of the same shape: 10 conversations of
600 turns (6,000 in all), each turn ``"<speaker>: <utterance>"`` of 8-40 words (LoCoMo's turns average
about 20). Every turn is added with ``infer=false`` by 8 concurrent MCP clients over streamable HTTP
to the installed server on the embedded default (offline embedder, no LLM), as mem0's LoCoMo
evaluation adds each conversation under its own user.

Two layouts: ``per-conversation`` (each conversation its own user, clients take conversations from a
queue) and ``one-user`` (every turn into one scope: the worst case for per-scope serialization).
Reported: adds/s, add p50/p95, rows stored afterwards (counted through ``list_memories``: nothing
acknowledged may be missing), peak RSS. ``--turns`` scales it down.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

CONVERSATIONS = 10
CLIENTS = 8
CLIENT_NAME = "locomo"
RUN_TIMEOUT_S = 1800.0

_NAMES = ["Caroline", "Melanie", "Jon", "Gina", "John", "Maria", "Joanna", "Nate", "Tim", "Audrey", "Andrew", "Evan"]
_OPENERS = ["I", "We", "My sister", "My friend", "Last week I", "Yesterday we", "Honestly I", "This weekend I"]
_VERBS = ["went to", "talked about", "finally tried", "started", "signed up for", "visited", "cooked", "painted"]
_THINGS = [
    "a pottery class",
    "the support group",
    "a new hiking trail",
    "the adoption agency",
    "my guitar lessons",
    "a camping trip",
    "the art exhibition",
    "a charity run",
    "the community garden",
    "my first marathon",
    "a book club",
    "the LGBTQ center",
    "a cooking workshop",
    "the beach at sunset",
    "the kids' school play",
]
_TAILS = [
    "and it felt amazing",
    "because I needed a break from work",
    "with my family",
    "and I learned so much about myself",
    "even though it rained the whole time",
    "which reminded me of my childhood",
    "and I am thinking about doing it again next month",
    "so I took a lot of photos to show you",
    "after you told me about it",
    "and met some really kind people there",
]


def conversation(index: int, turns: int) -> list[str]:
    """One LoCoMo-shaped conversation: two speakers alternating, ``"<speaker>: <utterance>"``.

    Utterance lengths follow LoCoMo's (3-80 words, mean ~24; ~38 tokens of multilingual-e5 with the
    speaker); every turn is distinct, as LoCoMo's are.
    """
    rng = random.Random(1000 + index)
    a, b = rng.sample(_NAMES, 2)
    out: list[str] = []
    seen: set[str] = set()
    while len(out) < turns:
        words = max(3, min(80, int(rng.lognormvariate(3.0, 0.55))))
        parts: list[str] = []
        while sum(len(p.split()) for p in parts) < words:
            parts.append(f"{rng.choice(_OPENERS)} {rng.choice(_VERBS)} {rng.choice(_THINGS)} {rng.choice(_TAILS)}.")
        text = f"{a if len(out) % 2 == 0 else b}: {' '.join(' '.join(parts).split()[:words]).rstrip('.')}."
        if text not in seen:
            seen.add(text)
            out.append(text)
    return out


def locomo_samples(path: Path) -> list[dict[str, Any]]:
    """LoCoMo's samples (conversation, ``qa``) from ``locomo10.json`` (a list of samples with a
    ``conversation``) or a directory of the per-conversation files of its ``locomo10_v2`` archive."""
    files = sorted(path.glob("*.json")) if path.is_dir() else [path]
    samples: list[Any] = []
    for file in files:
        data = json.loads(file.read_text(encoding="utf-8"))
        samples.extend(data if isinstance(data, list) else [data])
    return samples


def locomo_turns(sample: dict[str, Any]) -> list[dict[str, Any]]:
    """One sample's turns in session order (each a dict with ``speaker``, ``text`` and ``dia_id``)."""
    conv = sample.get("conversation", sample)
    sessions = sorted(
        (int(key.split("_")[1]), value)
        for key, value in conv.items()
        if re.fullmatch(r"session_\d+", key) and isinstance(value, list)
    )
    return [turn for _, turns in sessions for turn in turns]


def locomo_conversations(path: Path) -> dict[str, list[str]]:
    """Real LoCoMo turns, ``"<speaker>: <text>"`` per conversation, from its JSON file(s)."""
    return {
        f"conv-{number}": [f"{turn['speaker']}: {turn['text']}" for turn in locomo_turns(sample)]
        for number, sample in enumerate(locomo_samples(path))
    }


def engine_ceiling(texts: list[str], callers: int = CLIENTS) -> float:
    """The offline embedder's own throughput on these texts (emb/s): ``callers`` threads embedding one
    text at a time, as the server's adds do, in this process with no server around it."""
    from concurrent.futures import ThreadPoolExecutor

    from tablestore_openmemory_mcp.embedders import OfflineEmbedder

    embedder = OfflineEmbedder()
    embedder.embed_batch(texts[:callers], "add")  # load the engine
    sample = texts[:: max(1, len(texts) // 400)]  # spread over every conversation
    start = time.perf_counter()
    with ThreadPoolExecutor(callers) as pool:
        list(pool.map(lambda text: embedder.embed_batch([text], "add"), sample))
    return len(sample) / (time.perf_counter() - start)


async def run(
    layout: str, convs: dict[str, list[str]], src: str | None = None, embedder_env: dict[str, str] | None = None
) -> dict[str, Any]:
    from tests.server_process import HttpServer, server_env, structured

    from benchmarks.scale import proc_status

    work: list[tuple[str, str]] = [  # (user, turn), in conversation order per user
        ("one-user" if layout == "one-user" else user, turn) for user, turns in convs.items() for turn in turns
    ]
    queue: Any = iter(work) if layout == "one-user" else iter(list(convs.items()))
    tmp = Path(tempfile.mkdtemp(prefix="locomo-"))
    extra = {**(embedder_env or {}), **({"PYTHONPATH": src} if src else {})}
    server = HttpServer(server_env(tmp, **extra), tmp, transport="streamable-http")
    latencies: list[float] = []
    try:
        server.wait_ready(timeout=120)

        async def add(client: Any, text: str) -> None:
            start = time.perf_counter()
            structured(await client.call_tool("add_memories", {"text": text, "infer": False}))
            latencies.append((time.perf_counter() - start) * 1000)

        async def worker() -> None:
            if layout == "one-user":
                async with server.http(CLIENT_NAME, "one-user") as client:
                    for _, text in queue:
                        await add(client, text)
                return
            for user, turns in queue:
                async with server.http(CLIENT_NAME, user) as client:
                    for text in turns:
                        await add(client, text)

        start = time.perf_counter()
        with anyio.fail_after(RUN_TIMEOUT_S):
            async with anyio.create_task_group() as tg:
                for _ in range(CLIENTS):
                    tg.start_soon(worker)
        elapsed = time.perf_counter() - start
        stored = 0
        for user in sorted({u for u, _ in work}):
            async with server.http(CLIENT_NAME, user) as client:
                stored += int(structured(await client.call_tool("list_memories", {"limit": 1}))["total"])
        peak = proc_status(server.process.pid, "VmHWM")
    finally:
        server.stop()
    latencies.sort()
    return {
        "layout": layout,
        "turns": len(work),
        "adds_per_s": len(work) / elapsed,
        "p50": statistics.median(latencies),
        "p95": latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))],
        "stored": stored,
        "peak_rss_mb": peak,
        "elapsed_s": elapsed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=6000, help="turns in all (default 6000, LoCoMo-sized)")
    parser.add_argument("--layout", choices=["per-conversation", "one-user", "both"], default="both")
    parser.add_argument("--src", help="run this checkout's src directory instead of the installed package")
    parser.add_argument("--data", type=Path, help="real LoCoMo: locomo10.json or a directory of its v2 files")
    parser.add_argument(
        "--remote-latency",
        type=float,
        metavar="S",
        help="embed through the fake OpenAI-compatible server answering after S seconds instead of offline "
        "(what the server itself sustains with a remote embedder)",
    )
    args = parser.parse_args()
    if args.data:
        convs = locomo_conversations(args.data)
        source = f"LoCoMo ({args.data.name})"
    else:
        convs = {f"conv-{i}": conversation(i, args.turns // CONVERSATIONS) for i in range(CONVERSATIONS)}
        source = "LoCoMo-shaped synthetic turns"
    texts = [text for turns in convs.values() for text in turns]
    layouts = ["per-conversation", "one-user"] if args.layout == "both" else [args.layout]
    print(f"{source}: {len(texts)} turns, {len(convs)} conversations, {CLIENTS} MCP clients, infer=false, ")
    if args.remote_latency is not None:
        from tests.fakes.openai_server import FakeOpenAI
        from tests.server_process import llm_env

        fake = FakeOpenAI().start()
        fake.embed_latency = args.remote_latency
        try:
            env = llm_env(fake, LLM_PROVIDER="none", EMBEDDER_PROVIDER="openai")
            rows = [anyio.run(run, layout, convs, args.src, env) for layout in layouts]
        finally:
            fake.stop()
        print(f"embedded store ({sys.platform}), remote embedder: the fake server, {args.remote_latency * 1000:.0f} ms")
        print("a request.\n")
    else:
        ceiling = engine_ceiling(texts)
        rows = [anyio.run(run, layout, convs, args.src) for layout in layouts]
        print(f"embedded default ({sys.platform}). The offline embedder alone, {CLIENTS} threads adding these texts:")
        print(f"{ceiling:.1f} embeddings/s (the ceiling for adds on this machine).\n")
    print("| layout | turns | adds/s | add p50 / p95 (ms) | rows stored | peak RSS (MB) | wall (s) |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['layout']} | {r['turns']} | {r['adds_per_s']:.1f} | {r['p50']:.0f} / {r['p95']:.0f} "
            f"| {r['stored']} | {r['peak_rss_mb']:.0f} | {r['elapsed_s']:.0f} |"
        )


if __name__ == "__main__":
    main()
