"""Logging to stderr only: in stdio mode stdout carries nothing but protocol frames."""

from __future__ import annotations

import logging
import sys


def configure(level: str) -> None:
    """Send every log record (ours, mem0's, the SDKs') to stderr at ``level``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("httpx", "httpcore", "urllib3", "mcp.server.lowlevel.server", "sse_starlette"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))
