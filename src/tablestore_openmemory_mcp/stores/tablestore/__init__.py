"""Tablestore store: mem0's vector store on the ``tablestore`` SDK (layout in ``store``)."""

from ..base import RowUpdate
from .retry import TablestoreUnavailableError
from .store import TablestoreStore

__all__ = ["RowUpdate", "TablestoreStore", "TablestoreUnavailableError"]
