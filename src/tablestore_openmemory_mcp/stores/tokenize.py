"""A tiny tokenizer for keyword search over Chinese and English text.

Why not a real segmenter (jieba etc.)? It would add a large dependency and a dictionary for a signal
that mem0 only uses as a *boost* on top of vector search. Characters plus adjacent bigrams give
good recall for Chinese and Japanese without a dictionary ("乌龙茶" -> 乌, 龙, 茶, 乌龙, 龙茶), and
the same function is used for documents and queries, so both sides always agree.

Latin-script text is split on anything that is not a letter or digit (underscore included, to
agree with SQLite FTS5's ``unicode61`` tokenizer) and lowercased; diacritics are kept.

The BM25 parameters both stores score with live here too (:data:`BM25_K1`, :data:`BM25_B`), and so does
:func:`keyword_query`, which drops English function words from a search's keyword side (issue 23).
"""

from __future__ import annotations

import re

#: Scripts written without spaces between words: CJK ideographs (+ extensions, compatibility),
#: Hiragana, Katakana and the CJK symbols block's iteration marks. Hangul uses spaces, so it is
#: treated like Latin text.
_CJK = (
    "\u3005\u3006\u3007"  # 々 〆 〇
    "\u3040-\u30ff"  # Hiragana, Katakana
    "\u3400-\u4dbf"  # CJK Extension A
    "\u4e00-\u9fff"  # CJK Unified Ideographs
    "\uf900-\ufaff"  # CJK Compatibility Ideographs
    "\U00020000-\U0003134f"  # Extensions B..G
)
_TOKEN_RE = re.compile(rf"([{_CJK}]+)|((?:(?![{_CJK}])[^\W_])+)")

#: Okapi BM25 parameters of both stores' keyword scores. ``b`` (length normalisation) is 0.4 rather than
#: Lucene's 0.75: memories are short and of similar length, and a long one that repeats a question's
#: word is no less relevant. Measured on LoCoMo (``benchmarks.locomo_recall``, offline embedder): R@5
#: 0.551 at 0.75, 0.558 at 0.5, 0.564 at 0.4, 0.565 at 0.3 (with the other issue-23 settings).
BM25_K1 = 1.2
BM25_B = 0.4

#: English function words (question words, pronouns, auxiliaries, prepositions) that a search's keyword
#: side ignores. Every memory of a scope has some of them, so BM25 gave memories that share only "what
#: did I ... to the" with a question a keyword score; once mixed into the relevance that noise pushed the
#: answer down (LoCoMo R@5 0.511 -> 0.531 without them, ``benchmarks.locomo_recall``). Only the query
#: side: the stored keyword index is unchanged, so existing stores need no rebuild.
STOP_WORDS = frozenset(
    """a an the and or but if of to in on at by for with from as is are was were be been being am do does
    did have has had i you he she it we they me him her us them my your his its our their mine yours
    this that these those what which who whom whose when where why how not no so than too very can could
    will would shall should may might must just also about into over after before up down out off again
    there here all any both each few more most other some such only own same s t don now then once""".split()  # noqa: SIM905 (a word list reads better as text)
)


def tokens(text: str | None) -> list[str]:
    """Split ``text`` into lowercase keyword tokens, in order, duplicates kept.

    Latin words come out whole; each run of CJK characters yields every character and then every
    adjacent bigram of the run.
    """
    if not text:
        return []
    out: list[str] = []
    for match in _TOKEN_RE.finditer(text.lower()):
        run, word = match.group(1), match.group(2)
        if word:
            out.append(word)
            continue
        out.extend(run)
        out.extend(run[i : i + 2] for i in range(len(run) - 1))
    return out


def query_tokens(text: str | None, limit: int | None = None) -> list[str]:
    """Distinct tokens for a keyword *query*: like :func:`tokens`, but a CJK run of two or more
    characters contributes only its bigrams.

    Documents are indexed with characters *and* bigrams, so a bigram query still finds them, while
    skipping single characters (which occur in a large share of Chinese texts) keeps the set of
    matching rows, and so the cost of BM25 ranking, small. A lone character is still searched.
    """
    seen: dict[str, None] = {}
    if not text:
        return []
    for match in _TOKEN_RE.finditer(text.lower()):
        run, word = match.group(1), match.group(2)
        if word:
            grams = [word]
        elif len(run) == 1:
            grams = [run]
        else:
            grams = [run[i : i + 2] for i in range(len(run) - 1)]
        for gram in grams:
            seen.setdefault(gram, None)
            if limit is not None and len(seen) >= limit:
                return list(seen)
    return list(seen)


def unique_tokens(text: str | None, limit: int | None = None) -> list[str]:
    """``tokens(text)`` without duplicates (first occurrence order), optionally capped at ``limit``."""
    seen: dict[str, None] = {}
    for token in tokens(text):
        seen.setdefault(token, None)
        if limit is not None and len(seen) >= limit:
            break
    return list(seen)


def keyword_query(text: str) -> str:
    """The keyword side of a search for ``text``: its words without :data:`STOP_WORDS`, space separated
    (CJK runs kept whole), or ``text`` itself when nothing else is left ("what is it?" still matches)."""
    kept = [
        word or run
        for match in _TOKEN_RE.finditer(text or "")
        for run, word in [match.groups()]
        if run or (word and word.lower() not in STOP_WORDS)
    ]
    return " ".join(kept) if kept else text
