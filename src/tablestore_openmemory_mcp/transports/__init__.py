"""Transports: one HTTP app for every network client (SSE, streamable HTTP, health), plus stdio.

* :mod:`.listen` binds the port first (standard library only, so it is fast).
* :mod:`.http_app` is the Starlette app with explicit state; :mod:`.sse` the reference's SSE routes on the
  SDK's transport; :mod:`.errors` JSON-RPC-shaped HTTP errors; :mod:`.serve` uvicorn with bounded resources.

Importing this package imports only :mod:`.listen`; the SDK-heavy modules are imported by whoever uses them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from tablestore_openmemory_mcp.transports.listen import PortInUse, bind_socket, is_loopback

__all__ = ["PortInUse", "bind_socket", "is_loopback", "run", "serve_stdio"]


async def serve_stdio(server: Any) -> None:
    """Serve one client on stdin/stdout; returns when stdin closes."""
    await server.run_stdio_async()


def run(coro_fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
    import anyio

    return anyio.run(coro_fn, *args)
