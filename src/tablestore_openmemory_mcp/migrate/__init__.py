"""Upgrade from the reference deployment (Alibaba's tablestore-openmemory-mcp 1.3.x): read, convert, copy.

``reference`` reads its table, ``runner`` copies rows into our repository (idempotent, resumable),
``marker`` records progress, ``upgrade`` decides the table name at startup and runs the copy in the
background. Nothing is imported here, so importing the package costs nothing.
"""
