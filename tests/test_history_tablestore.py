"""TablestoreHistoryLog against the local Tablestore emulator, through the real ``tablestore`` SDK."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import urllib3.exceptions
from tablestore import CapacityUnit, ReservedThroughput, TableMeta, TableOptions

from tablestore_openmemory_mcp.errors import ScopeMissing, StoreError
from tablestore_openmemory_mcp.memory.ports import HistoryRecord
from tablestore_openmemory_mcp.stores.tablestore.client import make_client
from tablestore_openmemory_mcp.stores.tablestore.history import TablestoreHistoryLog, history_table_name
from tests.tablestore_emulator import TablestoreEmulator

AK, SK, INSTANCE = "test-ak", "test-secret", "testinst"
BIG = "记忆🧠" * (64 * 1024 // 11)  # ~64 KiB of UTF-8


@pytest.fixture(scope="module")
def emulator() -> Iterator[TablestoreEmulator]:
    em = TablestoreEmulator(access_key_id=AK, access_key_secret=SK, instance_name=INSTANCE).start()
    try:
        yield em
    finally:
        em.stop()


@pytest.fixture
def em(emulator: TablestoreEmulator) -> Iterator[TablestoreEmulator]:
    emulator.clear_faults()
    emulator.reset_counts()
    yield emulator
    emulator.clear_faults()
    if emulator.last_internal_error is not None:
        raise AssertionError(f"tablestore emulator bug: {emulator.last_internal_error!r}")


def connect(em: TablestoreEmulator, table: str | None = None) -> TablestoreHistoryLog:
    return TablestoreHistoryLog.connect(
        table or f"h_{uuid.uuid4().hex[:10]}",
        endpoint=em.endpoint,
        instance_name=INSTANCE,
        access_key_id=AK,
        access_key_secret=SK,
        max_retries=3,
    )


@pytest.fixture
def log(em: TablestoreEmulator) -> Iterator[TablestoreHistoryLog]:
    h = connect(em)
    em.reset_counts()
    try:
        yield h
    finally:
        h.close()


def rec(memory_id: str, event: str, new: str | None, n: int, **kw: Any) -> HistoryRecord:
    return HistoryRecord(
        memory_id=memory_id,
        event=event,
        old_memory=kw.pop("old", None),
        new_memory=new,
        at=f"2026-01-01T00:{n // 60 % 60:02d}:{n % 60:02d}.{n:06d}+00:00",
        **kw,
    )


def counts(em: TablestoreEmulator) -> dict[str, int]:
    return {k: v for k, v in em.counts.items() if v}


# ------------------------------------------------------------------ startup


def test_startup_creates_the_table_once_then_only_describes_it(em: TablestoreEmulator) -> None:
    # + 1 GetRow each time: is the table usable yet (a new table is not, for up to a minute: readiness)
    table = f"h_{uuid.uuid4().hex[:10]}"
    connect(em, table).close()
    created = counts(em)
    assert created.pop("GetRow") >= 1  # again while the new table is not ready
    assert created == {"DescribeTable": 1, "CreateTable": 1}
    em.reset_counts()
    connect(em, table).close()
    assert counts(em) == {"DescribeTable": 1, "GetRow": 1}


def test_replicas_starting_together_all_come_up_on_one_table(em: TablestoreEmulator) -> None:
    table = f"h_{uuid.uuid4().hex[:10]}"
    barrier = threading.Barrier(4)
    logs: list[TablestoreHistoryLog] = []
    errors: list[BaseException] = []

    def start() -> None:
        barrier.wait(timeout=30)
        try:
            logs.append(connect(em, table))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=90)
    assert not errors and len(logs) == 4
    logs[0].append("alice", [rec("m1", "ADD", "a", 1)])
    assert [r.new_memory for r in logs[3].for_memory("alice", "m1")] == ["a"]
    # the loser of a CreateTable race sees "already exists", which is success
    logs[1]._create_table()
    for h in logs:
        h.close()


def test_a_foreign_table_with_the_same_name_is_refused(em: TablestoreEmulator) -> None:
    table = f"h_{uuid.uuid4().hex[:10]}"
    probe = connect(em, table)
    probe.client.delete_table(table)
    probe.client.create_table(
        TableMeta(table, [("user_id", "STRING"), ("memory_id", "STRING")]),
        TableOptions(time_to_live=-1, max_version=1),
        ReservedThroughput(CapacityUnit(0, 0)),
    )
    probe.close()
    with pytest.raises(StoreError, match="primary key"):
        connect(em, table)


def test_it_can_share_another_client_and_leaves_it_open(em: TablestoreEmulator) -> None:
    """bootstrap passes the memories store's ``client``; the store, not the log, closes it."""
    client = make_client(endpoint=em.endpoint, instance_name=INSTANCE, access_key_id=AK, access_key_secret=SK)
    log = TablestoreHistoryLog(client, history_table_name("memories"), endpoint=em.endpoint)
    assert log.table_name == "memories_history"
    log.append("alice", [rec("m1", "ADD", "a", 1)])
    log.close()
    assert "memories_history" in client.list_table()  # still usable
    client.delete_table("memories_history")


# ------------------------------------------------------------------ behaviour


def test_round_trip_keeps_every_field_unicode_and_64k_texts(log: TablestoreHistoryLog) -> None:
    full = HistoryRecord(
        memory_id="m1",
        event="UPDATE",
        old_memory="likes tea 茶",
        new_memory=BIG,
        at="2026-01-01T08:00:00+08:00",
        client="cherrystudio",
        source="mcp",
        model="qwen-plus",
        reason="用户改变了偏好",
        old_state="active",
        new_state="archived",
    )
    log.append("alice", [full])
    assert log.for_memory("alice", "m1") == [full]


def test_events_are_listed_oldest_first_whatever_the_append_order(log: TablestoreHistoryLog) -> None:
    log.append("alice", [rec("m1", "DELETE", None, 30, old="b")])
    log.append("alice", [rec("m1", "ADD", "a", 10), rec("m1", "UPDATE", "b", 20, old="a")])
    same_instant = [rec("m1", "STATE", None, 40, new_state="paused"), rec("m1", "STATE", None, 40, new_state="active")]
    log.append("alice", same_instant)
    got = [(r.event, r.new_state) for r in log.for_memory("alice", "m1")]
    assert got == [("ADD", None), ("UPDATE", None), ("DELETE", None), ("STATE", "paused"), ("STATE", "active")]


def test_two_users_with_the_same_memory_id_never_see_or_erase_each_other(log: TablestoreHistoryLog) -> None:
    log.append("alice", [rec("m1", "ADD", "alice's", 1)])
    log.append("bob", [rec("m1", "ADD", "bob's", 2), rec("m1", "DELETE", None, 3, old="bob's")])
    assert [r.new_memory for r in log.for_memory("alice", "m1")] == ["alice's"]
    assert [r.event for r in log.for_memory("bob", "m1")] == ["ADD", "DELETE"]
    assert log.for_memory("carol", "m1") == []
    assert log.erase("carol", ["m1"]) == 0
    assert log.erase("bob", ["m1", "m1", "m9"]) == 2
    assert log.for_memory("bob", "m1") == []
    assert [r.new_memory for r in log.for_memory("alice", "m1")] == ["alice's"]
    with pytest.raises(ScopeMissing):
        log.for_memory("", "m1")


def test_every_replica_reads_the_same_history(em: TablestoreEmulator, log: TablestoreHistoryLog) -> None:
    other = connect(em, log.table_name)
    try:
        log.append("alice", [rec("m1", "ADD", "a", 1)])
        other.append("alice", [rec("m1", "DELETE", None, 2, old="a")])
        assert log.for_memory("alice", "m1") == other.for_memory("alice", "m1")
        assert [r.event for r in log.for_memory("alice", "m1")] == ["ADD", "DELETE"]
    finally:
        other.close()


# ------------------------------------------------------------------ RPC counts and limits


@pytest.mark.parametrize(("n", "batches"), [(0, 0), (1, 1), (200, 1), (450, 3)])
def test_append_is_one_batch_write_per_200_records_and_a_read_is_one_get_range(
    em: TablestoreEmulator, log: TablestoreHistoryLog, n: int, batches: int
) -> None:
    log.append("alice", [rec("m1", "ADD", f"fact {i}", i) for i in range(n)])
    assert counts(em) == ({"BatchWriteRow": batches} if batches else {})
    em.reset_counts()
    got = log.for_memory("alice", "m1")
    assert counts(em) == {"GetRange": 1}
    assert [r.new_memory for r in got] == [f"fact {i}" for i in range(n)]


def test_big_texts_are_split_under_4_mb_and_read_back_across_pages(
    em: TablestoreEmulator, log: TablestoreHistoryLog
) -> None:
    n = 40  # 40 x 128 KiB of text: above one 4 MB request and one 4 MB GetRange page
    log.append("alice", [rec("m1", "UPDATE", BIG + str(i), i, old=BIG) for i in range(n)])
    assert counts(em)["BatchWriteRow"] >= 2
    em.reset_counts()
    got = log.for_memory("alice", "m1")
    assert counts(em)["GetRange"] >= 2
    assert [r.new_memory for r in got] == [BIG + str(i) for i in range(n)]
    em.reset_counts()
    assert log.erase("alice", ["m1"]) == n
    assert counts(em)["BatchWriteRow"] == 1
    assert log.for_memory("alice", "m1") == []


def test_erase_is_key_reads_plus_batched_deletes(em: TablestoreEmulator, log: TablestoreHistoryLog) -> None:
    log.append("alice", [rec(f"m{i % 3}", "ADD", str(i), i) for i in range(300)])
    em.reset_counts()
    assert log.erase("alice", ["m0", "m1"]) == 200
    assert counts(em) == {"GetRange": 2, "BatchWriteRow": 2}
    assert len(log.for_memory("alice", "m2")) == 100


# ------------------------------------------------------------------ faults and retries


def test_a_retried_append_whose_first_write_landed_adds_no_duplicates(
    em: TablestoreEmulator, log: TablestoreHistoryLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = log.client.batch_write_row
    calls = {"n": 0}

    def lands_then_times_out(request: Any) -> Any:
        calls["n"] += 1
        response = real(request)
        if calls["n"] == 1:
            raise urllib3.exceptions.ReadTimeoutError(None, "/BatchWriteRow", "read timed out")  # type: ignore[arg-type]
        return response

    monkeypatch.setattr(log.client, "batch_write_row", lands_then_times_out)
    log.append("alice", [rec("m1", "ADD", "a", 1), rec("m1", "UPDATE", "b", 2, old="a")])
    assert calls["n"] == 2 and em.counts["BatchWriteRow"] == 2
    assert [r.event for r in log.for_memory("alice", "m1")] == ["ADD", "UPDATE"]
    # and the caller retrying the whole call is just as harmless
    monkeypatch.undo()
    log.append("alice", [rec("m1", "ADD", "a", 1), rec("m1", "UPDATE", "b", 2, old="a")])
    assert len(log.for_memory("alice", "m1")) == 2


@pytest.mark.parametrize(("api", "fault"), [("BatchWriteRow", "OTSServerBusy"), ("GetRange", "OTSTimeout")])
def test_transient_errors_are_retried(em: TablestoreEmulator, log: TablestoreHistoryLog, api: str, fault: str) -> None:
    em.inject(api, fault, times=1)
    log.append("alice", [rec("m1", "ADD", "a", 1)])
    assert [r.new_memory for r in log.for_memory("alice", "m1")] == ["a"]
    assert em.counts[api] == 2


def test_persistent_failures_raise_store_errors(em: TablestoreEmulator, log: TablestoreHistoryLog) -> None:
    em.inject("BatchWriteRow", "OTSServerBusy", times=10)
    with pytest.raises(StoreError, match="busy"):
        log.append("alice", [rec("m1", "ADD", "a", 1)])
    em.clear_faults()
    log.client.delete_table(log.table_name)
    with pytest.raises(StoreError, match="does not exist"):
        log.for_memory("alice", "m1")


def test_missing_settings_are_named() -> None:
    with pytest.raises(ValueError, match="instance_name, access_key_secret"):
        make_client(endpoint="http://127.0.0.1:1", instance_name="", access_key_id="ak", access_key_secret="")


def test_wrong_credentials_say_so(em: TablestoreEmulator) -> None:
    with pytest.raises(PermissionError, match="credentials"):
        TablestoreHistoryLog.connect(
            "h_auth", endpoint=em.endpoint, instance_name=INSTANCE, access_key_id="nobody", access_key_secret=SK
        )
