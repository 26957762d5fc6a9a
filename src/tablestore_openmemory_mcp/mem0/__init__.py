"""mem0 2.x on our stores: ``from tablestore_openmemory_mcp.mem0 import register; register()``.

``register()`` adds the vector-store providers ``tablestore`` (Alibaba Cloud Tablestore: config keys
``endpoint``, ``instance_name``, ``access_key_id``, ``access_key_secret``, ``table_name``,
``vector_dimension``, as the ``TABLESTORE_*`` variables) and ``openmemory_embedded`` (the server's embedded
store: ``path``, the data directory, and ``vector_dimension``) to mem0's ``VectorStoreFactory``, so a mem0
application configures ``Memory.from_config({"vector_store": {"provider": "tablestore", "config": {...}}})``.

mem0 has no public way to add a provider: it validates names against hard-coded tables. This is the one
module that touches them (:func:`register`); it checks they are there and fails in one line when a mem0
release moves them (a test runs it on the installed mem0).

Nothing here imports mem0 at import time. mem0 is an optional extra (``pip install
'tablestore-openmemory-mcp[mem0]'``); :func:`require_mem0` says so in one line when it is missing.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
import types
from pathlib import Path

from tablestore_openmemory_mcp.errors import Mem0Changed as Mem0Changed
from tablestore_openmemory_mcp.errors import Mem0Missing as Mem0Missing

logger = logging.getLogger(__name__)

PROVIDERS = {
    "tablestore": ("TablestoreVectorStore", "TablestoreConfig"),
    "openmemory_embedded": ("EmbeddedVectorStore", "EmbeddedConfig"),
    "openmemory_instance": ("InstanceVectorStore", "InstanceConfig"),  # the server's own store (internal)
}
SUPPORTED_MEM0 = "mem0ai>=2.2.1,<2.3"
INSTALL_HINT = "pip install 'tablestore-openmemory-mcp[mem0]'"


def require_mem0() -> None:
    """Raise :class:`Mem0Missing` with the install command when mem0 is not importable."""
    if importlib.util.find_spec("mem0") is None:
        raise Mem0Missing(f"mem0 is not installed; install the extra: {INSTALL_HINT} (or uvx --from '...[mem0]')")


def prepare_environment(data_dir: str | Path | None = None, *, telemetry: bool = False) -> None:
    """Before mem0 is imported: keep its files (``MEM0_DIR``) in our data directory and its telemetry off.

    Importing mem0 writes ``$MEM0_DIR/config.json`` and, with telemetry on, sends usage events; both are
    decided at import time, so this must run first. Variables the user set are kept."""
    if "mem0" in sys.modules:
        if not telemetry and os.environ.get("MEM0_TELEMETRY", "True").lower() not in ("false", "0", "no"):
            logger.warning("mem0 was imported before register(): set MEM0_TELEMETRY=False yourself to keep it off")
        return
    from tablestore_openmemory_mcp.settings import default_data_dir

    base = Path(data_dir) if data_dir is not None else default_data_dir()
    mem0_dir = base.expanduser() / "mem0"
    os.environ.setdefault("MEM0_TELEMETRY", "True" if telemetry else "False")
    if "MEM0_DIR" not in os.environ:
        mem0_dir.mkdir(parents=True, exist_ok=True)
        os.environ["MEM0_DIR"] = str(mem0_dir)


def register(data_dir: str | Path | None = None) -> None:
    """Add our providers to mem0's factory (idempotent). Call it before ``Memory.from_config``."""
    require_mem0()
    prepare_environment(data_dir)
    from mem0.utils.factory import VectorStoreFactory
    from mem0.vector_stores.base import VectorStoreBase
    from mem0.vector_stores.configs import VectorStoreConfig

    from . import configs
    from .vector_store import StoreVectorStore

    table = getattr(VectorStoreFactory, "provider_to_class", None)
    private = getattr(VectorStoreConfig, "__private_attributes__", {}).get("_provider_configs")
    names = getattr(private, "default", None)
    if not isinstance(table, dict) or not isinstance(names, dict):
        raise Mem0Changed(
            "this mem0 release has no VectorStoreFactory.provider_to_class / VectorStoreConfig._provider_configs; "
            f"install {SUPPORTED_MEM0}"
        )
    for provider, (class_name, config_name) in PROVIDERS.items():
        table[provider] = f"{__name__}.providers.{class_name}"
        names[provider] = config_name
        # mem0 imports the config class from mem0.configs.vector_stores.<provider>
        module = types.ModuleType(f"mem0.configs.vector_stores.{provider}")
        setattr(module, config_name, getattr(configs, config_name))
        sys.modules[module.__name__] = module
    VectorStoreBase.register(StoreVectorStore)


__all__ = ["Mem0Changed", "Mem0Missing", "prepare_environment", "register", "require_mem0"]
