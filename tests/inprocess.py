"""The server's real HTTP app built in process: MCP over streamable HTTP and SSE, REST, /health; no subprocess or port.

Why: a server process costs 2-3.5 s to start, and most transport and REST behaviour needs none of what a process
adds (signals, sockets, uvicorn). :func:`serve_in_process` builds the app with the factories the CLI uses
(``load_settings`` → ``bootstrap.ServiceHandle`` + ``build_server`` → ``transports.http_app.HttpApp``), runs its
lifespan, and marks it ready as ``cli.main`` does; settings come from environment variables exactly as for a
server process (:func:`tests.server_process.server_env`), so a test moves here by swapping its fixture. The store
is the embedded one in ``tmp_path`` (or Tablestore, given its variables), the embedder the offline one, and with
``llm=`` the LLM client is the in-process scripted model (tests/fakes/inprocess_llm.py) instead of an HTTP client.

Clients go through the app in process, the way the MCP SDK tests its own transports: MCP and raw streaming HTTP
over :mod:`tests.asgi_bridge` (httpx2, the SDK's HTTP client), REST over ``httpx.ASGITransport`` (answers are
not streamed). What still needs a real socket (stdio, kills, restarts, header timeouts, the connection cap under
uvicorn, nginx, Chromium, replicas) stays with tests/server_process.py.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client

from tablestore_openmemory_mcp.app.bootstrap import ServiceHandle, build_server
from tablestore_openmemory_mcp.settings import Settings, load_settings
from tablestore_openmemory_mcp.transports.http_app import HttpApp
from tests.asgi_bridge import BASE_URL, streaming_client
from tests.fakes.inprocess_llm import InProcessLLM
from tests.server_process import _SCRUB

#: Variables scrubbed like a server process's environment; ``MEM0_*`` stays (conftest points it at a temp dir).
SCRUB = tuple(prefix for prefix in _SCRUB if prefix != "MEM0_")
TRANSPORTS = ("http", "sse")
DRAIN_SECONDS = 2.0


def _auth(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


@dataclass
class InProcessServer:
    """The running app and what a test may look at: its settings, the service handle, the scripted LLM."""

    app: HttpApp
    handle: ServiceHandle
    settings: Settings
    llm: InProcessLLM | None
    url: str = BASE_URL

    @property
    def service(self) -> Any:
        return self.handle.wait().service

    def raw(self, token: str | None = None, *, cancel_on_close: bool = True, **kwargs: Any) -> httpx2.AsyncClient:
        """An httpx2 client on the app whose responses stream (SSE can be read while open)."""
        headers = {**_auth(token), **kwargs.pop("headers", {})}
        return streaming_client(self.app, cancel_on_close=cancel_on_close, headers=headers, **kwargs)

    def rest(self, token: str | None = "admin-token", *, prefix: str = "/api/v1") -> httpx.AsyncClient:
        """An httpx client rooted at the REST API (``prefix=""`` for the whole app)."""
        transport = httpx.ASGITransport(app=self.app, client=("127.0.0.1", 50001))
        return httpx.AsyncClient(transport=transport, base_url=f"{BASE_URL}{prefix}", headers=_auth(token))

    @asynccontextmanager
    async def http(self, client: str, user: str, token: str | None = None) -> AsyncIterator[Client]:
        """An MCP client session over streamable HTTP at /mcp/<client>/http/<user>."""
        async with (
            self.raw(token) as http,
            Client(streamable_http_client(f"{BASE_URL}/mcp/{client}/http/{user}", http_client=http)) as session,
        ):
            yield session

    @asynccontextmanager
    async def sse(self, client: str, user: str, token: str | None = None, **options: Any) -> AsyncIterator[Client]:
        """An MCP client session over SSE at /mcp/<client>/sse/<user>; ``options`` go to ``sse_client``."""

        def factory(
            headers: dict[str, str] | None = None,
            timeout: httpx2.Timeout | None = None,
            auth: httpx2.Auth | None = None,
        ) -> httpx2.AsyncClient:
            # the SSE transport ends its session when the GET sees the disconnect: let it, rather than cancel
            return self.raw(token, cancel_on_close=False, headers=headers or {}, timeout=timeout, auth=auth)

        transport = sse_client(f"{BASE_URL}/mcp/{client}/sse/{user}", httpx_client_factory=factory, **options)
        async with Client(transport) as session:
            yield session

    def connect(self, transport: str, client: str, user: str, token: str | None = None) -> Any:
        """A session over ``transport`` ("http" or "sse")."""
        return self.sse(client, user, token) if transport == "sse" else self.http(client, user, token)

    async def health(self) -> dict[str, Any]:
        async with self.rest(None, prefix="") as http:
            return dict((await http.get("/health")).json())


@contextmanager
def server_settings(tmp_path: Path, *, llm: InProcessLLM | None = None, **env: Any) -> Iterator[Settings]:
    """Settings as a server process with environment ``env`` loads them (``load_settings``), data in
    ``tmp_path/data``; with ``llm`` the LLM client the factories build is that scripted model. The environment
    stays patched until exit (the factories read it), then is restored."""
    with pytest.MonkeyPatch.context() as patch:
        for key in list(os.environ):
            if key.startswith(SCRUB):
                patch.delenv(key)
        for key in ("MEM0_DIR", "MEM0_TELEMETRY"):  # the store's startup sets them: restored on exit
            patch.setenv(key, os.environ.get(key, ""))
        patch.chdir(tmp_path)  # no stray .env
        patch.setenv("MEMORY_DATA_DIR", str(tmp_path / "data"))
        if llm is not None:  # the LLM client at its boundary: the real factory builds the rest
            import tablestore_openmemory_mcp.models.llm as llm_module

            patch.setenv("LLM_API_KEY", "in-process")
            patch.setattr(llm_module, "ChatClient", lambda **_: llm)
        for key, value in env.items():
            patch.setenv(key, str(value))
        yield load_settings(None)


@asynccontextmanager
async def serve_in_process(
    tmp_path: Path, *, llm: InProcessLLM | None = None, **env: Any
) -> AsyncIterator[InProcessServer]:
    """The app as ``tablestore-openmemory-mcp --transport sse`` builds it, with ``env`` as its environment.

    ``env`` holds the server's variables (``MCP_AUTH_TOKENS=...``, ``TOOL_BLACK_LIST="[]"``); the data directory
    is ``tmp_path/data``. Everything is closed on exit, also when the test fails.
    """
    with server_settings(tmp_path, llm=llm, **env) as settings:
        handle = ServiceHandle(settings)
        app = HttpApp(build_server(settings, handle), settings, handle)
        starlette = app.app
        try:
            async with starlette.router.lifespan_context(starlette):  # type: ignore[attr-defined]
                handle.start()
                components = await anyio.to_thread.run_sync(handle.wait)
                app.mark_ready(store=components.store_name.split("(")[0])
                try:
                    yield InProcessServer(app, handle, settings, llm)
                finally:
                    await app.close(DRAIN_SECONDS)
        finally:
            handle.close()
