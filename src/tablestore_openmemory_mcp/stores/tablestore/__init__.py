"""Tablestore store: mem0's vector store on the ``tablestore`` SDK (layout in ``store``)."""

from .retry import TablestoreUnavailableError
from .store import RowUpdate, TablestoreStore

__all__ = ["RowUpdate", "TablestoreStore", "TablestoreUnavailableError"]
