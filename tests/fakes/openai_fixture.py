"""pytest fixtures for the fake OpenAI server.

Why a separate module: test modules (or a conftest) opt in with
``from tests.fakes.openai_fixture import fake_openai`` or ``pytest_plugins``, so the server only starts
for tests that ask for it, and each test gets a fresh one (no script or count leaks between tests).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fakes.openai_server import FakeOpenAI


@pytest.fixture
def fake_openai(request: pytest.FixtureRequest) -> Iterator[FakeOpenAI]:
    """A started FakeOpenAI; ``indirect=True`` parametrisation may pass constructor kwargs as a dict."""
    kwargs = getattr(request, "param", None) or {}
    fake = FakeOpenAI(**kwargs).start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def fake_dashscope() -> Iterator[FakeOpenAI]:
    """A started FakeOpenAI in DashScope strict mode."""
    fake = FakeOpenAI(dashscope=True).start()
    try:
        yield fake
    finally:
        fake.stop()
