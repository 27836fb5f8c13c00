"""Time as the client sees it: a monotonic clock and a sleep, injectable together.

Tests give the clients a fake clock whose ``sleep`` only moves time forward, so nothing ever
waits for a real backoff or a poll interval.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Seconds on a monotonic clock (only differences mean anything)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` (at least 0)."""
        ...


class SystemClock:
    """The real thing: ``time.monotonic`` and ``asyncio.sleep``."""

    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))
