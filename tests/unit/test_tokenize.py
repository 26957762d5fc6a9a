"""stores/tokenize.py's keyword side of a search (issue 23): function words dropped, everything else kept."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tablestore_openmemory_mcp.stores.tokenize import STOP_WORDS, keyword_query, query_tokens, tokens


def test_a_question_keeps_its_names_and_things() -> None:
    assert keyword_query("When did Caroline go to the LGBTQ support group?") == "Caroline go LGBTQ support group"
    assert keyword_query("What's Melanie's cat called?") == "Melanie cat called"


def test_cjk_runs_and_mixed_text_are_kept_whole() -> None:
    assert keyword_query("我住在哪个城市") == "我住在哪个城市"
    assert keyword_query("Melanie的猫 is what") == "Melanie 的猫"


def test_a_query_of_function_words_only_is_searched_as_it_is() -> None:
    for text in ("what is it?", "Who are you", "", "   "):
        assert keyword_query(text) == text


def test_underscores_and_digits_split_like_the_index() -> None:
    assert tokens(keyword_query("Where do I use vim_go 2 for Go?")) == ["use", "vim", "go", "2", "go"]


@given(st.text(max_size=80))
def test_the_keyword_query_is_the_query_tokens_without_function_words(text: str) -> None:
    kept = [t for t in query_tokens(text) if t not in STOP_WORDS]
    assert query_tokens(keyword_query(text)) == (kept or query_tokens(text))
