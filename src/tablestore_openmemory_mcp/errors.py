"""One exception hierarchy for the whole server, so every edge (MCP tools, REST, CLI) maps categories.

The module every layer may import (as httpx keeps all of its exceptions in one module)::

    MemoryServerError
    ├── UserInputError (ValueError)     the caller can fix it; the message says how (tools: an isError result)
    │   ├── InvalidIdentity, AppPaused
    │   └── BackupFormatError ─ BackupTooLarge   a backup file this server cannot read (nothing imported)
    ├── NotFoundError ─ MemoryNotFound  not among the caller's memories (it may exist in another scope: never said)
    ├── ConflictError                   a concurrent change won; the operation can be retried
    ├── DependencyError                 the LLM, the embedder or the store failed; the message names the setting
    │   ├── StoreError                  (stores/tablestore: TablestoreUnavailableError, RowRejected, SwitchedAway)
    │   ├── LLMError ─ LLMReplyError
    │   ├── EmbeddingError
    │   └── Mem0Missing, Mem0Changed    the optional [mem0] extra is missing, or its internals changed
    ├── SettingsError                   a bad setting, one line naming the variable (exit code 2)
    ├── StartupError                    the server cannot start; one line naming what to fix (exit code 1)
    └── ScopeMissing (RuntimeError)     a store was asked to act without a scope: a bug, never "everything"

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


class BackupFormatError(UserInputError):
    """The file is not a backup this server can read, or it is damaged; nothing was imported."""


class BackupTooLarge(BackupFormatError):
    """The file unpacks to more than the backup limits allow (HTTP 413); nothing was imported."""


class ConflictError(MemoryServerError):
    """Another writer changed the row first (optimistic concurrency); re-read and retry."""


class DependencyError(MemoryServerError):
    """An external service (LLM, embedder, store) failed; the message names what to check."""


class StoreError(DependencyError):
    """The memory store failed or is unreachable."""


class LLMError(DependencyError):
    """The LLM could not be used; the message says which setting to check."""


class LLMReplyError(LLMError):
    """The LLM answered, but not with usable JSON."""


class EmbeddingError(DependencyError):
    """The embedder failed or returned something unusable; the message names the setting to check."""

    #: True when the provider refused the *inputs* (HTTP 400): a shared batch is retried per caller.
    input_rejected: bool = False


class Mem0Missing(DependencyError):
    """mem0 is not installed (it is the optional ``[mem0]`` extra)."""


class Mem0Changed(DependencyError):
    """The installed mem0 no longer has the internals ``tablestore_openmemory_mcp.mem0.register`` extends."""


class SettingsError(MemoryServerError):
    """A bad setting, already phrased as one line that names the variable."""


class StartupError(MemoryServerError):
    """The server cannot start; the message is one line naming what to fix."""


class ScopeMissing(MemoryServerError, RuntimeError):
    """A store call arrived without a caller scope. Scope fails closed: this is a bug, never 'all rows'."""
