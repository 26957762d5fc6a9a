"""Pytest fixture: a fresh Tablestore emulator per test on an ephemeral 127.0.0.1 port, with an index delay."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.tablestore_emulator import TablestoreEmulator

#: Seconds before a write is visible to Search (the service syncs within ~3 s; 1 s keeps tests short).
INDEX_DELAY = 1.0


@pytest.fixture
def tablestore_emulator() -> Iterator[TablestoreEmulator]:
    emu = TablestoreEmulator(access_key_id="test-akid", access_key_secret="test-secret", instance_name="test-instance")
    emu.index_delay = INDEX_DELAY  # like the service: Search sees writes late; tests that need it flush
    emu.start()
    try:
        yield emu
    finally:
        emu.stop()
    if emu.last_internal_error is not None:  # an emulator bug answered as OTSInternalServerError
        raise AssertionError(f"tablestore emulator bug: {emu.last_internal_error!r}")
