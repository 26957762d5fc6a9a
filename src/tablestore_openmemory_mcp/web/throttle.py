"""Failed sign-ins per client address: after too many in a minute the address waits, longer each time.

Why: ``/auth/login`` answers whether a token is known, so without a limit it is an oracle a script can ask
hundreds of times a second. After :attr:`LoginThrottle.max_failures` failures within
:attr:`LoginThrottle.window` seconds an address is refused (429 with ``Retry-After``) for
:attr:`LoginThrottle.base` seconds, doubling with each further lockout up to :attr:`LoginThrottle.cap`;
a correct token after the wait signs in and clears the record. :class:`ThrottleFailedTokens` applies the same
table to bearer tokens on every other route (a wrong token there is the same guess).

The address is the ASGI client address. uvicorn sets it from ``X-Forwarded-For`` only when the connection
comes from ``FORWARDED_ALLOW_IPS`` (default: loopback, where this project's nginx kit runs), so a client
cannot pick its own address by sending the header. IPv6 addresses count per /64 network (one host usually
holds a whole /64). The table holds at most :attr:`LoginThrottle.max_entries` addresses, least recently
seen dropped first, so a flood of addresses cannot grow memory. Each server process keeps its own table.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tablestore_openmemory_mcp.auth.claims import Refused
from tablestore_openmemory_mcp.auth.verifier import jose_header
from tablestore_openmemory_mcp.edge.security import error_response

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class _Entry:
    failures: deque[float] = field(default_factory=deque)  # times of recent failures, oldest first
    locked_until: float = 0.0
    lockouts: int = 0  # consecutive lockouts without a success: the next wait doubles


def address_key(host: str | None) -> str:
    """The throttled unit: an IPv4 address, an IPv6 /64 network, or the raw text for anything else."""
    if not host:
        return "unknown"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host[:64]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class LoginThrottle:
    """Counts failed sign-ins per address; :meth:`retry_after` says how long a locked address must wait."""

    def __init__(
        self,
        *,
        max_failures: int = 10,
        window: float = 60.0,
        base: float = 60.0,
        cap: float = 3600.0,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_failures = max_failures
        self.window = window
        self.base = base
        self.cap = cap
        self.max_entries = max_entries
        self.clock = clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def retry_after(self, host: str | None) -> int | None:
        """Whole seconds ``host`` must still wait, or None when it may try a token now."""
        entry = self._entries.get(address_key(host))
        if entry is None:
            return None
        left = entry.locked_until - self.clock()
        return math.ceil(left) if left > 0 else None

    def failed(self, host: str | None) -> int | None:
        """Record a failed sign-in; returns the wait when this failure locks the address."""
        key = address_key(host)
        now = self.clock()
        entry = self._entries.pop(key, None) or _Entry()
        self._entries[key] = entry  # most recently seen last
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        if entry.lockouts and now - entry.locked_until > self.cap:  # quiet for a long while: start the doubling over
            entry.lockouts = 0
        entry.failures.append(now)
        while entry.failures and entry.failures[0] <= now - self.window:
            entry.failures.popleft()
        if len(entry.failures) < self.max_failures:
            return None
        entry.failures.clear()
        entry.lockouts += 1
        wait = min(self.cap, self.base * 2.0 ** (entry.lockouts - 1))
        entry.locked_until = now + wait
        return math.ceil(wait)

    def succeeded(self, host: str | None) -> None:
        """A correct token: the address starts afresh."""
        self._entries.pop(address_key(host), None)


def too_many(wait: int) -> JSONResponse:
    """The 429 a locked address gets (no hint whether the token it sent was right)."""
    return error_response(
        429,
        "too_many_attempts",
        f"too many failed tokens from this address; try again in {wait} seconds",
        {"Retry-After": str(wait)},
    )


class ThrottleFailedTokens:
    """Pure ASGI, inside the login cookie's translation and outside the token check: a bearer token is as much an
    oracle as the login form, so every 401 answered to a request that presented one counts as a failed sign-in,
    and while an address is locked its requests that present a token get 429. Requests without a token (an MCP
    client discovering that it needs one) are never counted."""

    def __init__(self, app: ASGIApp, throttle: LoginThrottle, spare_jwts: bool = False) -> None:
        self.app = app
        self.throttle = throttle
        self.spare_jwts = spare_jwts  # with OAuth on: see looks_like_jwt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        authorization = next((v for k, v in scope.get("headers", ()) if k.lower() == b"authorization"), None)
        if scope["type"] != "http" or authorization is None:
            await self.app(scope, receive, send)
            return
        if self.spare_jwts and looks_like_jwt(authorization):
            await self.app(scope, receive, send)  # an OAuth access token: refused on its merits, never counted
            return
        client = scope.get("client")
        host = str(client[0]) if client else None
        wait = self.throttle.retry_after(host)
        if wait is not None:
            await too_many(wait)(scope, receive, send)
            return

        async def watch(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 401:
                locked = self.throttle.failed(host)
                if locked is not None:
                    logger.warning("too many failed tokens from %s; refused for %d s", address_key(host), locked)
            await send(message)

        await self.app(scope, receive, watch)


def looks_like_jwt(authorization: bytes) -> bool:
    """True for ``Bearer <header>.<payload>.<signature>`` whose header is a JSON object naming an ``alg``.

    With OAuth on, expired, wrong-audience or missing-scope access tokens are an identity provider's ordinary
    traffic, not guesses: a signed token cannot be guessed, so counting them would lock out every user behind
    one address after a few expired tokens. Static tokens, the secret a script could guess, are never in this
    shape in practice (a token made of two dots around base64 JSON is refused by nothing, but would be spared)."""
    scheme, _, token = authorization.decode("latin-1").strip().partition(" ")
    parts = token.strip().split(".")
    if scheme.lower() != "bearer" or len(parts) != 3 or not all(parts[:2]):
        return False
    try:
        header = jose_header(token.strip())
    except Refused:
        return False
    return isinstance(header.get("alg"), str)


__all__ = ["LoginThrottle", "ThrottleFailedTokens", "address_key", "looks_like_jwt", "too_many"]
