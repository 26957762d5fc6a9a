"""Startup on a new Tablestore instance creates every table and the index first, then waits for them at once.

Before: the server's store open waited for the memory table, then created the index and waited for it, then created
the history table and waited, then the access-log table and waited: four not-ready windows one after another (on
the service each can take up to a minute). Now the history tables are created with the memory table and the index
right after it, so by the time the memory table and its index are usable the others are too: their first read is
answered at once (one GetRow each, no OTSTableNotReady to wait out).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from tablestore_openmemory_mcp.settings import Settings
from tests.tablestore_emulator import TablestoreEmulator


@pytest.fixture
def emulator() -> Iterator[TablestoreEmulator]:
    em = TablestoreEmulator(table_ready_seconds=1.5, index_ready_seconds=1.5).start()
    try:
        yield em
    finally:
        em.stop()
    assert not em.rules.relaxed
    if em.last_internal_error is not None:
        raise AssertionError(f"tablestore emulator bug: {em.last_internal_error!r}")


def test_the_servers_tables_are_created_first_and_waited_for_once(
    emulator: TablestoreEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tablestore_openmemory_mcp.app.bootstrap import _tablestore

    table = f"r{uuid.uuid4().hex[:10]}"
    for name, value in {
        "TABLESTORE_ENDPOINT": emulator.endpoint,
        "TABLESTORE_INSTANCE_NAME": emulator.instance_name,
        "TABLESTORE_ACCESS_KEY_ID": emulator.access_key_id,
        "TABLESTORE_ACCESS_KEY_SECRET": emulator.access_key_secret,
        "TABLESTORE_TABLE_NAME": table,
    }.items():
        monkeypatch.setenv(name, value)
    store, history, access, _ = _tablestore(Settings(), 8, "test-embedder")
    try:
        on_memories = emulator.calls_on(table)
        assert on_memories["CreateTable"] == 1 and on_memories["CreateSearchIndex"] == 1
        assert on_memories["GetRow"] >= 2  # the memory table was waited for (OTSTableNotReady, then the meta row)
        for log in (f"{table}_history", f"{table}_access"):
            calls = emulator.calls_on(log)
            assert calls.get("CreateTable") == 1, calls
            assert calls.get("GetRow") == 1, calls  # ready by then: created before the wait, not after it
        emulator.reset_counts()  # a second start finds everything: no create, no wait
        again = _tablestore(Settings(), 8, "test-embedder")
        for opened in again[:3]:
            opened.close()
        assert "CreateTable" not in emulator.counts and "CreateSearchIndex" not in emulator.counts
        assert emulator.calls_on(table)["GetRow"] == 1
    finally:
        for opened in (store, history, access):
            opened.close()
