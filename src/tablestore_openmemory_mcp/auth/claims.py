"""Turn validated token claims into the SDK's ``AccessToken``: user from the configured claim, scopes, client."""

from __future__ import annotations

import time
from typing import Any

from mcp.server.auth.provider import AccessToken

from tablestore_openmemory_mcp.auth.config import OAuthConfig
from tablestore_openmemory_mcp.scope import InvalidIdentity, validate_identity_part


class Refused(Exception):
    """A token this server does not accept; the message says why (logged, never sent with the token)."""


def _same(a: str, b: str) -> bool:
    return a.rstrip("/") == b.rstrip("/")


def scopes_of(claims: dict[str, Any]) -> list[str]:
    """``scope`` (RFC 9068/8693: space-separated) or ``scp`` (a list, as Azure AD and Okta send)."""
    raw = claims.get("scope", claims.get("scp"))
    if isinstance(raw, str):
        return [part for part in raw.split() if part]
    if isinstance(raw, list):
        return [part for part in raw if isinstance(part, str) and part]
    return []


def check_audience(claims: dict[str, Any], audience: str) -> None:
    aud = claims.get("aud")
    values = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
    if not any(isinstance(value, str) and _same(value, audience) for value in values):
        raise Refused(f"audience {aud!r} is not this server ({audience})")


def check_times(claims: dict[str, Any], leeway: int, now: float | None = None) -> int:
    """``exp`` is required and must be in the future; ``nbf`` (if any) in the past. Returns ``exp``."""
    now = time.time() if now is None else now
    exp = claims.get("exp")
    if not isinstance(exp, (int, float)) or isinstance(exp, bool):
        raise Refused("the token has no expiry (exp)")
    if exp + leeway < now:
        raise Refused("the token has expired")
    nbf = claims.get("nbf")
    if isinstance(nbf, (int, float)) and nbf - leeway > now:
        raise Refused("the token is not valid yet (nbf)")
    return int(exp)


def access_token(claims: dict[str, Any], config: OAuthConfig) -> AccessToken:
    """The principal: user from ``MCP_OAUTH_USER_CLAIM``, client from ``client_id``/``azp``, the scopes granted."""
    user = claims.get(config.user_claim)
    if not isinstance(user, str) or not user:
        raise Refused(f"the token has no {config.user_claim!r} claim (MCP_OAUTH_USER_CLAIM)")
    try:
        validate_identity_part(user, f"the {config.user_claim} claim")
    except InvalidIdentity as exc:
        raise Refused(str(exc)) from None
    client = claims.get("client_id", claims.get("azp"))
    return AccessToken(
        token="",  # never kept: nothing downstream needs it, and it must not end up in a log or a repr
        client_id=f"oauth:{client}" if isinstance(client, str) and client else "oauth",
        scopes=scopes_of(claims),
        expires_at=int(claims["exp"]) if isinstance(claims.get("exp"), (int, float)) else None,
        resource=config.audience,
        subject=user,
        claims={"iss": config.issuer, "client": client if isinstance(client, str) else None},
    )
