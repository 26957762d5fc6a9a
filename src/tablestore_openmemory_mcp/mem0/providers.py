"""The classes mem0's ``VectorStoreFactory`` builds: ``VectorStoreFactory.create(name, config)`` calls
``Class(**config)``. Each opens one of our stores and wraps it in :class:`.vector_store.StoreVectorStore`.

mem0 builds a second one for the ``<collection>_entities`` collection from a copy of the same config
(``collection_name`` changed): that is a second table (Tablestore) or a second collection in the same
file (embedded), with its own owner directory.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable
from typing import Any

from .configs import EmbeddedConfig, InstanceConfig, TablestoreConfig
from .owners import CachedOwners, SqliteOwners, TablestoreOwners
from .vector_store import StoreVectorStore


class TablestoreVectorStore(StoreVectorStore):
    """Provider ``tablestore``: our Tablestore store (table + search index) on the ``tablestore`` SDK."""

    def __init__(self, **config: Any) -> None:
        from tablestore_openmemory_mcp.stores.tablestore import TablestoreStore

        cfg = TablestoreConfig(**config)
        collection = cfg.collection_name or cfg.table_name
        store = TablestoreStore(
            collection_name=collection,
            **cfg.connection().client_args(),
            index_name=cfg.index_name if collection == cfg.table_name else None,
            metric=cfg.metric,
            embedding_model_dims=cfg.vector_dimension,
        )
        owners = CachedOwners(TablestoreOwners(store.client, store.endpoint, collection))
        super().__init__(store, collection_name=collection, dimension=cfg.vector_dimension, owners=owners)


class EmbeddedVectorStore(StoreVectorStore):
    """Provider ``openmemory_embedded``: the server's embedded SQLite store in ``path`` (the data directory)."""

    def __init__(self, **config: Any) -> None:
        from tablestore_openmemory_mcp.stores.embedded import EmbeddedStore

        cfg = EmbeddedConfig(**config)
        store = EmbeddedStore(
            collection_name=cfg.collection_name, path=cfg.path, embedding_model_dims=cfg.vector_dimension
        )
        owners = CachedOwners(SqliteOwners(cfg.path, cfg.collection_name))
        super().__init__(store, collection_name=cfg.collection_name, dimension=cfg.vector_dimension, owners=owners)


# --- the server's own store (MEMORY_ENGINE=mem0) ----------------------------------------------------------

#: token -> opener(collection_name) for stores handed to mem0 in this process.
_INSTANCES: dict[str, Callable[[str], StoreVectorStore]] = {}
_LOCK = threading.Lock()


def lend(opener: Callable[[str], StoreVectorStore]) -> str:
    """Make ``opener`` reachable from a mem0 config (``{"token": ...}``); returns the token."""
    token = secrets.token_hex(8)
    with _LOCK:
        _INSTANCES[token] = opener
    return token


class InstanceVectorStore(StoreVectorStore):
    """Provider ``openmemory_instance`` (internal): the store the server already opened, shared with the
    classic engine so both see one table, one dedup rule and one recent-writes window."""

    def __init__(self, **config: Any) -> None:
        cfg = InstanceConfig(**config)
        with _LOCK:
            opener = _INSTANCES.get(cfg.token)
        if opener is None:
            raise ValueError("the server's store is no longer available to mem0 (closed)")
        inner = opener(cfg.collection_name)
        super().__init__(
            inner.store,
            collection_name=inner.collection_name,
            dimension=inner.embedding_model_dims,
            owners=inner.owners,
            soft_delete=inner.soft_delete,
            close_store=inner.close_store,
        )
