"""The embedded default store: every scope's memories in one SQLite file, used when no Tablestore is set.

:mod:`.store` implements the typed store port (:class:`~...memory.store_port.StorePort`); :mod:`.narrowing`
turns a scope, its states and a query into SQL; :mod:`.schema` creates and migrates the tables, :mod:`.vectors`
is the in-process vector cache, :mod:`.keywords` the per-scope BM25 statistics and :mod:`.pool` the
connection pool.
"""

from .store import DB_FILENAME, EmbeddedStore, validate_collection_name

__all__ = ["DB_FILENAME", "EmbeddedStore", "validate_collection_name"]
