"""The Tablestore store's writes: dedup claims, conditional updates and exact deletes, batched.

Why its own module: the write path is the store's hardest part (claims before rows, undo on failure, a
lost answer settled by re-reading), and it is the same whichever way a caller names the rows. Every write
stays in the caller's primary-key range (``Who.user``) and checks the client as a row condition, so a row
outside the scope behaves like a missing one.

RPCs (nothing failing):

* insert = the dedup claims first (``dedup``): one conditional PutRow/BatchWriteRow, then PutRow (1 row) or
  BatchWriteRow (<= 200 rows a call) for the rows; a duplicate costs 2 BatchGetRow and writes no row; a
  claim whose writer died before its row (orphan) costs the same and gets that row written.
* update = UpdateRow with a row condition (exists, in scope, ``updated_at`` unchanged), +1 PutRow when it
  claims a new dedup key; update_many = the same as BatchWriteRow per 200 rows or 3.5 MB.
* delete_many = per 200 ids, BatchGetRow per 100 (which exist, their dedup keys) + BatchWriteRow of the
  existing rows + BatchWriteRow releasing their keys (when any held one); exact under faults
  (:meth:`Writes._write_exact`). Unknown ids cost the reads only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

from tablestore import (
    BatchWriteRowRequest,
    ComparatorType,
    Condition,
    DeleteRowItem,
    OTSServiceError,
    PutRowItem,
    Row,
    RowExistenceExpectation,
    SingleColumnCondition,
    TableInBatchWriteRowItem,
    UpdateRowItem,
)

from tablestore_openmemory_mcp.errors import ConflictError, MemoryNotFound, StoreError, UserInputError

from .. import row_format
from . import batching
from .batch import WRITE_ROWS, RowRejected, split_write_results
from .dedup import CONDITION_FAILED, Claims, check_key
from .retry import PartiallyApplied, TablestoreUnavailableError, is_retryable
from .rows import MAX_ROW_BYTES, EncodedRow, attr_dict, batches, encode_rows, encode_vector, payload_columns
from .schema import ATTRIBUTE_COLUMNS, COL_DEDUP, COL_PAYLOAD
from .selection import Who, condition

if TYPE_CHECKING:
    from .store import TablestoreStore

logger = logging.getLogger(__name__)

T = TypeVar("T")
_ROW_COLUMNS = [COL_PAYLOAD]
Columns = list[tuple[str, str]]


class Change(NamedTuple):
    """One conditional change of a row: a new payload (the stored format) and/or vector.

    ``expected_updated_at``: only if the row still has it. ``dedup_key``: the key the row holds after the
    change (``""`` gives it up, ``None`` keeps the one it has)."""

    id: str
    vector: Sequence[float] | None = None
    payload: Mapping[str, Any] | None = None
    expected_updated_at: str | None = None
    dedup_key: str | None = None


def _owned(who: Who, memory_id: str, payload: Mapping[str, Any]) -> bool:
    return who.owns(row_format.to_memory(memory_id, payload))


def _chunks(items: Sequence[T], size: int) -> Iterable[list[T]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


class Writes:
    """The writes of one :class:`TablestoreStore` (see the module docstring)."""

    def __init__(self, store: TablestoreStore) -> None:
        self.store = store

    # ------------------------------------------------------------------ insert

    def insert(
        self,
        who: Who,
        ids: Sequence[str],
        vectors: Sequence[Sequence[float]],
        payloads: Sequence[Mapping[str, Any]],
        dedup_keys: Sequence[str | None] | None = None,
    ) -> list[str]:
        """Claim the rows' dedup keys, then write the rows; return per row the id that now holds it.

        A row whose key a live memory holds is not written; that memory's id is returned. A row whose key an
        orphan claim holds (its writer died between the claim and the row, or is there right now) is written
        under the claim's id, only if that row is still missing, and the claim's id is returned. If anything
        fails, the rows and then the claims this call made are removed before the error is raised (a row
        written for an orphan claim stays: it is that claim's memory, possibly rewritten by its own writer).
        """
        store = self.store
        user = who.user
        store._switch.check()
        store._ranges.forget()
        ids = [str(i) for i in ids]
        keys = list(dedup_keys) if dedup_keys is not None else [None] * len(ids)
        if len(keys) != len(ids):
            raise ValueError(f"insert got {len(ids)} ids but {len(keys)} dedup keys")
        for i, payload in enumerate(payloads):
            if not payload or not _owned(who, ids[i] if i < len(ids) else "", payload):
                raise ValueError(f"memory {i} ({ids[i] if i < len(ids) else '?'}) is outside the caller's scope")
        rows = encode_rows(ids, list(vectors), list(payloads), store.embedding_model_dims, store.vector_column)
        first_of: dict[str, EncodedRow] = {}  # dedup key -> the first row of this call carrying it
        plain: list[EncodedRow] = []
        for row, key in zip(rows, keys, strict=True):
            if key is None:
                plain.append(row)
            elif check_key(key) not in first_of:
                first_of[key] = row
        if not plain and not first_of:
            return []
        wanted = {k: r.memory_id for k, r in first_of.items()}
        try:
            claims = store._dedup.claim(user, wanted) if wanted else Claims({}, frozenset())
        except BaseException:
            self.release(user, wanted)
            raise
        holders = claims.holders
        own = [*plain, *(self._keyed(r, k) for k, r in first_of.items() if holders[k] == r.memory_id)]
        orphan_keys = sorted(claims.orphans)
        orphans = [self._keyed(first_of[k], k, holders[k]) for k in orphan_keys]
        try:
            self._put_rows([*own, *orphans], frozenset(holders[k] for k in orphan_keys))
        except BaseException:
            # rows first: a claim left behind is an orphan (completed by a re-add); a row left behind keeps its claim
            if self._remove(own):
                self.release(user, {k: r.memory_id for k, r in first_of.items() if holders[k] == r.memory_id})
            raise
        vec_of = dict(zip(ids, vectors, strict=True))
        noted = [(r.memory_id, vec_of[r.memory_id]) for r in own]
        noted += [(holders[k], vec_of[first_of[k].memory_id]) for k in orphan_keys]
        store._recent.note(user, [m for m, _ in noted], [v for _, v in noted])
        return [holders[k] if k is not None else mid for mid, k in zip(ids, keys, strict=True)]

    @staticmethod
    def _keyed(row: EncodedRow, key: str, memory_id: str | None = None) -> EncodedRow:
        """``row`` holding ``key`` (COL_DEDUP), optionally under another id (an orphan claim's)."""
        mid = memory_id or row.memory_id
        size = row.size + len(key) + len(mid) - len(row.memory_id)
        return EncodedRow(row.user, mid, [*row.columns, (COL_DEDUP, key)], size)

    def release(self, user: str, claims: Mapping[str, str]) -> None:
        """Release claims (best effort, logged: a claim left behind is an orphan, completed by the next add)."""
        try:
            self.store._dedup.release(user, dict(claims))
        except Exception:
            logger.exception("Could not release %d dedup claim(s) of a failed write", len(claims))

    def _put_rows(self, rows: Sequence[EncodedRow], if_missing: frozenset[str] = frozenset()) -> None:
        """PutRow (one row) or BatchWriteRow; repeating a put is harmless, so every call is retried.

        Rows whose id is in ``if_missing`` are written only where no row exists yet (EXPECT_NOT_EXIST;
        "already there" is success): completing an orphan claim never clobbers its own writer's row.
        """
        store = self.store
        ignore = Condition(RowExistenceExpectation.IGNORE)
        absent = Condition(RowExistenceExpectation.EXPECT_NOT_EXIST)
        if not rows:
            return
        if len(rows) == 1:
            row = rows[0]
            cond = absent if row.memory_id in if_missing else ignore
            try:
                store._call(
                    "PutRow",
                    lambda: store.client.put_row(store.collection_name, Row(row.primary_key, row.columns), cond),
                )
            except OTSServiceError as exc:
                if exc.code != CONDITION_FAILED or row.memory_id not in if_missing:
                    raise
            return
        for chunk in batches(rows, WRITE_ROWS):
            items = [
                PutRowItem(Row(r.primary_key, r.columns), absent if r.memory_id in if_missing else ignore)
                for r in chunk
            ]
            by_item = {id(item): r.memory_id for item, r in zip(items, chunk, strict=True)}
            rejected, pending = store._batches.write(store.collection_name, items, [])
            rejected = [
                (item, code, message)
                for item, code, message in rejected
                if code != CONDITION_FAILED or by_item[id(item)] not in if_missing
            ]
            if rejected or pending:
                raise self._batch_error("insert", rejected, pending)

    def _batch_error(self, what: str, rejected: list[tuple[Any, str, str]], pending: list[Any]) -> Exception:
        if rejected:
            _, code, message = rejected[0]
            return RowRejected("BatchWriteRow", code, f"{message} ({len(rejected)} row(s) during {what})")
        return TablestoreUnavailableError(
            f"Tablestore is busy: {len(pending)} row(s) of a BatchWriteRow during {what} on {self.store.endpoint} kept "
            f"failing for {self.store._retry.max_seconds:g} s (TABLESTORE_MAX_RETRY_SECONDS); nothing was kept"
        )

    def _remove(self, rows: Sequence[EncodedRow]) -> bool:
        """Delete rows this call wrote (undo); False (logged) when that failed: the caller raises its own error."""
        store = self.store
        ignore = Condition(RowExistenceExpectation.IGNORE)
        try:
            for chunk in _chunks(list(rows), WRITE_ROWS):
                items = [DeleteRowItem(Row(r.primary_key), ignore) for r in chunk]
                rejected, pending = store._batches.write(store.collection_name, items, [])
                if rejected or pending:
                    raise self._batch_error("undo", rejected, pending)
        except Exception:
            logger.exception("Could not remove %d row(s) written by a failed insert", len(rows))
            return False
        return True

    # ------------------------------------------------------------------ updates

    def update(self, who: Who, change: Change) -> None:
        """One UpdateRow conditioned on: the row exists, is in scope, and (if given) has ``updated_at``.

        A new ``dedup_key`` is claimed first (a claim naming an existing row that does not hold the key is
        stale, and the claim of a row found missing is released, so a failed update blocks nobody); when a
        live memory or an orphan claim holds it, the row keeps no key. ``dedup_key=""`` drops the row's key
        (its text can then be added again).
        Missing or outside the scope -> MemoryNotFound; another writer's change -> ConflictError. A retry
        whose first attempt landed unseen is recognised (the row already is what we wrote): success.
        """
        store = self.store
        user = who.user
        if change.vector is not None:
            store._switch.check()
        store._ranges.forget()
        holders = self._claim_for([change], user)
        put, clear, cond = self._plan(who, change, holders)
        memory_id = change.id
        if not put and not clear:
            if store._by_id.one(who, memory_id) is None:
                raise MemoryNotFound(f"Memory with id {memory_id} not found")
            return
        columns: dict[str, list[Any]] = {"PUT": put} if put else {}
        if clear:
            columns["DELETE_ALL"] = clear
        row = Row(store._pk(user, memory_id), columns)
        try:
            store._call("UpdateRow", lambda: store.client.update_row(store.collection_name, row, cond))
        except OTSServiceError as exc:
            if exc.code != CONDITION_FAILED:
                raise
            if memory_id not in self._applied(user, {memory_id: (put, clear)}):
                if store._by_id.one(who, memory_id) is None:
                    self._release_missing(user, holders, [memory_id])
                    raise MemoryNotFound(f"Memory with id {memory_id} not found") from None
                raise ConflictError(f"memory {memory_id} was changed by another writer; read it again") from None
        store._stash.forget({memory_id})
        store._recent.note(user, [memory_id], [change.vector])

    def update_many(self, who: Who, changes: Sequence[Change]) -> list[str]:
        """Several conditional updates in BatchWriteRow calls (<= 200 rows, < 4 MB); return the ids updated.

        Each change is applied only if its row exists, is in scope and (if given) still has
        ``expected_updated_at``; the others are left out of the answer (nothing raised). Exact under
        faults like :meth:`delete_many`: a lost answer is settled by re-reading the rows.
        """
        store = self.store
        user = who.user
        if any(c.vector is not None for c in changes):
            store._switch.check()
        store._ranges.forget()
        by_id = {c.id: c for c in changes}
        if len(by_id) != len(changes):
            raise ValueError("update_many got the same id twice")
        holders = self._claim_for(list(changes), user)
        plans = {c.id: self._plan(who, c, holders) for c in changes}
        effects = {mid: (put, clear) for mid, (put, clear, _) in plans.items()}
        updated: list[str] = []

        def item_for(mid: str) -> Any:
            put, clear, cond = plans[mid]
            columns: dict[str, list[Any]] = {"PUT": put} if put else {}
            if clear:
                columns["DELETE_ALL"] = clear
            return UpdateRowItem(Row(store._pk(user, mid), columns), cond)

        try:  # <= 200 rows and < 4 MB a request: rows of long memories are large (200 of 16k characters: 6 MB)
            for chunk in batching.chunks([c.id for c in changes], lambda mid: batching.item_bytes(item_for(mid))):
                updated += self._write_exact(
                    chunk, item_for, lambda pending: self._applied(user, {m: effects[m] for m in pending})
                )
        except PartiallyApplied as exc:  # earlier chunks landed: say which, so the caller records them
            done = [*updated, *exc.applied]
            store._stash.forget(set(done))
            store._recent.note(user, done, [by_id[m].vector for m in done])
            raise PartiallyApplied(str(exc), done) from exc
        claimed_for = {mid for mid in holders.values() if mid in by_id and mid not in updated}
        if claimed_for:  # a key claimed for a row that is missing must not stay behind as an orphan claim
            check = sorted(claimed_for)
            rows = store._batches.get(store.collection_name, [store._pk(user, m) for m in check], _ROW_COLUMNS)
            self._release_missing(user, holders, [m for m, raw in zip(check, rows, strict=True) if raw is None])
        if updated:
            store._stash.forget(set(updated))
            store._recent.note(user, updated, [by_id[m].vector for m in updated])
        return updated

    def _claim_for(self, changes: Sequence[Change], user: str) -> dict[str, str]:
        """Claim the new dedup keys of ``changes`` (one batched claim); key -> the id holding it."""
        wanted: dict[str, str] = {}
        for change in changes:
            if change.dedup_key:
                wanted.setdefault(check_key(change.dedup_key), change.id)
        return self.store._dedup.claim(user, wanted).holders if wanted else {}

    def _release_missing(self, user: str, holders: Mapping[str, str], ids: Iterable[str]) -> None:
        """Release the keys claimed for rows of ``ids`` that turned out not to exist (no orphan claim stays)."""
        missing = set(ids)
        claims = {k: mid for k, mid in holders.items() if mid in missing}
        if claims:
            self.release(user, claims)

    def _plan(self, who: Who, change: Change, holders: Mapping[str, str]) -> tuple[Columns, list[str], Condition]:
        """(columns to put, columns to clear, row condition) for one update."""
        store = self.store
        put: Columns = []
        clear: list[str] = []
        if change.payload is not None:
            if not change.payload or not _owned(who, change.id, change.payload):
                raise ValueError("the updated payload is outside the caller's scope")
            put = payload_columns(change.payload)
            have = {name for name, _ in put}
            clear = [c for c in ATTRIBUTE_COLUMNS if c != store.vector_column and c not in have]
        if change.vector is not None:
            put.append((store.vector_column, encode_vector(change.vector, store.embedding_model_dims)))
        if sum(len(v.encode("utf-8")) for _, v in put) > MAX_ROW_BYTES:
            raise UserInputError(f"memory row is above the {MAX_ROW_BYTES // 1024} KiB limit")
        if change.dedup_key == "":  # the row gives up its key (e.g. no longer active): its claim turns stale
            clear.append(COL_DEDUP)
        elif change.dedup_key is not None:
            if holders.get(change.dedup_key) == change.id:
                put.append((COL_DEDUP, change.dedup_key))
            else:  # a live memory holds this text: this row keeps no key
                clear.append(COL_DEDUP)
        conds = who.conditions()
        if change.expected_updated_at is not None:
            conds.append(SingleColumnCondition("updated_at", change.expected_updated_at, ComparatorType.EQUAL, False))
        return put, clear, condition(RowExistenceExpectation.EXPECT_EXIST, conds)

    def _applied(self, user: str, effects: Mapping[str, tuple[Sequence[tuple[str, str]], Sequence[str]]]) -> set[str]:
        """Ids whose row already holds exactly the columns an update puts, and none it clears."""
        store = self.store
        ids = list(effects)
        # the payload column too: a row is returned only with at least one of the columns asked for
        columns = sorted({COL_PAYLOAD, *(c for put, clear in effects.values() for c in [*(n for n, _ in put), *clear])})
        rows = store._batches.get(store.collection_name, [store._pk(user, i) for i in ids], columns)
        done: set[str] = set()
        for mid, raw in zip(ids, rows, strict=True):
            if raw is None:
                continue
            attrs = attr_dict(raw[1])
            put, clear = effects[mid]
            if all(attrs.get(n) == v for n, v in put) and not any(c in attrs for c in clear):
                done.add(mid)
        return done

    # ------------------------------------------------------------------ deletes

    def delete_many(self, who: Who, ids: Iterable[str]) -> list[str]:
        """Delete rows in scope; return exactly the ids this call deleted, and release their dedup keys.

        Per 200 ids: BatchGetRow (<= 100 rows a call) of the rows' keys, one BatchWriteRow deleting the rows
        that exist, and one releasing the keys they held (only when some did). Each row is deleted with
        EXPECT_EXIST + the scope condition, so the answer says which existed. When a call fails in a way
        that may have applied it (timeout, dropped connection, 5xx), the ids still pending are re-read
        before the retry: those gone were deleted by the lost attempt. Keys are released after their rows
        (conditioned on still naming them), so a claim never outlives its row except when this process dies
        in between (an orphan claim: the next add of that text stores it under the deleted id, once).
        """
        store = self.store
        user = who.user
        store._ranges.forget()
        wanted = [i for i in dict.fromkeys(str(i) for i in ids) if i and len(i.encode("utf-8")) <= 1000]
        cond = condition(RowExistenceExpectation.EXPECT_EXIST, who.conditions())
        deleted: list[str] = []
        for chunk in _chunks(wanted, WRITE_ROWS):
            pks = [store._pk(user, i) for i in chunk]
            rows = store._batches.get(store.collection_name, pks, [COL_DEDUP, COL_PAYLOAD])
            key_of = {i: attr_dict(raw[1]).get(COL_DEDUP) for i, raw in zip(chunk, rows, strict=True) if raw}
            gone = self._delete_chunk(user, [i for i in chunk if i in key_of], cond)
            deleted += gone
            self.release(user, {k: i for i in gone if isinstance(k := key_of[i], str) and k})
        if deleted:
            store._recent.forget(user, deleted)
            store._stash.forget(set(deleted))
        return deleted

    def _delete_chunk(self, user: str, ids: list[str], cond: Condition) -> list[str]:
        store = self.store

        def gone(pending: list[str]) -> set[str]:
            rows = store._batches.get(store.collection_name, [store._pk(user, i) for i in pending], _ROW_COLUMNS)
            return {i for i, raw in zip(pending, rows, strict=True) if raw is None}

        if not ids:
            return []
        return self._write_exact(ids, lambda i: DeleteRowItem(Row(store._pk(user, i)), cond), gone)

    def _write_exact(
        self, ids: list[str], item_for: Callable[[str], Any], landed: Callable[[list[str]], set[str]]
    ) -> list[str]:
        """One BatchWriteRow of conditional items (<= 200); return the ids this call changed, exactly.

        A failed row condition means "not changed" (missing, outside the scope, or changed by another
        writer). A call that failed in a way that may have applied it (timeout, dropped connection,
        5xx) is not blindly re-sent: ``landed(pending)`` re-reads which of them already took effect.
        """
        store = self.store
        pending = list(ids)
        changed: list[str] = []
        uncertain = False
        last: BaseException | None = None
        plan = store._retry.schedule()
        while True:
            if uncertain:  # the last call may have applied without telling us: re-read what is left
                done = landed(pending)
                changed += [i for i in pending if i in done]
                pending = [i for i in pending if i not in done]
                uncertain = False
            if not pending:
                break
            items = [item_for(i) for i in pending]
            by_item = {id(item): mid for item, mid in zip(items, pending, strict=True)}
            request = BatchWriteRowRequest()
            request.add(TableInBatchWriteRowItem(store.collection_name, items))
            try:
                response = store.client.batch_write_row(request)
            except Exception as exc:
                if not is_retryable(exc):
                    raise
                last, uncertain = exc, True
                if not plan.backoff(exc):
                    done = landed(pending)  # settle the last attempt before reporting
                    changed += [i for i in pending if i in done]
                    pending = [i for i in pending if i not in done]
                    break
                continue
            again, ok, refused = split_write_results(response, store.collection_name, items)
            changed += [by_item[id(item)] for item in ok]
            for _, code, message in refused:
                if code != CONDITION_FAILED:
                    raise RowRejected("BatchWriteRow", code, message)
            pending = [by_item[id(item)] for item in again]
            if pending and not plan.backoff("OTSServerBusy"):
                break
        if pending:
            cause = last or StoreError(f"{len(pending)} row(s) kept failing")
            raise PartiallyApplied(str(store._retry.exhausted("BatchWriteRow", cause, plan)), changed) from last
        return changed


__all__ = ["Change", "Writes"]
