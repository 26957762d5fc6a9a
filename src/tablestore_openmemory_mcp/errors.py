"""One exception hierarchy for the whole server, so every edge (MCP tools, REST, CLI) maps categories.

* :class:`UserInputError` - the caller can fix it; the message says how (tools: an ``isError`` result).
* :class:`NotFoundError` - an id that is not among the caller's memories (it may exist in another
  scope: we never say).
* :class:`ConflictError` - a concurrent change won; the operation can be retried.
* :class:`DependencyError` - the LLM, the embedder or the store failed; the message names the setting.
* :class:`ScopeMissing` - a store was asked to act without a scope: a programming error, never
  "everything" (scope fails closed).

Anything else reaching an edge is a bug: logged with its traceback and reported as an internal error.
"""

from __future__ import annotations


class MemoryServerError(Exception):
    """Root of every error this server raises on purpose."""


class UserInputError(MemoryServerError, ValueError):
    """Input the user (or their assistant) can fix; the message says how."""


class InvalidIdentity(UserInputError):
    """A client_name or user_id that cannot be used safely."""


class AppPaused(UserInputError):
    """The caller's app (client) is paused for this user: its MCP writes and history reads are refused, and so is a
    REST write naming it as the client."""

    def __init__(self, client: str, user_id: str) -> None:
        super().__init__(
            f"the app {client!r} is paused for user {user_id!r}, so it cannot read or change memories; resume it in "
            f"the memory browser or with PUT /api/v1/apps/{client}"
        )


class NotFoundError(MemoryServerError):
    """Something the caller named is not among their memories."""


class MemoryNotFound(NotFoundError):
    """A memory id that is not among the caller's memories."""


class ConflictError(MemoryServerError):
    """Another writer changed the row first (optimistic concurrency); re-read and retry."""


class DuplicateMemory(ConflictError):
    """The exact text is already stored in this scope; ``existing_id`` names it."""

    def __init__(self, existing_id: str) -> None:
        super().__init__(f"this memory is already stored as {existing_id}")
        self.existing_id = existing_id


class DependencyError(MemoryServerError):
    """An external service (LLM, embedder, store) failed; the message names what to check."""


class StoreError(DependencyError):
    """The memory store failed or is unreachable."""


class ScopeMissing(MemoryServerError, RuntimeError):
    """A store call arrived without a caller scope. Scope fails closed: this is a bug, never 'all rows'."""
