"""Shared fixtures: the fake OpenAI server, the Tablestore emulator, and ``tablestore_target`` (the emulator, or a
real instance in live mode: tests/tablestore_target.py), each started per test.

mem0 writes ``$MEM0_DIR/config.json`` when imported; tests that import store modules directly must not
touch the developer's home, so MEM0_DIR points at a throw-away directory before anything imports mem0.
"""

import os
import tempfile

os.environ["MEM0_DIR"] = tempfile.mkdtemp(prefix="mem0-tests-")
os.environ["MEM0_TELEMETRY"] = "False"

import pytest
from hypothesis import settings as hypothesis_settings

from tests.fakes.openai_fixture import fake_dashscope, fake_openai
from tests.fakes.tablestore_fixture import tablestore_emulator
from tests.tablestore_target import tablestore_target

__all__ = ["anyio_backend", "fake_dashscope", "fake_openai", "tablestore_emulator", "tablestore_target"]

# Seeded randomness only: property tests draw the same examples on every run and machine (a failure reproduces).
hypothesis_settings.register_profile("seeded", derandomize=True)
hypothesis_settings.load_profile("seeded")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
