"""Serve the HTTP app with uvicorn on an already-bound socket, with bounded resources and a clean drain.

* **Header-read timeout** (``MCP_HEADER_TIMEOUT``): a connection that has not sent a complete request head
  within it is closed (uvicorn itself never times out a first request).
* **Connection cap** (``MCP_MAX_CONNECTIONS``, in :class:`~.http_app.ConnectionCap`); the open-files limit is
  raised to fit it where the OS allows.
* **Accept errors** (out of file descriptors) are logged at most once per :data:`ACCEPT_LOG_INTERVAL`
  seconds, one line with a count, instead of a traceback per attempt.
* **Logs**: the access log only with ``LOG_ACCESS=true``; uvicorn's and the SDK's lifecycle and per-request
  INFO lines only at ``LOG_LEVEL=debug``.
* **Drain**: on SIGTERM/SIGINT the listener closes first, SSE answers in flight reach their streams (at most
  :data:`DRAIN_SECONDS`), the streams end, then uvicorn finishes open requests.
* The service is built while the port already answers: ``startup`` runs in a worker thread and the app is
  marked ready when it returns.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable
from typing import Any

import anyio
import anyio.to_thread
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from tablestore_openmemory_mcp.settings import Settings
from tablestore_openmemory_mcp.transports.http_app import HttpApp

logger = logging.getLogger(__name__)

DRAIN_SECONDS = 10
ACCEPT_LOG_INTERVAL = 10.0
FD_RESERVE = 128  # files the server needs besides its connections (store, logs, model weights, ...)


class _HeaderTimeoutProtocol(H11Protocol):
    """uvicorn's h11 protocol, plus: close a connection whose first request head is not complete in time."""

    header_timeout: float = 10.0

    # uvicorn's H11Protocol narrows BaseProtocol's BaseTransport to Transport with this same ignore; we match it
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_timer = self.loop.call_later(self.header_timeout, self._header_deadline)

    def _header_deadline(self) -> None:
        if self.cycle is None and not self.transport.is_closing():
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._header_timer.cancel()
        super().connection_lost(exc)


def _protocol_class(header_timeout: float) -> type[H11Protocol]:
    return type("HeaderTimeoutProtocol", (_HeaderTimeoutProtocol,), {"header_timeout": header_timeout})


class AcceptErrorLimiter:
    """An asyncio exception handler: accept failures become one line per interval; the rest go to the default."""

    def __init__(self, interval: float = ACCEPT_LOG_INTERVAL, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.clock = clock
        self.suppressed = 0
        self._last: float | None = None

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if "accept" not in str(context.get("message", "")):
            loop.default_exception_handler(context)
            return
        now = self.clock()
        if self._last is not None and now - self._last < self.interval:
            self.suppressed += 1
            return
        more = f" ({self.suppressed} more since the last report)" if self.suppressed else ""
        logger.error("cannot accept connections: %s%s; raise the open-files limit or MCP_MAX_CONNECTIONS", exc, more)
        self._last, self.suppressed = now, 0


def raise_open_files_limit(wanted: int) -> None:
    """Raise the soft open-files limit to ``wanted`` (up to the hard limit); warn if even that is too low."""
    try:
        import resource
    except ImportError:  # Windows: no such limit to raise
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= wanted:
        return
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):
        target = soft
    if target < wanted:
        logger.warning(
            "the open-files limit is %d, below MCP_MAX_CONNECTIONS + %d = %d: lower MCP_MAX_CONNECTIONS or raise "
            "the limit (ulimit -n)",
            target,
            FD_RESERVE,
            wanted,
        )


def quiet_transport_logs(level: str) -> None:
    """Below DEBUG, uvicorn's and the SDK's per-request and lifecycle lines are not shown (one startup line is
    ours); warnings and errors still are, except the SDK SSE transport's per-request ones. The access log is
    separate (``LOG_ACCESS``)."""
    if level.upper() == "DEBUG":
        return
    quieter = max(logging.WARNING, logging.getLevelName(level.upper()))
    for name in ("uvicorn.error", "mcp.server.streamable_http", "mcp.server.streamable_http_manager"):
        logging.getLogger(name).setLevel(quieter)
    # The SDK's SSE transport logs every refused POST (unknown session, unparsable body: with a traceback); the
    # client gets the reason in the answer, so a misbehaving client cannot flood the log.
    logging.getLogger("mcp.server.sse").setLevel(logging.CRITICAL)


class _Server(uvicorn.Server):
    """uvicorn, draining our SSE streams between closing the listener and waiting for open requests."""

    def __init__(self, config: uvicorn.Config, app: HttpApp) -> None:
        super().__init__(config)
        self._app = app

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        for server in self.servers:
            server.close()
        await self._app.close(DRAIN_SECONDS)
        await super().shutdown(sockets)


async def serve_http(
    app: HttpApp, settings: Settings, sock: socket.socket, startup: Callable[[], dict[str, Any]]
) -> None:
    """Serve ``app`` on ``sock``; ``startup`` (blocking, run in a thread) builds the service and returns the
    fields /health shows; it exits the process itself if the service cannot start."""
    raise_open_files_limit(settings.max_connections + FD_RESERVE)
    asyncio.get_running_loop().set_exception_handler(AcceptErrorLimiter())
    config = uvicorn.Config(
        app,
        log_level=settings.log_level.lower(),
        log_config=None,
        access_log=settings.log_access,
        http=_protocol_class(settings.header_timeout),
        timeout_graceful_shutdown=DRAIN_SECONDS + 2,
        lifespan="on",
    )
    quiet_transport_logs(settings.log_level)  # after uvicorn.Config, which sets its loggers' levels
    server = _Server(config, app)

    async def mark_ready_when_built() -> None:
        info = await anyio.to_thread.run_sync(startup, abandon_on_cancel=True)
        app.mark_ready(**info)

    async with anyio.create_task_group() as group:
        group.start_soon(mark_ready_when_built)
        await server.serve(sockets=[sock])
        group.cancel_scope.cancel()
