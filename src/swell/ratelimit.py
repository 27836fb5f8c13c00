"""Cost-based rate limiting over an exact rolling window.

The DSAR API gives each org a budget of cost per rolling hour (POST costs 8, GET costs 1). Every
charge is kept as ``(time, cost)`` in the metadata store (swell.backends.base.BudgetStore), so the
budget survives a restart and every process sharing the store enforces the same one. A charge is
allowed exactly when the charges of the last ``window`` seconds plus it fit the budget;
:func:`decide` is that arithmetic, and each backend applies it inside one transaction, so
concurrent requests never overspend.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from swell.errors import RateLimited
from swell.model import Charge

if TYPE_CHECKING:
    from swell.backends.base import BudgetStore


def utcnow() -> datetime:
    return datetime.now(UTC)


def decide(
    charges: Sequence[tuple[float, int]], cost: int, budget: int, window: float, now: float
) -> Charge:
    """Whether ``cost`` fits beside ``charges`` ((epoch seconds, cost), oldest first; older ones
    than ``now - window`` are ignored), and when it would if it does not."""
    live = [(at, spent) for at, spent in charges if at > now - window]
    total = sum(spent for _, spent in live)
    if total + cost <= budget:
        return Charge(True, budget - total - cost, 0)
    if cost > budget:
        return Charge(False, budget - total, math.ceil(window))
    excess = total + cost - budget
    freed = 0
    for at, spent in live:
        freed += spent
        if freed >= excess:
            return Charge(False, budget - total, max(1, math.ceil(at + window - now)))
    return Charge(False, budget - total, math.ceil(window))  # pragma: no cover - sum of live


class CostLimiter:
    """A budget of ``budget`` cost per ``window_seconds`` for each key (e.g. an org id)."""

    def __init__(
        self,
        store: BudgetStore,
        budget: int,
        *,
        window_seconds: float = 3600.0,
        clock: Callable[[], datetime] = utcnow,
        what: str = "DSAR",
    ) -> None:
        self.store = store
        self.budget = budget
        self.window = window_seconds
        self._clock = clock
        self._what = what

    async def charge(self, key: object, cost: int) -> int:
        """Spend ``cost`` of ``key``'s budget; returns what is left in the current window.

        Raises:
            RateLimited: the charge does not fit; nothing is spent. ``retry_after`` is the whole
                number of seconds until enough earlier charges have left the window.
        """
        charge = await self.store.charge_budget(
            f"{self._what.lower()}:{key}", cost, self.budget, self.window, self._clock()
        )
        if not charge.allowed:
            raise RateLimited(
                f"{self._what} rate limit exceeded: {self.budget} cost per "
                f"{self.window:g} seconds (this request costs {cost})",
                retry_after=charge.retry_after,
            )
        return charge.remaining

    async def remaining(self, key: object) -> int:
        """The budget ``key`` has left right now (nothing is spent)."""
        return await self.charge(key, 0)
