"""Removing stale dedup rows: claims that name a memory which exists but no longer holds the key.

Why: a memory that is paused, archived, soft-deleted or edited gives up its key (``dedup``: *stale*), and
its dedup row stayed forever (one row per such change, never read again unless the same text came back).
They are removed where they are found (``holder`` before an add) and by :func:`sweep`, which
reads one user's dedup partition (the maintenance path: ``TablestoreStore.sweep_dedup``).

Safety: a claim is also "stale-looking" for the moment between an update's claim and its UpdateRow (the
row does not hold the key yet). So a claim is removed only when its own cell timestamp (set by Tablestore
when the claim was written or taken over) is older than :data:`GRACE_SECONDS`, far beyond any write's retry
budget, and the delete is conditioned on the claim still naming the same memory. Orphan claims (their
memory row missing) are never removed here: the next add of that text completes them (see ``dedup``).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from tablestore import (
    INF_MAX,
    INF_MIN,
    ComparatorType,
    Condition,
    DeleteRowItem,
    Row,
    RowExistenceExpectation,
    SingleColumnCondition,
)

from .batch import WRITE_ROWS, RowRejected
from .dedup import CONDITION_FAILED, DedupKeys
from .rows import attr_dict
from .schema import COL_DEDUP, COL_PAYLOAD, COL_TARGET, DEDUP_SUFFIX, PK_ID, PK_USER

if TYPE_CHECKING:
    from .store import TablestoreStore

logger = logging.getLogger(__name__)

#: A claim younger than this is never removed (an update may be between its claim and its row write).
GRACE_SECONDS = 600.0


def _claim_time_ms(columns: Sequence[Any] | None) -> int | None:
    """The cell timestamp (ms) of the claim's target column, when the SDK returned one."""
    for cell in columns or []:
        if cell[0] == COL_TARGET and len(cell) > 2 and isinstance(cell[2], int):
            return int(cell[2])
    return None


def _old_enough(written_ms: int | None, now: float | None = None) -> bool:
    if written_ms is None:
        return False
    return (now if now is not None else time.time()) * 1000 - written_ms >= GRACE_SECONDS * 1000


def _stale(store: TablestoreStore, user: str, claims: dict[str, str]) -> list[str]:
    """The keys of ``claims`` (key -> target) whose target row exists without holding the key."""
    keys = list(claims)
    pks = [DedupKeys.memory_pk(user, claims[k]) for k in keys]
    rows = store._batches.get(store.collection_name, pks, [COL_DEDUP, COL_PAYLOAD])
    return [k for k, row in zip(keys, rows, strict=True) if row is not None and attr_dict(row[1]).get(COL_DEDUP) != k]


def _remove(store: TablestoreStore, user: str, claims: dict[str, str]) -> int:
    """Delete these claims where they still name the same target; returns how many were deleted."""
    removed = 0
    items = [
        DeleteRowItem(
            Row(DedupKeys.key_pk(user, key)),
            Condition(
                RowExistenceExpectation.EXPECT_EXIST,
                SingleColumnCondition(COL_TARGET, target, ComparatorType.EQUAL, pass_if_missing=False),
            ),
        )
        for key, target in claims.items()
    ]
    for start in range(0, len(items), WRITE_ROWS):
        chunk = items[start : start + WRITE_ROWS]
        rejected, pending = store._batches.write(store.collection_name, chunk, [])
        for _, code, message in rejected:
            if code != CONDITION_FAILED:  # taken over or released meanwhile: not ours to delete
                raise RowRejected("BatchWriteRow", code, message)
        if pending:
            logger.warning(
                "%d stale dedup row(s) stayed: Tablestore was busy; the next sweep removes them", len(pending)
            )
        removed += len(chunk) - len(rejected) - len(pending)
    return removed


def drop_if_stale(store: TablestoreStore, user: str, key: str, target: str) -> bool:
    """After a lookup found ``key`` naming ``target``, which exists without the key: remove the claim when
    it is old enough (one GetRow for its timestamp + one conditional delete). True when it was removed."""
    _, row, _ = store._call(
        "GetRow",
        lambda: store.client.get_row(
            store.collection_name, DedupKeys.key_pk(user, key), columns_to_get=[COL_TARGET], max_version=1
        ),
    )
    if row is None or attr_dict(row.attribute_columns).get(COL_TARGET) != target:
        return False
    if not _old_enough(_claim_time_ms(row.attribute_columns)):
        return False
    return _remove(store, user, {key: target}) == 1


def sweep(store: TablestoreStore, user: str, page: int = 1000) -> int:
    """Remove every stale claim of ``user`` older than the grace period; returns how many.

    Cost: the user's dedup partition in GetRange pages, and one BatchGetRow per 100 claims."""
    start: Any = [(PK_USER, user + DEDUP_SUFFIX), (PK_ID, INF_MIN)]
    end = [(PK_USER, user + DEDUP_SUFFIX), (PK_ID, INF_MAX)]
    now = time.time()
    removed = 0
    while start:
        call = functools.partial(
            store.client.get_range, store.collection_name, "FORWARD", start, end, [COL_TARGET], page, max_version=1
        )
        _, start, rows, _ = store._call("GetRange", call)
        old: dict[str, str] = {}
        for row in rows or []:
            key = attr_dict(row.primary_key).get(PK_ID)
            target = attr_dict(row.attribute_columns).get(COL_TARGET)
            if (
                isinstance(key, str)
                and isinstance(target, str)
                and _old_enough(_claim_time_ms(row.attribute_columns), now)
            ):
                old[key] = target
        stale = _stale(store, user, old) if old else []
        if stale:
            removed += _remove(store, user, {k: old[k] for k in stale})
    if removed:
        logger.info("removed %d stale dedup row(s) of one user", removed)
    return removed
