"""The memory service as the server wires it, for unit tests of the modules behind it (no HTTP, no process).

Why through the wiring: tests of the repository, the owner's view, categories and the audit log should not know
how the store is opened (that is being refactored); ``bootstrap.build_components`` builds what the server
runs, on the embedded store in ``tmp_path`` with the offline embedder, and the scripted in-process LLM when given.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tablestore_openmemory_mcp.app.bootstrap import Components, build_components
from tablestore_openmemory_mcp.memory.ports import NewMemory, Origin, StoredMemory
from tablestore_openmemory_mcp.scope import Scope
from tests.fakes.inprocess_llm import InProcessLLM
from tests.inprocess import server_settings


@contextmanager
def built(tmp_path: Path, *, llm: InProcessLLM | None = None, **env: Any) -> Iterator[Components]:
    """Components as ``build_components`` makes them from a server's environment ``env``; closed on exit."""
    with server_settings(tmp_path, llm=llm, **env) as settings:
        components = build_components(settings)
        try:
            yield components
        finally:
            components.service.close()


def fresh_scope(client: str = "cline") -> Scope:
    """A scope of a user no other test uses (module-wide services stay isolated per test)."""
    return Scope(client, f"user-{uuid.uuid4().hex[:12]}")


def add_texts(components: Components, scope: Scope, *texts: str, source: str = "mcp") -> list[StoredMemory]:
    """Store ``texts`` through the repository as the flow would, embedded with the wired embedder."""
    embedder = components.service.flow.embedder
    items = [NewMemory(text, embedder.embed(text, "add")) for text in texts]
    added = components.service.repository.add(scope, items, Origin(source=source))  # type: ignore[arg-type]
    return [outcome.memory for outcome in added]
