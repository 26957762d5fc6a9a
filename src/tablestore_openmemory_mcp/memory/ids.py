"""Memory ids: what a memory id is, and the message for a string that is not one.

In the core because the service resolves the ids a caller names (including the odd ids earlier versions stored);
the edge (:mod:`~..edge.validation`) checks the same rules on input.
"""

from __future__ import annotations

import uuid

from tablestore_openmemory_mcp.errors import UserInputError

MAX_IDS_PER_CALL = 1000
#: Earlier versions imported ids as given (``x``, ``12345``, paths); such a stored id may still be named to erase it.
MAX_ODD_ID_CHARS = 1024


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
