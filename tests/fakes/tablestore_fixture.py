"""Pytest fixture: a fresh Tablestore emulator per test on an ephemeral 127.0.0.1 port."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.tablestore_emulator import TablestoreEmulator


@pytest.fixture
def tablestore_emulator() -> Iterator[TablestoreEmulator]:
    emu = TablestoreEmulator(access_key_id="test-akid", access_key_secret="test-secret", instance_name="test-instance")
    emu.start()
    try:
        yield emu
    finally:
        emu.stop()
    if emu.last_internal_error is not None:  # an emulator bug answered as OTSInternalServerError
        raise AssertionError(f"tablestore emulator bug: {emu.last_internal_error!r}")
