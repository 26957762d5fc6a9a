"""HTTP errors on MCP routes as JSON-RPC errors, so MCP clients show the reason instead of "error response".

A POST to ``/mcp/...`` whose body is a JSON-RPC message and whose answer is an HTTP error (400, 401, 403, 404,
405, 413, 421, ...) gets ``{"jsonrpc": "2.0", "id": <the request's id>, "error": {"code", "message", "data"}}``
with the same status and headers. Answers that already are JSON-RPC (the SDK's own) pass untouched, and so does
everything else (GET streams, non-JSON bodies). The body is read once, bounded, and replayed to the app.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tablestore_openmemory_mcp.edge.security import error_response

INVALID_REQUEST = -32600
_NOT_JSONRPC = object()


def _jsonrpc_id(body: bytes) -> Any:
    """The id of a JSON-RPC message (None for a notification), or ``_NOT_JSONRPC``."""
    try:
        message = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return _NOT_JSONRPC
    if not isinstance(message, dict) or message.get("jsonrpc") != "2.0":
        return _NOT_JSONRPC
    request_id = message.get("id")
    return request_id if isinstance(request_id, str | int) and not isinstance(request_id, bool) else None


def jsonrpc_error_body(request_id: Any, status: int, text: str) -> bytes:
    """The JSON-RPC error for an HTTP error answer whose body was ``text`` (plain text or our JSON error)."""
    message, data = text.strip() or f"HTTP {status}", {"status": status}
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict) and isinstance(parsed.get("message"), str):
        message = parsed["message"]
        data.update({k: v for k, v in parsed.items() if k != "message"})
    error = {"code": INVALID_REQUEST, "message": message, "data": data}
    return json.dumps({"jsonrpc": "2.0", "id": request_id, "error": error}).encode()


def _is_jsonrpc(body: bytes) -> bool:
    try:
        parsed = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return False
    return isinstance(parsed, dict) and parsed.get("jsonrpc") == "2.0"


class JsonRpcErrors:
    """ASGI middleware reshaping error answers to JSON-RPC POSTs on ``/mcp/`` routes (see the module doc)."""

    def __init__(self, app: ASGIApp, max_body: int) -> None:
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST" or not scope.get("path", "").startswith("/mcp/"):
            await self.app(scope, receive, send)
            return
        if self._declared_too_large(scope):  # let the app refuse it (413) without reading it
            await self.app(scope, receive, send)
            return
        body = await self._read_body(receive)
        if body is None:  # a chunked body past the limit, partly read: refuse it here
            await error_response(413, "too_large", f"the request body is larger than {self.max_body} bytes")(
                scope, receive, send
            )
            return
        request_id = _jsonrpc_id(body)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        if request_id is _NOT_JSONRPC:
            await self.app(scope, replay, send)
            return
        await self.app(scope, replay, _ErrorReshaper(send, request_id))

    def _declared_too_large(self, scope: Scope) -> bool:
        for key, value in scope.get("headers", []):
            if key == b"content-length" and value.isdigit() and int(value) > self.max_body:
                return True
        return False

    async def _read_body(self, receive: Receive) -> bytes | None:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)


class _ErrorReshaper:
    """A ``send`` that holds back an error answer's body and rewrites it as a JSON-RPC error."""

    def __init__(self, send: Send, request_id: Any) -> None:
        self.send = send
        self.request_id = request_id
        self.start: Message | None = None
        self.chunks: list[bytes] = []

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start" and message["status"] >= 400:
            self.start = message
            return
        if self.start is None or message["type"] != "http.response.body":
            await self.send(message)
            return
        self.chunks.append(message.get("body", b""))
        if message.get("more_body", False):
            return
        start, text = self.start, b"".join(self.chunks)
        self.start = None
        if not _is_jsonrpc(text):
            text = jsonrpc_error_body(self.request_id, start["status"], text.decode("utf-8", "replace"))
        headers = [
            (key, value) for key, value in start.get("headers", []) if key not in (b"content-length", b"content-type")
        ]
        headers += [(b"content-type", b"application/json"), (b"content-length", str(len(text)).encode())]
        await self.send({**start, "headers": headers})
        await self.send({"type": "http.response.body", "body": text, "more_body": False})
