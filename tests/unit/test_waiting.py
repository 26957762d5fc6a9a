"""tests/waiting.py, the one condition wait: first truthy value, a failure that says what never happened."""

from __future__ import annotations

import itertools

import pytest

from tests.waiting import until, wait_for


def test_returns_the_first_truthy_value() -> None:
    values = iter([0, None, [], "ready"])
    assert wait_for(lambda: next(values), "a value") == "ready"


def test_a_condition_that_never_holds_fails_naming_it_and_the_last_value() -> None:
    counter = itertools.count()
    with pytest.raises(AssertionError, match=r"waiting for the counter to be negative; last value: False"):
        wait_for(lambda: next(counter) < 0, "the counter to be negative", timeout=0.05)


def test_listed_exceptions_mean_not_yet_and_others_propagate() -> None:
    attempts = iter([ConnectionError("refused"), ConnectionError("refused"), "up"])

    def probe() -> str:
        item = next(attempts)
        if isinstance(item, Exception):
            raise item
        return item

    assert wait_for(probe, "the service", ignore=(ConnectionError,)) == "up"
    with pytest.raises(AssertionError, match="last error: ConnectionError"):
        wait_for(lambda: (_ for _ in ()).throw(ConnectionError("down")), "x", timeout=0.05, ignore=(ConnectionError,))
    with pytest.raises(KeyError):
        wait_for(lambda: {}["missing"], "a key")


@pytest.mark.anyio
async def test_until_waits_on_the_event_loop() -> None:
    values = iter([False, False, 42])

    async def condition() -> int | bool:
        return next(values)

    assert await until(condition, "the answer") == 42
    with pytest.raises(AssertionError, match="waiting for nothing"):
        await until(_never, "nothing", timeout=0.05)


async def _never() -> bool:
    return False
