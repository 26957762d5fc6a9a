"""Changing the embedding model of an existing store: ``tablestore-openmemory-mcp reembed``.

Vectors of two embedders are not comparable, so a store made with one embedder refuses another at
startup (:mod:`..embedders.guard`, the Tablestore index check). ``reembed`` rebuilds every memory's
vector with the embedder now configured, beside the old vectors, and then switches in one step, so a
server still running on the old embedder keeps searching the old vectors until the switch:

* :mod:`.embedded`: new vectors go to a side table of the SQLite file; the switch copies them over
  in one transaction and records the new embedder in ``embedder.json``.
* :mod:`.tablestore`: new vectors go to a new column with a new search index; once that index has
  synced, a meta row names the new index and column (the server reads it at startup).

Both are resumable (what is written stays written) and idempotent (a finished run has nothing to do).
"""

from tablestore_openmemory_mcp.reembed.summary import ReembedSummary

__all__ = ["ReembedSummary"]
