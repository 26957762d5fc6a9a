"""What is known about remote embedding models: the dimensions each can produce, and vector checks.

Why: a wrong TABLESTORE_VECTOR_DIMENSION or a provider that returns something odd must fail with one
line naming the setting, before anything is written to a store.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tablestore_openmemory_mcp.errors import EmbeddingError as EmbeddingError  # raised by every embedder

#: Dimensions each known embedding model can produce (DashScope's documented lists, OpenAI's models).
KNOWN_DIMENSIONS: dict[str, tuple[int, ...] | None] = {
    "text-embedding-v4": (2048, 1536, 1024, 768, 512, 256, 128, 64),
    "text-embedding-v3": (1024, 768, 512),
    "text-embedding-v2": (1536,),
    "text-embedding-v1": (1536,),
    "text-embedding-3-small": None,  # any dimension up to 1536
    "text-embedding-3-large": None,  # any dimension up to 3072
    "text-embedding-ada-002": (1536,),
}
_MAX_DIMENSION = {"text-embedding-3-small": 1536, "text-embedding-3-large": 3072}


def check_dimension(model: str, dimension: int) -> str | None:
    """Return a warning for an unknown model; raise ``ValueError`` for a known model that cannot do it."""
    if model not in KNOWN_DIMENSIONS:
        return (
            f"embedding model {model!r} is not in the list of known models; make sure it produces "
            f"{dimension}-dimensional vectors (TABLESTORE_VECTOR_DIMENSION)"
        )
    allowed = KNOWN_DIMENSIONS[model]
    if allowed is None:
        if dimension > _MAX_DIMENSION[model]:
            raise ValueError(
                f"embedding model {model} produces at most {_MAX_DIMENSION[model]} dimensions, "
                f"not {dimension}; fix TABLESTORE_VECTOR_DIMENSION"
            )
        return None
    if dimension not in allowed:
        raise ValueError(
            f"embedding model {model} cannot produce {dimension} dimensions (it supports "
            f"{', '.join(map(str, allowed))}); fix TABLESTORE_VECTOR_DIMENSION"
        )
    return None


def default_dimension(model: str, fallback: int = 1536) -> int:
    """The dimension to use when TABLESTORE_VECTOR_DIMENSION is unset: ``fallback`` if the model can
    produce it, else the model's documented default (text-embedding-v3: 1024)."""
    allowed = KNOWN_DIMENSIONS.get(model)
    if allowed is None:
        return min(fallback, _MAX_DIMENSION.get(model, fallback))
    return fallback if fallback in allowed else (1024 if 1024 in allowed else allowed[0])


def validate_vector(vector: Sequence[float] | np.ndarray, dimension: int, source: str) -> list[float]:
    """Reject vectors of the wrong length or with NaN/inf before they reach a store.

    Checked with numpy: per-element Python loops cost ~0.15 ms a 1024-d vector, paid by every search."""
    values = np.asarray(vector, dtype=np.float64).ravel()
    if len(values) != dimension:
        raise EmbeddingError(
            f"{source} returned a {len(values)}-dimensional vector but {dimension} are configured; "
            f"check EMBEDDER_MODEL, or set TABLESTORE_VECTOR_DIMENSION={len(values)} (for a new store)"
        )
    if not bool(np.isfinite(values).all()):
        raise EmbeddingError(f"{source} returned a vector containing NaN or infinity")
    return values.tolist()
