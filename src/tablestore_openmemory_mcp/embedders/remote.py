"""``/embeddings`` of DashScope or any OpenAI-compatible service: bounded, shared, validated.

Why: DashScope accepts at most 10 inputs per request and 8,192 tokens per input; concurrent adds each
paid a whole HTTP round trip. Here inputs are cut to the model's maximum tokens (a conservative
estimate, see :mod:`.limits`), concurrent calls share requests of up to ``EMBEDDER_BATCH_SIZE``
inputs (a few requests in flight at once, and searches on slots of their own), float vectors are always asked for, and
every vector is checked before anything is stored.
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Any, Literal

import numpy as np

from tablestore_openmemory_mcp.embedders.batching import MicroBatcher
from tablestore_openmemory_mcp.embedders.limits import cut_to_tokens, max_tokens_for
from tablestore_openmemory_mcp.embedders.models import KNOWN_DIMENSIONS, EmbeddingError, validate_vector
from tablestore_openmemory_mcp.models.endpoint import Endpoint, explain, mentions_unknown_model

logger = logging.getLogger(__name__)

#: Requests in flight at once per embedder (callers beyond that share the next requests).
REMOTE_CONCURRENCY = 4
#: Further requests in flight for searches only: a search waits for a network round trip, never for
#: another user's search to come back first (16 concurrent searches took 2-3.5x one search with none).
REMOTE_SEARCH_SLOTS = 16
#: Summed input tokens per request (OpenAI refuses more than 300,000).
REMOTE_MAX_COST = 240_000
_TOO_LONG = re.compile(r"input length|context length|too long|maximum.{0,40}tokens|tokens?.{0,20}exceed")


def _floats(embedding: Any, where: str) -> np.ndarray:
    """An embedding as JSON floats (``encoding_format=float`` is asked for; a list of numbers is required).

    C-level checks and one numpy conversion instead of per-element Python loops (every search pays this)."""
    if not isinstance(embedding, list) or not set(map(type, embedding)) <= {float, int}:
        raise EmbeddingError(f"{where} answered an embedding that is not a list of numbers")
    return np.asarray(embedding, dtype=np.float64)


def _input_rejected(exc: BaseException) -> bool:
    return bool(getattr(exc, "input_rejected", False))


class OpenAICompatibleEmbedder:
    """``/embeddings`` of DashScope or any OpenAI-compatible service, batched and validated.

    ``dimensions`` is sent unless the model is known to have one fixed size (``send_dimensions=None``
    decides that); a provider that refuses the parameter (OpenAI's ada-002, vLLM without Matryoshka
    support) gets one retry without it, remembered, and the vectors' length is still checked. A
    provider that says the batch is too large gets its limit (or half the batch) from then on; one
    that says an input is too long gets inputs cut to half as many tokens from then on.
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
        max_tokens: int | None = None,
        concurrency: int = REMOTE_CONCURRENCY,
        search_slots: int = REMOTE_SEARCH_SLOTS,
        linger: float = 0.005,
    ) -> None:
        import openai

        self.model = model
        self.dimension = dimension
        self.batch_size = max(1, batch_size)
        self.base_url = base_url or "https://api.openai.com/v1"
        self.timeout = timeout
        self.name = f"openai:{model}"
        self.max_tokens = max_tokens_for(model, max_tokens)
        if send_dimensions is None:
            fixed = KNOWN_DIMENSIONS.get(model)
            send_dimensions = not (fixed is not None and len(fixed) == 1)
        self._send_dimensions = send_dimensions
        self._client = openai.OpenAI(
            api_key=api_key or "none", base_url=self.base_url, timeout=timeout, max_retries=max_retries
        )
        self._count_lock = threading.Lock()
        self.requests = 0
        self.batcher: MicroBatcher[list[float]] = MicroBatcher(
            self._run,
            max_items=self.batch_size,
            max_cost=REMOTE_MAX_COST,
            concurrency=concurrency,
            reserve=search_slots,
            linger=linger,
            isolate=_input_rejected,
        )

    def fit(self, text: str) -> tuple[str, int]:
        """What is sent of ``text`` (newlines as spaces, at most ``max_tokens``) and its estimated tokens."""
        return cut_to_tokens(text.replace("\n", " "), self.max_tokens)

    def embed(self, text: str, memory_action: Literal["add", "search", "update"] | None = None) -> list[float]:
        return self.embed_batch([text], memory_action or "add")[0]

    def embed_batch(self, texts: list[str], memory_action: str = "add") -> list[list[float]]:
        """All vectors, or an :class:`EmbeddingError` before any is returned (callers write nothing then)."""
        if not texts:
            return []
        fitted = [self.fit(text) for text in texts]
        return self.batcher.submit(
            [text for text, _ in fitted], "text", urgent=memory_action == "search", costs=[c for _, c in fitted]
        )

    def _run(self, texts: list[str], kind: str) -> list[list[float]]:
        """One shared batch: requests of at most ``batch_size`` inputs until every text has a vector."""
        vectors: list[list[float]] = []
        while len(vectors) < len(texts):
            start = len(vectors)
            vectors.extend(self._request(texts[start : start + self.batch_size]))
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
            with self._count_lock:
                self.requests += 1
            try:
                # The raw body, not the SDK's models: building one pydantic object per float took ~10 ms
                # of CPU a request, which concurrent searches paid one after another (the GIL).
                body = self._client.embeddings.with_raw_response.create(**kwargs).http_response.json()
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
                    self.batcher.max_items = self.batch_size
                    logger.warning(
                        "%s accepts at most %d texts per request; lower EMBEDDER_BATCH_SIZE", where, self.batch_size
                    )
                    batch = batch[: self.batch_size]
                    continue
                if _TOO_LONG.search(detail) and "length" not in adapted and self.max_tokens > 16:
                    adapted.add("length")
                    self.max_tokens //= 2
                    logger.warning(
                        "%s refused an input as too long; cutting inputs to %d tokens (EMBEDDER_MAX_TOKENS)",
                        where,
                        self.max_tokens,
                    )
                    batch = [cut_to_tokens(text, self.max_tokens)[0] for text in batch]
                    continue
                if self._send_dimensions and ("dimension" in detail or "matryoshka" in detail) and "dim" not in adapted:
                    adapted.add("dim")
                    self._send_dimensions = False
                    logger.warning("%s refused the dimensions parameter; no longer sending it", where)
                    continue
                error = self._explain(exc, where)
                error.input_rejected = True
                raise error from None
            except openai.OpenAIError as exc:
                raise self._explain(exc, where) from None
            except ValueError as exc:  # a body that is not JSON (a gateway's error page)
                raise EmbeddingError(
                    f"{where} answered something that is not JSON ({exc}); check OPENAI_BASE_URL / EMBEDDER_BASE_URL"
                ) from None
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list) or not all(isinstance(item, dict) for item in data):
            raise EmbeddingError(f"{where} answered without a list of embeddings in 'data'")
        data = sorted(data, key=lambda item: int(item.get("index", 0)))
        if len(data) != len(batch):
            raise EmbeddingError(f"{where} returned {len(data)} vectors for {len(batch)} texts")
        return [validate_vector(_floats(item.get("embedding"), where), self.dimension, where) for item in data]

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
