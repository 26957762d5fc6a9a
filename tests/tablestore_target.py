"""The Tablestore a test talks to: the strict emulator (always), or a real instance (live mode, when configured).

Live mode runs the same end-to-end tests against a real Tablestore instance. Set all four variables:

    TABLESTORE_LIVE_ENDPOINT           https://<instance>.<region>.ots.aliyuncs.com
    TABLESTORE_LIVE_INSTANCE           the instance name
    TABLESTORE_LIVE_ACCESS_KEY_ID      an AccessKey allowed to create and delete tables on it
    TABLESTORE_LIVE_ACCESS_KEY_SECRET

Every test gets its own table prefix (``t<10 hex>_``); the server's tables (memories, history, access log) are all
named after TABLESTORE_TABLE_NAME, so they carry it, and every table with the prefix is dropped afterwards (its
search indexes first). Tables without the prefix are never touched. Without the variables, the live runs are skipped
with a reason naming what is missing; the emulator runs are not affected.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
from tablestore import OTSClient

from tests.tablestore_emulator import TablestoreEmulator

LIVE_VARIABLES = (
    "TABLESTORE_LIVE_ENDPOINT",
    "TABLESTORE_LIVE_INSTANCE",
    "TABLESTORE_LIVE_ACCESS_KEY_ID",
    "TABLESTORE_LIVE_ACCESS_KEY_SECRET",
)
#: Parameters of ``tablestore_target``: each Tablestore test using it runs once per kind.
KINDS = ("emulator", "live")


def live_skip_reason(environ: Mapping[str, str] = os.environ) -> str | None:
    """Why live mode cannot run (None when it can): the variables that are missing."""
    missing = [name for name in LIVE_VARIABLES if not environ.get(name, "").strip()]
    if not missing:
        return None
    return (
        "live Tablestore tests need a real instance: set "
        + ", ".join(LIVE_VARIABLES)
        + f" (missing: {', '.join(missing)}); see README, Tests"
    )


def unique_prefix() -> str:
    """A table-name prefix no other run uses: a letter first, as table names require."""
    return f"t{uuid.uuid4().hex[:10]}_"


@dataclass
class TablestoreTarget:
    """Endpoint, instance and keys of the Tablestore under test, plus the prefix its tables must carry."""

    endpoint: str
    instance_name: str
    access_key_id: str
    access_key_secret: str
    prefix: str
    emulator: TablestoreEmulator | None = None  # None in live mode: tests must not reach for emulator internals

    @property
    def live(self) -> bool:
        return self.emulator is None

    @classmethod
    def on_emulator(cls, emulator: TablestoreEmulator, prefix: str | None = None) -> TablestoreTarget:
        return cls(
            emulator.endpoint,
            emulator.instance_name,
            emulator.access_key_id,
            emulator.access_key_secret,
            prefix or unique_prefix(),
            emulator,
        )

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ, prefix: str | None = None) -> TablestoreTarget:
        endpoint, instance, key_id, secret = (environ[name].strip() for name in LIVE_VARIABLES)
        return cls(endpoint, instance, key_id, secret, prefix or unique_prefix())

    def table(self, name: str) -> str:
        return self.prefix + name

    def env(self, table: str = "mem", **extra: Any) -> dict[str, str]:
        """Server settings for this Tablestore; the memories table (and so every table the server makes) prefixed."""
        return {
            "TABLESTORE_ENDPOINT": self.endpoint,
            "TABLESTORE_INSTANCE_NAME": self.instance_name,
            "TABLESTORE_ACCESS_KEY_ID": self.access_key_id,
            "TABLESTORE_ACCESS_KEY_SECRET": self.access_key_secret,
            "TABLESTORE_TABLE_NAME": self.table(table),
            **{k: str(v) for k, v in extra.items()},
        }

    def client(self) -> OTSClient:
        return OTSClient(self.endpoint, self.access_key_id, self.access_key_secret, self.instance_name)

    def tables(self) -> list[str]:
        """This target's tables (those with the prefix)."""
        return sorted(name for name in self.client().list_table() if name.startswith(self.prefix))

    def drop_tables(self) -> list[str]:
        """Drop every table with the prefix, search indexes first (a table with an index cannot be dropped)."""
        client = self.client()
        dropped = []
        for name in self.tables():
            for table, index in client.list_search_index(name):
                client.delete_search_index(table, index)
            client.delete_table(name)
            dropped.append(name)
        return dropped


@contextmanager
def open_target(kind: str, environ: Mapping[str, str] = os.environ) -> Iterator[TablestoreTarget]:
    """A target of ``kind``; its prefixed tables are dropped afterwards, even when the test fails."""
    if kind == "live":
        reason = live_skip_reason(environ)
        if reason is not None:
            pytest.skip(reason)
        target = TablestoreTarget.from_environment(environ)
        try:
            yield target
        finally:
            target.drop_tables()
        return
    emulator = TablestoreEmulator(access_key_id="test-akid", access_key_secret="test-secret", instance_name="test")
    emulator.start()
    try:
        target = TablestoreTarget.on_emulator(emulator)
        try:
            yield target
        finally:
            target.drop_tables()
            left = sorted(emulator.store.tables)
            assert not left, f"tables left behind by the cleanup: {left}"
    finally:
        emulator.stop()
    if emulator.last_internal_error is not None:
        raise AssertionError(f"tablestore emulator bug: {emulator.last_internal_error!r}")


@pytest.fixture(params=KINDS)
def tablestore_target(request: pytest.FixtureRequest) -> Iterator[TablestoreTarget]:
    """The strict emulator, and a real instance when TABLESTORE_LIVE_* are set (skipped otherwise)."""
    with open_target(request.param) as target:
        yield target
