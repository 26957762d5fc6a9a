"""What one ``reembed`` run did, as the one-line summary the command prints."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ReembedSummary:
    """Counts of one run; ``state`` is ``switched``, ``already``, ``dry-run`` or ``empty``."""

    store: str
    embedder: str
    dimension: int
    total: int = 0
    embedded: int = 0
    reused: int = 0
    state: str = "switched"
    note: str = ""

    def line(self) -> str:
        target = f"{self.embedder} ({self.dimension} dimensions)"
        if self.state == "already":
            return f"{self.store} already uses {target}: nothing to re-embed{self.note}"
        if self.state == "empty":
            return f"{self.store}: no memories; now uses {target}{self.note}"
        counts = f"{self.total} memories, {self.embedded} embedded now, {self.reused} from an earlier run"
        if self.state == "dry-run":
            return f"dry run, nothing written: {self.store} would be re-embedded with {target}: {counts}{self.note}"
        return f"{self.store} re-embedded with {target}: {counts}; switched{self.note}"
