"""An in-process, streaming HTTP transport for httpx2 (the HTTP client the MCP SDK uses) over an ASGI app.

Why not ``httpx2.ASGITransport``: it runs the app to completion before returning the buffered response, so an SSE
stream (which never completes) or a streamable HTTP answer sent as events can never be read while it is open.
This bridge runs each request as a task on the caller's event loop and hands every body chunk to the client as it
is sent: no socket, no thread, no port. Closing a response tells the app its peer went away (``http.disconnect``).

Modelled on the MCP SDK's own test bridge (python-sdk ``tests/interaction/transports/_bridge.py``, MIT), which
the SDK uses to run its streamable HTTP and SSE interaction tests in process.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from types import TracebackType

import anyio
import anyio.abc
import httpx2
from anyio.streams.memory import MemoryObjectReceiveStream
from starlette.types import ASGIApp, Message, Scope

#: The origin the in-process app is addressed at; nothing listens there.
BASE_URL = "http://127.0.0.1:8765"


class _StreamingBody(httpx2.AsyncByteStream):
    def __init__(self, chunks: MemoryObjectReceiveStream[bytes], disconnected: anyio.Event) -> None:
        self._chunks = chunks
        self._disconnected = disconnected

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._chunks:
            yield chunk

    async def aclose(self) -> None:
        self._disconnected.set()
        await self._chunks.aclose()


class StreamingASGITransport(httpx2.AsyncBaseTransport):
    """Drive ``app`` in process, streaming each response; use the httpx2 client as a context manager.

    ``cancel_on_close=False`` waits for the app's own disconnect handling when the client closes (the SSE
    transport releases its session that way) instead of cancelling the request tasks.
    """

    _group: anyio.abc.TaskGroup

    def __init__(self, app: ASGIApp, *, cancel_on_close: bool = True, client: tuple[str, int] = ("127.0.0.1", 50000)):
        self._app = app
        self._cancel_on_close = cancel_on_close
        self._client = client

    async def __aenter__(self) -> StreamingASGITransport:
        self._group = anyio.create_task_group()
        await self._group.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_value: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        if self._cancel_on_close:
            self._group.cancel_scope.cancel()
        await self._group.__aexit__(exc_type, exc_value, traceback)

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        assert isinstance(request.stream, httpx2.AsyncByteStream)
        body = b"".join([chunk async for chunk in request.stream])
        scope: Scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": request.method,
            "scheme": request.url.scheme,
            "path": request.url.path,
            "raw_path": request.url.raw_path.split(b"?", maxsplit=1)[0],
            "query_string": request.url.query,
            "root_path": "",
            "headers": [(name.lower(), value) for name, value in request.headers.raw],
            "server": (request.url.host, request.url.port),
            "client": self._client,
        }
        delivered = False
        disconnected = anyio.Event()
        started = anyio.Event()
        status = 0
        headers: list[tuple[bytes, bytes]] = []
        failure: Exception | None = None
        writer, reader = anyio.create_memory_object_stream[bytes](math.inf)

        async def receive() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            await disconnected.wait()
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            nonlocal status, headers
            if message["type"] == "http.response.start":
                status, headers = message["status"], list(message.get("headers", []))
                started.set()
                return
            chunk: bytes = message.get("body", b"")
            if chunk:
                await writer.send(chunk)
            if not message.get("more_body", False):
                await writer.aclose()

        async def run() -> None:
            nonlocal failure
            try:
                await self._app(scope, receive, send)
            except Exception as exc:  # fail this request, not every request sharing the task group
                failure = exc
            finally:
                started.set()
                await writer.aclose()

        self._group.start_soon(run)
        try:
            await started.wait()
            if failure is not None:
                raise failure
        except BaseException:
            disconnected.set()
            await reader.aclose()
            raise
        return httpx2.Response(status, headers=headers, stream=_StreamingBody(reader, disconnected), request=request)


def streaming_client(app: ASGIApp, *, cancel_on_close: bool = True, **kwargs: object) -> httpx2.AsyncClient:
    """An httpx2 client on ``app`` in process (``base_url`` defaults to :data:`BASE_URL`)."""
    kwargs.setdefault("base_url", BASE_URL)
    transport = StreamingASGITransport(app, cancel_on_close=cancel_on_close)
    return httpx2.AsyncClient(transport=transport, **kwargs)  # type: ignore[arg-type]
