"""Build the running server from settings: embedder, LLM, store + history, repository, flow, service, tools.

Nothing here runs at import time; :func:`build` is called by the CLI once settings are valid.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from tablestore_openmemory_mcp import __version__
from tablestore_openmemory_mcp.errors import StartupError as StartupError
from tablestore_openmemory_mcp.settings import APP_NAME, Settings

if TYPE_CHECKING:
    from tablestore_openmemory_mcp.memory.flow import ClassicFlow
    from tablestore_openmemory_mcp.memory.ports import HistoryLog
    from tablestore_openmemory_mcp.memory.service import MemoryService
    from tablestore_openmemory_mcp.memory.store_port import StorePort
    from tablestore_openmemory_mcp.migrate.upgrade import UpgradePlan
    from tablestore_openmemory_mcp.repository import StoreRepository

logger = logging.getLogger(__name__)


class ServiceProvider(Protocol):
    """Where the tools get the service: a :class:`ServiceHandle`, or stdio's ``StartupGate`` around one."""

    async def get(self) -> MemoryService: ...


@dataclass
class Components:
    service: MemoryService
    store_name: str
    llm_name: str
    embedder_name: str


class ServiceHandle:
    """The memory service, built in a background thread so the MCP handshake need not wait for it.

    Loading the embedder and opening the store take a second or more; stdio clients list tools meanwhile.
    Tool calls wait for :meth:`get`. A failure is kept and re-raised to every caller (and the CLI
    exits on it).
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._ready = threading.Event()
        self._components: Components | None = None
        self._error: BaseException | None = None

    def start(self) -> None:
        threading.Thread(target=self._build, name="memory-startup", daemon=True).start()

    def _build(self) -> None:
        try:
            self._components = build_components(self._settings)
        except BaseException as exc:
            self._error = exc
        finally:
            self._ready.set()

    def wait(self) -> Components:
        """Block until the service is ready; raise what startup raised."""
        self._ready.wait()
        if self._error is not None:
            raise self._error
        assert self._components is not None
        return self._components

    def failed(self, timeout: float) -> bool:
        """Whether startup ended in an error (waits up to ``timeout`` for it to end)."""
        return self._ready.wait(timeout) and self._error is not None

    def in_flight(self) -> int:
        """Tool calls running right now (0 before the service exists)."""
        return self._components.service.in_flight if self._components is not None else 0

    def close(self) -> None:
        """Close the store and history database, if the service was built."""
        if self._components is not None:
            self._components.service.close()

    async def get(self) -> MemoryService:
        if not self._ready.is_set():
            import anyio.to_thread

            await anyio.to_thread.run_sync(self._ready.wait)
        return self.wait().service


def _embedder(settings: Settings, check_store: bool = True) -> tuple[Any, int]:
    """The configured embedder and its dimension; ``check_store=False`` skips the store's embedder record
    (``reembed`` opens the store with a new embedder on purpose)."""
    from tablestore_openmemory_mcp.embedders import (
        EmbedderMismatch,
        EmbeddingError,
        OfflineEmbedder,
        OpenAICompatibleEmbedder,
        check_dimension,
        check_store_embedder,
        default_dimension,
    )

    if not settings.uses_remote_embedder:
        try:
            embedder = OfflineEmbedder(settings.embedder_offline, max_tokens=settings.embedder_max_tokens)
            if settings.vector_dimension not in (None, embedder.dimension):
                raise StartupError(
                    f"TABLESTORE_VECTOR_DIMENSION={settings.vector_dimension} but the offline embedder "
                    f"{embedder.name} produces {embedder.dimension}-dimensional vectors; unset it or configure "
                    "OPENAI_API_KEY for a remote embedder"
                )
            if check_store and not settings.uses_tablestore:
                check_store_embedder(settings.resolved_data_dir, embedder.name, embedder.dimension)
            embedder.warm_up()
        except (EmbeddingError, EmbedderMismatch) as exc:
            raise StartupError(str(exc)) from None
        return embedder, embedder.dimension
    dimension = settings.vector_dimension or default_dimension(settings.embedder_model)
    try:
        warning = check_dimension(settings.embedder_model, dimension)
    except ValueError as exc:
        raise StartupError(str(exc)) from None
    if warning:
        logger.warning(warning)
    remote = OpenAICompatibleEmbedder(
        model=settings.embedder_model,
        api_key=settings.embedder_key,
        base_url=settings.embedder_url,
        dimension=dimension,
        batch_size=settings.embedder_batch_size,
        timeout=settings.llm_timeout,
        max_retries=settings.llm_max_retries,
        max_tokens=settings.embedder_max_tokens,
    )
    if check_store and not settings.uses_tablestore:
        try:
            check_store_embedder(settings.resolved_data_dir, remote.name, dimension)
        except EmbedderMismatch as exc:
            raise StartupError(str(exc)) from None
    return remote, dimension


def follow_switches(store: Any, embedder: Any, settings: Settings, renamed: Callable[[str], None]) -> Any:
    """Wrap ``embedder`` so a reembed switch can replace it, and let the Tablestore ``store`` ask for that:
    the new embedder is built from these settings with the model the table's meta row names (an offline
    model, or a model of the configured OpenAI-compatible service)."""
    from tablestore_openmemory_mcp.embedders.switchable import SwitchableEmbedder

    switchable = SwitchableEmbedder(embedder)

    def on_switch(meta: Any) -> bool:
        built = embedder_named(settings, str(meta.embedder or ""), meta.dimension)
        if built is None:
            return False
        switchable.swap(built)
        renamed(switchable.name)
        logger.warning("switched the embedder to %s (reembed)", meta.embedder)
        return True

    store.follow_switches(on_switch, switchable.fresh)
    return switchable


def embedder_named(settings: Settings, name: str, dimension: int | None) -> Any | None:
    """The embedder called ``name`` built from ``settings`` (None when these settings cannot make it)."""
    from tablestore_openmemory_mcp.embedders import OFFLINE_MODELS

    for model in OFFLINE_MODELS.values():
        if model.name == name and dimension in (None, model.dimension):
            offline = settings.model_copy(update={"embedder_offline": model.key, "vector_dimension": None})
            if offline.uses_remote_embedder:
                return None  # the settings select a remote service; an offline model was not configured here
            return _embedder(offline, check_store=False)[0]
    if name.startswith("openai:") and settings.uses_remote_embedder and dimension:
        remote = settings.model_copy(
            update={"embedder_model": name.removeprefix("openai:"), "vector_dimension": int(dimension)}
        )
        return _embedder(remote, check_store=False)[0]
    return None


def _store(
    settings: Settings, dimension: int, embedder_name: str | None = None
) -> tuple[StorePort, HistoryLog, HistoryLog, str]:
    """The memory store, the history log and the access log beside it (one backend, so every replica
    sees the same history, app switches and access log)."""
    if settings.uses_tablestore:
        return _tablestore(settings, dimension, embedder_name)
    from tablestore_openmemory_mcp.stores.embedded import EmbeddedStore
    from tablestore_openmemory_mcp.stores.history_sqlite import SqliteHistoryLog

    data_dir = settings.resolved_data_dir
    name = f"embedded({data_dir / 'memories.sqlite3'})"
    try:
        store = EmbeddedStore(collection_name="memories", path=str(data_dir), embedding_model_dims=dimension)
        history = SqliteHistoryLog(data_dir)
        access = SqliteHistoryLog(data_dir, filename="access.sqlite3")
    except (ValueError, OSError) as exc:
        raise StartupError(f"cannot open the memory store {name}: {exc}") from None
    return store, history, access, name


def _tablestore(
    settings: Settings, dimension: int, embedder_name: str | None = None
) -> tuple[StorePort, HistoryLog, HistoryLog, str]:
    from tablestore_openmemory_mcp.stores.tablestore import TablestoreStore
    from tablestore_openmemory_mcp.stores.tablestore.history import PRIMARY_KEY, TablestoreHistoryLog, set_retention

    table = settings.tablestore_table_name
    name = f"tablestore({settings.tablestore_endpoint}, table={table})"
    try:
        store = TablestoreStore(
            collection_name=table,
            **settings.tablestore.client_args(),
            index_name=settings.tablestore_index_name,
            metric=settings.tablestore_vector_metric,
            embedding_model_dims=dimension,
            embedder_name=embedder_name,  # recorded in the table; another embedder is refused (reembed)
            max_retry_seconds=settings.tablestore_max_retry_seconds,
            ready_timeout=settings.tablestore_ready_timeout,
            # a new deployment's history tables are created with the memories table: one readiness wait for all
            also_create=[(f"{table}_{kind}", PRIMARY_KEY) for kind in ("history", "access")],
        )
        history, access = (
            TablestoreHistoryLog(
                store.client,
                f"{table}_{kind}",
                endpoint=store.endpoint,
                max_retry_seconds=settings.tablestore_max_retry_seconds,
                readiness=store.readiness,  # one wait, one progress line for every table
            )
            for kind in ("history", "access")
        )
        set_retention(store.client, f"{table}_access", settings.access_log_retention_days)
    except (ValueError, ConnectionError, OSError) as exc:
        raise StartupError(f"cannot open the memory store {name}: {exc}") from None
    return store, history, access, name


@dataclass
class OpenedStore:
    """A repository on the configured store, with the embedder and the settings it was built with."""

    repository: StoreRepository
    embedder: Any
    dimension: int
    embedder_name: str
    store_name: str
    settings: Settings  # with the upgrade's table name applied


def open_repository(settings: Settings, upgrade: UpgradePlan | None, *, audit: bool) -> OpenedStore:
    """The repository as the server builds it; the maintenance commands use it too.

    ``upgrade`` (from :func:`~.migrate.upgrade.plan_upgrade`, computed before this because it reads the
    reference's ``MEM0_DIR``) moves our memories to the table of our own. ``audit`` adds the app switches and the
    access log, which the server needs and maintenance commands (migrate, export, import) do not.
    """
    data_dir = settings.resolved_data_dir
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StartupError(f"cannot create the data directory {data_dir} (MEMORY_DATA_DIR): {exc}") from None

    from tablestore_openmemory_mcp.memory.audit import AccessLog, AppDirectory
    from tablestore_openmemory_mcp.repository import StoreRepository
    from tablestore_openmemory_mcp.stores.row_format import prepare_mem0_environment

    if upgrade is not None:  # the configured table is the reference deployment's: ours is <name>_v2
        settings = upgrade.apply(settings)
    prepare_mem0_environment(data_dir, settings.mem0_telemetry)
    embedder, dimension = _embedder(settings)
    embedder_name = str(getattr(embedder, "name", type(embedder).__name__))
    store, history, access_log, store_name = _store(settings, dimension, embedder_name)
    followers: list[StoreRepository] = []  # told the new embedder's name (its search score calibration)

    def renamed(name: str) -> None:
        for follower in followers:
            follower.embedder_name = name

    if settings.uses_tablestore:  # a reembed switch is followed while running (stores/tablestore/switch_watch)
        embedder = follow_switches(store, embedder, settings, renamed)
    if audit:
        apps, access = AppDirectory(history), AccessLog(access_log, retention_days=settings.access_log_retention_days)
        repository = StoreRepository(store, history, embedder_name=embedder_name, apps=apps, access=access)
    else:
        access_log.close()
        repository = StoreRepository(store, history, embedder_name=embedder_name)
    followers.append(repository)
    return OpenedStore(repository, embedder, dimension, embedder_name, store_name, settings)


def build_components(settings: Settings) -> Components:
    """Create store, embedder, LLM and service; raises :class:`StartupError` with a readable message."""
    from tablestore_openmemory_mcp.backup.online import UserBackups
    from tablestore_openmemory_mcp.memory.flow import ClassicFlow
    from tablestore_openmemory_mcp.memory.service import MemoryService
    from tablestore_openmemory_mcp.migrate.upgrade import plan_upgrade, start_background_copy
    from tablestore_openmemory_mcp.models.llm import ChatClient

    upgrade = plan_upgrade(settings)  # before the store opens: reads the reference's MEM0_DIR
    opened = open_repository(settings, upgrade, audit=True)
    settings, repository, embedder = opened.settings, opened.repository, opened.embedder
    embedder_name, store_name = opened.embedder_name, opened.store_name
    copy = start_background_copy(upgrade, repository, embedder, opened.dimension) if upgrade is not None else None

    llm = None
    if settings.uses_llm:
        llm = ChatClient(
            model=settings.llm_model,
            api_key=settings.llm_key,
            base_url=settings.llm_url,
            timeout=settings.llm_timeout,
            max_retries=settings.llm_max_retries,
            stream=settings.llm_stream,
        )
    if settings.memory_engine == "mem0":  # mem0 2.x's engine on the same rows (tablestore_openmemory_mcp.mem0)
        flow: ClassicFlow = _mem0_flow(settings, opened, llm)
    else:
        flow = ClassicFlow(
            repository,
            embedder,
            llm,
            fact_prompt=settings.fact_extraction_prompt,
            update_prompt=settings.update_memory_prompt,
            min_score=settings.search_min_score,
        )
    service = MemoryService(
        flow, repository, worker_threads=settings.worker_threads, backups=UserBackups(repository, embedder)
    )
    if copy is not None:  # the reference's memories are copied in the background; tools work meanwhile
        service.background.append(copy)
    if llm is not None and settings.categories:
        from tablestore_openmemory_mcp.memory.categories import Categorizer

        service.categorizer = Categorizer(llm, repository)
    llm_name = f"openai:{settings.llm_model}@{settings.llm_url}" if llm else "none (memories stored as given)"
    if settings.memory_engine == "mem0":  # the startup line names the engine when it is not the default
        llm_name += " engine=mem0"
    return Components(service, store_name, llm_name, embedder_name)


def _mem0_flow(settings: Settings, opened: OpenedStore, llm: Any) -> ClassicFlow:
    from tablestore_openmemory_mcp.mem0 import Mem0Changed, Mem0Missing
    from tablestore_openmemory_mcp.mem0.engine import mem0_flow

    try:
        return mem0_flow(settings, opened, llm)
    except (Mem0Missing, Mem0Changed) as exc:
        raise StartupError(f"MEMORY_ENGINE=mem0: {exc}") from None


def build_server(settings: Settings, handle: ServiceProvider) -> Any:
    """The MCP server with every enabled tool; tools reach the service through ``handle``."""
    from mcp.server.mcpserver import MCPServer

    from tablestore_openmemory_mcp.edge.capabilities import declare_only_tools
    from tablestore_openmemory_mcp.edge.identity import IdentityResolver
    from tablestore_openmemory_mcp.edge.tools import register_tools

    server = MCPServer(
        name=APP_NAME,
        version=__version__,
        instructions="Long-term memory: search it before answering, add to it what the user wants remembered.",
        log_level=settings.log_level,
    )
    register_tools(server, handle.get, settings, IdentityResolver(settings))
    declare_only_tools(server)  # no empty prompts/resources, no listChanged; unknown tools are JSON-RPC errors
    return server
