"""Progress of an ``add_memories`` with inference, sent to an MCP client that asked for it (a progress token).

The flow runs in a worker thread; :func:`tool_reporter` gives it a plain callback that hops back to the event
loop to send ``notifications/progress``. The SDK sends nothing when the client passed no token, and a failure to
send (the client went away) never fails the add.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import anyio.from_thread

logger = logging.getLogger(__name__)

#: (step, message): extraction 1, decision 2, writes 3 of :data:`ADD_STEPS`; the tool reports the last step.
Report = Callable[[int, str], None]
ADD_STEPS = 4


def tool_reporter(ctx: Any) -> Report:
    """A thread-side callback sending progress for the tool call ``ctx`` belongs to."""

    def report(step: int, message: str) -> None:
        try:
            anyio.from_thread.run(ctx.report_progress, step, ADD_STEPS, message)
        except Exception as exc:  # the client went away, or the loop is closing: the add goes on
            logger.debug("progress not sent: %s", exc)

    return report


#: Seconds between two progress lines of a long job in the log.
LOG_INTERVAL = 10.0


class LogProgress:
    """Progress of a long job (import, export, reembed, migrate) as log lines: ``label: done/total (pct%)`` at
    most once per :data:`LOG_INTERVAL`, and one closing line with the final count. For servers and for commands
    whose stderr is not a terminal (where a redrawn bar would be noise)."""

    def __init__(
        self,
        label: str,
        write: Callable[[str], None] | None = None,
        interval: float = LOG_INTERVAL,
        clock: Callable[[], float] | None = None,
    ) -> None:
        import time

        self.label = label
        self.write = write or logger.info
        self.interval = interval
        self.clock = clock or time.monotonic
        self.total: int | None = None
        self.done = 0
        self._last = self.clock()

    def __call__(self, done: int, total: int | None = None) -> None:
        self.done = done
        self.total = total if total is not None else self.total
        now = self.clock()
        if now - self._last >= self.interval:
            self._last = now
            self.write(f"{self.label}: {self._count()}")

    def close(self) -> None:
        self.write(f"{self.label}: finished, {self._count()}")

    def _count(self) -> str:
        if self.total:
            return f"{self.done}/{self.total} ({100 * self.done // max(self.total, 1)}%)"
        return str(self.done)
