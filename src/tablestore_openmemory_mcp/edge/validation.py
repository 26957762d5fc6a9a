"""Input checks shared by every tool and REST route: reject bad input before anything is stored (the memory-id
rules themselves live in the core, :mod:`~..memory.ids`, and are re-exported here)."""

from __future__ import annotations

import re

from tablestore_openmemory_mcp.errors import UserInputError
from tablestore_openmemory_mcp.memory.ids import (
    MAX_IDS_PER_CALL,
    clean_memory_id,
    clean_memory_ids,
    not_a_memory_id,
    split_memory_ids,
)

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


__all__ = [
    "MAX_IDS_PER_CALL",
    "UserInputError",
    "clean_limit",
    "clean_memory_id",
    "clean_memory_ids",
    "clean_text",
    "not_a_memory_id",
    "split_memory_ids",
]


def clean_text(value: object, what: str, max_chars: int) -> str:
    """Strip ``value`` and check it is non-empty, within ``max_chars`` and valid, printable Unicode."""
    if not isinstance(value, str):
        raise UserInputError(f"{what} must be a string")
    text = value.strip()
    if not text:
        raise UserInputError(f"{what} must not be empty")
    if len(text) > max_chars:
        raise UserInputError(
            f"{what} is {len(text)} characters long; the limit is {max_chars} (MEMORY_MAX_TEXT_CHARS). "
            "Split it into smaller memories."
        )
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise UserInputError(f"{what} contains invalid Unicode (a lone surrogate)") from None
    if _CONTROL.search(text):
        raise UserInputError(f"{what} contains control characters; remove them and try again")
    return text


def clean_limit(value: object, maximum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise UserInputError("limit must be a whole number")
    if value < 1 or value > maximum:
        raise UserInputError(f"limit must be between 1 and {maximum} (got {value})")
    return value


_CURSOR = re.compile(r"^[A-Za-z0-9_\-=.:~+/]{1,512}$")


def clean_cursor(value: object) -> str | None:
    """A list cursor is an opaque token we handed out: short, printable, no spaces."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not _CURSOR.match(value):
        raise UserInputError("cursor must be the next_cursor value of a previous list_memories answer")
    return value
