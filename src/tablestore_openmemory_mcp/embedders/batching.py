"""Shared batches: concurrent embedding calls are coalesced into few engine (or HTTP) calls.

Why: one engine call per text behind a global lock capped adds at ~35/s with 8 clients, and one
user's long add held that lock while everyone else's search waited. Here:

* callers queue their texts; whoever finds a free slot (``concurrency`` of them: 1 for the offline
  engine, a few for HTTP) becomes the *leader*, takes a batch from the queue and runs it in its own
  thread; the others wait for their vectors (leader/follower: no worker threads to start or stop);
* a batch holds at most ``max_items`` texts and ``max_cost`` tokens, so one engine call is short:
  a long input is cut up front (:mod:`.limits`) and a long list is run in several calls; with
  ``spread``, a leader takes only its share of the queue (split across the slots), so the other
  slots start on the rest at once instead of idling (for engines whose calls run one thread each,
  where a bigger batch is no cheaper per text and a smaller one answers sooner);
* urgent texts (searches) are taken before others, and ``reserve`` extra slots serve only them: a
  search runs beside a long add instead of after it; within a priority, batches take texts
  round-robin from the waiting callers, so one caller's long list does not hold back another's
  single text;
* a batch that fails with an error about its *inputs* is re-run per caller, so one caller's bad text
  does not fail another caller's add.

A leader that finds the engine idle may ``linger`` a few milliseconds for companions when callers
arrived recently (right after another batch, the queue already holds everyone who was waiting).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar, cast

T = TypeVar("T")

#: ``run(texts, kind)`` -> one result per text, in order.
Runner = Callable[[list[str], str], Sequence[T]]


@dataclass(eq=False)
class _Job(Generic[T]):
    """One caller's texts; filled in by whichever leader runs them."""

    texts: list[str]
    costs: list[int]
    kind: str
    results: list[T | None]
    next: int = 0  # first text not yet taken into a batch
    left: int = 0  # texts taken or not whose result is still missing
    error: BaseException | None = None
    done: bool = False

    def __post_init__(self) -> None:
        self.left = len(self.texts)


@dataclass
class _Batch(Generic[T]):
    kind: str
    items: list[tuple[_Job[T], int]] = field(default_factory=list)


def _always(_: BaseException) -> bool:
    return True


class MicroBatcher(Generic[T]):
    """Coalesce ``submit`` calls from many threads into bounded calls of ``run``."""

    def __init__(
        self,
        run: Runner[T],
        *,
        max_items: int,
        max_cost: int,
        concurrency: int = 1,
        reserve: int = 0,
        linger: float = 0.0,
        isolate: Callable[[BaseException], bool] = _always,
        spread: bool = False,
    ) -> None:
        self._run = run
        self.max_items = max(1, max_items)
        self.max_cost = max(1, max_cost)
        self.concurrency = max(1, concurrency)
        self.reserve = max(0, reserve)
        self.linger = max(0.0, linger)
        self._isolate = isolate
        self._spread = spread
        self._cond = threading.Condition()
        self._queues: tuple[deque[_Job[T]], deque[_Job[T]]] = (deque(), deque())  # urgent, normal
        self._busy = [0, 0]  # slots in use: any job, urgent only
        self._last_arrival = 0.0
        self._last_finish = 0.0
        #: Calls of ``run`` so far (for tests and benchmarks).
        self.calls = 0
        #: Texts embedded so far.
        self.texts = 0

    def submit(self, texts: Sequence[str], kind: str, *, urgent: bool = False, costs: Sequence[int] = ()) -> list[T]:
        """Results for ``texts`` (one per text, in order), or the error of the call that ran them."""
        if not texts:
            return []
        job: _Job[T] = _Job(list(texts), list(costs) or [1] * len(texts), kind, [None] * len(texts))
        with self._cond:
            now = time.monotonic()
            recent = now - self._last_arrival < max(0.02, 10 * self.linger)
            self._last_arrival = now
            self._queues[0 if urgent else 1].append(job)
            self._cond.notify_all()
            while not job.done:
                claim = self._claim()
                if claim is None:
                    self._cond.wait()
                    continue
                slot, from_urgent = claim
                self._busy[slot] += 1
                try:
                    idle = time.monotonic() - self._last_finish > self.linger
                    if recent and idle and not from_urgent:
                        self._wait_for_companions()
                    batch = self._take(urgent=bool(self._queues[0]) if slot == 0 else True)
                    if self._spread and self._queues[1]:
                        self._cond.notify_all()  # texts are left and a slot may be free: wake a leader for them
                    self._cond.release()
                    try:
                        self._execute(batch)
                    finally:
                        self._cond.acquire()
                finally:
                    self._busy[slot] -= 1
                    self._last_finish = time.monotonic()
                    self._cond.notify_all()
                recent = False
        if job.error is not None:
            raise job.error
        return cast(list[T], job.results)

    # --- queue (called with the lock held) ---------------------------------------------------------
    def _claim(self) -> tuple[int, bool] | None:
        """A free slot for the next batch (0: any job, 1: urgent only) and whether it serves urgent
        texts; ``None`` if nothing can start now."""
        if self._queues[0]:
            if self._busy[1] < self.reserve:
                return 1, True
            if self._busy[0] < self.concurrency:
                return 0, True
        if self._queues[1] and self._busy[0] < self.concurrency:
            return 0, False
        return None

    def _waiting_texts(self) -> int:
        return sum(len(job.texts) - job.next for queue in self._queues for job in queue)

    def _wait_for_companions(self) -> None:
        """Give other callers ``linger`` seconds to join a batch that is not full yet."""
        deadline = time.monotonic() + self.linger
        while not self._queues[0] and self._waiting_texts() < self.max_items:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._cond.wait(remaining)

    def _take(self, urgent: bool) -> _Batch[T]:
        """The next batch from the urgent or the normal queue, round-robin across callers of one kind."""
        queue = self._queues[0] if urgent else self._queues[1]
        if not queue:
            return _Batch("")
        batch: _Batch[T] = _Batch(queue[0].kind)
        cost = 0
        progress = True
        limit = self.max_items
        if self._spread and not urgent:  # this leader's share: the other slots take the rest as they free up
            waiting = sum(len(job.texts) - job.next for job in queue)
            limit = max(1, min(limit, -(-waiting // self.concurrency)))
        while progress and len(batch.items) < limit:
            progress = False
            for job in list(queue):
                if job.kind != batch.kind or job.next >= len(job.texts):
                    continue
                item_cost = job.costs[job.next]
                if batch.items and cost + item_cost > self.max_cost:
                    continue
                batch.items.append((job, job.next))
                job.next += 1
                cost += item_cost
                progress = True
                if job.next >= len(job.texts):
                    queue.remove(job)
                if len(batch.items) >= limit:
                    break
        return batch

    # --- running (without the lock) ----------------------------------------------------------------
    def _execute(self, batch: _Batch[T]) -> None:
        if not batch.items:
            return
        jobs = list(dict.fromkeys(job for job, _ in batch.items))
        try:
            results = self._call(batch.kind, batch.items)
        except BaseException as exc:
            if len(jobs) > 1 and self._isolate(exc):
                for job in jobs:
                    self._execute(_Batch(batch.kind, [item for item in batch.items if item[0] is job]))
                return
            self._finish(batch.items, None, exc)
            return
        self._finish(batch.items, results, None)

    def _call(self, kind: str, items: list[tuple[_Job[T], int]]) -> Sequence[T]:
        texts = [job.texts[index] for job, index in items]
        results = self._run(texts, kind)
        if len(results) != len(texts):
            raise RuntimeError(f"the embedder returned {len(results)} results for {len(texts)} texts")
        with self._cond:
            self.calls += 1
            self.texts += len(texts)
        return results

    def _finish(
        self, items: list[tuple[_Job[T], int]], results: Sequence[T] | None, error: BaseException | None
    ) -> None:
        with self._cond:
            for position, (job, index) in enumerate(items):
                if job.done:
                    continue
                if error is not None or results is None:
                    job.error = error
                    job.done = True
                    for queue in self._queues:
                        if job in queue:
                            queue.remove(job)
                    continue
                job.results[index] = results[position]
                job.left -= 1
                job.done = job.left == 0
            self._cond.notify_all()
