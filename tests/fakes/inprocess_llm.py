"""The scripted LLM of tests/fakes/memory_llm.py as an in-process chat model (no fake server, no port).

The in-process test tier (tests/inprocess.py) builds the server with the real factory and swaps only the LLM
client at its boundary (``llm.ChatClient``) for this: ``complete_json`` answers from scripted replies first,
then from ``handler`` (by default ``classic_memory_llm``: one fact per add, ADD every new fact); a scripted
exception is raised instead (``LLMError(...)``: what the real client raises for an HTTP error or a timeout). Like
the fake OpenAI server it records each request (``requests``, ``counts``) so the same scenarios run on either.
"""

from __future__ import annotations

import threading
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

from tablestore_openmemory_mcp.models.jsonparse import NoJSONFound, parse_json_object
from tablestore_openmemory_mcp.models.llm import LLMReplyError
from tests.fakes.memory_llm import classic_memory_llm


class InProcessLLM:
    """A ``ChatModel`` answering like the fake OpenAI server's scripted chat endpoint."""

    def __init__(self, handler: Callable[[dict[str, Any]], str] = classic_memory_llm, model: str = "fake-llm") -> None:
        self.model = model
        self.handler = handler
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self._script: deque[str | Exception] = deque()
        self._lock = threading.Lock()  # tool calls and the categorizer call it from worker threads

    @property
    def counts(self) -> Counter[str]:
        with self._lock:
            return Counter(endpoint for endpoint, _ in self.requests)

    def script_chat(self, *replies: str | Exception) -> None:
        """Answer the next chat calls with ``replies`` in order (raising exceptions), then fall back to ``handler``."""
        with self._lock:
            self._script.extend(replies)

    def complete_json(self, messages: list[dict[str, str]]) -> dict[str, Any]:
        body = {"model": self.model, "messages": messages, "response_format": {"type": "json_object"}}
        with self._lock:
            self.requests.append(("chat", body))
            scripted = self._script.popleft() if self._script else None
        if isinstance(scripted, Exception):
            raise scripted
        reply = scripted if scripted is not None else self.handler(body)
        try:  # the real client's parsing of a reply (code fences, prose around the object)
            return parse_json_object(reply)
        except NoJSONFound as exc:
            raise LLMReplyError(f"the LLM ({self.model}) did not answer with JSON: {exc}") from None
