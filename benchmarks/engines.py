"""The classic engine beside mem0 2.x's (issue 25, item 3): ``python -m benchmarks.engines [decisions|recall]``.

``decisions``: the same conversations, added one message at a time, through each engine's add path with
a scripted LLM that answers as a good model would (classic: extract facts, then decide
ADD/UPDATE/DELETE/NONE against the similar memories; mem0 2.x: one additive extraction that lists only
what is new). Reported per scenario: the events, what is stored afterwards, LLM calls, embedding
requests and prompt characters sent. The LLM is scripted, so this shows what each engine *does* with a
decision, not how well a real model decides.

``recall``: LoCoMo retrieval recall for both engines on the same data and embedder (``infer=false``, as
peers publish it), through ``benchmarks.locomo_recall`` (its MCP run, with ``MEMORY_ENGINE`` set). That
module is written on another branch (issue 23); until it is merged this subcommand says so and exits.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ENGINES = ("classic", "mem0")


@dataclass(frozen=True)
class Turn:
    """One message and what a good LLM answers: the facts in it, and (classic) how each relates."""

    text: str
    facts: tuple[str, ...]
    decision: tuple[tuple[str, str, str | None], ...] = ()  # (event, text, target text) for classic
    new: tuple[str, ...] | None = None  # mem0: what its additive extraction lists (default: the facts)


SCENARIOS: dict[str, list[Turn]] = {
    "preference changes": [
        Turn("I like green tea", ("Likes green tea",)),
        Turn(
            "Actually I now prefer coffee over tea",
            ("Prefers coffee over tea",),
            (("UPDATE", "Prefers coffee over tea", "Likes green tea"),),
        ),
    ],
    "retraction": [
        Turn("I live in Hangzhou", ("Lives in Hangzhou",)),
        Turn(
            "I moved away, I no longer live in Hangzhou",
            ("No longer lives in Hangzhou",),
            (("DELETE", "", "Lives in Hangzhou"),),
        ),
    ],
    "repeat": [
        Turn("My cat is called Mochi", ("Has a cat named Mochi",)),
        Turn(
            "Did I tell you my cat is called Mochi?",
            ("Has a cat named Mochi",),
            (("NONE", "", "Has a cat named Mochi"),),
            (),
        ),
    ],
    "refinement": [
        Turn("I work at a bank", ("Works at a bank",)),
        Turn(
            "I am a data engineer at that bank",
            ("Works at a bank as a data engineer",),
            (("UPDATE", "Works at a bank as a data engineer", "Works at a bank"),),
        ),
    ],
    "two facts, one known": [
        Turn("I play the cello", ("Plays the cello",)),
        Turn(
            "I play the cello and started learning Japanese",
            ("Plays the cello", "Is learning Japanese"),
            (("NONE", "", "Plays the cello"), ("ADD", "Is learning Japanese", None)),
            ("Is learning Japanese",),
        ),
    ],
}


class ScriptedLLM:
    """A chat handler for the fake server: answers the prompt in front of it from the current turn."""

    def __init__(self) -> None:
        self.turn: Turn | None = None
        self.calls = 0
        self.prompt_chars = 0

    def __call__(self, body: dict[str, Any]) -> str:
        assert self.turn is not None
        self.calls += 1
        messages = body["messages"]
        self.prompt_chars += sum(len(str(m.get("content", ""))) for m in messages)
        last = str(messages[-1]["content"])
        if last.startswith("Decide the events"):  # classic decision: ids as the flow numbered them
            existing = json.loads(last.split("\n", 1)[1])["existing_memories"]
            ids = {m["text"]: m["id"] for m in existing}
            events = []
            for event, text, target in self.turn.decision:
                item = {"event": event, "text": text or target, "id": ids.get(target or "", "new")}
                events.append(item)
            return json.dumps({"memory": events})
        if last.startswith("Input:"):  # classic fact extraction
            return json.dumps({"facts": list(self.turn.facts)})
        new = self.turn.facts if self.turn.new is None else self.turn.new  # mem0 2.x: additive extraction
        return json.dumps({"memory": [{"id": str(i), "text": t} for i, t in enumerate(new)]})


def engine_settings(data_dir: Path, fake: Any, engine: str) -> Any:
    from tablestore_openmemory_mcp.settings import Settings

    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        data_dir=data_dir,
        openai_api_key=fake.api_key,
        openai_base_url=fake.base_url,
        memory_engine=engine,
        llm_max_retries=0,
        log_level="WARNING",
    )


def run_decisions(names: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """The scenarios (all by default) on both engines, a fresh embedded store each; returns the figures."""
    from tests.fakes.openai_server import FakeOpenAI

    from tablestore_openmemory_mcp.app.bootstrap import build_components
    from tablestore_openmemory_mcp.scope import Scope

    out: dict[str, dict[str, Any]] = {}
    for name, turns in SCENARIOS.items():
        if names is not None and name not in names:
            continue
        for engine in ENGINES:
            llm = ScriptedLLM()
            with FakeOpenAI() as fake, tempfile.TemporaryDirectory(prefix="engines-") as tmp:
                fake.chat_handler = llm
                components = build_components(engine_settings(Path(tmp), fake, engine))
                flow, scope = components.service.flow, Scope("bench", "alice")
                events: list[str] = []
                embeds = fake.counts["embeddings"]
                try:
                    for turn in turns:
                        llm.turn = turn
                        result = flow.add(scope, turn.text, True, "mcp")
                        events.append(" ".join(f"{e.event}" for e in result.events) or "-")
                    stored = sorted(m.memory for m in flow.list_memories(scope, 100).memories)
                finally:
                    components.service.close()
                out[f"{name} | {engine}"] = {
                    "events": events,
                    "stored": stored,
                    "llm_calls": llm.calls,
                    "embedding_requests": fake.counts["embeddings"] - embeds,
                    "prompt_chars": llm.prompt_chars,
                }
    return out


def decisions_table(results: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| scenario | engine | events per add | stored afterwards | LLM calls | embedding requests | prompt chars |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, r in results.items():
        scenario, engine = key.split(" | ")
        lines.append(
            f"| {scenario} | {engine} | {' / '.join(r['events'])} | {'; '.join(r['stored'])} | {r['llm_calls']} "
            f"| {r['embedding_requests']} | {r['prompt_chars']:,} |"
        )
    return "\n".join(lines)


def run_recall(
    data: Path, conversations: int | None, src: str | None, min_score: str | None = None
) -> list[tuple[str, dict[str, Any]]]:
    """LoCoMo recall per engine through ``benchmarks.locomo_recall`` (same data, same offline embedder)."""
    try:
        from benchmarks import locomo_recall
    except ImportError:
        sys.exit("benchmarks/locomo_recall.py is not here yet (issue 23's branch writes it); rerun after its merge")
    import anyio

    convs = locomo_recall.load(data, conversations)
    base = {"LLM_PROVIDER": "none", "LOG_LEVEL": "WARNING", "EMBEDDER_PROVIDER": "offline"}
    if min_score is not None:  # classic: its relevance cutoff; mem0: its threshold (default 0.1)
        base["TABLESTORE_SEARCH_MEMORY_MIN_SCORE"] = min_score
    runner: Callable[[dict[str, str]], dict[str, Any]] = lambda env: anyio.run(  # noqa: E731
        locomo_recall.run_mcp, convs, env, src
    )
    return [(engine, runner({**base, "MEMORY_ENGINE": engine})) for engine in ENGINES]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=["decisions", "recall"], nargs="?", default="decisions")
    parser.add_argument("--data", type=Path, help="recall: locomo10.json or the locomo10_v2 directory")
    parser.add_argument("--conversations", type=int, help="recall: only the first N conversations")
    parser.add_argument("--src", help="recall: run this checkout's src directory instead of the installed package")
    parser.add_argument("--min-score", help="recall: TABLESTORE_SEARCH_MEMORY_MIN_SCORE for both (0: no cutoff)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args(argv)
    if args.what == "decisions":
        results: Any = run_decisions()
        print(decisions_table(results))
    else:
        if args.data is None:
            sys.exit("recall needs --data (locomo10.json from https://github.com/snap-research/locomo)")
        results = run_recall(args.data, args.conversations, args.src, args.min_score)
        from benchmarks import locomo_recall

        print(locomo_recall.table(results))
        print()
        print(locomo_recall.category_table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
