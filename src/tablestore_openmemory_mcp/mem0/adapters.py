"""What mem0's ``Memory`` calls, on the server's own parts (``MEMORY_ENGINE=mem0``).

mem0 builds its LLM and embedder from its factories; the providers registered as ``openmemory`` hand it
the server's :class:`~..llm.ChatClient` and embedder instead (looked up by a token in ``OBJECTS``), so the
engine gets the same DashScope hardening, timeouts, retries and one-line errors. :class:`HistoryBridge`
replaces ``Memory.db``: history goes to the server's history log. Each adapter notes what happened in the
current turn (:data:`TURN`), because mem0 swallows some failures and wraps others in its own errors.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import OrderedDict, deque
from collections.abc import Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Protocol

from tablestore_openmemory_mcp.errors import DependencyError
from tablestore_openmemory_mcp.memory.clock import now_iso
from tablestore_openmemory_mcp.memory.ports import ChatModel, Embedder, HistoryRecord, Origin
from tablestore_openmemory_mcp.repository import StoreRepository
from tablestore_openmemory_mcp.scope import Scope

from .vector_store import CALL

logger = logging.getLogger(__name__)

PROVIDER = "openmemory"  # the LLM and embedder providers that hand mem0 the server's own


@dataclass
class Turn:
    """What happened inside one mem0 call, for the result and the error."""

    scope: Scope
    origin: Origin
    extracted: list[str] | None = None  # texts the LLM returned (None: no extraction call)
    llm_error: DependencyError | None = None
    embed_errors: list[BaseException] = field(default_factory=list)


class TextChat(ChatModel, Protocol):
    """The LLM mem0 drives (:class:`~..models.llm.ChatClient`): mem0 parses the reply itself, so it gets the text."""

    def complete(self, messages: list[dict[str, str]], *, json_mode: bool) -> str: ...


TURN: ContextVar[Turn | None] = ContextVar("MEM0_ENGINE_TURN", default=None)
OBJECTS: dict[str, Any] = {}


class LlmAdapter:
    """mem0's LLM interface (``generate_response``) on the server's :class:`~..llm.ChatClient`."""

    def __init__(self, config: Any) -> None:
        self.config = config
        self.chat: TextChat | None = OBJECTS[str(config.model)]["llm"]

    def generate_response(self, messages: list[dict[str, str]], response_format: Any = None, **_: Any) -> str:
        from tablestore_openmemory_mcp.models.jsonparse import NoJSONFound, parse_json_object
        from tablestore_openmemory_mcp.models.llm import LLMError, LLMReplyError

        turn = TURN.get()
        try:
            if self.chat is None:
                raise LLMError("no LLM is configured")
            json_mode = isinstance(response_format, dict) and response_format.get("type") == "json_object"
            text = self.chat.complete(messages, json_mode=json_mode)
            if not json_mode:
                return str(text)
            try:
                reply = parse_json_object(text)
            except NoJSONFound as exc:
                raise LLMReplyError(f"the LLM answered without JSON ({exc})") from None
        except DependencyError as exc:
            if turn is not None:
                turn.llm_error = exc
            raise
        if turn is not None:
            items = reply.get("memory")
            turn.extracted = (
                [str(i["text"]) for i in items if isinstance(i, dict) and i.get("text")]
                if isinstance(items, list)
                else []
            )
        return json.dumps(reply, ensure_ascii=False)


class EmbedderAdapter:
    """mem0's embedder interface on the server's embedder; failures are noted (mem0 swallows some)."""

    def __init__(self, config: Any) -> None:
        self.config = config
        self.embedder: Embedder = OBJECTS[str(config.model)]["embedder"]

    def embed(self, text: str, memory_action: Any = None) -> list[float]:
        try:
            return self.embedder.embed(text, memory_action)
        except Exception as exc:
            self._note(exc)
            raise

    def embed_batch(self, texts: list[str], memory_action: str = "add") -> list[list[float]]:
        try:
            return self.embedder.embed_batch(list(texts), memory_action)
        except Exception as exc:
            self._note(exc)
            raise

    @staticmethod
    def _note(exc: BaseException) -> None:
        turn = TURN.get()
        if turn is not None:
            turn.embed_errors.append(exc)


class RecentMessages:
    """The last messages per conversation scope that mem0 shows its LLM as context, in this process only.

    Why not mem0's SQLite table: it would keep users' raw messages on disk outside the memory store, where
    purge cannot reach them. Bounded: 10 messages per scope, 10,000 scopes."""

    def __init__(self, per_scope: int = 10, scopes: int = 10_000) -> None:
        self._per_scope, self._scopes = per_scope, scopes
        self._by_scope: OrderedDict[str, deque[dict[str, Any]]] = OrderedDict()
        self._lock = threading.Lock()

    def save(self, messages: Sequence[dict[str, Any]], session_scope: str) -> None:
        now = now_iso()
        with self._lock:
            kept = self._by_scope.setdefault(session_scope, deque(maxlen=self._per_scope))
            self._by_scope.move_to_end(session_scope)
            for m in messages:
                kept.append(
                    {"role": m.get("role"), "content": m.get("content"), "name": m.get("name"), "created_at": now}
                )
            while len(self._by_scope) > self._scopes:
                self._by_scope.popitem(last=False)

    def last(self, session_scope: str, limit: int = 10) -> list[dict[str, Any]]:
        with self._lock:
            kept = list(self._by_scope.get(session_scope, ()))
        return kept[-limit:] if limit > 0 else []


class HistoryBridge:
    """mem0's ``db``: history in the server's history log, conversation context in :class:`RecentMessages`."""

    def __init__(self, inner: Any, repository: StoreRepository) -> None:
        self.inner = inner  # mem0's own SQLiteManager on ":memory:" (closed with the Memory)
        self.repository = repository
        self.messages = RecentMessages()

    def add_history(
        self,
        memory_id: str,
        old_memory: str | None,
        new_memory: str | None,
        event: str,
        *,
        created_at: str | None = None,
        updated_at: str | None = None,
        is_deleted: int = 0,
        **_: Any,
    ) -> None:
        self.batch_add_history(
            [
                {
                    "memory_id": memory_id,
                    "old_memory": old_memory,
                    "new_memory": new_memory,
                    "event": event,
                    "created_at": created_at,
                    "updated_at": updated_at,
                }
            ]
        )

    def batch_add_history(self, records: Sequence[dict[str, Any]]) -> None:
        turn, call = TURN.get(), CALL.get()
        if turn is None:
            return
        aliases = call.aliases if call is not None else {}
        out = []
        for rec in records:
            event = str(rec.get("event", "")).upper()
            if event == "ADD" and rec["memory_id"] in aliases:
                continue  # the text was already stored: that memory keeps its own history
            out.append(
                HistoryRecord(
                    memory_id=str(rec["memory_id"]),
                    event=event,
                    old_memory=rec.get("old_memory"),
                    new_memory=rec.get("new_memory"),
                    at=str(rec.get("updated_at") or rec.get("created_at") or now_iso()),
                    client=turn.scope.client_name,
                    source=turn.origin.source,
                    model=turn.origin.model if event != "DELETE" else None,
                    old_state="active" if event == "DELETE" else None,
                    new_state="deleted" if event == "DELETE" else None,
                )
            )
        if out:
            try:
                self.repository.history_log.append(turn.scope.user_id, out)
            except Exception:  # history follows the write; a failure must not turn a stored write into an error
                logger.exception("could not record %d history event(s) for user %s", len(out), turn.scope.user_id)

    def get_history(self, memory_id: str) -> list[dict[str, Any]]:
        turn = TURN.get()
        if turn is None:
            return []
        return [
            {
                "id": f"{memory_id}:{index}",
                "memory_id": memory_id,
                "old_memory": r.old_memory,
                "new_memory": r.new_memory,
                "event": r.event,
                "created_at": r.at,
                "updated_at": r.at,
                "is_deleted": r.event == "DELETE",
                "record": r,
            }
            for index, r in enumerate(self.repository.history(turn.scope, memory_id))
        ]

    def save_messages(self, messages: Sequence[dict[str, Any]], session_scope: str) -> None:
        self.messages.save(messages, session_scope)

    def get_last_messages(self, session_scope: str, limit: int = 10) -> list[dict[str, Any]]:
        return self.messages.last(session_scope, limit)

    def reset(self) -> None:
        raise NotImplementedError("the server's history is reset per memory (purge), not at once")

    def close(self) -> None:
        self.inner.close()
