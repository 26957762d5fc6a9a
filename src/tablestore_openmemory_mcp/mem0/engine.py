"""``MEMORY_ENGINE=mem0``: the MCP tools' add, search, update, delete and history run through a mem0 2.x ``Memory``.

mem0 2.x extracts additively (one LLM call per add, no UPDATE/DELETE decision), links entities and
scores semantic + BM25 + entity matches. Here it runs on the rows the classic engine uses:

* the vector store is the server's own store (provider ``openmemory_instance``): one table, one dedup
  rule, one recent-writes window, so memories written by either engine are read by the other;
* the LLM and the embedder are the server's (the same DashScope hardening, timeouts, retries and errors);
* mem0's history goes to the server's history log (its ``db`` is bridged), so the page and the
  ``memory_history`` tool show one history; the last messages mem0 shows its LLM as context stay in this
  process's memory (never on disk, where purge could not reach them);
* delete is the server's soft delete (state ``deleted``): restore, purge and export keep working.

Scope, paused apps, states, REST, the page, export/import and replicas are the classic engine's: this
class overrides only what mem0 does. Faults end the way the classic engine's do: an LLM that fails or
answers garbage means the text is stored as given, with a note; a failing embedder or store raises its
own one-line error, and nothing is reported stored that was not.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tablestore_openmemory_mcp.errors import AppPaused, DependencyError, MemoryNotFound
from tablestore_openmemory_mcp.memory.flow import ClassicFlow, _hit
from tablestore_openmemory_mcp.memory.ports import ChatModel, Embedder, Origin, Source, StoredMemory
from tablestore_openmemory_mcp.memory.query_filters import MemoryQuery
from tablestore_openmemory_mcp.memory.results import (
    AddResult,
    DeleteResult,
    HistoryEntry,
    HistoryResult,
    MemoryEvent,
    SearchResult,
    UpdateResult,
)
from tablestore_openmemory_mcp.memory.store_port import StorePort
from tablestore_openmemory_mcp.progress import Report
from tablestore_openmemory_mcp.repository import ACTIVE, StoreRepository
from tablestore_openmemory_mcp.scope import Scope
from tablestore_openmemory_mcp.stores.row_format import dedup_key

from . import adapters
from .adapters import OBJECTS, PROVIDER, TURN, TextChat, Turn
from .selection import scope_filters
from .vector_store import CALL, EngineCall, StoreVectorStore

logger = logging.getLogger(__name__)


class Mem0Flow(ClassicFlow):
    """The classic flow with add, search, update, delete and history delegated to a mem0 ``Memory``.

    Owner edits (REST: ``source != "mcp"``) of paused or archived memories stay on the classic path,
    which mem0 (it sees active memories only) cannot reach."""

    engine = "mem0"

    def __init__(self, repository: StoreRepository, embedder: Embedder, llm: ChatModel | None, memory: Any, **kw: Any):
        super().__init__(repository, embedder, llm, **kw)
        self.repo = repository
        self.memory = memory

    @contextmanager
    def _turn(self, scope: Scope, source: Source) -> Iterator[Turn]:
        turn = Turn(scope, Origin(source=source, model=getattr(self.llm, "model", None)))
        call = EngineCall(scope.user_id, scope.client_name, lambda digest: dedup_key(scope, digest), scope=scope)
        turn_token, call_token = TURN.set(turn), CALL.set(call)
        try:
            yield turn
        finally:
            CALL.reset(call_token)
            TURN.reset(turn_token)

    # --- add --------------------------------------------------------------------------------------------
    def add(
        self,
        scope: Scope,
        text: str,
        infer: bool = True,
        source: Source = "mcp",
        extra: Mapping[str, Any] | None = None,
        progress: Report | None = None,
    ) -> AddResult:
        """As the classic flow: a paused app is refused whoever asks; ``extra`` (metadata, event time) goes
        to mem0 as its ``metadata``, which mem0 keeps as payload fields, where the classic flow keeps them;
        ``progress`` hears extraction and writes (mem0 extracts, compares and writes in one call)."""
        fields = dict(extra or {})
        if self.repository.app_paused(scope):
            raise AppPaused(scope.client_name, scope.user_id)
        if infer and self.llm is None:
            note = "No LLM is configured, so the text was stored as given."
            return self._verbatim(scope, text, note, source, fields)
        if not infer:
            return self._verbatim(scope, text, None, source, fields)
        report: Report = progress or (lambda step, message: None)
        with self._turn(scope, source) as turn:
            try:
                report(1, "extracting facts and comparing them with your memories (mem0)")
                reply = self._mem0_add(scope, text, infer=True, extra=fields)
                report(3, "written")
            except Exception as exc:
                if turn.llm_error is None:
                    raise self._cause(exc, turn) from exc
                logger.warning("mem0 extraction failed: %s", turn.llm_error)
                note = f"The LLM could not extract facts ({turn.llm_error}); the text was stored as given."
                return self._verbatim(scope, text, note, source, fields)
            events = self._events(scope, reply, turn)
            call = CALL.get()
            searched = call.searched if call is not None else None
        if turn.embed_errors and not any(e.event == "ADD" for e in events):
            raise self._cause(turn.embed_errors[0], turn)
        if not turn.extracted and not searched:
            note = "The LLM found no separate facts, so the text was stored as given."
            return self._verbatim(scope, text, note, source, fields)
        # mem0 2.x lists only what is new: nothing, after it was shown the similar memories, means already known
        for fact in turn.extracted or ():  # facts mem0 skipped as already stored (its md5 rule)
            if fact not in {e.memory for e in events}:
                known = self.repository.find_exact(scope, fact)
                if known is not None:
                    events.append(MemoryEvent(id=known.id, memory=known.text, event="NONE"))
        nothing = None if events else "The LLM found nothing new to remember in it; nothing was stored."
        return AddResult(events=events, inferred=True, note=nothing)

    def _mem0_add(
        self, scope: Scope, text: str, *, infer: bool, extra: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        agent = None if scope.shared else scope.client_name  # shared: mem0 looks across the user's clients
        metadata = dict(extra) if extra else None
        return dict(self.memory.add(text, user_id=scope.user_id, agent_id=agent, infer=infer, metadata=metadata))

    def _events(self, scope: Scope, reply: dict[str, Any], turn: Turn) -> list[MemoryEvent]:
        call = CALL.get()
        aliases = call.aliases if call is not None else {}
        events = []
        for item in reply.get("results", []):
            mem0_id, memory = str(item["id"]), str(item.get("memory", ""))
            if mem0_id in aliases:
                known = self.repository.get(scope, aliases[mem0_id])
                if known is not None:
                    self.repository.ensure_recorded(scope, known, turn.origin)
                events.append(MemoryEvent(id=aliases[mem0_id], memory=memory, event="NONE"))
            else:
                event = str(item.get("event", "ADD"))  # mem0's reply is untyped: validated as MemoryEvent.event
                events.append(MemoryEvent.model_validate({"id": mem0_id, "memory": memory, "event": event}))
        return events

    def _verbatim(
        self, scope: Scope, text: str, note: str | None, source: Source, extra: Mapping[str, Any] | None = None
    ) -> AddResult:
        with self._turn(scope, source) as turn:
            try:
                reply = self._mem0_add(scope, text, infer=False, extra=extra)
            except Exception as exc:
                raise self._cause(exc, turn) from exc
            events = self._events(scope, reply, turn)
        if events and all(e.event == "NONE" for e in events):
            note = note or "This memory was already stored."
        return AddResult(events=events, inferred=False, note=note)

    @staticmethod
    def _cause(exc: BaseException, turn: Turn) -> BaseException:
        """Our own one-line error behind what mem0 raised (it wraps store failures in its own)."""
        call = CALL.get()
        if isinstance(exc, DependencyError):
            return exc
        if call is not None and call.store_errors:
            return call.store_errors[0]
        if turn.embed_errors:
            return turn.embed_errors[0]
        return exc

    # --- read -------------------------------------------------------------------------------------------
    def search(
        self, scope: Scope, query: str, limit: int, where: MemoryQuery | None = None, as_of: str | None = None
    ) -> SearchResult:
        """mem0's retrieval; a search narrowed by filters or ``as_of`` is answered by the classic retrieval over
        the same rows (mem0's filters know nothing of this server's clients, categories, times or history)."""
        if where or as_of:
            return super().search(scope, query, limit, where, as_of)
        filters: dict[str, Any] = scope_filters(scope)  # the provider hides paused, archived and deleted rows
        threshold = self.min_score if self.min_score is not None else 0.1
        with self._turn(scope, "mcp") as turn:
            try:
                reply = self.memory.search(query, top_k=limit, filters=filters, threshold=threshold)
            except Exception as exc:
                raise self._cause(exc, turn) from exc
        found = [self._stored(item) for item in reply.get("results", [])]
        found = self.repo._visible(scope, ACTIVE, found)
        self.repository.record_access(scope, found, query)
        return SearchResult(
            query=query,
            results=[_hit(m) for m in found],
        )

    @staticmethod
    def _stored(item: dict[str, Any]) -> StoredMemory:
        return StoredMemory(
            id=str(item["id"]),
            text=str(item.get("memory", "")),
            user_id=str(item.get("user_id", "")),
            client=item.get("agent_id"),
            created_at=str(item.get("created_at") or ""),
            updated_at=str(item.get("updated_at") or item.get("created_at") or ""),
            hash=str(item.get("hash") or ""),
            score=float(item.get("score") or 0.0),
            metadata=dict(item.get("metadata") or {}),  # mem0 puts payload fields it does not own here
        )

    def history(self, scope: Scope, memory_id: str) -> HistoryResult:
        with self._turn(scope, "mcp"):
            rows = self.memory.history(memory_id)
        if not rows:
            raise MemoryNotFound(f"No memory with id {memory_id} exists among your memories")
        return HistoryResult(id=memory_id, history=[HistoryEntry.from_record(row["record"]) for row in rows])

    # --- change -----------------------------------------------------------------------------------------
    def update(self, scope: Scope, memory_id: str, text: str, source: Source = "mcp") -> UpdateResult:
        if source != "mcp":
            return super().update(scope, memory_id, text, source)
        if self.repository.app_paused(scope):
            raise AppPaused(scope.client_name, scope.user_id)
        current = self.repository.get(scope, memory_id)
        if current is None or current.state != "active":
            raise MemoryNotFound(f"No memory with id {memory_id} exists among your memories")
        if current.text != text:
            with self._turn(scope, source) as turn:
                try:
                    self.memory.update(memory_id, text=text)
                except Exception as exc:
                    raise self._cause(exc, turn) from exc
        return UpdateResult(id=memory_id, memory=text, previous_memory=current.text)

    def delete(self, scope: Scope, memory_ids: Sequence[str], source: Source = "mcp") -> DeleteResult:
        if source != "mcp":
            return super().delete(scope, memory_ids, source)
        if self.repository.app_paused(scope):
            raise AppPaused(scope.client_name, scope.user_id)
        current = self.repository.get_many(scope, memory_ids)
        deleted: list[str] = []
        for memory_id in dict.fromkeys(memory_ids):
            memory = current.get(memory_id)
            if memory is None or memory.state != "active":
                continue
            with self._turn(scope, source) as turn:
                try:
                    self.memory.delete(memory_id)
                except ValueError:  # mem0: not found (deleted meanwhile)
                    continue
                except Exception as exc:
                    raise self._cause(exc, turn) from exc
            deleted.append(memory_id)
        return DeleteResult(deleted=deleted, not_found=[i for i in memory_ids if i not in deleted])


# --- building it ------------------------------------------------------------------------------------------


def build_memory(
    repository: StoreRepository,
    embedder: Embedder,
    llm: TextChat | None,
    *,
    collection_name: str,
    dimension: int,
    data_dir: Path,
    open_sibling: Callable[[str], StorePort],
    custom_instructions: str | None = None,
) -> Any:
    """A mem0 ``Memory`` on the server's store, LLM, embedder and history log."""
    from tablestore_openmemory_mcp.mem0 import register

    register(data_dir)
    from mem0 import Memory
    from mem0.configs.base import MemoryConfig
    from mem0.configs.llms.base import BaseLlmConfig
    from mem0.embeddings.configs import EmbedderConfig
    from mem0.llms.configs import LlmConfig
    from mem0.utils.factory import EmbedderFactory, LlmFactory
    from mem0.vector_stores.configs import VectorStoreConfig

    from .configs import InstanceConfig
    from .providers import lend

    LlmFactory.register_provider(PROVIDER, f"{adapters.__name__}.LlmAdapter", BaseLlmConfig)
    EmbedderFactory.provider_to_class[PROVIDER] = f"{adapters.__name__}.EmbedderAdapter"

    own = repository.store

    def opener(name: str) -> StoreVectorStore:
        if name == collection_name:
            return StoreVectorStore(
                own,
                collection_name=name,
                dimension=dimension,
                owners=None,
                soft_delete=True,
                close_store=False,
            )
        return StoreVectorStore(open_sibling(name), collection_name=name, dimension=dimension, owners=None)

    token = lend(opener)
    OBJECTS[token] = {"llm": llm, "embedder": embedder}
    config = MemoryConfig.model_construct(
        vector_store=VectorStoreConfig.model_construct(
            provider="openmemory_instance", config=InstanceConfig(token=token, collection_name=collection_name)
        ),
        llm=LlmConfig.model_construct(provider=PROVIDER, config={"model": token}),
        embedder=EmbedderConfig.model_construct(provider=PROVIDER, config={"model": token}),
        history_db_path=":memory:",  # history goes to our log, context to RecentMessages: no file of mem0's
        reranker=None,
        version="v1.1",
        custom_instructions=custom_instructions,
    )
    memory = Memory(config)
    memory.db = adapters.HistoryBridge(memory.db, repository)
    return memory


def mem0_flow(settings: Any, opened: Any, llm: TextChat | None) -> Mem0Flow:
    """The mem0 engine on the repository :func:`~..bootstrap.open_repository` opened (``MEMORY_ENGINE=mem0``).

    mem0's ``<collection>_entities`` collection (used when spaCy is installed) opens beside the memories:
    a second collection in the embedded file, or a second table on Tablestore."""
    from tablestore_openmemory_mcp.mem0 import require_mem0

    require_mem0()
    data_dir: Path = settings.resolved_data_dir
    store = opened.repository.store
    collection = str(getattr(store, "collection_name", "memories"))

    def open_sibling(name: str) -> StorePort:
        if settings.uses_tablestore:
            from tablestore_openmemory_mcp.stores.tablestore import TablestoreStore

            return TablestoreStore(
                collection_name=name,
                **settings.tablestore.client_args(),
                metric=settings.tablestore_vector_metric,
                embedding_model_dims=opened.dimension,
            )
        from tablestore_openmemory_mcp.stores.embedded import EmbeddedStore

        return EmbeddedStore(collection_name=name, path=str(data_dir), embedding_model_dims=opened.dimension)

    memory = build_memory(
        opened.repository,
        opened.embedder,
        llm,
        collection_name=collection,
        dimension=opened.dimension,
        data_dir=data_dir,
        open_sibling=open_sibling,
        custom_instructions=settings.fact_extraction_prompt,
    )
    return Mem0Flow(opened.repository, opened.embedder, llm, memory, min_score=settings.search_min_score)
