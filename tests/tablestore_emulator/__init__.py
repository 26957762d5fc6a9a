"""Local Tablestore wire-protocol emulator for tests (see server.TablestoreEmulator)."""

from .server import TablestoreEmulator

__all__ = ["TablestoreEmulator"]
