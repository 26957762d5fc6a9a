"""Scripted and random fault injection per API, so tests can exercise client retry paths."""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass

from .errors import STATUS_BY_CODE

OTS_FAULTS = (
    "OTSServerBusy",
    "OTSTimeout",
    "OTSOperationThrottled",
    "OTSNotEnoughCapacityUnit",
    "OTSInternalServerError",
    "OTSServerUnavailable",
    "OTSPartitionUnavailable",
    "OTSRowOperationConflict",
)
TRANSPORT_FAULTS = ("http500", "http502", "http503", "hang", "drop")
#: Suffix for a fault that strikes after the request was applied (``"drop" + AFTER``): the caller cannot
#: tell whether its write happened, the case retries must be idempotent for.
AFTER = "_after"
ALL_FAULTS = OTS_FAULTS + TRANSPORT_FAULTS


@dataclass
class FaultRule:
    api: str
    kind: str
    remaining: int | None  # None = no count limit
    rate: float | None
    rng: random.Random


class FaultInjector:
    """Rules are checked in insertion order; the first that fires decides the request's fate."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: list[FaultRule] = []

    def inject(
        self,
        api: str,
        kind: str,
        *,
        times: int | None = None,
        rate: float | None = None,
        seed: int = 0,  # seeded randomness only: a rate draws the same faults on every run
    ) -> None:
        base = kind.removesuffix(AFTER)
        if base not in ALL_FAULTS and base not in STATUS_BY_CODE:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {ALL_FAULTS}")
        if rate is not None and not 0.0 <= rate <= 1.0:
            raise ValueError("rate must be within [0, 1]")
        if times is None and rate is None:
            times = 1
        with self._lock:
            self._rules.append(FaultRule(api, kind, times, rate, random.Random(seed)))

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def pick(self, api: str) -> str | None:
        with self._lock:
            for rule in self._rules:
                if rule.api not in ("*", api):
                    continue
                if rule.rate is not None and rule.rng.random() >= rule.rate:
                    continue
                if rule.remaining is not None:
                    rule.remaining -= 1
                    if rule.remaining <= 0:
                        self._rules.remove(rule)
                return rule.kind
        return None
