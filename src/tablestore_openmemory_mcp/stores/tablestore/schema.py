"""Table and search-index layout, and the startup compatibility checks.

Primary key ``(user_id, memory_id)``, both STRING: one user's memories form one contiguous,
strongly consistent range, so ``list``/``get``/``update``/``delete`` never depend on the search
index (which lags writes by seconds). The search index indexes both primary-key columns as KEYWORD
(Tablestore indexes primary-key columns directly), the text as TEXT with the ``single_word``
analyzer (Chinese is tokenized per character), the identity and time columns as KEYWORD (ISO
timestamps sort correctly as strings) and the embedding as a VECTOR field. The same table holds the
dedup rows, ``(user + DEDUP_SUFFIX, dedup key) -> memory id``; they have no vector and no text, so no
query of ours ever matches them.
"""

from __future__ import annotations

import re
from typing import Any

from tablestore import (
    AnalyzerType,
    FieldSchema,
    FieldType,
    SearchIndexMeta,
    SingleWordAnalyzerParameter,
    VectorDataType,
    VectorMetricType,
    VectorOptions,
)

from .narrowing import NARROWING_COLUMNS, index_fields

#: Tablestore's naming rule for tables, columns and indexes.
NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")

PK_USER = "user_id"
PK_ID = "memory_id"
PRIMARY_KEY = [(PK_USER, "STRING"), (PK_ID, "STRING")]

COL_DATA = "data"
COL_PAYLOAD = "payload"
COL_VECTOR = "vector"
#: On a memory row: the dedup key it holds (see ``dedup``). Not part of the payload.
COL_DEDUP = "dedup_key"
#: On a dedup row: the id of the memory holding the key.
COL_TARGET = "memory"
#: Dedup rows live in the partition ``user + DEDUP_SUFFIX``: outside every user's memory range, and no
#: identity can collide with it ('#' is not allowed in a user id).
DEDUP_SUFFIX = "#dedup"
#: Payload keys copied into their own KEYWORD-indexed columns so filters can be pushed down.
KEYWORD_COLUMNS = ("agent_id", "run_id", "hash", "actor_id", "role", "created_at", "updated_at", "state")
#: The day a memory was created (the first 10 characters of ``created_at``), indexed so the owner's
#: statistics count per day with a group-by (``aggregations``) instead of reading every row.
COL_DAY = "created_day"
#: Every attribute column we write; UpdateRow clears the ones a new payload no longer has (a category or
#: tag removed on update leaves the index with it).
ATTRIBUTE_COLUMNS = (COL_DATA, *KEYWORD_COLUMNS, COL_DAY, *NARROWING_COLUMNS, COL_PAYLOAD, COL_VECTOR)
#: Fields that exist in the index and can take Term/Terms/Range/Exists/Wildcard queries.
KEYWORD_FIELDS = frozenset({PK_USER, PK_ID, *KEYWORD_COLUMNS})

METRICS: dict[str, VectorMetricType] = {
    "cosine": VectorMetricType.VM_COSINE,
    "dot_product": VectorMetricType.VM_DOT_PRODUCT,
    "euclidean": VectorMetricType.VM_EUCLIDEAN,
}
_METRIC_ALIASES = {
    "dot": "dot_product",
    "ip": "dot_product",
    "inner_product": "dot_product",
    "l2": "euclidean",
}
#: Tablestore's maximum vector dimension: 4,096 on the current VectorOptions page
#: (https://www.alibabacloud.com/help/en/tablestore/developer-reference/vectoroptions, "Maximum value: 4096",
#: updated 2025-06); an older search-index limits page (Nov 2024) says 2,048. We follow the newer, more specific
#: page (the emulator does too); a service that still refuses more than 2,048 says so at index creation.
MAX_DIMENSION = 4096


def validate_name(kind: str, name: Any) -> str:
    """Raise a ValueError naming the rule when ``name`` cannot be a Tablestore table/index name."""
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ValueError(
            f"Invalid Tablestore {kind} name {name!r}: use 1-255 letters, digits or underscores, "
            "not starting with a digit (check TABLESTORE_TABLE_NAME)"
        )
    return name


def normalize_metric(metric: str) -> str:
    """Map user spellings to one of cosine|dot_product|euclidean."""
    key = str(metric or "cosine").strip().lower()
    key = _METRIC_ALIASES.get(key, key)
    if key not in METRICS:
        raise ValueError(f"Unsupported Tablestore vector metric {metric!r}; use one of {sorted(METRICS)}")
    return key


def validate_dimension(dims: Any) -> int:
    """The embedding dimension must be a positive int within Tablestore's limit."""
    if isinstance(dims, bool) or not isinstance(dims, int) or not 1 <= dims <= MAX_DIMENSION:
        raise ValueError(
            f"embedding_model_dims must be an integer between 1 and {MAX_DIMENSION} "
            f"(Tablestore's vector limit), got {dims!r}"
        )
    return dims


def index_meta(dimension: int, metric: str, vector_column: str = COL_VECTOR) -> SearchIndexMeta:
    """The search-index schema this store creates (``reembed`` puts a new embedder's vectors in a new column)."""
    fields = [
        FieldSchema(PK_USER, FieldType.KEYWORD, index=True, enable_sort_and_agg=True),
        FieldSchema(PK_ID, FieldType.KEYWORD, index=True, enable_sort_and_agg=True),
        FieldSchema(
            COL_DATA,
            FieldType.TEXT,
            index=True,
            analyzer=AnalyzerType.SINGLEWORD,
            analyzer_parameter=SingleWordAnalyzerParameter(case_sensitive=False, delimit_word=True),
        ),
        *[FieldSchema(c, FieldType.KEYWORD, index=True, enable_sort_and_agg=True) for c in KEYWORD_COLUMNS],
        FieldSchema(COL_DAY, FieldType.KEYWORD, index=True, enable_sort_and_agg=True),
        *index_fields(),  # event time, categories, tags: a search or list narrowed in the index
        FieldSchema(
            vector_column,
            FieldType.VECTOR,
            index=True,
            vector_options=VectorOptions(
                data_type=VectorDataType.VD_FLOAT_32, metric_type=METRICS[metric], dimension=dimension
            ),
        ),
    ]
    if vector_column != COL_VECTOR:  # a reembed's column: its digest (embedder + text) lets reembed count synced rows
        fields.append(FieldSchema(f"{vector_column}_digest", FieldType.KEYWORD, index=True))
    return SearchIndexMeta(fields)


def _metric_name(metric_type: Any) -> str:
    for name, value in METRICS.items():
        if metric_type == value or metric_type == int(value):
            return name
    return str(metric_type)


def check_index(
    index_name: str, meta: SearchIndexMeta, dimension: int, metric: str, vector_column: str = COL_VECTOR
) -> list[str]:
    """Raise ValueError when the existing index's vector field disagrees with the embedder.

    Returns the names of expected fields the index lacks (the caller logs them: filters on those
    fields then run as post-filters, which is slower but still correct).
    """
    by_name = {f.field_name: f for f in (meta.fields or [])}
    vector = by_name.get(vector_column)
    options = getattr(vector, "vector_options", None) if vector is not None else None
    if options is None:
        raise ValueError(
            f"Tablestore index {index_name} has no vector field '{vector_column}', so it was not created by "
            "this server; use another TABLESTORE_TABLE_NAME"
        )
    have_dim, have_metric = int(options.dimension), _metric_name(options.metric_type)
    if have_dim != dimension or have_metric != metric:
        raise ValueError(
            f"Tablestore index {index_name} has dimension {have_dim}/{have_metric} but the embedder "
            f"produces {dimension}/{metric}; to change the embedder run `tablestore-openmemory-mcp reembed` with "
            "the new settings, or set TABLESTORE_VECTOR_DIMENSION (and the metric) to match the index"
        )
    wanted = {f.field_name for f in index_meta(dimension, metric, vector_column).fields}
    return sorted(wanted - set(by_name))


def check_primary_key(table: str, schema: list[Any]) -> None:
    """Raise ValueError when an existing table was created with another primary key."""
    names = [(str(c[0]), str(c[1]).upper()) for c in schema or []]
    if names != PRIMARY_KEY:
        raise ValueError(
            f"Tablestore table {table} has primary key {names} but this server needs {PRIMARY_KEY} "
            "(it was probably created by another tool); use another TABLESTORE_TABLE_NAME"
        )
