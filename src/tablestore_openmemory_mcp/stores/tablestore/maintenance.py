"""The Tablestore store's door for whole-table maintenance (``reembed``, ``migrate``): what such a job may use.

Why a door: a job that rewrites every user's vectors, or copies a table, walks the table itself (GetRange over
every partition, BatchWriteRow of its own columns) under the store's retry policy and row-size rules, so it
needs the client factory, the retrier, batching, the embedding meta row and the table's column names.
Importing them from here keeps the store's other modules private; row payloads are read with
:mod:`..row_format`.
"""

from __future__ import annotations

from .batch import Batches
from .batching import chunks, item_bytes
from .client import client_from_settings
from .embedding_meta import EmbeddingMeta, read_meta, write_meta
from .retry import Retrier, TablestoreUnavailableError
from .rows import encode_vector
from .schema import COL_PAYLOAD, COL_VECTOR, DEDUP_SUFFIX, PK_ID, PK_USER, index_meta, normalize_metric, validate_name

__all__ = [
    "COL_PAYLOAD",
    "COL_VECTOR",
    "DEDUP_SUFFIX",
    "PK_ID",
    "PK_USER",
    "Batches",
    "EmbeddingMeta",
    "Retrier",
    "TablestoreUnavailableError",
    "chunks",
    "client_from_settings",
    "encode_vector",
    "index_meta",
    "item_bytes",
    "normalize_metric",
    "read_meta",
    "validate_name",
    "write_meta",
]
