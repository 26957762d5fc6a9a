"""The memory domain: ports (what the flow needs), the classic flow (pure), scoring, and the async service."""
