"""Headless Chromium for end-to-end tests of the web page: Debian's ``chromium`` driven by Playwright.

Playwright never downloads a browser here (``playwright install`` is not used): it starts the system Chromium
(``CHROMIUM_PATH``, else ``chromium`` on PATH). scripts/test installs Debian's package when it runs as root; where
no browser can be had, the tests that need one skip with a message saying how to get it.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

#: The closed network of CI machines refuses Chromium's background connections; these flags stop it trying.
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
#: Where screenshots go (ignored by git); TEST_OUTPUT_DIR overrides.
OUTPUT_DIR = Path(os.environ.get("TEST_OUTPUT_DIR", Path(__file__).resolve().parent.parent / "test-output")) / "web"
#: Playwright waits this long for the page to react on a busy 2-core machine.
UI_TIMEOUT_MS = 60_000


def chromium_path() -> str | None:
    configured = os.environ.get("CHROMIUM_PATH")
    if configured:
        return configured
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


@asynccontextmanager
async def launch() -> AsyncIterator[Any]:
    """A headless Chromium, closed on exit even when the test fails; skips when there is none."""
    api = pytest.importorskip("playwright.async_api", reason="playwright is not installed (pip install -e .[test])")
    path = chromium_path()
    if path is None:
        pytest.skip("no Chromium: install Debian's chromium (scripts/test does it as root) or set CHROMIUM_PATH")
    async with api.async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=path, headless=True, args=CHROMIUM_FLAGS)
        try:
            yield browser
        finally:
            await browser.close()


class ConsoleWatch:
    """Every uncaught exception and console error of a page, to assert there were none."""

    #: Chromium logs a failed HTTP answer as a console error; the tests provoke these on purpose (a bad token).
    EXPECTED = ("Failed to load resource: the server responded with a status of 401",)

    def __init__(self, page: Any) -> None:
        self.expected = list(self.EXPECTED)
        self.seen: list[str] = []
        page.on("pageerror", lambda error: self.seen.append(f"uncaught: {error}"))
        page.on("console", lambda message: self.seen.append(message.text) if message.type == "error" else None)

    @property
    def errors(self) -> list[str]:
        """What went wrong, less the failed requests a test provoked on purpose (``expected``)."""
        return [text for text in self.seen if not text.startswith(tuple(self.expected))]


async def shot(page: Any, name: str) -> Path:
    OUTPUT_DIR.mkdir(parents=True, exist_ok=True)
    path = OUTPUT_DIR / f"{name}.png"
    await page.screenshot(path=str(path), full_page=True)
    return path


async def eventually(check: Callable[[], Awaitable[Any]], what: str, timeout: float = 60.0) -> Any:
    """Poll an async condition until it holds (a condition wait with a deadline, not a sleep)."""
    import anyio

    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await anyio.sleep(0.1)
