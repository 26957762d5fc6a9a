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
    quieter = max(logging.WARNING, logging.getLevelName(level))
    # httpx2: the HTTP client of mcp 2.x and openai 3.x (one INFO line per LLM or embedding request)
    for noisy in (
        "httpx",
        "httpx2",
        "httpcore",
        "urllib3",
        "mcp.server.lowlevel.server",
        "sse_starlette",
        "tablestore",
    ):
        logging.getLogger(noisy).setLevel(quieter)
    # mem0 logs memory texts at INFO (private data) and warns on every start that spaCy is absent.
    logging.getLogger("mem0").setLevel(quieter)
    logging.getLogger("mem0.utils.spacy_models").setLevel(logging.ERROR)
