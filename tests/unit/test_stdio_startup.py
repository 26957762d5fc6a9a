"""The stdio startup gate in process: a failed startup becomes one tool error with the reason."""

from __future__ import annotations

import threading

import anyio
import pytest
from mcp.server.mcpserver.exceptions import ToolError

from tablestore_openmemory_mcp.app.bootstrap import StartupError
from tablestore_openmemory_mcp.app.stdio_startup import StartupGate, startup_message

pytestmark = pytest.mark.anyio


class FailingHandle:
    """Fails once ``fail`` is set, like ServiceHandle after its background build raised."""

    def __init__(self, error: BaseException) -> None:
        self.error = error
        self.fail = threading.Event()

    def wait(self) -> None:
        self.fail.wait()
        raise self.error

    async def get(self) -> None:
        await anyio.to_thread.run_sync(self.wait)


def test_startup_message_is_one_line():
    assert startup_message(StartupError("bad dimension")) == "bad dimension"
    assert startup_message(OSError("disk full\nmore detail")) == "OSError: disk full"
    assert startup_message(RuntimeError()) == "RuntimeError"


async def test_waiting_calls_get_the_reason_and_the_exit_waits_for_them():
    handle = FailingHandle(StartupError("cannot open the memory store: unreachable"))
    gate = StartupGate(handle)  # type: ignore[arg-type]
    answers: list[str] = []

    async def call() -> None:
        with pytest.raises(ToolError) as caught:
            await gate.get()
        answers.append(str(caught.value))

    async with anyio.create_task_group() as group:
        for _ in range(3):
            group.start_soon(call)
        await anyio.wait_all_tasks_blocked()
        handle.fail.set()
    assert answers == ["the memory server could not start: cannot open the memory store: unreachable"] * 3
    gate.serving.set()
    await anyio.to_thread.run_sync(gate.wait_until_answered, 5.0)  # returns: nobody is waiting any more
