"""The cost limiter: an exact rolling-window budget per key, atomic under concurrency."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, strategies as st

from swell.errors import RateLimited
from swell.ratelimit import CostLimiter
from tests.conftest import FakeClock

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def test_charges_up_to_the_budget_exactly():
    limiter = CostLimiter(20, clock=FakeClock(T0))
    assert limiter.charge("org", 8) == 12
    assert limiter.charge("org", 8) == 4
    for left in (3, 2, 1, 0):
        assert limiter.charge("org", 1) == left
    with pytest.raises(RateLimited):
        limiter.charge("org", 1)
    assert limiter.remaining("org") == 0


def test_a_refused_charge_spends_nothing():
    limiter = CostLimiter(10, clock=FakeClock(T0))
    limiter.charge("org", 5)
    with pytest.raises(RateLimited):
        limiter.charge("org", 8)
    assert limiter.charge("org", 5) == 0


def test_the_window_rolls_and_retry_after_says_when():
    clock = FakeClock(T0)
    limiter = CostLimiter(10, window_seconds=3600, clock=clock)
    limiter.charge("org", 4)  # t=0
    clock.advance(seconds=600)
    limiter.charge("org", 6)  # t=600
    clock.advance(seconds=600)  # t=1200
    with pytest.raises(RateLimited) as caught:
        limiter.charge("org", 1)
    assert caught.value.retry_after == 2400  # the t=0 charge leaves at t=3600
    with pytest.raises(RateLimited) as caught:
        limiter.charge("org", 5)
    assert caught.value.retry_after == 3000  # both must leave: t=4200
    clock.advance(seconds=2400)
    assert limiter.charge("org", 4) == 0
    clock.advance(seconds=599.5)
    with pytest.raises(RateLimited) as caught:
        limiter.charge("org", 1)
    assert caught.value.retry_after == 1  # rounded up, never 0
    clock.advance(seconds=0.5)
    assert limiter.charge("org", 6) == 0


def test_a_cost_above_the_budget_never_fits():
    limiter = CostLimiter(5, clock=FakeClock(T0))
    with pytest.raises(RateLimited) as caught:
        limiter.charge("org", 6)
    assert caught.value.retry_after == 3600


def test_keys_have_separate_budgets():
    limiter = CostLimiter(8, clock=FakeClock(T0))
    limiter.charge(1, 8)
    assert limiter.charge(2, 8) == 0
    with pytest.raises(RateLimited):
        limiter.charge(1, 1)


async def test_concurrent_charges_never_overspend():
    limiter = CostLimiter(100, clock=FakeClock(T0))
    allowed = 0

    async def request(cost: int) -> None:
        nonlocal allowed
        await asyncio.sleep(0)  # interleave, as request handlers do
        try:
            limiter.charge("org", cost)
        except RateLimited:
            return
        allowed += cost

    await asyncio.gather(*(request(8 if i % 5 == 0 else 1) for i in range(300)))
    assert allowed == 100
    assert limiter.remaining("org") == 0


@given(st.lists(st.tuples(st.integers(0, 5000), st.integers(1, 20)), max_size=60))
def test_the_budget_holds_over_every_window(steps):
    clock = FakeClock(T0)
    limiter = CostLimiter(50, window_seconds=3600, clock=clock)
    spent: list[tuple[datetime, int]] = []
    for gap, cost in steps:
        clock.advance(seconds=gap)
        in_window = sum(c for t, c in spent if t > clock.now - timedelta(seconds=3600))
        fits = in_window + cost <= 50
        if fits:
            limiter.charge("org", cost)
            spent.append((clock.now, cost))
        else:
            with pytest.raises(RateLimited) as caught:
                limiter.charge("org", cost)
            assert caught.value.retry_after >= 1
