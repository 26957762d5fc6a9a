"""A cheap look at the LLM and embedder endpoints at startup, so a wrong key or URL shows up at once.

Without it a bad ``OPENAI_API_KEY`` or an unreachable base URL is only found at the first add or search.
One ``GET {base_url}/models`` per distinct endpoint (no tokens are billed), with a short timeout, in a
background thread: each problem is logged as one warning line naming the setting to fix, and the server
starts either way (the endpoint may come up later).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from tablestore_openmemory_mcp.settings import Settings

logger = logging.getLogger(__name__)

OPENAI_DEFAULT_URL = "https://api.openai.com/v1"
PROBE_TIMEOUT = 5.0


@dataclass(frozen=True)
class Endpoint:
    """One OpenAI-compatible service the server will call, and the settings that configure it."""

    role: str  # "LLM", "embedder" or "LLM and embedder"
    url: str
    key: str | None
    url_setting: str
    key_setting: str


@dataclass(frozen=True)
class Answer:
    """What ``GET /models`` got: an HTTP status, or the reason no answer came."""

    status: int | None
    error: str | None = None
    json_ok: bool = True


def _endpoint(role: str, prefix: str, settings: Settings) -> Endpoint:
    own_url = getattr(settings, f"{prefix.lower()}_base_url")
    own_key = getattr(settings, f"{prefix.lower()}_api_key")
    return Endpoint(
        role=role,
        url=(own_url or settings.openai_base_url or OPENAI_DEFAULT_URL).rstrip("/"),
        key=own_key or settings.openai_api_key,
        url_setting=f"{prefix}_BASE_URL" if own_url else "OPENAI_BASE_URL",
        key_setting=f"{prefix}_API_KEY" if own_key else "OPENAI_API_KEY",
    )


def base_url(settings: Settings, prefix: str) -> str:
    """The URL the ``prefix`` ("LLM" or "EMBEDDER") client calls, OpenAI's when none is set."""
    return _endpoint(prefix, prefix, settings).url


def endpoints(settings: Settings) -> list[Endpoint]:
    """The remote endpoints in use; one entry when the LLM and the embedder share URL and key."""
    found: list[Endpoint] = []
    if settings.uses_llm:
        found.append(_endpoint("LLM", "LLM", settings))
    if settings.uses_remote_embedder:
        embedder = _endpoint("embedder", "EMBEDDER", settings)
        if found and (found[0].url, found[0].key) == (embedder.url, embedder.key):
            shared = found[0]
            found[0] = Endpoint("LLM and embedder", shared.url, shared.key, shared.url_setting, shared.key_setting)
        else:
            found.append(embedder)
    return found


def fetch_models(endpoint: Endpoint, timeout: float = PROBE_TIMEOUT) -> Answer:
    """``GET {url}/models`` with the endpoint's key; never raises."""
    import httpx

    headers = {"Authorization": f"Bearer {endpoint.key}"} if endpoint.key else {}
    try:
        response = httpx.get(f"{endpoint.url}/models", headers=headers, timeout=timeout)
    except httpx.TimeoutException:
        return Answer(None, f"no answer within {timeout:g} s")
    except (httpx.HTTPError, OSError, ValueError) as exc:
        return Answer(None, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    if response.status_code != 200:
        return Answer(response.status_code)
    try:
        body = response.json()
    except ValueError:
        return Answer(200, json_ok=False)
    return Answer(200, json_ok=isinstance(body, dict))


def problem(endpoint: Endpoint, answer: Answer) -> str | None:
    """One line naming the setting to check, or None when the endpoint looks right."""
    where = f"the {endpoint.role} endpoint {endpoint.url}"
    if answer.status is None:
        return f"{where} is unreachable ({answer.error}): check {endpoint.url_setting}"
    if answer.status in (401, 403):
        return f"{where} rejected the API key (HTTP {answer.status}): check {endpoint.key_setting}"
    if answer.status == 404:
        return (
            f"{where} has no /models (HTTP 404): check {endpoint.url_setting} "
            "(OpenAI-compatible URLs usually end in /v1, DashScope's in /compatible-mode/v1)"
        )
    if answer.status != 200:
        return f"{where} answered HTTP {answer.status} to GET /models: check {endpoint.url_setting}"
    if not answer.json_ok:
        return f"{where} does not answer like an OpenAI-compatible API: check {endpoint.url_setting}"
    return None


def probe(settings: Settings, fetch: Callable[[Endpoint], Answer] = fetch_models) -> list[str]:
    """Warning lines for every endpoint in use that looks wrong (empty when all answer)."""
    lines = []
    for endpoint in endpoints(settings):
        line = problem(endpoint, fetch(endpoint))
        if line:
            lines.append(f"{line}; adds and searches that need it fail until this is fixed")
    return lines


def start(settings: Settings) -> threading.Thread | None:
    """Probe in a daemon thread, logging one warning per problem; None when nothing remote is configured."""
    if not endpoints(settings):
        return None

    def run() -> None:
        for line in probe(settings):
            logger.warning(line)

    thread = threading.Thread(target=run, name="endpoint-probe", daemon=True)
    thread.start()
    return thread
