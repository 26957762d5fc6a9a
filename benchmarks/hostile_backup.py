"""Hostile backups against a real server (issue 22): ``python -m benchmarks.hostile_backup [--src DIR]``.

For each attack a fresh server (embedded store, streamable HTTP) is warmed up with one small import, then
sent the hostile upload while another user searches in a loop. Printed per attack: HTTP status, the
server's peak RSS (VmHWM from /proc) minus its warm peak, the time until the answer, and the other user's
search p95 during the attack. ``--src`` runs another checkout's code (e.g. ``/work/main/src`` for "before")
with this venv. Sizes are options because the old code needs ~9 bytes of memory per unpacked byte of the
bomb and ~0.8 s of CPU per MiB of empty lines.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx
from tests.hostile_files import MiB, blank_lines_gz, bomb_zip, deep_jsonl, odd_ids_jsonl, peak_rss
from tests.server_process import SCRIPT, HttpServer, server_env


def run_attack(name: str, path: Path, src: str | None, work: Path) -> dict[str, object]:
    (work / name).mkdir(exist_ok=True)
    env = server_env(work / name)
    if src:
        env["PYTHONPATH"] = src
    with HttpServer(env, work / name, transport="streamable-http") as server:
        api = httpx.Client(base_url=f"{server.url}/api/v1", timeout=900)
        warm = work / "warm.jsonl"
        warm.write_text('{"content": "warm up memory"}\n')
        with warm.open("rb") as fh:
            api.post("/backup/import", data={"user_id": "bob"}, files={"file": ("warm.jsonl", fh)}).raise_for_status()
        for _ in range(3):
            api.get("/memories", params={"user_id": "bob", "q": "warm"}).raise_for_status()
        _, base = peak_rss(server.process.pid)
        latencies: list[float] = []
        stop = threading.Event()

        def search() -> None:
            with httpx.Client(base_url=f"{server.url}/api/v1", timeout=900) as other:
                while not stop.is_set():
                    t = time.perf_counter()
                    other.get("/memories", params={"user_id": "bob", "q": "warm"})
                    latencies.append((time.perf_counter() - t) * 1000)

        searcher = threading.Thread(target=search)
        searcher.start()
        started = time.perf_counter()
        try:
            with path.open("rb") as fh:
                answer = api.post("/backup/import", data={"user_id": "alice"}, files={"file": (path.name, fh)})
            status, text = answer.status_code, answer.text[:160]
        except httpx.HTTPError as exc:  # the old server may die under the bomb
            status, text = 0, f"{type(exc).__name__}: {exc}"[:160]
        elapsed = time.perf_counter() - started
        stop.set()
        searcher.join()
        peak = peak_rss(server.process.pid)[1] if server.process.poll() is None else -1
        api.close()
    p95 = statistics.quantiles(latencies, n=20)[-1] if len(latencies) >= 20 else max(latencies, default=0.0)
    return {
        "attack": name,
        "size": path.stat().st_size,
        "status": status,
        "rss_growth_mib": round((peak - base) / MiB, 1) if peak > 0 else "died",
        "answer_s": round(elapsed, 2),
        "other_p95_ms": round(p95, 1),
        "answer": text,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--src", help="PYTHONPATH for the server (another checkout's src)")
    parser.add_argument("--bomb-mib", type=int, default=256)
    parser.add_argument("--blank-mib", type=int, default=200)
    parser.add_argument("--only", nargs="*", default=None)
    args = parser.parse_args()
    assert Path(SCRIPT).exists()
    with tempfile.TemporaryDirectory(prefix="hostile-") as tmp:
        work = Path(tmp)
        attacks = {
            "bomb_json_beside_jsonl": bomb_zip(work / "bomb.zip", args.bomb_mib),
            "bomb_json_alone": bomb_zip(work / "alone.zip", args.bomb_mib, with_jsonl=False),
            "empty_lines_gz": blank_lines_gz(work / "blank.jsonl.gz", args.blank_mib),
            "nested_100000": deep_jsonl(work / "deep.jsonl"),
            "odd_ids": odd_ids_jsonl(work / "odd.jsonl"),
        }
        print("| attack | file | status | server peak RSS growth | answer after | other user's search p95 | answer |")
        print("|---|---|---|---|---|---|---|")
        for name, path in attacks.items():
            if args.only and name not in args.only:
                continue
            row = run_attack(name, path, args.src, work)
            print(
                f"| {row['attack']} | {row['size'] // 1024} KB | {row['status']} | {row['rss_growth_mib']} MiB | "
                f"{row['answer_s']} s | {row['other_p95_ms']} ms | {row['answer']} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
