"""The scan lowers its own concurrency when DNS tries time out, and raises it back."""

from __future__ import annotations

from dataclasses import dataclass

from scanner.scan import LoadGovernor


@dataclass
class Load:
    queries: int = 0
    timeouts: int = 0


def feed(governor: LoadGovernor, load: Load, tries: int, lost: int) -> None:
    load.queries += tries
    load.timeouts += lost
    governor.observe(load)


def test_timeouts_halve_the_domains_in_flight_down_to_the_floor() -> None:
    governor, load = LoadGovernor(200), Load()
    feed(governor, load, 400, 40)  # 10 % of tries lost
    assert governor.limiter.total_tokens == 100
    for _ in range(10):
        feed(governor, load, 400, 40)
    assert governor.limiter.total_tokens == governor.floor == 20
    assert (governor.lowered, governor.lowest) == (4, 20)


def test_a_clean_window_raises_it_back_to_the_ceiling() -> None:
    governor, load = LoadGovernor(100), Load()
    feed(governor, load, 400, 100)
    assert governor.limiter.total_tokens == 50
    for _ in range(10):
        feed(governor, load, 400, 0)
    assert governor.limiter.total_tokens == 100


def test_small_windows_and_moderate_loss_change_nothing() -> None:
    governor, load = LoadGovernor(100), Load()
    feed(governor, load, 399, 0)  # not a full window yet
    assert governor.limiter.total_tokens == 100
    feed(governor, load, 400, 8)  # 1 %: between LOW and HIGH over the window
    feed(governor, load, 400, 8)
    assert governor.limiter.total_tokens == 100
    assert governor.lowered == 0
