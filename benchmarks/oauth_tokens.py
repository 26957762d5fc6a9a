"""OAuth access tokens validated per second: ``python -m benchmarks.oauth_tokens`` prints a markdown table.

The server's own :class:`JwtVerifier` (signature, issuer, audience, expiry, user claim) on distinct RS256 and
ES256 tokens, with the JWKS served by an in-process transport: it is fetched once and cached, so the figure is
the per-request cost a busy server pays (one CPU core; the event loop does nothing else).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import time
from typing import Any

import httpx2
import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from tablestore_openmemory_mcp.auth.config import OAuthConfig
from tablestore_openmemory_mcp.auth.discovery import ServerMetadata
from tablestore_openmemory_mcp.auth.verifier import JwtVerifier

ISSUER = "https://login.example.com"
AUDIENCE = "https://memory.example.com"


def _keys() -> dict[str, tuple[str, Any, dict[str, Any]]]:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec_key = ec.generate_private_key(ec.SECP256R1())
    return {
        "rs": ("RS256", rsa_key, json.loads(RSAAlgorithm.to_jwk(rsa_key.public_key()))),
        "es": ("ES256", ec_key, json.loads(ECAlgorithm.to_jwk(ec_key.public_key()))),
    }


async def measure(count: int) -> list[dict[str, Any]]:
    keys = _keys()
    document = {"keys": [{**jwk, "kid": kid, "alg": alg, "use": "sig"} for kid, (alg, _, jwk) in keys.items()]}

    def handler(request: httpx2.Request) -> httpx2.Response:
        if request.url.path.endswith("openid-configuration"):
            return httpx2.Response(200, json={"issuer": ISSUER, "jwks_uri": ISSUER + "/jwks"})
        return httpx2.Response(200, json=document)

    config = OAuthConfig(ISSUER, AUDIENCE, AUDIENCE, None, None, None, None, "sub", None, None)
    rows = []
    async with httpx2.AsyncClient(transport=httpx2.MockTransport(handler)) as client:
        verifier = JwtVerifier(config, ServerMetadata(ISSUER, client), client)
        for kid, (alg, private, _) in keys.items():
            exp = int(time.time()) + 3600
            tokens = [
                jwt.encode(
                    {"iss": ISSUER, "aud": AUDIENCE, "sub": f"user{i}", "exp": exp, "scope": "memories:read"},
                    private,
                    algorithm=alg,
                    headers={"kid": kid},
                )
                for i in range(count)
            ]
            await verifier.validate(tokens[0])  # the one JWKS fetch
            start = time.perf_counter()
            for token in tokens:
                await verifier.validate(token)
            seconds = time.perf_counter() - start
            rows.append(
                {"alg": alg, "tokens": count, "per_second": count / seconds, "jwks_fetches": verifier.jwks.fetches}
            )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=5000)
    args = parser.parse_args()
    rows = asyncio.run(measure(args.count))
    print(f"OAuth token validation ({platform.python_implementation()} {platform.python_version()}, one core)\n")
    print("| algorithm | tokens | validated per second | JWKS fetches |")
    print("|---|---|---|---|")
    for row in rows:
        print(f"| {row['alg']} | {row['tokens']} | {row['per_second']:,.0f} | {row['jwks_fetches']} |")


if __name__ == "__main__":
    main()
