"""Categories for memories, assigned in the background by the configured LLM (never on the write path).

OpenMemory categorized every memory synchronously with a hard-coded OpenAI model, so every write waited
for it and failed without that provider. Here a memory that was added or changed is queued; one
background thread asks the configured LLM (DashScope/Qwen or any OpenAI-compatible model) for one to
three short categories *in the memory's language*, reusing the user's existing categories where they
fit, and stores them only if the memory is unchanged since it was read. No LLM, no categories. A full
queue drops work (logged) rather than growing: categories are a convenience, never worth memory.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
from collections.abc import Sequence
from dataclasses import replace
from typing import Protocol

from tablestore_openmemory_mcp.errors import ConflictError, MemoryNotFound, MemoryServerError
from tablestore_openmemory_mcp.memory.ports import ChatModel, StoredMemory
from tablestore_openmemory_mcp.scope import Scope

logger = logging.getLogger(__name__)

MAX_CATEGORIES = 3
MAX_CATEGORY_CHARS = 40
PROMPT = """You file a user's long-term memories under short topic categories.
Give 1 to 3 categories for the memory below, each one to three words, lower case where the script has case,
in the SAME LANGUAGE as the memory (a Chinese memory gets Chinese categories). Reuse one of the user's
existing categories when it fits: {existing}.
Answer with a JSON object only: {{"categories": ["...", "..."]}}"""


def clean_categories(raw: object) -> tuple[str, ...]:
    """The model's answer as at most three short, distinct category names."""
    items = raw.get("categories", []) if isinstance(raw, dict) else raw
    if isinstance(items, str):
        items = [items]
    out: list[str] = []
    for item in items if isinstance(items, list) else []:
        if isinstance(item, str):
            name = " ".join(item.split())[:MAX_CATEGORY_CHARS].strip()
            if name and name not in out:
                out.append(name)
    return tuple(out[:MAX_CATEGORIES])


class CategoryStore(Protocol):
    """What categorizing needs of the repository: read a memory, the user's categories, and a conditional write
    (``ConflictError`` when the memory changed since it was read)."""

    def get(self, scope: Scope, memory_id: str) -> StoredMemory | None: ...

    def known_categories(self, scope: Scope) -> set[str]: ...

    def set_categories(self, scope: Scope, memory: StoredMemory) -> None: ...


class Categorizer:
    """A background worker that categorizes memories after they were written."""

    def __init__(self, llm: ChatModel, repository: CategoryStore, *, max_queue: int = 1000) -> None:
        self.llm = llm
        self.repository = repository
        self._queue: queue.Queue[tuple[Scope, str] | None] = queue.Queue(max_queue)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.done = 0

    def submit(self, scope: Scope, memory_ids: Sequence[str]) -> None:
        """Queue memories for categorization; returns at once."""
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="categories", daemon=True)
                self._thread.start()
        for memory_id in memory_ids:
            try:
                self._queue.put_nowait((scope, memory_id))
            except queue.Full:
                logger.warning("categorization queue full; memory %s stays uncategorized", memory_id)

    def join(self) -> None:
        """Wait until everything queued so far is done (tests, shutdown)."""
        self._queue.join()

    def close(self) -> None:
        if self._thread is not None:
            self._queue.put(None)

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                self.categorize(*item)
            except Exception:
                logger.warning("categorizing a memory failed", exc_info=True)
            finally:
                self._queue.task_done()

    def categorize(self, scope: Scope, memory_id: str) -> tuple[str, ...] | None:
        repository = self.repository
        memory = repository.get(scope, memory_id)
        if memory is None or memory.state == "deleted":
            return None
        existing = repository.known_categories(scope)
        shown = json.dumps(sorted(existing)[:50], ensure_ascii=False) if existing else "none yet"
        try:
            reply = self.llm.complete_json(
                [
                    {"role": "system", "content": PROMPT.format(existing=shown)},
                    {"role": "user", "content": f"Memory: {memory.text}\n\nReturn the categories as JSON."},
                ]
            )
        except MemoryServerError as exc:
            logger.info("no categories for memory %s: %s", memory_id, exc)
            return None
        categories = clean_categories(reply)
        if not categories or categories == memory.categories:
            return categories
        try:
            repository.set_categories(scope, replace(memory, categories=categories))
        except (ConflictError, MemoryNotFound):
            return None  # changed meanwhile: its new version is (or will be) categorized on its own
        self.done += 1
        return categories
