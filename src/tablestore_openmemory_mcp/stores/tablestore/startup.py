"""Opening a Tablestore store: create what is missing, check what exists, follow the meta row, wait until usable.

Why its own module: startup runs once per process and touches the table, the search index and the meta row
(which embedder, index and vector column the table uses); the store's reads and writes never need it again.

RPCs when the table and index exist and are ready: 3 (DescribeTable, the meta row's GetRow,
DescribeSearchIndex). A new table gets its index and the server's other tables (``also_create``) before
anything is waited for, so one wait covers them all (``readiness``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

from tablestore import OTSServiceError

from .embedding_meta import EmbeddingMeta, read_meta, write_meta
from .narrowing import NARROWING_COLUMNS
from .readiness import index_initialized
from .schema import KEYWORD_FIELDS, PRIMARY_KEY, check_index, check_primary_key, index_meta, validate_name
from .tables import already_exists, create_table, credentials_rejected, describe_primary_key, not_found

if TYPE_CHECKING:
    from .store import TablestoreStore

logger = logging.getLogger(__name__)


def ensure(store: TablestoreStore, also_create: Sequence[tuple[str, Sequence[tuple[str, str]]]] = ()) -> None:
    """Create what is missing, then wait until it can be used (``readiness``).

    Each new table or index takes seconds (up to a minute) on the service; one after another they add up
    (the search-index quick start also creates the index right after the table)."""
    store.readiness.begin()

    def table_error(api: str, exc: OTSServiceError) -> Exception:
        return friendly(store, exc)

    have = describe_primary_key(store.client, store._retry, store.collection_name, table_error)
    created_index = None
    if have is None:
        logger.info("Creating Tablestore table %s", store.collection_name)
        create_table(store.client, store._retry, store.collection_name, PRIMARY_KEY, table_error)
        for name, key in also_create:
            create_table(store.client, store._retry, name, key, table_error)
        created_index = store.index_name  # a new table has no meta row naming another index
        create_index(store)
    else:
        check_primary_key(store.collection_name, have)
    # the first read of a new table (ours, or another replica's) waits until the table is usable
    what = f"table {store.collection_name}"
    meta = store.readiness.call(what, "GetRow", lambda: read_meta(store.client, store.collection_name))
    if meta is None:
        record_embedder(store)
    else:
        follow(store, meta)
    if created_index == store.index_name:
        initialized = False  # just created (or checked, when another replica won the race): wait below
    else:
        try:
            index, sync = store._call(
                "DescribeSearchIndex",
                lambda: store.client.describe_search_index(store.collection_name, store.index_name, True),
            )
        except OTSServiceError as exc:
            if not not_found(exc):
                raise friendly(store, exc) from exc
            create_index(store)
            initialized = False
        else:
            check(store, index)
            initialized = index_initialized(sync)
    if not initialized and not store.readiness.index(store.client, store.collection_name, store.index_name)[1]:
        store._recent.hold()  # searches miss what this process writes until the index has initialized


def record_embedder(store: TablestoreStore) -> None:
    """Record which embedder fills this table (a table without the meta row: new, or made before it)."""
    if store.embedder_name is None:
        return
    meta = EmbeddingMeta(store.embedder_name, store.embedding_model_dims, store.index_name, store.vector_column)
    store._call("PutRow", lambda: write_meta(store.client, store.collection_name, meta, only_if_missing=True))


def follow(store: TablestoreStore, meta: EmbeddingMeta) -> None:
    """Use the index and vector column the meta row names; refuse another embedder in one line."""
    store.index_name = validate_name("index", meta.index_name or store.index_name)
    store.vector_column = validate_name("column", meta.vector_column)
    wanted = (store.embedder_name, store.embedding_model_dims)
    if store.embedder_name is not None and meta.embedder is not None and (meta.embedder, meta.dimension) != wanted:
        raise ValueError(
            f"Tablestore table {store.collection_name} was embedded with {meta.embedder} ({meta.dimension} "
            f"dimensions) but this server would use {store.embedder_name} ({store.embedding_model_dims}); "
            "run `tablestore-openmemory-mcp reembed` with the new settings to rebuild its vectors, or set "
            "EMBEDDER_MODEL / TABLESTORE_VECTOR_DIMENSION back"
        )


def check(store: TablestoreStore, meta: Any) -> None:
    """Check an existing index against the embedder; note the fields it lacks (their filters run after the read)."""
    lacking = check_index(store.index_name, meta, store.embedding_model_dims, store.metric, store.vector_column)
    store._indexed = (KEYWORD_FIELDS | frozenset(NARROWING_COLUMNS)) - frozenset(lacking)
    if lacking:
        logger.warning(
            "Tablestore index %s lacks fields %s; filters on them run as post-filters", store.index_name, lacking
        )


def friendly(store: TablestoreStore, exc: OTSServiceError) -> Exception:
    """A credentials error names the endpoint and instance; any other error stays the SDK's own."""
    rejected = credentials_rejected(exc, f"{store.endpoint} (instance {store.instance_name})")
    return rejected if rejected is not None else cast(Exception, exc)


def create_index(store: TablestoreStore) -> None:
    logger.info("Creating Tablestore search index %s on %s", store.index_name, store.collection_name)
    try:
        store._call(
            "CreateSearchIndex",
            lambda: store.client.create_search_index(
                store.collection_name,
                store.index_name,
                index_meta(store.embedding_model_dims, store.metric, store.vector_column),
            ),
        )
    except OTSServiceError as exc:
        if not already_exists(exc):
            raise friendly(store, exc) from exc
        meta, _ = store._call(
            "DescribeSearchIndex",
            lambda: store.client.describe_search_index(store.collection_name, store.index_name, False),
        )
        check(store, meta)


__all__ = ["ensure"]
