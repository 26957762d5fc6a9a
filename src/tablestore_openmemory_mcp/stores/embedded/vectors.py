"""In-process cache of unit vectors per identity, patched in place as rows change.

A :class:`Slab` holds the ids, rowids and vectors of every row with one identity (for example one
user's rows with one client). Searches take a :class:`Snapshot` under the cache lock (references plus
the row count, no copy) and score without the lock, so writes never wait for a search and a search
never sees a half-done write:

* ``ids``/``rids`` are append-only lists and ``mat`` rows below a snapshot's ``n`` are never
  written again, so a snapshot stays valid while others append;
* a delete only marks the position dead (a snapshot masks the dead positions it knew of; rows that
  died later are dropped when their payload is read); an update marks the old position dead and
  appends the new vector; the matrix is compacted (copied) only once dead rows pass an eighth of it;
* a slab is loaded straight into a matrix with room for ``n + n/8`` rows (peak RSS ~1.2x the vectors,
  measured) and grows by a quarter when full.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Identity = tuple[tuple[str, str], ...]
F32 = npt.NDArray[np.float32]

_MIN_CAPACITY = 64
_BLOCK_BYTES = 786_432  # rows per sgemv call: small enough that OpenBLAS stays single-threaded
_PARALLEL_MIN_ROWS = 8_192  # below this a scan takes < 1 ms and splitting it saves nothing (measured)
_SCAN_THREADS = max(1, min(4, os.cpu_count() or 1))

_scan_pool: ThreadPoolExecutor | None = None
_scan_pool_lock = threading.Lock()


def _blocks(mat: F32, q: F32, out: F32) -> None:
    step = max(64, _BLOCK_BYTES // max(1, mat.shape[1] * 4))
    for start in range(0, len(mat), step):
        np.matmul(mat[start : start + step], q, out=out[start : start + step])


def _pool() -> ThreadPoolExecutor:
    global _scan_pool
    with _scan_pool_lock:
        if _scan_pool is None:
            _scan_pool = ThreadPoolExecutor(_SCAN_THREADS, thread_name_prefix="vector-scan")
        return _scan_pool


def dot(mat: F32, q: F32) -> F32:
    """``mat @ q``: single-threaded BLAS blocks; a big matrix is split across the CPUs.

    Why blocks: on a busy 2-CPU host one multi-threaded sgemv over 10k x 384 took 0.4 ms idle but
    8-40 ms under load (OpenBLAS threads spin-wait for cores); 512-row blocks take ~1.1 ms regardless.
    Why split: the scan is memory-bandwidth bound and one core does not use all of it; 100k x 384
    took 13.3 ms in one thread and 8.5 ms in two, 10k x 384 (out of cache) 1.2 and 0.8 ms (quiet 2-core
    machine). The threads are our own
    (started on first use; the caller scans one part itself), so a busy machine only delays a part.
    """
    out: F32 = np.empty(len(mat), dtype=np.float32)
    parts = min(_SCAN_THREADS, len(mat) // (_PARALLEL_MIN_ROWS // 2)) if len(mat) >= _PARALLEL_MIN_ROWS else 1
    if parts <= 1:
        _blocks(mat, q, out)
        return out
    edges = [len(mat) * k // parts for k in range(parts + 1)]
    futures = [_pool().submit(_blocks, mat[lo:hi], q, out[lo:hi]) for lo, hi in itertools.pairwise(edges[1:])]
    _blocks(mat[: edges[1]], q, out[: edges[1]])  # the first part in this thread
    for future in futures:
        future.result()
    return out


def dot_at(mat: F32, q: F32, only: npt.NDArray[np.intp]) -> F32:
    """``(mat @ q)[only]``: a few rows gathered in blocks (no big copy); most of them, the whole scan."""
    if 4 * len(only) > len(mat):
        return dot(mat, q)[only]
    out: F32 = np.empty(len(only), dtype=np.float32)
    step = max(64, _BLOCK_BYTES // max(1, mat.shape[1] * 4))
    for start in range(0, len(only), step):
        np.matmul(mat[only[start : start + step]], q, out=out[start : start + step])
    return out


@dataclass(frozen=True)
class RowState:
    """The current state of one row, applied to every cached slab; ``identity=None`` = deleted."""

    rid: int
    id: str | None = None
    identity: Mapping[str, str | None] | None = None
    vector: F32 | None = None  # None with an identity: the vector did not change


@dataclass(frozen=True)
class Snapshot:
    ids: list[str]
    rids: list[int]
    mat: F32
    dead: npt.NDArray[np.intp]
    #: With a narrowed read: the live positions of exactly the rows it selected (the only ones to score).
    only: npt.NDArray[np.intp] | None = None


class Slab:
    """Ids, rowids and vectors of every row with one identity; see the module docstring."""

    def __init__(self, identity: Identity, dims: int, capacity: int) -> None:
        self.identity = identity
        self.rids: list[int] = []
        self.ids: list[str] = []
        self.mat: F32 = np.empty((max(_MIN_CAPACITY, capacity), dims), dtype=np.float32)
        self.n = 0
        self.pos: dict[int, int] = {}
        self.dead: set[int] = set()
        self._dead_arr: npt.NDArray[np.intp] | None = None

    @property
    def nbytes(self) -> int:
        return int(self.mat.nbytes)

    def covers(self, identity: Mapping[str, str | None]) -> bool:
        return all(identity.get(key) == value for key, value in self.identity)

    def snapshot(self, only: Iterable[int] | None = None) -> Snapshot:
        """The slab as it is now; with ``only`` (rowids), also the live positions of those rows."""
        if self._dead_arr is None:
            self._dead_arr = np.fromiter(self.dead, dtype=np.intp, count=len(self.dead))
        positions = None
        if only is not None:
            pos = self.pos
            positions = np.fromiter((pos[rid] for rid in only if rid in pos), dtype=np.intp)
        return Snapshot(self.ids, self.rids, self.mat[: self.n], self._dead_arr, positions)

    def append(self, rid: int, id_: str, vector: F32) -> None:
        if self.n == self.mat.shape[0]:
            grown = np.empty((self.n + max(_MIN_CAPACITY, self.n // 4), self.mat.shape[1]), dtype=np.float32)
            grown[: self.n] = self.mat[: self.n]
            self.mat = grown
        self.mat[self.n] = vector
        self.rids.append(rid)
        self.ids.append(id_)
        self.pos[rid] = self.n
        self.n += 1

    def append_loaded(self, rid: int, id_: str, vector: F32) -> None:
        """:meth:`append` while loading: positions are indexed once, by :meth:`finish_load`."""
        if self.n == self.mat.shape[0]:
            self.append(rid, id_, vector)
            return
        self.mat[self.n] = vector
        self.rids.append(rid)
        self.ids.append(id_)
        self.n += 1

    def finish_load(self) -> None:
        self.pos = dict(zip(self.rids, range(self.n), strict=True))

    def kill(self, rid: int) -> None:
        position = self.pos.pop(rid)
        self.dead.add(position)
        self._dead_arr = None

    def apply(self, state: RowState) -> None:
        present = state.rid in self.pos
        wanted = state.identity is not None and self.covers(state.identity)
        if present and (not wanted or state.vector is not None):
            self.kill(state.rid)
            present = False
        if wanted and not present and state.vector is not None and state.id is not None:
            self.append(state.rid, state.id, state.vector)
        if len(self.dead) > max(_MIN_CAPACITY, self.n // 8):
            self.compact()

    def compact(self) -> None:
        """Drop dead positions: new lists and a new matrix, so existing snapshots stay valid."""
        keep = np.asarray([i for i in range(self.n) if i not in self.dead], dtype=np.intp)
        mat = np.empty((len(keep) + max(_MIN_CAPACITY, len(keep) // 4), self.mat.shape[1]), dtype=np.float32)
        np.take(self.mat, keep, axis=0, out=mat[: len(keep)])
        self.mat = mat
        self.rids = [self.rids[i] for i in keep]
        self.ids = [self.ids[i] for i in keep]
        self.n = len(keep)
        self.pos = {rid: i for i, rid in enumerate(self.rids)}
        self.dead = set()
        self._dead_arr = None


class VectorCache:
    """Slabs by identity, least recently used evicted beyond ``max_bytes``; ``gen`` = what they reflect."""

    def __init__(self, max_bytes: int) -> None:
        self.lock = threading.Lock()
        self.slabs: OrderedDict[Identity, Slab] = OrderedDict()
        self.gen: int | None = None
        self._max_bytes = max_bytes

    def clear(self, gen: int | None = None) -> None:
        self.slabs.clear()
        self.gen = gen

    def apply(self, states: Iterable[RowState]) -> None:
        """Make every cached slab agree with these row states (caller holds :attr:`lock`)."""
        states = list(states)
        for slab in self.slabs.values():
            for state in states:
                slab.apply(state)

    def put(self, slab: Slab) -> None:
        self.slabs[slab.identity] = slab
        total = sum(s.nbytes for s in self.slabs.values())
        for key in list(self.slabs):
            if total <= self._max_bytes:
                break
            if key != slab.identity:
                total -= self.slabs.pop(key).nbytes
