"""Exact-duplicate detection on the table itself (strongly consistent), never on the lagging index.

A dedup row ``(user + DEDUP_SUFFIX, key) -> memory id`` is claimed with PutRow ``EXPECT_NOT_EXIST``: of two
writers racing for one key (threads or processes), exactly one gets it. The memory row also stores the key
it holds (``COL_DEDUP``). What a claim's memory row says decides what the claim is:

* *live*: the row exists and holds the key. The key is taken; that row is the answer.
* *orphan*: the row does not exist. Its writer is between its two writes, or died there. Nobody takes
  the key over: an insert of the same text writes the row under the claim's id (the same text in the same
  scope, so two writers doing that, or the original writer finishing late, store one memory), and an
  update leaves its row without the key.
* *stale*: the row exists without the key (deleted softly, key released, or text changed). It is taken
  over with an UpdateRow conditioned on the old target, which only one racer wins.

Why claim first, memory row second: a writer killed between its two writes then leaves a claim naming a
row that never came, which the client's retry (a new proposed id, the same key) completes instead of
storing a second copy; the old order (row first) left a row no claim named, and the retry claimed the key
afresh. It is safe because a missing row means "being written, or its writer died" on every path we
control: deleting memory rows (``delete_many``) releases their claims right after (deletes conditioned on
the target), a failed insert undoes its rows and then its claims, and an update of a missing row releases
the key it claimed. Only a process killed inside one of those leaves an orphan for the deleted id; the next
add of that text then stores it under that id: once, never twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, TypeVar

from tablestore import (
    ComparatorType,
    Condition,
    DeleteRowItem,
    OTSServiceError,
    PutRowItem,
    Row,
    RowExistenceExpectation,
    SingleColumnCondition,
)

from tablestore_openmemory_mcp.errors import StoreError

from .batch import WRITE_ROWS, Batches, PrimaryKey, RowRejected
from .retry import Retrier
from .rows import MAX_KEY_BYTES, attr_dict
from .schema import COL_DEDUP, COL_PAYLOAD, COL_TARGET, DEDUP_SUFFIX, PK_ID, PK_USER

logger = logging.getLogger(__name__)

T = TypeVar("T")

CONDITION_FAILED = "OTSConditionCheckFail"
#: Rounds of read-verify-takeover before giving up on a key that keeps changing hands.
MAX_ROUNDS = 8

LIVE, ORPHAN, STALE = "live", "orphan", "stale"


class Claims(NamedTuple):
    """The outcome of :meth:`DedupKeys.claim`."""

    #: Per key, the id that holds it: the caller's own, a live memory's, or an orphan claim's.
    holders: dict[str, str]
    #: Keys held by an orphan claim (its memory row is missing); an insert writes that row.
    orphans: frozenset[str]


def check_key(key: str) -> str:
    """A dedup key must be a non-empty string that fits a primary-key column."""
    if not isinstance(key, str) or not key or len(key.encode("utf-8")) > MAX_KEY_BYTES:
        raise ValueError(f"dedup key must be a non-empty string of at most {MAX_KEY_BYTES} bytes")
    return key


class DedupKeys:
    """Claims, lookups and takeovers of dedup rows in one table."""

    def __init__(self, client: Any, table: str, retry: Retrier, batches: Batches) -> None:
        self.client = client
        self.table = table
        self.retry = retry
        self.batches = batches

    def _call(self, api: str, fn: Callable[[], T]) -> T:
        return self.retry.call(api, fn)

    @staticmethod
    def key_pk(user: str, key: str) -> PrimaryKey:
        return [(PK_USER, user + DEDUP_SUFFIX), (PK_ID, key)]

    @staticmethod
    def memory_pk(user: str, memory_id: str) -> PrimaryKey:
        return [(PK_USER, user), (PK_ID, memory_id)]

    # ------------------------------------------------------------------ reads

    def targets(self, user: str, keys: Sequence[str]) -> dict[str, str]:
        """The memory id each existing dedup row names (live or stale); one BatchGetRow per 100 keys."""
        rows = self.batches.get(self.table, [self.key_pk(user, k) for k in keys], [COL_TARGET])
        out: dict[str, str] = {}
        for key, row in zip(keys, rows, strict=True):
            target = attr_dict(row[1]).get(COL_TARGET) if row is not None else None
            if isinstance(target, str) and target:
                out[key] = target
        return out

    def status(self, user: str, claims: dict[str, str]) -> dict[str, str]:
        """Per key: LIVE (its memory holds it), ORPHAN (its memory row is missing) or STALE (the row lacks it)."""
        keys = list(claims)
        # the payload column too: a row is returned only with at least one of the columns asked for
        rows = self.batches.get(self.table, [self.memory_pk(user, claims[k]) for k in keys], [COL_DEDUP, COL_PAYLOAD])
        out: dict[str, str] = {}
        for key, row in zip(keys, rows, strict=True):
            if row is None:
                out[key] = ORPHAN
            else:
                out[key] = LIVE if attr_dict(row[1]).get(COL_DEDUP) == key else STALE
        return out

    def lookup(self, user: str, key: str) -> str | None:
        """The id named by the dedup row for ``key`` (the caller verifies it), or None."""
        _, row, _ = self._call(
            "GetRow",
            lambda: self.client.get_row(self.table, self.key_pk(user, key), columns_to_get=[COL_TARGET], max_version=1),
        )
        if row is None or not row.primary_key:
            return None
        target = attr_dict(row.attribute_columns).get(COL_TARGET)
        return target if isinstance(target, str) and target else None

    # ------------------------------------------------------------------ claims

    def claim(self, user: str, wanted: dict[str, str]) -> Claims:
        """Claim ``key -> memory id`` for each entry; return, per key, the id that holds it afterwards.

        That is the caller's own id when it got the key (or took over a stale claim), the id of the live
        memory that already holds it, or the id an orphan claim names (listed in ``orphans``: its row is
        still to be written). Raises :class:`StoreError` when a key keeps changing hands.
        """
        holders: dict[str, str] = {}
        orphans: set[str] = set()
        conflicts = sorted(self._put_new(user, wanted))
        for key, own in wanted.items():
            if key not in conflicts:
                holders[key] = own
        rounds = 0
        while conflicts:
            rounds += 1
            if rounds > MAX_ROUNDS:
                raise StoreError(f"dedup key kept changing hands after {MAX_ROUNDS} rounds; try again")
            targets = self.targets(user, conflicts)
            vanished = [k for k in conflicts if k not in targets]  # released meanwhile: claim afresh
            again = self._put_new(user, {k: wanted[k] for k in vanished}) if vanished else set()
            for k in vanished:
                if k not in again:
                    holders[k] = wanted[k]
            pending = {k: t for k, t in targets.items() if t != wanted[k]}
            for k, t in targets.items():
                if t == wanted[k]:  # ours already (a retried claim that landed the first time)
                    holders[k] = t
            status = self.status(user, pending) if pending else {}
            for k, target in pending.items():
                if status[k] != STALE:  # live, or an orphan whose row the caller writes: never a second id
                    holders[k] = target
                    if status[k] == ORPHAN:
                        orphans.add(k)
                elif self._take_over(user, k, target, wanted[k]):
                    holders[k] = wanted[k]
                else:
                    again.add(k)
            conflicts = sorted(again)
        return Claims(holders, frozenset(orphans))

    def release(self, user: str, claims: dict[str, str]) -> None:
        """Delete the dedup rows of ``key -> memory id`` that still name that id (undo, deletes)."""
        if not claims:
            return
        items = [
            DeleteRowItem(
                Row(self.key_pk(user, key)),
                Condition(
                    RowExistenceExpectation.EXPECT_EXIST,
                    SingleColumnCondition(COL_TARGET, target, ComparatorType.EQUAL, pass_if_missing=False),
                ),
            )
            for key, target in claims.items()
        ]
        for start in range(0, len(items), WRITE_ROWS):
            rejected, pending = self.batches.write(self.table, items[start : start + WRITE_ROWS], [])
            for _, code, message in rejected:
                if code != CONDITION_FAILED:  # gone already, or another id holds it now: nothing to release
                    raise RowRejected("BatchWriteRow", code, message)
            if pending:
                raise StoreError(f"Tablestore stayed busy releasing {len(pending)} dedup claim(s)")

    def _put_new(self, user: str, wanted: dict[str, str]) -> set[str]:
        """PutRow EXPECT_NOT_EXIST for each key; return the keys whose row already existed."""
        if not wanted:
            return set()
        condition = Condition(RowExistenceExpectation.EXPECT_NOT_EXIST)
        if len(wanted) == 1:
            key, own = next(iter(wanted.items()))
            row = Row(self.key_pk(user, key), [(COL_TARGET, own)])
            try:
                self._call("PutRow", lambda: self.client.put_row(self.table, row, condition))
            except OTSServiceError as exc:
                if exc.code == CONDITION_FAILED:
                    return {key}
                raise
            return set()
        existed: set[str] = set()
        keys = list(wanted)
        for start in range(0, len(keys), WRITE_ROWS):
            chunk = keys[start : start + WRITE_ROWS]
            items = [PutRowItem(Row(self.key_pk(user, k), [(COL_TARGET, wanted[k])]), condition) for k in chunk]
            by_item = {id(item): k for item, k in zip(items, chunk, strict=True)}
            rejected, pending = self.batches.write(self.table, items, [])
            for item, code, message in rejected:
                if code != CONDITION_FAILED:
                    raise RowRejected("BatchWriteRow", code, message)
                existed.add(by_item[id(item)])
            if pending:
                raise StoreError(f"Tablestore stayed busy for {len(pending)} dedup claim(s) on {self.retry.endpoint}")
        return existed

    def _take_over(self, user: str, key: str, stale: str, own: str) -> bool:
        """Point ``key`` at ``own`` if it still names ``stale``; False when another writer got there first."""
        condition = Condition(
            RowExistenceExpectation.EXPECT_EXIST,
            SingleColumnCondition(COL_TARGET, stale, ComparatorType.EQUAL, pass_if_missing=False),
        )
        row = Row(self.key_pk(user, key), {"PUT": [(COL_TARGET, own)]})
        try:
            self._call("UpdateRow", lambda: self.client.update_row(self.table, row, condition))
        except OTSServiceError as exc:
            if exc.code == CONDITION_FAILED:
                return False
            raise
        logger.debug("took over stale dedup key of %s for %s", stale, own)
        return True
