"""In stdio mode, a startup failure answers the tool calls that wait for the service before the process exits.

The stdio handshake is answered at once while the service (store, embedder, mem0) is built in the
background. If that build fails (store unreachable, bad dimension...), simply exiting would drop the
connection and the client would show "Connection closed". Instead the exit waits until the stdio
server is up and has read what the client already sent (the handshake is answered, each waiting tool
call gets a tool error with the reason), then exits with code 1.

The SDK offers no hook for "this frame was written", so the two waits for reading and writing are short
bounded grace periods; the wait for the calls themselves is a condition.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tablestore_openmemory_mcp.app.bootstrap import ServiceHandle
    from tablestore_openmemory_mcp.memory.service import MemoryService

#: How long the exit waits for calls that are still being answered, and then for their frames to be written.
ANSWER_DEADLINE = 5.0
READ_GRACE = 1.0
WRITE_GRACE = 0.5


def startup_message(exc: BaseException) -> str:
    """One line: our StartupError's message as is, anything else with its type."""
    from tablestore_openmemory_mcp.errors import StartupError

    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, StartupError):
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class StartupGate:
    """Wraps the service handle for the tools: counts callers waiting for it and words a failure for them."""

    def __init__(self, handle: ServiceHandle) -> None:
        self.handle = handle
        self._waiting = 0
        self._callers = 0  # calls that ever asked for the service
        self._changed = threading.Condition()
        self.serving = threading.Event()  # set by the CLI when the stdio server starts reading

    async def get(self) -> MemoryService:
        """The service; on a startup failure, a ToolError with the reason (no traceback, no other prefix)."""
        from mcp.server.mcpserver.exceptions import ToolError

        with self._changed:
            self._waiting += 1
            self._callers += 1
        try:
            return await self.handle.get()
        except Exception as exc:
            raise ToolError(f"the memory server could not start: {startup_message(exc)}") from None
        finally:
            with self._changed:
                self._waiting -= 1
                self._changed.notify_all()

    def wait_until_answered(self, deadline: float = ANSWER_DEADLINE) -> None:
        """After a failure: return once no call waits for the service (bounded), leaving time to write answers."""
        end = time.monotonic() + deadline
        if self.serving.wait(timeout=deadline):
            time.sleep(READ_GRACE)  # the client's first frames (handshake, a call) are read and dispatched
        with self._changed:
            self._changed.wait_for(lambda: self._waiting == 0, timeout=max(0.0, end - time.monotonic()))
            answered = self._callers > 0
        if answered:
            time.sleep(WRITE_GRACE)  # the SDK writes the error frames from its event loop; no hook tells us when
