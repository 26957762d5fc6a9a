"""A real OpenID Connect authorization server for the OAuth tests: oidc-provider (npm), run with node.

``npm ci`` installs the pinned versions of ``tests/oauth/package-lock.json`` into ``tests/oauth/node_modules``
the first time (and again when the lock file changes); the tests skip with the reason when node or npm is missing.
:func:`authorize` drives the provider's login and consent forms with plain HTTP, the way a person's browser would.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urljoin, urlparse

import httpx

from tests.server_process import free_port

OAUTH_DIR = Path(__file__).parent / "oauth"
STAMP = OAUTH_DIR / "node_modules" / ".lock-sha256"
READ, WRITE = "memories:read", "memories:write"


def node_missing() -> str | None:
    """Why the provider cannot run here, or None."""
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return None


def ensure_installed() -> None:
    """``npm ci`` once per lock file (a stamp in node_modules remembers which lock it installed)."""
    lock = (OAUTH_DIR / "package-lock.json").read_bytes()
    digest = hashlib.sha256(lock).hexdigest()
    if STAMP.is_file() and STAMP.read_text() == digest:
        return
    subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
        cwd=OAUTH_DIR,
        check=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
    )
    STAMP.write_text(digest)


class AuthorizationServer:
    """``node provider.mjs`` on a free port; ``resource`` is the MCP server's public URL (the token audience)."""

    def __init__(self, resource: str, log_path: Path) -> None:
        ensure_installed()
        self.port = free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.resource = resource
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(
            ["node", "provider.mjs", str(self.port), resource],
            cwd=OAUTH_DIR,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._log,
        )
        self._ready = threading.Event()
        threading.Thread(target=self._watch, daemon=True).start()

    def _watch(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            if line.startswith(b"listening"):
                self._ready.set()

    def wait_ready(self, timeout: float = 60.0) -> AuthorizationServer:
        try:
            deadline = time.monotonic() + timeout
            while not self._ready.wait(0.2):
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"authorization server did not start: {self.log_path.read_text()[-2000:]}")
            return self
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        if self.process.stdout is not None:
            self.process.stdout.close()
        self._log.close()

    def mint(self, claims: dict[str, Any], key: str = "provider") -> str:
        """A token with ``claims`` signed by the provider's own key (``key="other"``: by a key it never published)."""
        response = httpx.post(f"{self.issuer}/test/mint", json={"claims": claims, "key": key}, timeout=10.0)
        response.raise_for_status()
        return str(response.json()["token"])

    def claims(self, user: str, **extra: Any) -> dict[str, Any]:
        """Valid claims for ``user`` at this resource, with both scopes; ``extra`` overrides."""
        now = int(time.time())
        base = {
            "iss": self.issuer,
            "sub": user,
            "aud": self.resource,
            "iat": now,
            "exp": now + 600,
            "client_id": "test-agent",
            "scope": f"{READ} {WRITE}",
        }
        return {**base, **extra}


def authorize(authorization_url: str, user: str, redirect_prefix: str, client: httpx.Client | None = None) -> str:
    """Follow the authorization request through the provider's login and consent forms; the redirect URL with the code.

    ``client`` keeps the cookies (the provider's session; for the page login, ours too).
    """
    own = client is None
    http = client or httpx.Client(timeout=20.0)
    try:
        url = authorization_url
        for _ in range(20):
            response = http.get(url, follow_redirects=False)
            if response.status_code in (302, 303):
                url = urljoin(url, response.headers["location"])
                if url.startswith(redirect_prefix):
                    return url
                continue
            assert response.status_code == 200, (response.status_code, response.text[:500])
            path = urlparse(url).path
            assert path.startswith("/interaction/"), url
            prompt = "login" if 'name="login"' in response.text else "consent"
            form = {"prompt": prompt, "login": user, "password": "any"} if prompt == "login" else {"prompt": prompt}
            posted = http.post(url, data=form, follow_redirects=False)
            assert posted.status_code in (302, 303), (posted.status_code, posted.text[:500])
            url = urljoin(url, posted.headers["location"])
            if url.startswith(redirect_prefix):
                return url
        raise AssertionError("the authorization flow did not finish in 20 steps")
    finally:
        if own:
            http.close()


def code_of(redirect: str) -> tuple[str, str | None]:
    query = parse_qs(urlparse(redirect).query)
    assert "code" in query, f"no code in {redirect}"
    return query["code"][0], query.get("state", [None])[0]
