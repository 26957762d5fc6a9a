"""The one clock for stored timestamps: ISO 8601 in UTC with microseconds.

Why one function: rows, history events, app switches and backups compare these strings as text (a later time
sorts later only when every writer uses the same form), so every writer takes its "now" from here.
"""

from __future__ import annotations

from datetime import UTC, datetime


def now_iso() -> str:
    """Now, as every stored timestamp is written: ``2026-12-07T21:00:00.123456+00:00``."""
    return datetime.now(UTC).isoformat()
