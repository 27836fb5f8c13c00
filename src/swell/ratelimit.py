"""Cost-based rate limiting over an exact rolling window.

The DSAR API gives each org a budget of cost per rolling hour (POST costs 8, GET costs 1). The
limiter keeps a log of ``(time, cost)`` charges per key and their running sum, so a charge is
allowed exactly when the charges of the last ``window`` seconds plus it fit the budget.

``charge`` never awaits: on one event loop, checking and charging are a single atomic step, so
concurrent requests can never overspend the budget.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime

from swell.errors import RateLimited


def utcnow() -> datetime:
    return datetime.now(UTC)


class _Window:
    __slots__ = ("entries", "total")

    def __init__(self) -> None:
        self.entries: deque[tuple[float, int]] = deque()
        self.total = 0

    def expire(self, before: float) -> None:
        entries = self.entries
        while entries and entries[0][0] <= before:
            self.total -= entries.popleft()[1]


class CostLimiter:
    """A budget of ``budget`` cost per ``window`` seconds for each key (e.g. an org id).

    Memory per key is bounded by the number of charges the budget allows in one window.
    """

    def __init__(
        self,
        budget: int,
        *,
        window_seconds: float = 3600.0,
        clock: Callable[[], datetime] = utcnow,
        what: str = "DSAR",
    ) -> None:
        self.budget = budget
        self.window = window_seconds
        self._clock = clock
        self._what = what
        self._keys: dict[object, _Window] = {}

    def charge(self, key: object, cost: int) -> int:
        """Spend ``cost`` of ``key``'s budget; returns what is left in the current window.

        Raises:
            RateLimited: the charge does not fit; nothing is spent. ``retry_after`` is the whole
                number of seconds until enough earlier charges have left the window.
        """
        now = self._clock().timestamp()
        window = self._keys.get(key)
        if window is None:
            window = self._keys[key] = _Window()
        window.expire(now - self.window)
        if window.total + cost > self.budget:
            if not window.entries:
                del self._keys[key]
            raise RateLimited(
                f"{self._what} rate limit exceeded: {self.budget} cost per "
                f"{self.window:g} seconds (this request costs {cost})",
                retry_after=self._retry_after(window, cost, now),
            )
        window.entries.append((now, cost))
        window.total += cost
        return self.budget - window.total

    def remaining(self, key: object) -> int:
        """The budget ``key`` has left right now (nothing is charged)."""
        window = self._keys.get(key)
        if window is None:
            return self.budget
        window.expire(self._clock().timestamp() - self.window)
        return self.budget - window.total

    def _retry_after(self, window: _Window, cost: int, now: float) -> int:
        if cost > self.budget:
            return math.ceil(self.window)
        excess = window.total + cost - self.budget
        freed = 0
        for stamp, spent in window.entries:
            freed += spent
            if freed >= excess:
                return max(1, math.ceil(stamp + self.window - now))
        return math.ceil(self.window)  # pragma: no cover - total is the sum of the entries
