"""Export and import memories: OpenMemory's backup zip (version 1) and JSON Lines, between any stores.

``records`` maps memories to backup records and back, ``fileformat`` reads and writes the files,
``exporter`` and ``importer`` run against a repository (CLI and REST both call them).
"""
