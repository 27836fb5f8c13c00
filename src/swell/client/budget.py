"""The DSAR cost budget, kept on the client's side, and the poll schedule it allows.

Amplitude gives each org 14,400 "cost" per hour across every DSAR endpoint: a POST costs 8, a
GET (status or output) 1, and requests beyond the budget get 429. :class:`Budget` records every
request this client sends over a rolling hour and makes the next one wait until it fits, so the
client never spends more than its budget in any hour, and a 429 (the budget is shared with
other clients of the org) pauses everything for its ``Retry-After``.

:func:`poll_interval` spaces one request's status checks: never faster than the request's age
suggests (a job that has run for an hour will not finish in the next second), and never so fast
that the outstanding requests together would spend the hour's budget on polling what their
posts and downloads still need (the seed's arithmetic: 40 users an hour leave 360 each; 8 for
the POST, twice the expected output files for the downloads, the rest for polls).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from swell.client.clock import Clock

POST_COST = 8
GET_COST = 1
DEFAULT_PER_HOUR = 14_400
HOUR = 3600.0
#: The server charges a request when it arrives, a little after this client recorded it; a charge
#: is kept this much longer than an hour so the two windows never disagree.
MARGIN = 2.0


class Budget:
    """At most ``per_hour`` cost in any rolling hour, as this client spends it."""

    def __init__(self, clock: Clock, per_hour: int = DEFAULT_PER_HOUR) -> None:
        if per_hour < POST_COST:
            raise ValueError(f"a budget below {POST_COST} (one POST) allows nothing")
        self.clock = clock
        self.per_hour = per_hour
        self._charges: deque[tuple[float, int]] = deque()
        self._spent = 0
        self._blocked_until = 0.0
        #: Every charge made, as (time, cost): what tests count.
        self.log: list[tuple[float, int]] = []

    def _expire(self, now: float) -> None:
        charges = self._charges
        while charges and charges[0][0] <= now - HOUR - MARGIN:
            self._spent -= charges.popleft()[1]

    def left(self) -> int:
        self._expire(self.clock.now())
        return self.per_hour - self._spent

    def wait(self, cost: int) -> float:
        """Seconds until ``cost`` fits the budget (and any 429 pause is over); 0 for now."""
        now = self.clock.now()
        self._expire(now)
        wait = max(0.0, self._blocked_until - now)
        excess = self._spent + cost - self.per_hour
        if excess > 0:
            freed = 0
            for stamp, spent in self._charges:
                freed += spent
                if freed >= excess:
                    wait = max(wait, stamp + HOUR + MARGIN - now)
                    break
        return wait

    def charge(self, cost: int) -> None:
        now = self.clock.now()
        self._expire(now)
        self._charges.append((now, cost))
        self._spent += cost
        self.log.append((now, cost))

    async def spend(self, cost: int) -> None:
        """Wait until ``cost`` fits, then record it."""
        while (delay := self.wait(cost)) > 0:
            await self.clock.sleep(delay)
        self.charge(cost)

    def block(self, seconds: float) -> None:
        """The server said 429: send nothing for ``seconds``."""
        self._blocked_until = max(self._blocked_until, self.clock.now() + max(seconds, 0.0))


@dataclass(frozen=True)
class PollSchedule:
    """When to check on a request: ``first`` seconds after posting, then every ``fraction`` of
    its age, at least ``first`` and at most ``longest`` seconds apart."""

    first: float = 1.0
    fraction: float = 0.1
    longest: float = 1800.0

    def __post_init__(self) -> None:
        if not 0 < self.first <= self.longest or self.fraction < 0:
            raise ValueError("need 0 < first <= longest and fraction >= 0")


def poll_interval(
    schedule: PollSchedule,
    age: float,
    *,
    per_hour: int,
    outstanding: int,
    reserved: int,
) -> float:
    """Seconds until the next status check of a request ``age`` seconds old.

    ``reserved`` is what the next hour must keep for posts and downloads; the rest is shared by
    the ``outstanding`` requests' polls (each gets at least one poll an hour).
    """
    wanted = min(max(schedule.first, age * schedule.fraction), schedule.longest)
    allowance = max(per_hour - reserved, outstanding, 1)
    fair = max(outstanding, 1) * HOUR / allowance
    return max(wanted, fair)
