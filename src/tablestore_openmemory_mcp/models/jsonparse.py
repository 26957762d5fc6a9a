"""Find the JSON object in an LLM reply, whatever the model wrapped around it.

Models add code fences, ``<think>`` blocks, prose before and after, or trailing commentary. This
module strips what it can and then scans for the first complete JSON value that decodes; a list at
top level is wrapped as ``{"items": [...]}`` so callers always get a dict.
"""

from __future__ import annotations

import json
import re
from typing import Any

_THINK = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)
_FENCE = re.compile(r"```(?:json|JSON)?\s*(.*?)```", re.DOTALL)


class NoJSONFound(ValueError):
    """The reply holds no decodable JSON object."""


def parse_json_object(reply: str | None) -> dict[str, Any]:
    """Return the first JSON object found in ``reply``; raise :class:`NoJSONFound` if there is none."""
    if not reply or not reply.strip():
        raise NoJSONFound("the reply was empty")
    text = _THINK.sub("", reply).strip()
    candidates = [match.group(1) for match in _FENCE.finditer(text)] + [text]
    decoder = json.JSONDecoder(strict=False)
    for candidate in candidates:
        for start, char in enumerate(candidate):
            if char not in "{[":
                continue
            try:
                value, _ = decoder.raw_decode(candidate, start)
            except json.JSONDecodeError:
                continue
            if isinstance(value, dict):
                return value
            if isinstance(value, list):
                return {"items": value}
    raise NoJSONFound(f"no JSON object in the reply: {reply[:120]!r}")
