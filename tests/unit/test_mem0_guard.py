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


def test_only_the_row_format_and_the_mem0_package_import_mem0() -> None:
    importers = sorted(p.relative_to(SRC).as_posix() for p in SRC.rglob("*.py") if _imports_mem0(p))
    assert importers == ["mem0/__init__.py", "mem0/engine.py", "stores/row_format.py"]


def test_mem0_still_has_the_internals_register_and_the_engine_extend() -> None:
    """register() adds providers to these tables; the engine swaps Memory.db and registers an LLM/embedder."""
    code = (
        "import inspect, tempfile\n"
        "from tablestore_openmemory_mcp.mem0 import register\n"
        "register(tempfile.mkdtemp())\n"
        "from mem0 import Memory\n"
        "from mem0.utils.factory import EmbedderFactory, LlmFactory, VectorStoreFactory\n"
        "from mem0.vector_stores.configs import VectorStoreConfig\n"
        "from mem0.vector_stores.base import VectorStoreBase\n"
        "from tablestore_openmemory_mcp.mem0.vector_store import StoreVectorStore\n"
        "assert VectorStoreFactory.provider_to_class['tablestore'].endswith('TablestoreVectorStore')\n"
        "assert 'openmemory_embedded' in VectorStoreConfig.__private_attributes__['_provider_configs'].default\n"
        "assert issubclass(StoreVectorStore, VectorStoreBase)\n"
        "assert callable(LlmFactory.register_provider) and isinstance(EmbedderFactory.provider_to_class, dict)\n"
        "init = inspect.getsource(Memory.__init__)\n"
        "assert 'self.db = SQLiteManager' in init and 'self.vector_store = VectorStoreFactory.create' in init\n"
        "for name in ('add_history', 'batch_add_history', 'get_history', 'save_messages', 'get_last_messages'):\n"
        "    assert f'self.db.{name}(' in inspect.getsource(Memory), name\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180)
    assert result.stdout.strip() == "ok", result.stderr[-3000:]


def test_importing_our_mem0_package_has_no_side_effects(tmp_path) -> None:
    """No mem0 import, no MEM0_DIR, no telemetry switch until register() is called."""
    code = (
        "import os, sys\n"
        "import tablestore_openmemory_mcp.mem0, tablestore_openmemory_mcp.mem0.vector_store\n"
        "print(any(m == 'mem0' or m.startswith('mem0.') for m in sys.modules), 'MEM0_DIR' in os.environ)\n"
    )
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("MEM0_")}
    env["HOME"] = str(tmp_path)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert result.stdout.strip() == "False False", result.stderr[-2000:]
    assert list(tmp_path.iterdir()) == []


def test_mem0_still_has_the_lemmatizer_we_call() -> None:
    spec = importlib.util.find_spec("mem0")  # finds the package without running its __init__
    assert spec is not None and spec.submodule_search_locations
    source = Path(next(iter(spec.submodule_search_locations)), "utils", "lemmatization.py").read_text()
    assert "def lemmatize_for_bm25(text: str) -> str:" in source


def test_serving_never_imports_the_mem0_package() -> None:
    """Without spaCy, search and add never load mem0 (its import costs seconds and writes config.json)."""
    code = (
        "import sys\n"
        "from tablestore_openmemory_mcp import repository\n"
        "from tablestore_openmemory_mcp.app import bootstrap\n"
        "from tablestore_openmemory_mcp.edge import tools\n"
        "from tablestore_openmemory_mcp.stores import row_format\n"
        "row_format.lemmatize('searching for tea')\n"
        "print(sorted(m for m in sys.modules if m == 'mem0' or m.startswith('mem0.')))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    has_spacy = importlib.util.find_spec("spacy") is not None
    assert has_spacy or result.stdout.strip() == "[]", result.stdout


def test_a_missing_mem0_extra_is_one_actionable_line(monkeypatch) -> None:
    from types import SimpleNamespace

    import pytest

    import tablestore_openmemory_mcp.mem0 as ours
    from tablestore_openmemory_mcp.app.bootstrap import StartupError, _mem0_flow
    from tablestore_openmemory_mcp.settings import Settings

    monkeypatch.setattr(ours, "importlib", SimpleNamespace(util=SimpleNamespace(find_spec=lambda name: None)))
    with pytest.raises(ours.Mem0Missing):
        ours.register()
    with pytest.raises(StartupError) as refused:
        _mem0_flow(Settings(_env_file=None, memory_engine="mem0"), None, None)  # type: ignore[arg-type]
    message = str(refused.value)
    assert "\n" not in message and message.startswith("MEMORY_ENGINE=mem0: mem0 is not installed")
    assert "pip install 'tablestore-openmemory-mcp[mem0]'" in message


def test_recent_messages_are_bounded_per_scope_and_in_scopes() -> None:
    from tablestore_openmemory_mcp.mem0.adapters import RecentMessages

    recent = RecentMessages(per_scope=3, scopes=2)
    recent.save([{"role": "user", "content": str(i)} for i in range(5)], "user_id=a")
    assert [m["content"] for m in recent.last("user_id=a")] == ["2", "3", "4"]
    assert [m["content"] for m in recent.last("user_id=a", 2)] == ["3", "4"]
    recent.save([{"role": "user", "content": "b"}], "user_id=b")
    recent.save([{"role": "user", "content": "c"}], "user_id=c")
    assert recent.last("user_id=a") == [] and recent.last("user_id=x") == []  # the oldest scope went first
