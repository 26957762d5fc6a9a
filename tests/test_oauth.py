"""OAuth 2.1 end to end against a real authorization server (oidc-provider, started here with node).

discovery (401 challenge -> RFC 9728 metadata -> the provider's metadata) -> dynamic registration ->
authorization (login and consent forms) -> token (PKCE) -> MCP tools over streamable HTTP and SSE -> REST;
the page's own sign-in; refusals (expired, wrong audience, wrong issuer, unknown key, tampered, alg none,
missing scope); one user's token never reaches another user's memories; static tokens keep working beside OAuth.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from urllib.parse import parse_qs, urlencode, urlparse

import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.auth import OAuthClientProvider
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientInformationFull, OAuthClientMetadata, OAuthToken

from tablestore_openmemory_mcp.auth.browser import pkce_pair
from tablestore_openmemory_mcp.auth.claims import Refused
from tablestore_openmemory_mcp.auth.config import OAuthConfig
from tablestore_openmemory_mcp.auth.verifier import IntrospectionVerifier
from tablestore_openmemory_mcp.settings import Settings
from tests.oauth_server import READ, WRITE, AuthorizationServer, authorize, code_of, node_missing
from tests.server_process import HttpServer, error_text, free_port, server_env, structured

pytestmark = [pytest.mark.anyio, pytest.mark.skipif(node_missing() is not None, reason=str(node_missing()))]

STATIC = "static-token-for-carol"


class Stack:
    def __init__(self, provider: AuthorizationServer, server: HttpServer) -> None:
        self.provider = provider
        self.server = server
        self.url = server.url

    def token(self, user: str, **claims: object) -> str:
        return self.provider.mint(self.provider.claims(user, **claims))

    def api(self, token: str, method: str = "GET", path: str = "/api/v1/memories", **kw: object) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"}
        return httpx.request(method, f"{self.url}{path}", headers=headers, timeout=30.0, **kw)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("oauth")
    port = free_port()
    public = f"http://127.0.0.1:{port}"
    provider = AuthorizationServer(public, tmp / "provider.log").wait_ready()
    try:
        env = server_env(
            tmp,
            MCP_OAUTH_ISSUER=provider.issuer,
            MCP_PUBLIC_URL=public,
            MCP_OAUTH_READ_SCOPE=READ,
            MCP_OAUTH_WRITE_SCOPE=WRITE,
            MCP_OAUTH_CLIENT_ID="openmemory-page",
            MCP_AUTH_TOKENS=f"{STATIC}:carol",
        )
        with HttpServer(env, tmp, transport="sse", port=port) as server:
            yield Stack(provider, server)
    finally:
        provider.stop()


class MemoryStorage:
    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client = client_info


def sdk_auth(url: str, user: str) -> tuple[OAuthClientProvider, MemoryStorage]:
    """The MCP SDK's own OAuth client: it discovers, registers, and sends the user through :func:`authorize`."""
    redirect = "http://127.0.0.1:9/callback"
    found: dict[str, str] = {}

    async def redirect_handler(authorization_url: str) -> None:
        import anyio.to_thread

        found["url"] = await anyio.to_thread.run_sync(authorize, authorization_url, user, redirect)

    async def callback_handler() -> AuthorizationCodeResult:
        code, state = code_of(found["url"])
        iss = parse_qs(urlparse(found["url"]).query).get("iss", [None])[0]
        return AuthorizationCodeResult(code=code, state=state, iss=iss)

    storage = MemoryStorage()
    metadata = OAuthClientMetadata(
        redirect_uris=[redirect],  # type: ignore[list-item]
        client_name="openmemory-test",
        grant_types=["authorization_code"],
        response_types=["code"],
        token_endpoint_auth_method="none",
        scope=f"{READ} {WRITE}",
    )
    provider = OAuthClientProvider(url, metadata, storage, redirect_handler, callback_handler)
    return provider, storage


async def test_discovery_challenge_and_metadata(stack: Stack) -> None:
    refused = httpx.post(f"{stack.url}/mcp", json={}, timeout=10.0)
    assert refused.status_code == 401
    challenge = refused.headers["www-authenticate"]
    assert f'resource_metadata="{stack.url}/.well-known/oauth-protected-resource"' in challenge
    for path in ("", "/mcp", "/mcp/cline/http/alice", "/sse"):
        document = httpx.get(f"{stack.url}/.well-known/oauth-protected-resource{path}", timeout=10.0).json()
        assert document["resource"].rstrip("/") == stack.url
        assert document["authorization_servers"] == [stack.provider.issuer]
        assert document["scopes_supported"] == [READ, WRITE]


async def test_sdk_client_full_flow_streamable_sse_and_rest(stack: Stack) -> None:
    """The SDK's OAuth client: 401 -> metadata -> registration -> login/consent -> token -> tools, then REST."""
    auth, storage = sdk_auth(f"{stack.url}/mcp", "alice")
    async with Client(streamable_http_client(f"{stack.url}/mcp", http_client=httpx2.AsyncClient(auth=auth))) as c:
        added = structured(await c.call_tool("add_memories", {"text": "alice flies kites", "infer": False}))
        assert added["events"]
        listed = structured(await c.call_tool("list_memories", {}))
        assert [m["memory"] for m in listed["memories"]] == ["alice flies kites"]
    assert storage.client is not None and storage.tokens is not None  # registered dynamically, then a token
    token = storage.tokens.access_token
    claims = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    assert claims["sub"] == "alice" and claims["aud"].rstrip("/") == stack.url

    # the same token on SSE (the user comes from the token)
    async with Client(sse_client(f"{stack.url}/sse", headers={"Authorization": f"Bearer {token}"})) as c:
        found = structured(await c.call_tool("search_memories", {"query": "kites"}))
        assert any("kites" in m["memory"] for m in found["results"])
    # and on REST: the token's user, whatever the query says is refused
    listed = stack.api(token).json()
    assert [m["memory"] for m in listed["items"]] == ["alice flies kites"]
    assert stack.api(token, params={"user_id": "bob"}).status_code == 403


async def test_one_users_token_never_reaches_another_user(stack: Stack) -> None:
    bob = stack.token("bob")
    alice = stack.token("alice")
    assert stack.api(bob, "POST", json={"text": "bob's secret", "infer": False}).status_code in (200, 201)
    assert all("bob" not in m["memory"] for m in stack.api(alice).json()["items"])
    # alice's token on bob's URLs: 403, on MCP and REST alike
    assert stack.api(alice, params={"user_id": "bob"}).status_code == 403
    response = httpx.post(
        f"{stack.url}/mcp/cline/http/bob", headers={"Authorization": f"Bearer {alice}"}, json={}, timeout=10.0
    )
    assert response.status_code == 403
    sse = httpx.get(f"{stack.url}/mcp/cline/sse/bob", headers={"Authorization": f"Bearer {alice}"}, timeout=10.0)
    assert sse.status_code == 403
    async with Client(
        streamable_http_client(
            f"{stack.url}/mcp", http_client=httpx2.AsyncClient(headers={"Authorization": f"Bearer {alice}"})
        )
    ) as c:
        found = structured(await c.call_tool("search_memories", {"query": "secret"}))
        assert all("bob" not in m["memory"] for m in found["results"])


@pytest.mark.parametrize(
    "case",
    ["expired", "wrong_audience", "wrong_issuer", "unknown_key", "tampered", "alg_none", "no_exp", "bad_user"],
)
async def test_bad_tokens_are_refused(stack: Stack, case: str) -> None:
    provider = stack.provider
    if case == "expired":
        token = stack.token("alice", exp=1_000_000, iat=999_000)
    elif case == "wrong_audience":
        token = stack.token("alice", aud="https://other.example.com")
    elif case == "wrong_issuer":
        token = stack.token("alice", iss="https://evil.example.com")
    elif case == "unknown_key":
        token = provider.mint(provider.claims("alice"), key="other")
    elif case == "tampered":
        header, payload, signature = stack.token("alice").split(".")
        forged = json.loads(base64.urlsafe_b64decode(payload + "=="))
        forged["sub"] = "bob"
        payload = base64.urlsafe_b64encode(json.dumps(forged).encode()).rstrip(b"=").decode()
        token = f"{header}.{payload}.{signature}"
    elif case == "alg_none":
        head = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode()
        body = base64.urlsafe_b64encode(json.dumps(provider.claims("alice")).encode()).rstrip(b"=").decode()
        token = f"{head}.{body}."
    elif case == "no_exp":
        claims = provider.claims("alice")
        del claims["exp"]
        token = provider.mint(claims)
    else:
        token = stack.token("alice/../bob")
    assert stack.api(token).status_code == 401
    response = httpx.post(f"{stack.url}/mcp", headers={"Authorization": f"Bearer {token}"}, json={}, timeout=10.0)
    assert response.status_code == 401
    assert "resource_metadata=" in response.headers["www-authenticate"]


async def test_scopes_map_to_tools_and_routes(stack: Stack) -> None:
    reader = stack.token("dora", scope=READ)
    writer = stack.token("dora", scope=WRITE)
    nothing = stack.token("dora", scope="openid")
    # REST: read needs read, write needs write
    assert stack.api(reader).status_code == 200
    refused = stack.api(reader, "POST", json={"text": "x", "infer": False})
    assert refused.status_code == 403
    assert 'error="insufficient_scope"' in refused.headers["www-authenticate"]
    assert f'scope="{WRITE}"' in refused.headers["www-authenticate"]
    created = stack.api(writer, "POST", json={"text": "dora paints", "client": "test-agent", "infer": False})
    assert created.status_code in (200, 201)
    assert stack.api(nothing).status_code == 403
    # MCP: no scope -> 403 on connect; read-only -> write tools are tool errors, read tools work
    response = httpx.post(f"{stack.url}/mcp", headers={"Authorization": f"Bearer {nothing}"}, json={}, timeout=10.0)
    assert response.status_code == 403
    headers = {"Authorization": f"Bearer {reader}"}
    async with Client(streamable_http_client(f"{stack.url}/mcp", http_client=httpx2.AsyncClient(headers=headers))) as c:
        assert "only read" in error_text(await c.call_tool("add_memories", {"text": "y", "infer": False}))
        listed = structured(await c.call_tool("list_memories", {}))
        assert [m["memory"] for m in listed["memories"]] == ["dora paints"]


async def test_static_tokens_work_beside_oauth(stack: Stack) -> None:
    assert stack.api(STATIC).status_code == 200
    assert stack.api(STATIC, params={"user_id": "alice"}).status_code == 403  # bound to carol
    # a user-bound static token on /mcp: its user, client "remote" (a static token names no OAuth client)
    headers = {"Authorization": f"Bearer {STATIC}"}
    async with Client(streamable_http_client(f"{stack.url}/mcp", http_client=httpx2.AsyncClient(headers=headers))) as c:
        structured(await c.call_tool("add_memories", {"text": "carol sings", "infer": False}))
    assert [(m["memory"], m["client"]) for m in stack.api(STATIC).json()["items"]] == [("carol sings", "remote")]


async def test_page_signs_in_through_the_provider(stack: Stack) -> None:
    """Authorization code + PKCE for the memory browser: start -> provider login -> callback -> cookie -> /api."""
    with httpx.Client(timeout=20.0) as browser:
        session = browser.get(f"{stack.url}/auth/session").json()
        assert session["auth_required"] and not session["authenticated"]
        assert session["oauth_login"] == "/auth/oauth/start"
        start = browser.get(f"{stack.url}/auth/oauth/start", follow_redirects=False)
        assert start.status_code == 302
        location = start.headers["location"]
        query = parse_qs(urlparse(location).query)
        assert query["code_challenge_method"] == ["S256"] and query["client_id"] == ["openmemory-page"]
        callback = authorize(location, "erin", f"{stack.url}/auth/oauth/callback", client=browser)
        # an answer naming another issuer (RFC 9207 mix-up) is refused, and does not use up the state
        mixed = browser.get(callback.replace("iss=", "iss=https%3A%2F%2Fevil.example.com&x="), follow_redirects=False)
        assert mixed.status_code == 400 and mixed.json()["error"] == "oauth_issuer"
        # a callback whose state was not started by this browser is refused
        stranger = httpx.get(callback, timeout=10.0, follow_redirects=False)
        assert stranger.status_code == 400
        done = browser.get(callback, follow_redirects=False)
        assert done.status_code == 303, done.text
        assert done.headers["location"] == "/"
        session = browser.get(f"{stack.url}/auth/session").json()
        assert session["authenticated"] and session["user"] == "erin"
        assert browser.get(f"{stack.url}/api/v1/memories").status_code == 200
        # the code was single use: replaying the callback fails
        assert browser.get(callback, follow_redirects=False).status_code == 400


async def test_introspection_of_opaque_tokens(stack: Stack) -> None:
    """RFC 7662 against the provider's introspection endpoint, for an opaque token from a real code flow."""
    audience = f"{stack.url}/introspected"
    issuer = stack.provider.issuer
    verifier_code, challenge = pkce_pair()
    params = {
        "response_type": "code",
        "client_id": "test-agent",
        "redirect_uri": "http://127.0.0.1/callback",
        "scope": f"openid {READ}",
        "state": "s1",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
        "resource": audience,
    }
    redirect = authorize(f"{issuer}/auth?{urlencode(params)}", "frank", "http://127.0.0.1/callback")
    code, _ = code_of(redirect)
    token_response = httpx.post(
        f"{issuer}/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": "http://127.0.0.1/callback",
            "client_id": "test-agent",
            "code_verifier": verifier_code,
            "resource": audience,
        },
        timeout=10.0,
    )
    token = token_response.json()["access_token"]
    assert token.count(".") != 2  # opaque
    settings = Settings(
        MCP_OAUTH_ISSUER=issuer,
        MCP_PUBLIC_URL=stack.url,
        MCP_OAUTH_AUDIENCE=audience,
        MCP_OAUTH_INTROSPECTION_URL=f"{issuer}/token/introspection",
        MCP_OAUTH_CLIENT_ID="openmemory-server",
        MCP_OAUTH_CLIENT_SECRET="introspection-secret-123",
    )
    config = OAuthConfig.from_settings(settings)
    assert config is not None
    async with httpx2.AsyncClient() as client:
        verifier = IntrospectionVerifier(config, client)
        principal = await verifier.validate(token)
        assert principal.subject == "frank" and principal.scopes == [READ]
        await verifier.validate(token)
        assert verifier.requests == 1  # cached
        with pytest.raises(Refused, match="not active"):
            await verifier.validate("not-a-token-the-provider-issued")
        # a token for another audience (the JWT one) is refused: the provider does not introspect JWTs
        assert await verifier.verify_token(stack.token("frank")) is None


async def test_page_sign_in_button_in_chromium(stack: Stack) -> None:
    """The same sign-in as a person does it: the page's button, the provider's forms, back to the page, signed in."""
    from tests.browser import UI_TIMEOUT_MS, launch

    async with launch() as browser:
        context = await browser.new_context(locale="en-GB")
        context.set_default_timeout(UI_TIMEOUT_MS)
        page = await context.new_page()
        await page.goto(stack.url + "/")
        await page.get_by_role("link", name="Sign in with your identity provider").click()
        await page.locator('input[name="login"]').fill("hana")
        await page.locator('input[name="password"]').fill("any")
        await page.get_by_role("button", name="Sign-in").click()
        await page.get_by_role("button", name="Continue").click()
        await page.wait_for_url(stack.url + "/")
        session = await page.evaluate("fetch('/auth/session').then((r) => r.json())")
        assert session["authenticated"] and session["user"] == "hana"
        await context.close()
