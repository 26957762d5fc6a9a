"""Build the running server from settings: embedder, LLM, store, mem0, service, MCP tools.

Nothing here runs at import time; :func:`build` is called by the CLI once settings are valid.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

from tablestore_openmemory_mcp import __version__
from tablestore_openmemory_mcp.settings import APP_NAME, Settings

logger = logging.getLogger(__name__)


class StartupError(Exception):
    """The server cannot start; the message is one line naming what to fix."""


@dataclass
class Components:
    service: Any
    store_name: str
    llm_name: str
    embedder_name: str


class ServiceHandle:
    """The memory service, built in a background thread so the MCP handshake need not wait for it.

    Importing mem0 and opening the store take a second or more; stdio clients list tools meanwhile.
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

    def in_flight(self) -> int:
        """Tool calls running right now (0 before the service exists)."""
        return self._components.service.in_flight if self._components is not None else 0

    def close(self) -> None:
        """Close the store and history database, if the service was built."""
        if self._components is not None:
            self._components.service.close()

    async def get(self) -> Any:
        if not self._ready.is_set():
            import anyio.to_thread

            await anyio.to_thread.run_sync(self._ready.wait)
        return self.wait().service


def _embedder(settings: Settings) -> tuple[Any, int]:
    from tablestore_openmemory_mcp.embedders import (
        OFFLINE_DIMENSION,
        OfflineEmbedder,
        OpenAICompatibleEmbedder,
        check_dimension,
        default_dimension,
    )

    if not settings.uses_remote_embedder:
        if settings.vector_dimension not in (None, OFFLINE_DIMENSION):
            raise StartupError(
                f"TABLESTORE_VECTOR_DIMENSION={settings.vector_dimension} but the offline embedder produces "
                f"{OFFLINE_DIMENSION}-dimensional vectors; unset it or configure OPENAI_API_KEY for a remote embedder"
            )
        embedder = OfflineEmbedder()
        embedder.warm_up()
        return embedder, OFFLINE_DIMENSION
    dimension = settings.vector_dimension or default_dimension(settings.embedder_model)
    try:
        warning = check_dimension(settings.embedder_model, dimension)
    except ValueError as exc:
        raise StartupError(str(exc)) from None
    if warning:
        logger.warning(warning)
    embedder = OpenAICompatibleEmbedder(
        model=settings.embedder_model,
        api_key=settings.embedder_key,
        base_url=settings.embedder_url,
        dimension=dimension,
        batch_size=settings.embedder_batch_size,
        timeout=settings.llm_timeout,
        max_retries=settings.llm_max_retries,
    )
    return embedder, dimension


def _store(settings: Settings, dimension: int) -> tuple[str, dict[str, Any], str]:
    if settings.uses_tablestore:
        config = {
            "collection_name": settings.tablestore_table_name,
            "endpoint": settings.tablestore_endpoint,
            "instance_name": settings.tablestore_instance_name,
            "access_key_id": settings.tablestore_access_key_id,
            "access_key_secret": settings.tablestore_access_key_secret,
            "sts_token": settings.tablestore_sts_token,
            "region": settings.tablestore_region,
            "index_name": settings.tablestore_index_name,
            "metric": settings.tablestore_vector_metric,
            "embedding_model_dims": dimension,
            "timeout": settings.tablestore_timeout,
        }
        name = f"tablestore({settings.tablestore_endpoint}, table={settings.tablestore_table_name})"
        return "openmemory_tablestore", config, name
    config = {
        "collection_name": "memories",
        "path": str(settings.resolved_data_dir),
        "embedding_model_dims": dimension,
    }
    return "openmemory_embedded", config, f"embedded({settings.resolved_data_dir / 'memories.sqlite3'})"


def build_components(settings: Settings) -> Components:
    """Create store, embedder, LLM and service; raises :class:`StartupError` with a readable message."""
    data_dir = settings.resolved_data_dir
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StartupError(f"cannot create the data directory {data_dir} (MEMORY_DATA_DIR): {exc}") from None

    from tablestore_openmemory_mcp import mem0_bridge

    mem0_bridge.prepare_environment(data_dir, settings.mem0_telemetry)

    from tablestore_openmemory_mcp.llm import ChatClient
    from tablestore_openmemory_mcp.memory.service import MemoryService

    embedder, dimension = _embedder(settings)
    provider, store_config, store_name = _store(settings, dimension)
    try:
        memory = mem0_bridge.build_memory(
            store_provider=provider,
            store_config=store_config,
            embedder=embedder,
            history_db_path=data_dir / "history.sqlite3",
        )
    except (ValueError, ConnectionError, OSError) as exc:
        raise StartupError(f"cannot open the memory store {store_name}: {exc}") from None

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
    service = MemoryService(
        memory,
        embedder,
        llm,
        fact_prompt=settings.fact_extraction_prompt,
        update_prompt=settings.update_memory_prompt,
        min_score=settings.search_min_score,
        worker_threads=settings.worker_threads,
    )
    llm_name = f"openai:{settings.llm_model}@{settings.llm_url}" if llm else "none (memories stored as given)"
    return Components(service, store_name, llm_name, getattr(embedder, "name", type(embedder).__name__))


def build_server(settings: Settings, handle: ServiceHandle) -> Any:
    """The MCP server with every enabled tool; tools reach the service through ``handle``."""
    from mcp.server.mcpserver import MCPServer

    from tablestore_openmemory_mcp.identity import IdentityResolver
    from tablestore_openmemory_mcp.tools import register_tools

    server = MCPServer(
        name=APP_NAME,
        version=__version__,
        instructions="Long-term memory: search it before answering, add to it what the user wants remembered.",
        log_level=settings.log_level,
    )
    register_tools(server, handle.get, settings, IdentityResolver(settings))
    return server
