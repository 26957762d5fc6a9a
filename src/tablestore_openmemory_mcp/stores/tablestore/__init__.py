"""Tablestore store: the typed store port on the ``tablestore`` SDK (layout in ``store``)."""

from .retry import TablestoreUnavailableError
from .store import TablestoreStore

__all__ = ["TablestoreStore", "TablestoreUnavailableError"]
