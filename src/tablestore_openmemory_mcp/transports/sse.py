"""The reference's SSE routes on the SDK's own ``SseServerTransport``, one :class:`SseSession` per open stream.

The SDK owns the wire (endpoint event, session ids, POST parsing, 413) and its rule that a session can only be
used with the credential that created it (``scope["user"]``, set by the auth middleware). Between the SDK's
streams and the MCP server each session relays messages and keeps its own explicit state:

* the identity of the stream's URL, attached to every posted message (:data:`identity.IDENTITY_KEY`);
* a session whose first request is not ``initialize`` (a client that reconnected after a drop or a server
  restart and carries on where it was) is treated as initialized: the relay hands the server a
  ``notifications/initialized`` first, so the connection keeps the SDK's default protocol version;
* requests not yet answered on the stream (``pending``): past ``MCP_SSE_MAX_PENDING`` the client is not
  reading its stream, and the session is closed instead of buffering without bound;
* graceful close for shutdown: stop reading, let the answers in flight reach the stream, then end it.

``POST /mcp/messages/`` takes exactly one ``session_id`` in the SDK's own form (32 lowercase hex digits),
checked before anything looks the session up; any other spelling is a 400.
"""

from __future__ import annotations

import contextvars
import logging
import re
from typing import Any
from urllib.parse import parse_qsl

import anyio
import mcp_types as types
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from mcp.server.lowlevel.server import Server
from mcp.server.sse import SseServerTransport
from mcp.server.transport_security import TransportSecuritySettings
from mcp.shared.message import ServerMessageMetadata, SessionMessage
from starlette.types import Receive, Send
from starlette.types import Scope as ASGIScope

from tablestore_openmemory_mcp.edge.identity import IDENTITY_KEY
from tablestore_openmemory_mcp.edge.security import error_response
from tablestore_openmemory_mcp.scope import Scope

logger = logging.getLogger(__name__)

SSE_MESSAGE_PATH = "/mcp/messages/"
_SESSION_ID = re.compile(r"[0-9a-f]{32}")
_Envelope = tuple[contextvars.Context, SessionMessage | Exception]


def parse_session_id(query_string: bytes) -> str | None:
    """The one ``session_id`` of a query string in the SDK's form (``uuid.hex``), else None."""
    try:
        pairs = parse_qsl(query_string.decode("ascii"), keep_blank_values=True)
    except (UnicodeDecodeError, ValueError):
        return None
    values = [value for key, value in pairs if key == "session_id"]
    if len(values) != 1 or not _SESSION_ID.fullmatch(values[0]):
        return None
    return values[0]


class _ContextRelay:
    """Receive side handed to the MCP server: yields messages and exposes the sender's context as the SDK's
    context-aware streams do (``last_context``), so a tool call still runs in its POST request's context."""

    def __init__(self, inner: MemoryObjectReceiveStream[_Envelope]) -> None:
        self._inner = inner
        self.last_context: contextvars.Context | None = None

    async def receive(self) -> SessionMessage | Exception:
        self.last_context, item = await self._inner.receive()
        return item

    def __aiter__(self) -> _ContextRelay:
        return self

    async def __anext__(self) -> SessionMessage | Exception:
        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    def close(self) -> None:
        self._inner.close()

    async def aclose(self) -> None:
        await self._inner.aclose()

    async def __aenter__(self) -> _ContextRelay:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class SseSession:
    """One open SSE stream: its identity, the requests it has not answered yet, and how to close it."""

    def __init__(self, identity: Scope, max_pending: int) -> None:
        self.identity = identity
        self.max_pending = max_pending
        self.pending: set[types.RequestId] = set()
        self.overflowed = False
        self.cancel_scope = anyio.CancelScope()  # the whole stream, SDK response included
        self._reading = anyio.CancelScope()  # the inbound relay only (graceful close)
        self._opened = False
        self._idle = anyio.Event()
        self._idle.set()

    async def serve(self, server: Server[Any], read: Any, write: Any) -> None:
        """Relay between the SDK's SSE streams and ``server`` until either side ends."""
        inbound_send, inbound_receive = anyio.create_memory_object_stream[_Envelope](0)
        outbound_send, outbound_receive = anyio.create_memory_object_stream[SessionMessage](0)
        async with anyio.create_task_group() as group:
            group.start_soon(self._inbound, read, inbound_send)
            group.start_soon(self._outbound, outbound_receive, write)
            await server.run(_ContextRelay(inbound_receive), outbound_send, server.create_initialization_options())
            self._reading.cancel()

    def stop_reading(self) -> None:
        """Graceful close: no new messages; the server finishes, and the stream ends once its answers are out."""
        self._reading.cancel()

    async def wait_idle(self) -> None:
        """Return once every request received so far has been answered on the stream."""
        await self._idle.wait()

    async def _inbound(self, read: Any, to_server: MemoryObjectSendStream[_Envelope]) -> None:
        with self._reading:
            async with to_server:
                async for item in read:
                    context = getattr(read, "last_context", None) or contextvars.copy_context()
                    if isinstance(item, SessionMessage) and not await self._admit(item, context, to_server):
                        return
                    await to_server.send((context, item))

    async def _admit(
        self, item: SessionMessage, context: contextvars.Context, to_server: MemoryObjectSendStream[_Envelope]
    ) -> bool:
        metadata = item.metadata
        if isinstance(metadata, ServerMessageMetadata) and metadata.request_context is not None:
            metadata.request_context.scope[IDENTITY_KEY] = self.identity
        message = item.message
        if isinstance(message, types.JSONRPCNotification) and message.method == "notifications/cancelled":
            self._answered((message.params or {}).get("requestId"))  # a cancelled request gets no answer
        if not isinstance(message, types.JSONRPCRequest):
            return True
        if not self._opened:
            self._opened = True
            if message.method != "initialize":
                logger.debug("SSE session resumed without initialize; treating it as initialized")
                notification = types.JSONRPCNotification(jsonrpc="2.0", method="notifications/initialized")
                await to_server.send((context, SessionMessage(notification)))
        if len(self.pending) >= self.max_pending:
            self.overflowed = True
            logger.warning(
                "closing an SSE session of %s/%s: %d requests not delivered (the client is not reading its "
                "stream; MCP_SSE_MAX_PENDING)",
                self.identity.client_name,
                self.identity.user_id,
                len(self.pending),
            )
            self.cancel_scope.cancel()
            return False
        if self._idle.is_set():
            self._idle = anyio.Event()
        self.pending.add(message.id)
        return True

    async def _outbound(self, from_server: MemoryObjectReceiveStream[SessionMessage], write: Any) -> None:
        async with write, from_server:
            async for item in from_server:
                await write.send(item)
                message = item.message
                if isinstance(message, types.JSONRPCResponse | types.JSONRPCError):
                    self._answered(message.id)

    def _answered(self, request_id: Any) -> None:
        if request_id is None:
            return
        self.pending.discard(request_id)
        if not self.pending:
            self._idle.set()


class SseSessions:
    """Every open SSE session of one app; ``stream`` serves ``GET /mcp/{client}/sse/{user}``, ``post`` the POSTs."""

    def __init__(self, server: Server[Any], security: TransportSecuritySettings, max_pending: int) -> None:
        self._server = server
        self._transport = SseServerTransport(SSE_MESSAGE_PATH, security_settings=security)
        self._max_pending = max_pending
        self.open: set[SseSession] = set()
        self._empty = anyio.Event()
        self._empty.set()

    async def stream(self, identity: Scope, scope: ASGIScope, receive: Receive, send: Send) -> None:
        session = SseSession(identity, self._max_pending)
        self._add(session)
        try:
            with session.cancel_scope:
                async with self._transport.connect_sse(scope, receive, send) as (read, write):
                    await session.serve(self._server, read, write)
        finally:
            self._remove(session)

    async def post(self, scope: ASGIScope, receive: Receive, send: Send) -> None:
        if parse_session_id(scope.get("query_string", b"")) is None:
            response = error_response(
                400,
                "invalid_session_id",
                "session_id must appear exactly once, as the 32 hex digits the server sent in its endpoint event",
            )
            await response(scope, receive, send)
            return
        await self._transport.handle_post_message(scope, receive, send)

    async def close_all(self, drain_seconds: float, grace_seconds: float = 2.0) -> None:
        """Shutdown: wait (bounded) for answers in flight, end every stream gracefully, cancel what still hangs."""
        with anyio.move_on_after(drain_seconds):
            for session in list(self.open):
                await session.wait_idle()
        for session in list(self.open):
            session.stop_reading()
        with anyio.move_on_after(grace_seconds):
            await self._empty.wait()
        for session in list(self.open):
            session.cancel_scope.cancel()

    def _add(self, session: SseSession) -> None:
        if not self.open:
            self._empty = anyio.Event()
        self.open.add(session)

    def _remove(self, session: SseSession) -> None:
        self.open.discard(session)
        if not self.open:
            self._empty.set()
