"""The cost limiter: an exact rolling-window budget per key, kept in the metadata store, atomic
under concurrency, over every metadata backend."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from swell.backends.base import Metadata
from swell.backends.memory import MemoryMetadata
from swell.backends.postgres import PostgresMetadata
from swell.backends.sqlite import SQLiteMetadata
from swell.errors import RateLimited
from swell.ratelimit import CostLimiter, decide
from tests.conftest import FakeClock

T0 = datetime(2024, 1, 1, tzinfo=UTC)


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def meta(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Metadata]:
    store: Metadata = (
        MemoryMetadata()
        if request.param == "memory"
        else PostgresMetadata(request.getfixturevalue("pg_url"))
        if request.param == "postgres"
        else SQLiteMetadata(tmp_path / "meta.db")
    )
    yield store
    await store.aclose()


async def test_charges_up_to_the_budget_exactly(meta):
    limiter = CostLimiter(meta, 20, clock=FakeClock(T0))
    assert await limiter.charge("org", 8) == 12
    assert await limiter.charge("org", 8) == 4
    for left in (3, 2, 1, 0):
        assert await limiter.charge("org", 1) == left
    with pytest.raises(RateLimited):
        await limiter.charge("org", 1)
    assert await limiter.remaining("org") == 0


async def test_a_refused_charge_spends_nothing(meta):
    limiter = CostLimiter(meta, 10, clock=FakeClock(T0))
    await limiter.charge("org", 5)
    with pytest.raises(RateLimited):
        await limiter.charge("org", 8)
    assert await limiter.charge("org", 5) == 0


async def test_the_window_rolls_and_retry_after_says_when(meta):
    clock = FakeClock(T0)
    limiter = CostLimiter(meta, 10, window_seconds=3600, clock=clock)
    await limiter.charge("org", 4)  # t=0
    clock.advance(seconds=600)
    await limiter.charge("org", 6)  # t=600
    clock.advance(seconds=600)  # t=1200
    with pytest.raises(RateLimited) as caught:
        await limiter.charge("org", 1)
    assert caught.value.retry_after == 2400  # the t=0 charge leaves at t=3600
    with pytest.raises(RateLimited) as caught:
        await limiter.charge("org", 5)
    assert caught.value.retry_after == 3000  # both must leave: t=4200
    clock.advance(seconds=2400)
    assert await limiter.charge("org", 4) == 0
    clock.advance(seconds=599.5)
    with pytest.raises(RateLimited) as caught:
        await limiter.charge("org", 1)
    assert caught.value.retry_after == 1  # rounded up, never 0
    clock.advance(seconds=0.5)
    assert await limiter.charge("org", 6) == 0


async def test_a_cost_above_the_budget_never_fits(meta):
    limiter = CostLimiter(meta, 5, clock=FakeClock(T0))
    with pytest.raises(RateLimited) as caught:
        await limiter.charge("org", 6)
    assert caught.value.retry_after == 3600


async def test_keys_have_separate_budgets(meta):
    limiter = CostLimiter(meta, 8, clock=FakeClock(T0))
    await limiter.charge(1, 8)
    assert await limiter.charge(2, 8) == 0
    with pytest.raises(RateLimited):
        await limiter.charge(1, 1)


async def test_concurrent_charges_never_overspend(meta):
    limiter = CostLimiter(meta, 100, clock=FakeClock(T0))
    allowed = 0

    async def request(cost: int) -> None:
        nonlocal allowed
        await asyncio.sleep(0)  # interleave, as request handlers do
        try:
            await limiter.charge("org", cost)
        except RateLimited:
            return
        allowed += cost

    await asyncio.gather(*(request(8 if i % 5 == 0 else 1) for i in range(300)))
    assert allowed == 100
    assert await limiter.remaining("org") == 0


async def test_the_budget_survives_reopening_the_store(tmp_path: Path):
    clock = FakeClock(T0)
    first = SQLiteMetadata(tmp_path / "meta.db")
    await CostLimiter(first, 20, clock=clock).charge("org", 16)
    await first.aclose()
    reopened = SQLiteMetadata(tmp_path / "meta.db")
    try:
        limiter = CostLimiter(reopened, 20, clock=clock)
        assert await limiter.remaining("org") == 4
        with pytest.raises(RateLimited):
            await limiter.charge("org", 8)
    finally:
        await reopened.aclose()


@given(st.lists(st.tuples(st.integers(0, 5000), st.integers(1, 20)), max_size=60))
def test_decide_holds_the_budget_over_every_window(steps):
    now = 0.0
    charges: list[tuple[float, int]] = []
    for gap, cost in steps:
        now += gap
        in_window = sum(c for t, c in charges if t > now - 3600)
        charge = decide(charges, cost, 50, 3600, now)
        assert charge.allowed == (in_window + cost <= 50)
        if charge.allowed:
            charges.append((now, cost))
            assert charge.remaining == 50 - in_window - cost
        else:
            assert charge.retry_after >= 1
            later = now + charge.retry_after
            assert decide(charges, cost, 50, 3600, later).allowed or cost > 50
