"""Following a ``reembed`` switch while running: the meta row is re-read now and then, cheaply.

Why: ``reembed`` moves a table to a new embedder, vector column and index, and records that in the table's
meta row (``embedding_meta``). A server that read the row at startup kept searching the old index and
writing old vectors to the old column, so every server had to be restarted after a switch.

How: before an operation that uses vectors (insert, update, search), at most once per ``interval`` seconds
(one GetRow), the meta row is read again. When it names another column or index:

* the store's ``on_switch`` hook (installed by the server, see ``bootstrap``) is asked to adopt the new
  embedder; if it can (it builds the same embedder from the server's settings) the store follows at once:
  new index, column, dimension and embedder name;
* when it cannot (no hook, or an embedder this server cannot build), vector operations fail with one line
  saying what to set and to restart; everything else (lists, gets, state changes, deletes) keeps working.
  Nothing is written with a vector of the wrong embedder.

Vectors computed just before the switch are fenced: the hook's ``fresh`` check tells whether the calling
thread's last embedding came from the current embedder; a write or search holding an older one fails (the
client retries, and the retry embeds with the new embedder) instead of landing in the new index.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from tablestore_openmemory_mcp.errors import StoreError

from .embedding_meta import EmbeddingMeta, read_meta
from .schema import validate_dimension, validate_name

if TYPE_CHECKING:
    from .store import TablestoreStore

logger = logging.getLogger(__name__)

#: Seconds between two reads of the meta row (per process): 1 GetRow per 10 s while vectors are used.
INTERVAL = 10.0

#: Adopt a switch: given the new meta, return True once the server's embedder is the one it names.
OnSwitch = Callable[[EmbeddingMeta], bool]


class SwitchedAway(StoreError):
    """The table was re-embedded with an embedder this server cannot use; restart with the new settings."""


class SwitchWatch:
    """The meta-row watch of one :class:`TablestoreStore` (see the module docstring)."""

    def __init__(self, store: TablestoreStore, interval: float = INTERVAL) -> None:
        self.store = store
        self.interval = interval
        self.on_switch: OnSwitch | None = None
        #: True when the calling thread's last embedding came from the current embedder (set with on_switch).
        self.fresh: Callable[[], bool] | None = None
        self._lock = threading.Lock()
        self._checked = time.monotonic()
        self._away: str | None = None  # the one-line error while this server cannot follow

    def check(self) -> None:
        """Before a vector operation: re-read the meta row when due; raise while switched away or fenced."""
        if time.monotonic() - self._checked >= self.interval:
            with self._lock:
                if time.monotonic() - self._checked >= self.interval:
                    self._refresh()
        if self._away is not None:
            raise SwitchedAway(self._away)
        if self.fresh is not None and not self.fresh():
            raise StoreError(
                "the memory table switched embedders (reembed) while this request was embedding; try again"
            )

    def _refresh(self) -> None:
        store = self.store
        meta = store._call("GetRow", lambda: read_meta(store.client, store.collection_name))
        self._checked = time.monotonic()
        if meta is None or not meta.index_name:
            return
        if (meta.index_name, meta.vector_column) == (store.index_name, store.vector_column):
            return
        logger.warning(
            "Tablestore table %s was re-embedded with %s: index %s, column %s",
            store.collection_name,
            meta.embedder,
            meta.index_name,
            meta.vector_column,
        )
        wanted = (meta.embedder, meta.dimension)
        own = store.embedder_name is None or meta.embedder is None  # as at startup (``_follow``): nothing to check
        own = own or wanted == (store.embedder_name, store.embedding_model_dims)
        adopted = own
        if not own and self.on_switch is not None:
            try:
                adopted = self.on_switch(meta)
            except Exception:
                logger.exception("could not switch to the embedder %s", meta.embedder)
                adopted = False
        if not adopted:
            self._away = (
                f"Tablestore table {store.collection_name} was re-embedded with {meta.embedder} "
                f"({meta.dimension} dimensions) and this server cannot use that embedder; set EMBEDDER_MODEL / "
                "TABLESTORE_VECTOR_DIMENSION (or EMBEDDER_OFFLINE) to it and restart"
            )
            return
        store.index_name = validate_name("index", meta.index_name)
        store.vector_column = validate_name("column", meta.vector_column)
        if meta.dimension is not None:
            store.embedding_model_dims = validate_dimension(int(meta.dimension))
        if meta.embedder is not None:
            store.embedder_name = meta.embedder
        store._recent.clear()  # vectors of the old embedder
        store._stash.clear()
        self._away = None
        logger.warning("now searching %s and writing %s", store.index_name, store.vector_column)
