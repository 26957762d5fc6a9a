"""Hostile backup files, built on the spot (tests and the closing-note measurement share them).

Each one is small on disk and large, deep or odd once read: the importer must refuse or skip it within bounded
memory and CPU (see ``tablestore_openmemory_mcp.backup.limits``).
"""

from __future__ import annotations

import gzip
import io
import json
import re
import zipfile
from pathlib import Path

MiB = 1024 * 1024
GOOD_IDS = ("aaaaaaaa-0000-4000-8000-000000000001", "aaaaaaaa-0000-4000-8000-000000000002")
ODD_IDS: tuple[object, ...] = ("x", "../../etc/passwd", 12345, "A" * 900)


def good_jsonl_gz() -> bytes:
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb") as gz:
        for n, memory_id in enumerate(GOOD_IDS):
            gz.write(json.dumps({"id": memory_id, "content": f"good memory {n}", "app": "claude"}).encode() + b"\n")
    return buf.getvalue()


def bomb_zip(path: Path, unpacked_mib: int = 256, *, with_jsonl: bool = True) -> Path:
    """A ``memories.json`` of ``{"x":[{},{},...]}`` (``unpacked_mib`` MiB; a few hundred KB packed) next to a valid
    ``memories.jsonl.gz``: parsing the JSON document would take ~25 bytes of memory per input byte."""
    head = b'{"export_meta":{"version":"1"},"user":{"user_id":"alice"},"x":['
    chunk = b"{}," * (MiB // 3)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        with zf.open("memories.json", "w", force_zip64=True) as member:
            member.write(head)
            for _ in range(unpacked_mib):
                member.write(chunk)
            member.write(b"{}]}")
        if with_jsonl:
            zf.writestr("memories.jsonl.gz", good_jsonl_gz(), compress_type=zipfile.ZIP_STORED)
    return path


def blank_lines_gz(path: Path, unpacked_mib: int = 200) -> Path:
    """``unpacked_mib`` MiB of empty lines (about 200 KB packed for 200 MiB), then one record."""
    line = b"\n" * MiB
    with gzip.open(path, "wb", compresslevel=9) as gz:
        for _ in range(unpacked_mib):
            gz.write(line)
        gz.write(json.dumps({"content": "after the empty lines"}).encode() + b"\n")
    return path


def deep_jsonl(path: Path, depth: int = 100_000) -> Path:
    """One record nested ``depth`` levels deep between two good ones."""
    deep = b'{"content": "deep", "metadata": {"a": ' + b"[" * depth + b"]" * depth + b"}}"
    lines = [json.dumps({"content": "before the deep one"}).encode(), deep, json.dumps({"content": "after"}).encode()]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def odd_ids_jsonl(path: Path) -> Path:
    """Records whose ids are not memory ids (a name, a path, a number, 900 characters)."""
    lines = [
        json.dumps({"id": memory_id, "content": f"odd id {n}", "app": "claude"}) for n, memory_id in enumerate(ODD_IDS)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def refused_after(message: str) -> int:
    """The byte count a refusal names (``refused after reading N bytes``)."""
    found = re.search(r"refused after reading (\d+) bytes", message)
    assert found, message
    return int(found.group(1))


def peak_rss(pid: int) -> tuple[int, int]:
    """(current, peak) resident set size of a process in bytes, from /proc (Linux)."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) * 1024, int(fields["VmHWM"].split()[0]) * 1024
