"""Shared fixtures: the fake OpenAI server and the Tablestore emulator, each started per test."""

import pytest

from tests.fakes.openai_fixture import fake_dashscope, fake_openai
from tests.fakes.tablestore_fixture import tablestore_emulator

__all__ = ["anyio_backend", "fake_dashscope", "fake_openai", "tablestore_emulator"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
