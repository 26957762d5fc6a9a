"""The OAuth pieces in process: startup refusals, the JWKS cache's rotation and rate limit, scope grants,
discovery URLs and the challenge header. (End to end against a real authorization server: tests/test_oauth.py.)"""

from __future__ import annotations

import json
import time

import httpx2 as httpx  # the server's auth modules use mcp's HTTP client
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken

from tablestore_openmemory_mcp.auth.claims import Refused, access_token
from tablestore_openmemory_mcp.auth.config import OAuthConfig
from tablestore_openmemory_mcp.auth.discovery import ServerMetadata, metadata_urls
from tablestore_openmemory_mcp.auth.gate import Grant, challenge, grant_of, needs_write
from tablestore_openmemory_mcp.auth.jwks import MIN_REFRESH_SECONDS, JwksCache, KeyNotFound
from tablestore_openmemory_mcp.auth.verifier import JwtVerifier
from tablestore_openmemory_mcp.settings import SettingsError, load_settings

pytestmark = pytest.mark.anyio
ISSUER = "https://login.example.com"
PUBLIC = "https://memory.example.com"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    import os

    for name in list(os.environ):
        if name.startswith(("MCP_", "MEMORY_", "OPENAI_", "TABLESTORE_", "LLM_", "EMBEDDER_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"MCP_OAUTH_ISSUER": ISSUER}, "MCP_PUBLIC_URL"),
        ({"MCP_OAUTH_JWKS_URL": ISSUER + "/jwks"}, "MCP_OAUTH_ISSUER"),
        ({"MCP_OAUTH_WRITE_SCOPE": "w"}, "MCP_OAUTH_ISSUER"),
        ({"MCP_OAUTH_ISSUER": "http://login.example.com", "MCP_PUBLIC_URL": PUBLIC}, "MCP_OAUTH_ISSUER"),
        ({"MCP_OAUTH_ISSUER": "login.example.com", "MCP_PUBLIC_URL": PUBLIC}, "MCP_OAUTH_ISSUER"),
        (
            {"MCP_OAUTH_ISSUER": ISSUER, "MCP_PUBLIC_URL": PUBLIC, "MCP_OAUTH_INTROSPECTION_URL": ISSUER + "/i"},
            "MCP_OAUTH_CLIENT_ID",
        ),
    ],
)
def test_misconfiguration_is_one_line_naming_the_variable(monkeypatch, env, named):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    assert named in str(caught.value) and "\n" not in str(caught.value)


def test_loopback_http_issuer_and_defaults(monkeypatch):
    monkeypatch.setenv("MCP_OAUTH_ISSUER", "http://127.0.0.1:9000")
    monkeypatch.setenv("MCP_PUBLIC_URL", "http://127.0.0.1:8765/")
    config = OAuthConfig.from_settings(load_settings())
    assert config is not None
    assert config.audience == "http://127.0.0.1:8765" and config.user_claim == "sub"
    assert config.metadata_url == "http://127.0.0.1:8765/.well-known/oauth-protected-resource"


def test_metadata_urls_try_oidc_then_rfc8414():
    assert metadata_urls("https://a.example/realms/x") == [
        "https://a.example/realms/x/.well-known/openid-configuration",
        "https://a.example/.well-known/oauth-authorization-server/realms/x",
        "https://a.example/.well-known/openid-configuration/realms/x",
    ]


def _config(**overrides: object) -> OAuthConfig:
    base: dict[str, object] = dict(
        issuer=ISSUER, public_url=PUBLIC, audience=PUBLIC, jwks_url=None, introspection_url=None, client_id=None,
        client_secret=None, user_claim="sub", read_scope="r", write_scope="w",
    )  # fmt: skip
    base.update(overrides)
    return OAuthConfig(**base)  # type: ignore[arg-type]


def _oauth_user(scopes: list[str]) -> AuthenticatedUser:
    return AuthenticatedUser(AccessToken(token="", client_id="oauth:x", scopes=scopes, subject="u"))


@pytest.mark.parametrize(
    ("read", "write", "scopes", "grant"),
    [
        ("r", "w", ["r"], Grant(True, False)),
        ("r", "w", ["w"], Grant(True, True)),
        ("r", "w", [], Grant(False, False)),
        (None, "w", [], Grant(True, False)),
        ("r", None, ["r"], Grant(True, True)),
        ("r", None, [], Grant(False, False)),
        (None, None, [], Grant(True, True)),
    ],
)
def test_scopes_grant_read_and_write(read, write, scopes, grant):
    assert grant_of(_oauth_user(scopes), _config(read_scope=read, write_scope=write)) == grant


def test_static_tokens_keep_every_right_and_routes_map_to_read_or_write():
    static = AuthenticatedUser(AccessToken(token="", client_id="token-0", scopes=[], subject="u"))
    assert grant_of(static, _config()) == Grant(True, True)
    assert not needs_write("GET", "/api/v1/memories") and not needs_write("POST", "/api/v1/backup/export")
    assert needs_write("POST", "/api/v1/memories") and needs_write("DELETE", "/api/v1/memories")
    assert challenge(_config(), "insufficient_scope", "w") == (
        'Bearer realm="tablestore-openmemory-mcp", '
        f'resource_metadata="{PUBLIC}/.well-known/oauth-protected-resource", error="insufficient_scope", scope="w"'
    )


class KeyServer:
    """A JWKS endpoint behind httpx.MockTransport: an authorization server that can rotate its key."""

    def __init__(self) -> None:
        self.keys: dict[str, rsa.RSAPrivateKey] = {}
        self.hits = 0

    def add(self, kid: str) -> None:
        self.keys[kid] = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.hits += 1
        if request.url.path.endswith("openid-configuration"):
            return httpx.Response(200, json={"issuer": ISSUER, "jwks_uri": ISSUER + "/jwks"})
        jwks = []
        for kid, key in self.keys.items():
            jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
            jwks.append({**jwk, "kid": kid, "alg": "RS256", "use": "sig"})
        return httpx.Response(200, json={"keys": jwks})

    def token(self, kid: str, **claims: object) -> str:
        now = int(time.time())
        body = {"iss": ISSUER, "aud": PUBLIC, "sub": "alice", "exp": now + 60, "scope": "r w", **claims}
        return jwt.encode(body, self.keys[kid], algorithm="RS256", headers={"kid": kid})


async def test_jwks_is_cached_and_refetched_once_for_a_rotated_key():
    server = KeyServer()
    server.add("k1")
    async with httpx.AsyncClient(transport=httpx.MockTransport(server.handler)) as client:
        now = [1000.0]
        verifier = JwtVerifier(_config(), ServerMetadata(ISSUER, client), client, clock=lambda: now[0])
        for _ in range(20):
            assert (await verifier.validate(server.token("k1"))).subject == "alice"
        assert verifier.jwks.fetches == 1
        server.add("k2")  # rotation: a token with the new kid triggers one refetch
        now[0] += MIN_REFRESH_SECONDS  # the last fetch was long enough ago
        assert (await verifier.validate(server.token("k2"))).subject == "alice"
        assert verifier.jwks.fetches == 2
        # a flood of unknown kids: refused without another fetch (rate limit)
        for index in range(10):
            with pytest.raises(Refused, match="no signing key"):
                await verifier.validate(jwt.encode({"sub": "x"}, server.keys["k1"], "RS256", {"kid": f"x{index}"}))
        assert verifier.jwks.fetches == 2


async def test_jwks_cache_refuses_unknown_kid_after_refresh():
    server = KeyServer()
    server.add("k1")
    async with httpx.AsyncClient(transport=httpx.MockTransport(server.handler)) as client:
        cache = JwksCache(lambda: _const(ISSUER + "/jwks"), client)
        await cache.key("k1")
        with pytest.raises(KeyNotFound):
            await cache.key("nope")


async def _const(value: str) -> str:
    return value


async def test_hs256_signed_with_the_public_key_is_refused():
    """The classic algorithm-confusion forgery: HMAC keyed with the public key's bytes."""
    server = KeyServer()
    server.add("k1")
    async with httpx.AsyncClient(transport=httpx.MockTransport(server.handler)) as client:
        verifier = JwtVerifier(_config(), ServerMetadata(ISSUER, client), client)
        claims = {"iss": ISSUER, "aud": PUBLIC, "sub": "bob", "exp": 2**31}
        forged = jwt.encode(claims, "secret-of-32-bytes-or-more-for-hs256", "HS256", {"kid": "k1"})
        with pytest.raises(Refused, match="algorithm"):
            await verifier.validate(forged)


def test_user_claim_is_configurable_and_must_be_a_valid_user_id():
    config = _config(user_claim="email")
    claims = {"sub": "opaque-123", "email": "alice@example.com", "exp": 2**31, "azp": "claude"}
    principal = access_token(claims, config)
    assert principal.subject == "alice@example.com" and principal.client_id == "oauth:claude"
    with pytest.raises(Refused, match="email"):
        access_token({"sub": "x", "exp": 2**31}, config)
    with pytest.raises(Refused):
        access_token({"email": "../bob", "exp": 2**31}, config)
