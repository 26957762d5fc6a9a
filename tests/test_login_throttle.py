"""Sign-in throttling (web/throttle.py) through the real login route, in-process, with a hand-driven clock."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from tablestore_openmemory_mcp.settings import Settings, SettingsError, load_settings
from tablestore_openmemory_mcp.web.routes import WebPage
from tablestore_openmemory_mcp.web.throttle import LoginThrottle, address_key

pytestmark = pytest.mark.anyio

GOOD = "correct-horse-token"
HEADERS = {"X-Requested-With": "fetch"}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def client(page: WebPage, host: str) -> httpx.AsyncClient:
    app = Starlette(routes=page.routes())
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=(host, 40000)), base_url="http://t")


async def login(http: httpx.AsyncClient, token: str) -> httpx.Response:
    return await http.post("/auth/login", json={"token": token}, headers=HEADERS)


async def test_ten_failures_lock_the_address_for_a_growing_period(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    page = WebPage(Settings(transport="stdio", auth_tokens=f"{GOOD}:alice"), LoginThrottle(clock=clock))
    caplog.set_level(logging.DEBUG)
    async with client(page, "203.0.113.7") as attacker, client(page, "198.51.100.2") as bystander:
        for n in range(10):
            wrong = await login(attacker, f"wrong-token-{n:04d}")
            assert wrong.status_code == 401 and f"wrong-token-{n:04d}" not in wrong.text
        locked = await login(attacker, GOOD)  # even the right token waits: the answer must not tell
        assert locked.status_code == 429 and locked.headers["Retry-After"] == "60"
        assert (await login(bystander, GOOD)).status_code == 200, "another address is not throttled"
        clock.now += 61
        for n in range(10):
            await login(attacker, f"again-wrong-{n:04d}")
        assert (await login(attacker, GOOD)).headers["Retry-After"] == "120", "the second lockout doubles"
        clock.now += 121
        signed_in = await login(attacker, GOOD)
        assert signed_in.status_code == 200 and signed_in.json()["user"] == "alice"
        assert (await login(attacker, "wrong-once-more")).status_code == 401, "a success starts afresh"
    logged = caplog.text
    assert "203.0.113.7" in logged and GOOD not in logged and "wrong-token" not in logged


async def test_failures_spread_over_more_than_a_minute_do_not_lock() -> None:
    clock = Clock()
    page = WebPage(Settings(transport="stdio", auth_tokens=GOOD), LoginThrottle(clock=clock))
    async with client(page, "203.0.113.8") as http:
        for n in range(30):
            clock.now += 7  # 9 failures per minute at most
            assert (await login(http, f"typo-token-{n:04d}")).status_code == 401


def test_the_table_is_bounded_and_ipv6_counts_per_network() -> None:
    throttle = LoginThrottle(max_entries=100, clock=Clock())
    for n in range(1000):
        throttle.failed(f"10.0.{n // 256}.{n % 256}")
    assert len(throttle) == 100
    assert address_key("2001:db8:1:2:aaaa::1") == address_key("2001:db8:1:2:bbbb::9") == "2001:db8:1:2::/64"
    assert address_key("::ffff:192.0.2.1") == "192.0.2.1"
    for n in range(10):
        throttle.failed(f"2001:db8:1:2::{n:x}")
    assert throttle.retry_after("2001:db8:1:2:ffff::1") == 60, "rotating addresses inside a /64 does not help"


def test_a_refused_token_setting_never_shows_the_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MCP_AUTH_TOKENS", "short1,another-secret-value:alice")
    for given in ({}, {"auth_tokens": "short1,another-secret-value:alice"}):  # the environment, a command-line flag
        with pytest.raises(SettingsError) as refused:
            load_settings(**given)
        message = str(refused.value)
        assert "at least 8 characters" in message
        assert "short1" not in message and "another-secret-value" not in message


class _Source:
    async def get(self) -> Any:
        raise AssertionError("no request in this test reaches the service")

    def in_flight(self) -> int:
        return 0


async def test_bearer_tokens_on_the_api_share_the_login_table() -> None:
    """A wrong bearer token is the same guess as a wrong login: 401s count, then 429 on any route with a token;
    requests without a token (an MCP client finding out it needs one) are never counted."""
    from mcp.server.mcpserver import MCPServer

    from tablestore_openmemory_mcp.transports.http_app import HttpApp

    clock = Clock()
    app = HttpApp(MCPServer(name="t"), Settings(_env_file=None, auth_tokens=f"{GOOD}:alice"), _Source())  # type: ignore[arg-type]
    app.throttle.clock = clock
    transport = httpx.ASGITransport(app=app, client=("203.0.113.9", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
        for _ in range(30):
            assert (await http.get("/api/v1/stats")).status_code == 401, "no token: never throttled"
        for n in range(5):
            wrong = await http.get("/api/v1/stats", headers={"Authorization": f"Bearer wrong-bearer-{n:04d}"})
            assert wrong.status_code == 401
        for n in range(5):
            assert (await login(http, f"wrong-login-{n:04d}")).status_code == 401
        locked = await http.post("/mcp/cline/http/alice", headers={"Authorization": f"Bearer {GOOD}"}, json={})
        assert locked.status_code == 429 and locked.headers["Retry-After"] == "60"
        assert (await login(http, GOOD)).status_code == 429
        clock.now += 61
        assert (await login(http, GOOD)).status_code == 200


async def test_a_guessed_login_cookie_counts_too() -> None:
    clock = Clock()
    page = WebPage(Settings(transport="stdio", auth_tokens=GOOD), LoginThrottle(clock=clock))
    async with client(page, "203.0.113.10") as http:
        for n in range(10):
            http.cookies.set("openmemory_token", f"guess-{n:04d}-token")
            assert (await http.get("/auth/session")).json()["authenticated"] is False
        http.cookies.set("openmemory_token", GOOD)
        locked = await http.get("/auth/session")
        assert locked.status_code == 200 and locked.json()["authenticated"] is False, "not even checked while locked"
        assert (await login(http, GOOD)).status_code == 429
        clock.now += 61
        assert (await http.get("/auth/session")).json()["authenticated"] is True


async def test_with_oauth_on_refused_access_tokens_are_not_counted_but_guesses_are() -> None:
    """Expired or wrong-audience JWTs are an identity provider's ordinary traffic, not guesses: with OAuth on
    they get their 401 every time and never lock the address; a wrong static token still counts."""
    import base64
    import json as jsonlib

    from starlette.responses import PlainTextResponse

    from tablestore_openmemory_mcp.web.throttle import ThrottleFailedTokens, looks_like_jwt

    def segment(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(jsonlib.dumps(value).encode()).rstrip(b"=").decode()

    jwt = f"{segment({'alg': 'RS256', 'kid': 'k1'})}.{segment({'sub': 'alice', 'exp': 1})}.c2ln"
    assert looks_like_jwt(f"Bearer {jwt}".encode()) and not looks_like_jwt(b"Bearer wrong-static-token")
    assert not looks_like_jwt(b"Bearer a.b.c") and not looks_like_jwt(f"Basic {jwt}".encode())

    async def refuse(scope: Any, receive: Any, send: Any) -> None:
        await PlainTextResponse("no", status_code=401)(scope, receive, send)

    throttle = LoginThrottle(clock=Clock())
    app = ThrottleFailedTokens(refuse, throttle, spare_jwts=True)
    transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        for _ in range(25):
            assert (await http.get("/mcp", headers={"Authorization": f"Bearer {jwt}"})).status_code == 401
        for n in range(10):
            assert (await http.get("/mcp", headers={"Authorization": f"Bearer guess-{n:06d}"})).status_code == 401
        assert (await http.get("/mcp", headers={"Authorization": "Bearer guess-999999"})).status_code == 429
