"""Backup benchmark (issue 11): ``python -m benchmarks.backup [--records N]`` prints one markdown table.

It writes a backup of N memories (default 100,000) whose vectors match the embedded default's offline
embedder (name and dimension), so nothing is re-embedded, then runs the installed console script as
users do: ``import FILE --user-id bench`` into an empty data directory, a second ``import`` of the same
file (everything already present), and ``export``. Wall times include process start and model load.
Temporary directories are removed at the end (``--keep`` keeps them).
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

WORDS = ["tea", "coffee", "hiking", "python", "rust", "Hangzhou", "jazz", "chess", "sushi", "cycling", "linux"]
CLIENTS = ["cline", "cursor", "claude", "cherrystudio"]


def offline_embedder() -> tuple[str, int]:
    """Name and dimension of the embedder the embedded default would use (no model load)."""
    from tablestore_openmemory_mcp.app.bootstrap import _embedder
    from tablestore_openmemory_mcp.settings import load_settings

    embedder, dimension = _embedder(load_settings(None))
    return str(embedder.name), int(dimension)


def write_backup(path: Path, records: int, name: str, dims: int, seed: int = 7) -> None:
    import numpy as np

    from tablestore_openmemory_mcp.backup.fileformat import BackupWriter

    rng = random.Random(seed)
    vectors = np.random.default_rng(seed).standard_normal((records, dims), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    start = datetime(2025, 1, 1, tzinfo=UTC)
    writer = BackupWriter(path, "bench")
    try:
        for i in range(records):
            stamp = (start + timedelta(seconds=i)).isoformat()
            writer.add(
                {
                    "id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                    "content": f"memory {i}: likes {rng.choice(WORDS)} and {rng.choice(WORDS)}",
                    "metadata": {},
                    "created_at": stamp,
                    "updated_at": stamp,
                    "state": "active",
                    "app": CLIENTS[i % len(CLIENTS)],
                    "categories": [],
                    "user_id": "bench",
                    "embedding_model": name,
                    "vector": np.round(vectors[i], 6).tolist(),
                }
            )
        writer.close()
    except BaseException:
        writer.abort()
        raise


def run(args: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """(wall s, CPU s of the process, its summary line): CPU time is what a busy machine cannot inflate."""
    script = (
        shutil.which("tablestore-openmemory-mcp", path=str(Path(sys.executable).parent)) or "tablestore-openmemory-mcp"
    )
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run([script, *args], env=env, capture_output=True, text=True, timeout=3600, check=False)
    elapsed = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed ({done.returncode}): {done.stderr[-2000:]}")
    return elapsed, cpu, done.stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    opts = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-backup-"))
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TABLESTORE_", "OPENAI_", "EMBEDDER_"))}
        env.update(MEMORY_DATA_DIR=str(work / "data"), HOME=str(work))
        (work / "probe").mkdir()
        os.environ.update(MEMORY_DATA_DIR=str(work / "probe"))
        for key in [k for k in os.environ if k.startswith(("TABLESTORE_", "OPENAI_", "EMBEDDER_"))]:
            del os.environ[key]
        name, dims = offline_embedder()
        backup = work / "bench.zip"
        started = time.perf_counter()
        write_backup(backup, opts.records, name, dims)
        written = time.perf_counter() - started
        steps = [
            ("import (empty store)", ["import", str(backup), "--user-id", "bench"]),
            ("import again (all present)", ["import", str(backup), "--user-id", "bench"]),
            ("export", ["export", "--user-id", "bench", str(work / "out.zip")]),
        ]
        results = [(label, *run(args, env)) for label, args in steps]
        size = backup.stat().st_size / 1e6
        print(
            f"embedder {name} ({dims} dimensions); backup {size:.0f} MB written in {written:.0f} s; "
            f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs\n"
        )
        print("| step | records | wall time | CPU time | records/s (wall) |")
        print("|---|---:|---:|---:|---:|")
        for label, wall, cpu, _ in results:
            print(f"| {label} | {opts.records} | {wall:.1f} s | {cpu:.1f} s | {opts.records / wall:,.0f} |")
        print()
        for *_, out in results:
            print(f"    {out}")
    finally:
        if opts.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
