"""The embedded store's door for whole-file maintenance (``reembed``): what such a job may use, and nothing else.

Why a door: a job that rewrites every user's vectors works on the SQLite file directly (one pass, its own
transactions), so it needs the file name, the collection's table names, the collections table and the
vector check the store itself uses. Importing them from here keeps the store's other modules private; a
change of the file layout shows up in this one module. Row payloads are read with :mod:`..row_format`.
"""

from __future__ import annotations

from .rows import unit_vectors
from .schema import META, Names
from .store import DB_FILENAME

__all__ = ["DB_FILENAME", "META", "Names", "unit_vectors"]
