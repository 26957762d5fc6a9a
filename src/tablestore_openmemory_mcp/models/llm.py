"""A chat client for any OpenAI-compatible service, hardened for DashScope's Qwen models.

Why not mem0's OpenAI LLM: the classic memory flow needs JSON from every Qwen model, and DashScope is
strict. ``json_object`` mode needs the word "json" in the messages (our prompts carry it); QwQ/QVQ and
other thinking models answer only when streamed and refuse JSON mode; some providers reject
``response_format`` altogether. This client streams when it must, drops reasoning content, retries once
without ``response_format`` when a provider refuses it, and parses replies robustly. A 400 that says
how the model must be called ("only support stream mode", "enable_thinking must be set to false") is
followed once and remembered, so Qwen models whose names we do not recognise work too.

It is synchronous on purpose: the memory service runs it in worker threads, never on the event loop.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from tablestore_openmemory_mcp.errors import LLMError as LLMError
from tablestore_openmemory_mcp.errors import LLMReplyError as LLMReplyError
from tablestore_openmemory_mcp.models.endpoint import Endpoint, explain
from tablestore_openmemory_mcp.models.jsonparse import NoJSONFound, parse_json_object

logger = logging.getLogger(__name__)

_STREAM_ONLY = re.compile(r"(^|[-_/])(qwq|qvq)|thinking|reasoner|(^|/)qwen3-.*-thinking", re.IGNORECASE)


def is_stream_only(model: str) -> bool:
    """Thinking models (QwQ, QVQ, ``*-thinking``) only answer when streamed and refuse JSON mode."""
    return bool(_STREAM_ONLY.search(model))


class ChatClient:
    """Sends chat requests and returns parsed JSON objects."""

    def __init__(
        self,
        *,
        model: str,
        api_key: str | None,
        base_url: str | None,
        timeout: float = 60.0,
        max_retries: int = 2,
        stream: str = "auto",
    ) -> None:
        import openai

        self.model = model
        self.base_url = base_url or "https://api.openai.com/v1"
        self.timeout = timeout
        self._endpoint = Endpoint(
            where=f"the LLM service at {self.base_url}",
            model=model,
            timeout=timeout,
            key_setting="OPENAI_API_KEY / LLM_API_KEY",
            url_setting="OPENAI_BASE_URL / LLM_BASE_URL",
            model_setting="LLM_MODEL",
        )
        self._stream = stream == "true" or (stream == "auto" and is_stream_only(model))
        self._json_mode = not is_stream_only(model)
        self._extra_body: dict[str, Any] = {}
        self._client = openai.OpenAI(
            api_key=api_key or "none", base_url=self.base_url, timeout=timeout, max_retries=max_retries
        )
        self.calls = 0

    def complete_json(self, messages: list[dict[str, str]]) -> dict[str, Any]:
        """One chat completion whose reply must contain a JSON object."""
        reply = self.complete(messages, json_mode=self._json_mode)
        try:
            return parse_json_object(reply)
        except NoJSONFound as exc:
            raise LLMReplyError(f"the LLM ({self.model}) did not answer with JSON: {exc}") from None

    def complete(self, messages: list[dict[str, str]], *, json_mode: bool) -> str:
        """Return the assistant's text (reasoning content excluded).

        A 400 that says how the request must change is answered by changing it once and retrying
        (each adaptation at most once per call, and remembered for later calls, since it is a property
        of the model): "stream only" switches to streaming without JSON mode; "enable_thinking must be
        false for non-streaming calls" (Qwen3 open-source models) sends ``enable_thinking: false``; a
        refused ``response_format`` drops it.
        """
        import httpx
        import openai

        if json_mode and not any("json" in _text(m.get("content")).lower() for m in messages):
            messages = [*messages, {"role": "user", "content": "Answer in JSON."}]
        json_mode = json_mode and self._json_mode
        adapted: set[str] = set()
        while True:
            try:
                return self._request(messages, json_mode=json_mode)
            except openai.BadRequestError as exc:
                fix = self._adaptation(str(exc).lower(), json_mode=json_mode, tried=adapted)
                if fix is None:
                    raise self._explain(exc) from None
                adapted.add(fix)
                if fix == "stream":
                    logger.warning("LLM %s answers only when streamed; streaming from now on", self.model)
                    self._stream, self._json_mode, json_mode = True, False, False
                elif fix == "no_thinking":
                    logger.warning("LLM %s thinks by default; sending enable_thinking=false", self.model)
                    self._extra_body = {**self._extra_body, "enable_thinking": False}
                else:
                    logger.warning("LLM %s refused response_format; retrying without it", self.model)
                    self._json_mode, json_mode = False, False
            except openai.OpenAIError as exc:
                raise self._explain(exc) from None
            except httpx.HTTPError as exc:  # raised while reading a stream, outside the SDK's own handling
                raise self._explain(exc) from None

    def _adaptation(self, detail: str, *, json_mode: bool, tried: set[str]) -> str | None:
        """Which change a 400 asks for, if any (and not yet tried in this call)."""
        if "enable_thinking" in detail and "stream" in detail and "no_thinking" not in tried:
            return "no_thinking"
        if "stream" in detail and "only support" in detail and not self._stream and "stream" not in tried:
            return "stream"
        if json_mode and ("response_format" in detail or "json" in detail) and "json" not in tried:
            return "json"
        return None

    def _request(self, messages: list[dict[str, str]], *, json_mode: bool) -> str:
        self.calls += 1
        kwargs: dict[str, Any] = {"model": self.model, "messages": messages}
        if json_mode:
            kwargs["response_format"] = {"type": "json_object"}
        if self._extra_body:
            kwargs["extra_body"] = dict(self._extra_body)
        if self._stream:
            return self._collect_stream(self._client.chat.completions.create(stream=True, **kwargs))
        response = self._client.chat.completions.create(**kwargs)
        if not response.choices:
            return ""
        return response.choices[0].message.content or ""

    @staticmethod
    def _collect_stream(stream: Any) -> str:
        """Join ``delta.content`` chunks; ``delta.reasoning_content`` is the model thinking aloud."""
        parts: list[str] = []
        try:
            for chunk in stream:
                for choice in chunk.choices or []:
                    content = getattr(choice.delta, "content", None)
                    if content:
                        parts.append(content)
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()
        return "".join(parts)

    def _explain(self, exc: Exception) -> LLMError:
        return LLMError(explain(exc, self._endpoint))


def _text(content: Any) -> str:
    """Message content as text, whether a string or a list of ``{"type": "text"}`` parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""
