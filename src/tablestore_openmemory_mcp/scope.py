"""Who is asking: the (client_name, user_id) identity every memory belongs to.

Identities come from the URL path (HTTP) or from ``MCP_STDIO_*`` (stdio). They end up as filter values
and Tablestore primary keys, so they are checked strictly here, once: letters and digits of any script,
plus ``. _ - @ : +``, at most 128 characters. Anything else (``/ = * ' "``, spaces, control characters)
is rejected with a clear message instead of being escaped, so no value can ever act as a wildcard or
reach into another scope.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tablestore_openmemory_mcp.errors import InvalidIdentity

MAX_IDENTITY_CHARS = 128
_IDENTITY = re.compile(r"^[\w.@:+-]+$")


__all__ = ["MAX_IDENTITY_CHARS", "InvalidIdentity", "Scope", "validate_identity_part"]


def validate_identity_part(value: str, what: str) -> str:
    """Return ``value`` if it is a safe identity part, else raise :class:`InvalidIdentity`."""
    if not isinstance(value, str) or not value:
        raise InvalidIdentity(f"{what} must not be empty")
    if len(value) > MAX_IDENTITY_CHARS:
        raise InvalidIdentity(f"{what} is longer than {MAX_IDENTITY_CHARS} characters")
    if not _IDENTITY.fullmatch(value) or value.isspace():
        raise InvalidIdentity(
            f"{what} {value[:40]!r} may contain only letters, digits and . _ - @ : + (no spaces, slashes, "
            "quotes, '=' or '*')"
        )
    return value


@dataclass(frozen=True)
class Scope:
    """One caller identity. ``shared`` scopes see the user's memories from every client."""

    client_name: str
    user_id: str
    shared: bool = False

    def __post_init__(self) -> None:
        validate_identity_part(self.client_name, "client_name")
        validate_identity_part(self.user_id, "user_id")
