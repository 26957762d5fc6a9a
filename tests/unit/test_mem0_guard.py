"""What this server relies on from mem0, checked so a mem0 upgrade fails here, loudly, and nowhere else."""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src" / "tablestore_openmemory_mcp"


def _imports_mem0(path: Path) -> bool:
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import) and any(a.name.split(".")[0] == "mem0" for a in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "mem0":
            return True
    return False


def test_only_the_repository_imports_mem0() -> None:
    importers = sorted(str(p.relative_to(SRC)) for p in SRC.rglob("*.py") if _imports_mem0(p))
    assert importers == ["repository.py"]


def test_mem0_still_has_the_lemmatizer_we_call() -> None:
    spec = importlib.util.find_spec("mem0")  # finds the package without running its __init__
    assert spec is not None and spec.submodule_search_locations
    source = Path(next(iter(spec.submodule_search_locations)), "utils", "lemmatization.py").read_text()
    assert "def lemmatize_for_bm25(text: str) -> str:" in source


def test_serving_never_imports_the_mem0_package() -> None:
    """Without spaCy, search and add never load mem0 (its import costs seconds and writes config.json)."""
    code = (
        "import sys\n"
        "from tablestore_openmemory_mcp import repository, bootstrap, tools\n"
        "repository.lemmatize('searching for tea')\n"
        "print(sorted(m for m in sys.modules if m == 'mem0' or m.startswith('mem0.')))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    has_spacy = importlib.util.find_spec("spacy") is not None
    assert has_spacy or result.stdout.strip() == "[]", result.stdout
