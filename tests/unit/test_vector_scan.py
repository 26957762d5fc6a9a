"""The embedded store's vector scan: exact ``mat @ q`` whether it runs in one thread or is split."""

from __future__ import annotations

import numpy as np
import pytest

from tablestore_openmemory_mcp.stores.embedded import vectors


@pytest.mark.parametrize("rows", [0, 1, 511, 513, 8_191, 8_192, 12_289, 100_003])
def test_scan_equals_a_plain_matrix_product(rows: int) -> None:
    rng = np.random.default_rng(rows)
    mat = rng.standard_normal((rows, 48), dtype=np.float32)
    q = rng.standard_normal(48, dtype=np.float32)
    got = vectors.dot(mat, q)
    assert got.shape == (rows,)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, mat @ q, rtol=1e-5, atol=1e-5)


def test_a_big_scan_is_split_across_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vectors, "_SCAN_THREADS", 3)
    seen: list[int] = []
    real = vectors._blocks

    def spy(mat: vectors.F32, q: vectors.F32, out: vectors.F32) -> None:
        seen.append(len(mat))
        real(mat, q, out)

    monkeypatch.setattr(vectors, "_blocks", spy)
    mat = np.ones((100_000, 8), dtype=np.float32)
    assert vectors.dot(mat, np.ones(8, dtype=np.float32)).tolist() == [8.0] * 100_000
    assert sorted(seen) == [33_333, 33_333, 33_334]
    seen.clear()
    vectors.dot(mat[:1000], np.ones(8, dtype=np.float32))
    assert seen == [1000]  # small: one thread
