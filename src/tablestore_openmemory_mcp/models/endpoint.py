"""One sentence per failure of an OpenAI-compatible endpoint, naming the setting the user should check.

The LLM client and the embedder talk to the same kind of service and fail the same ways (bad key, bad
URL, unknown model, timeout, throttling); only the settings that configure them differ.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_UNKNOWN_MODEL = re.compile(
    r"model.{0,80}(not exist|does not exist|not found|unknown|not supported|invalid)|"
    r"(unknown|invalid|unsupported) model",
    re.IGNORECASE | re.DOTALL,
)


def mentions_unknown_model(message: str) -> bool:
    """Whether an error message says the model name is unknown (providers word it differently)."""
    return bool(_UNKNOWN_MODEL.search(message or ""))


def short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


@dataclass(frozen=True)
class Endpoint:
    """One configured service and the settings that configure it."""

    where: str  # e.g. "the LLM service at https://..."
    model: str
    timeout: float
    key_setting: str  # e.g. "OPENAI_API_KEY / LLM_API_KEY"
    url_setting: str  # e.g. "OPENAI_BASE_URL / LLM_BASE_URL"
    model_setting: str  # e.g. "LLM_MODEL"


def explain(exc: Exception, endpoint: Endpoint) -> str:
    """Turn an openai (or httpx) exception into one sentence naming the setting to check."""
    import httpx
    import openai

    where = endpoint.where
    if isinstance(exc, openai.AuthenticationError):
        return f"{where} rejected the API key (401); check {endpoint.key_setting}"
    if isinstance(exc, openai.PermissionDeniedError):
        return f"{where} denied access (403); check the key's permissions for {endpoint.model_setting}"
    if isinstance(exc, openai.NotFoundError):
        return (
            f"{where} does not know model {endpoint.model!r} or the URL is wrong (404); "
            f"check {endpoint.model_setting} and {endpoint.url_setting}"
        )
    if isinstance(exc, (openai.APITimeoutError, httpx.TimeoutException)):
        return f"{where} did not answer within {endpoint.timeout:g} s; check LLM_TIMEOUT"
    if isinstance(exc, (openai.APIConnectionError, httpx.HTTPError)):
        return f"cannot reach {where}; check {endpoint.url_setting}"
    if isinstance(exc, openai.RateLimitError):
        return f"{where} is rate limiting requests (429); try again later"
    if isinstance(exc, openai.BadRequestError) and mentions_unknown_model(str(exc.message)):
        return f"{where} does not know model {endpoint.model!r} (400); check {endpoint.model_setting}"
    if isinstance(exc, openai.APIStatusError):
        return f"{where} failed with HTTP {exc.status_code}: {short(str(exc.message))}"
    return f"{where} failed: {short(str(exc))}"
