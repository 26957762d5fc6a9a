"""An embedder that can be replaced while the server runs: how a Tablestore server follows ``reembed``.

Why: after ``reembed`` switches a table to another embedder, a running server must embed with that one
(``stores.tablestore.switch_watch``). The flow, the owner's view and import hold this object; a switch
swaps what is inside. Each embedding is tagged with the generation it was made in (per thread), so the
store can refuse a vector embedded just before the switch (:meth:`fresh`) instead of writing it to the
new index.
"""

from __future__ import annotations

import threading
from typing import Any


class SwitchableEmbedder:
    """Delegates ``embed``/``embed_batch`` to the current embedder; :meth:`swap` replaces it."""

    def __init__(self, embedder: Any) -> None:
        self._current = embedder
        self._generation = 0
        self._lock = threading.Lock()
        self._local = threading.local()

    @property
    def current(self) -> Any:
        return self._current

    @property
    def name(self) -> str:
        return str(getattr(self._current, "name", type(self._current).__name__))

    @property
    def dimension(self) -> int | None:
        dimension = getattr(self._current, "dimension", None)
        return int(dimension) if dimension is not None else None

    def swap(self, embedder: Any) -> None:
        """Use ``embedder`` from now on; vectors from the one before are no longer :meth:`fresh`."""
        with self._lock:
            self._current = embedder
            self._generation += 1

    def fresh(self) -> bool:
        """False when this thread's last embedding came from an embedder swapped out since."""
        made = getattr(self._local, "generation", None)
        return made is None or made == self._generation

    def _take(self) -> tuple[Any, int]:
        with self._lock:
            return self._current, self._generation

    def embed(self, text: str, memory_action: Any = None) -> list[float]:
        embedder, generation = self._take()
        vector: list[float] = embedder.embed(text, memory_action)
        self._local.generation = generation
        return vector

    def embed_batch(self, texts: list[str], memory_action: str = "add") -> list[list[float]]:
        embedder, generation = self._take()
        vectors: list[list[float]] = embedder.embed_batch(texts, memory_action)
        self._local.generation = generation
        return vectors

    def __getattr__(self, name: str) -> Any:  # warm_up, max_tokens, batcher, ... of the current embedder
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._current, name)
