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
