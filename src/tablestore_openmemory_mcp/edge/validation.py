"""Input checks shared by every tool: reject bad input before anything is stored."""

from __future__ import annotations

import re
import uuid

from tablestore_openmemory_mcp.errors import UserInputError

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
MAX_IDS_PER_CALL = 1000
#: Earlier versions imported ids as given (``x``, ``12345``, paths); such a stored id may still be named to erase it.
MAX_ODD_ID_CHARS = 1024


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


def clean_memory_id(value: object) -> str:
    """Memory ids are UUIDs; anything else (paths, queries, wildcards) is rejected by name."""
    if not isinstance(value, str):
        raise UserInputError("a memory id must be a string")
    text = value.strip()
    try:
        return str(uuid.UUID(text)) if len(text) <= 36 else _bad_id(text)
    except ValueError:
        return _bad_id(text)


def _bad_id(text: str) -> str:
    shown = text if len(text) <= 60 else text[:60] + "..."
    raise UserInputError(
        f"{shown!r} is not a memory id; ids look like 1f0c6e8a-3b7d-4c1e-9a2b-5d4e3f2a1b0c "
        "(use search_memories or list_memories to find them)"
    )


def clean_memory_ids(values: object) -> list[str]:
    if isinstance(values, str):
        values = [values]
    if not isinstance(values, list) or not values:
        raise UserInputError("memory_ids must be a non-empty list of memory ids")
    if len(values) > MAX_IDS_PER_CALL:
        raise UserInputError(f"at most {MAX_IDS_PER_CALL} memory ids per call")
    return list(dict.fromkeys(clean_memory_id(value) for value in values))


def split_memory_ids(values: object) -> tuple[list[str], list[str], list[tuple[str, str]]]:
    """``(memory ids, odd ids, refused)``: odd ids are strings that are not memory ids but may name a memory an
    earlier version stored under them (the caller looks them up); refused are ``(shown id, why)``."""
    if isinstance(values, str):
        values = [values]
    if not isinstance(values, list) or not values:
        raise UserInputError("memory_ids must be a non-empty list of memory ids")
    if len(values) > MAX_IDS_PER_CALL:
        raise UserInputError(f"at most {MAX_IDS_PER_CALL} memory ids per call")
    ids: list[str] = []
    odd: list[str] = []
    refused: list[tuple[str, str]] = []
    for value in values:
        try:
            ids.append(clean_memory_id(value))
        except UserInputError as exc:
            if isinstance(value, str) and value.strip() and len(value) <= MAX_ODD_ID_CHARS:
                odd.append(value)
            else:
                shown = value[:60] if isinstance(value, str) else repr(value)[:60]
                refused.append((shown, str(exc)))
    return list(dict.fromkeys(ids)), list(dict.fromkeys(odd)), refused


def not_a_memory_id(value: str) -> str:
    """The message for an id that is neither a memory id nor the id of a stored memory."""
    try:
        _bad_id(value)
    except UserInputError as exc:
        return str(exc)
    return ""  # pragma: no cover  (_bad_id always raises)


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
