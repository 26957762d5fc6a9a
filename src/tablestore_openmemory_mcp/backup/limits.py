"""How much a backup may unpack to, checked as it is read, so a hostile file cannot exhaust memory or CPU.

A gzip or zip member can unpack a thousand times its size (a few hundred KB becomes gigabytes of empty lines
or ``{},{},...``). Every limit here is checked while the data streams, never after reading it whole:

* unpacked bytes, absolute and as a ratio to the packed bytes read so far (a compression bomb trips the ratio
  after :attr:`Limits.ratio_slack` bytes, long before the absolute cap);
* records (non-empty lines) and empty lines (which cost a loop turn each but hold nothing);
* one line's length (a longer line is a per-record skip, read in bounded chunks, never held);
* nesting depth of a record and its number of objects and arrays (a per-record skip, never a
  ``RecursionError`` nor a 4 MiB line parsed into a hundred MB of empty dicts);
* ``memories.json``: parsed only when there are no JSON Lines, and only when it is at most
  :attr:`Limits.json_bytes` with at most :attr:`Limits.json_containers` objects and arrays.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import IO, Any

MiB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Limits:
    """The bounds of one import; the defaults fit any real backup of up to 2 million memories."""

    line_bytes: int = 4 * MiB
    records: int = 2_000_000
    blank_lines: int = 10_000
    unpacked_bytes: int = 16 * 1024 * MiB
    ratio: int = 50  # unpacked / packed, once past ratio_slack (JSON with vectors packs ~3x, text ~6x)
    ratio_slack: int = 64 * MiB
    json_bytes: int = 8 * MiB
    json_containers: int = 200_000
    depth: int = 32
    line_containers: int = 100_000  # objects and arrays in one record (a 4 MiB '[{},{},...]' would be 1.4 million)


DEFAULT_LIMITS = Limits()


class CountingReader:
    """A binary stream that counts the bytes read through it (the packed side of a gzip stream)."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.count = 0

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(size)
        self.count += len(data)
        return data

    def readable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:  # gzip rewinds only on seek(); we never seek
        raise OSError("a backup stream is read once, forward")

    def close(self) -> None:
        self.raw.close()


def too_deep(value: Any, limit: int) -> bool:
    """True when ``value`` nests objects or arrays more than ``limit`` levels deep (iterative: no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


__all__ = ["DEFAULT_LIMITS", "CountingReader", "Limits", "MiB", "too_deep"]
