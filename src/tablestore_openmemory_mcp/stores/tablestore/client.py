"""The one way this server builds a ``tablestore`` SDK client.

Every caller (the memories store, the history log, the upgrade from the reference, ``reembed``) needs the same
things: the four settings checked by name, the endpoint without a trailing slash, and the SDK's own request logs
muted (it logs every failed request at ERROR, including the expected "does not exist" at startup and transient
errors that are retried; our own logs say what matters; a logger level set by the user wins). Callers differ only
in the SDK retry policy: the store and the history log retry themselves (:mod:`.retry`), so theirs is none.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from tablestore import OTSClient
from tablestore.error import OTSClientError
from tablestore.retry import NoRetryPolicy

if TYPE_CHECKING:
    from tablestore_openmemory_mcp.settings import Settings


def make_client(
    *,
    endpoint: str | None,
    instance_name: str | None,
    access_key_id: str | None,
    access_key_secret: str | None,
    sts_token: str | None = None,
    region: str | None = None,
    timeout: float = 10.0,
    max_connection: int | None = None,
    retry_policy: Any = None,
    logger_name: str = f"{__name__}.sdk",
    what: str = "Tablestore store",
) -> OTSClient:
    """An ``OTSClient``; a missing setting or a bad endpoint is a ``ValueError`` naming it (``what`` says who asked)."""
    given = {
        "endpoint": endpoint,
        "instance_name": instance_name,
        "access_key_id": access_key_id,
        "access_key_secret": access_key_secret,
    }
    missing = [name for name, value in given.items() if not value]
    if missing:
        raise ValueError(f"{what} needs {', '.join(missing)} (TABLESTORE_* settings)")
    assert endpoint is not None
    try:
        client = OTSClient(
            endpoint.rstrip("/"),
            access_key_id,
            access_key_secret,
            instance_name,
            sts_token=sts_token or None,
            region=region or None,
            socket_timeout=timeout,
            max_connection=max_connection,  # None: the SDK's default pool
            retry_policy=retry_policy if retry_policy is not None else NoRetryPolicy(),
            logger_name=logger_name,
        )
    except OTSClientError as exc:
        raise ValueError(f"Invalid Tablestore settings for endpoint {endpoint!r}: {exc}") from None
    sdk_logger = logging.getLogger(logger_name)
    if sdk_logger.level == logging.NOTSET:
        sdk_logger.setLevel(logging.CRITICAL)
    return client


def client_from_settings(settings: Settings, *, retry_policy: Any, logger_name: str, what: str) -> OTSClient:
    """:func:`make_client` with the server's ``TABLESTORE_*`` settings (the upgrade and ``reembed``; the store
    and the history log are built from their own configuration)."""
    return make_client(
        **settings.tablestore.client_args(),
        retry_policy=retry_policy,
        logger_name=logger_name,
        what=what,
    )
