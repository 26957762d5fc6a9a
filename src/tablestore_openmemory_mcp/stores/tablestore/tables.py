"""Table bootstrap shared by the memories store and the history log.

Why one copy: both start the same way (DescribeTable; when the table is missing, CreateTable, where
"already exists" means another replica won the race) and read Tablestore's errors the same way, so a
fix to the race handling or to the credentials message lands in both. Every call goes through the
caller's :class:`~.retry.Retrier`; what a failure becomes is the caller's ``error`` (each names its
table its own way).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from tablestore import CapacityUnit, OTSClient, OTSServiceError, ReservedThroughput, TableMeta, TableOptions

from .retry import Retrier

logger = logging.getLogger(__name__)

#: Error codes meaning the access key or token was refused (HTTP 403 means the same).
AUTH_CODES = frozenset({"OTSAuthFailed", "OTSNoPermissionAccess", "OTSInvalidAccessKeyId"})

#: What a failed table call becomes: ``error(api, exc)``.
ErrorFor = Callable[[str, OTSServiceError], Exception]


def not_found(exc: BaseException) -> bool:
    """True when Tablestore says the table or index does not exist (by code or, from emulators, by message)."""
    if not isinstance(exc, OTSServiceError):
        return False
    return bool(exc.code == "OTSObjectNotExist" or "does not exist" in (exc.message or "").lower())


def already_exists(exc: BaseException) -> bool:
    """True when a create lost a race: the table or index is already there, which is success."""
    if not isinstance(exc, OTSServiceError):
        return False
    return bool(exc.code == "OTSObjectAlreadyExist" or "already exist" in (exc.message or "").lower())


def credentials_rejected(exc: OTSServiceError, where: str, api: str | None = None) -> PermissionError | None:
    """A PermissionError naming ``where`` (and ``api``) when ``exc`` is an auth failure, else None.

    Why: a refused key is a setup mistake a person must fix, not a store failure to retry or wrap.
    """
    if exc.code not in AUTH_CODES and exc.http_status != 403:
        return None
    during = f" during {api}" if api else ""
    return PermissionError(f"Tablestore at {where} rejected the credentials{during}: {exc.code}: {exc.message}")


def describe_primary_key(
    client: OTSClient, retry: Retrier, table: str, error: ErrorFor
) -> list[tuple[str, str]] | None:
    """The table's primary key as ``[(name, TYPE)]`` (1 DescribeTable), or None when the table does not exist."""
    try:
        desc = retry.call("DescribeTable", lambda: client.describe_table(table))
    except OTSServiceError as exc:
        if not not_found(exc):
            raise error("DescribeTable", exc) from exc
        return None
    return primary_key_names(desc.table_meta.schema_of_primary_key)


def primary_key_names(schema: Sequence[Any] | None) -> list[tuple[str, str]]:
    """``[(name, TYPE)]`` from an SDK primary-key schema, comparable with a ``PRIMARY_KEY`` constant."""
    return [(str(c[0]), str(c[1]).upper()) for c in schema or []]


def create_table(
    client: OTSClient, retry: Retrier, table: str, primary_key: Sequence[tuple[str, str]], error: ErrorFor
) -> None:
    """CreateTable (no TTL, one version, no reserved throughput); "already exists" (another replica won) is success."""
    try:
        retry.call(
            "CreateTable",
            lambda: client.create_table(
                TableMeta(table, list(primary_key)),
                TableOptions(time_to_live=-1, max_version=1),
                ReservedThroughput(CapacityUnit(0, 0)),
            ),
        )
    except OTSServiceError as exc:
        if not already_exists(exc):
            raise error("CreateTable", exc) from exc


def close_client(client: OTSClient) -> None:
    """Release the client's pooled connections; best effort, since closing must not mask what came before."""
    try:
        client.connection.pool.clear()
    except Exception:  # pragma: no cover - best effort
        logger.debug("closing Tablestore connections failed", exc_info=True)
