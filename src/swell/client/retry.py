"""When to try again and how long to wait: capped exponential backoff with jitter.

Retried: connection errors and timeouts, 429 (after the server's ``Retry-After`` when it sends
one), and every 5xx (504 included: Amplitude answers it when a range takes too long to prepare).
Everything else is an answer, good or bad, and is not retried.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpx

#: Statuses worth another attempt.
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    """How many attempts a request gets and how long to wait between them.

    The wait before retry ``n`` (from 1) is drawn uniformly from the upper half of
    ``min(max_delay, base_delay * 2 ** (n - 1))``: exponential, capped, and jittered so that
    clients that failed together do not come back together. A ``Retry-After`` from the server is
    honoured as a lower bound, up to ``max_retry_after`` (longer waits fail the request instead).
    """

    attempts: int = 8
    base_delay: float = 1.0
    max_delay: float = 60.0
    max_retry_after: float = 3600.0
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be at least 1")
        if self.base_delay < 0 or self.max_delay < self.base_delay:
            raise ValueError("need 0 <= base_delay <= max_delay")

    def backoff(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (1 for the first retry)."""
        ceiling = min(self.max_delay, self.base_delay * 2 ** min(max(retry - 1, 0), 30))
        return self.rng.uniform(ceiling / 2, ceiling)

    def wait(self, retry: int, retry_after: float | None) -> float:
        """The backoff, or the server's ``Retry-After`` if that is longer."""
        delay = self.backoff(retry)
        if retry_after is not None:
            delay = max(delay, retry_after)
        return delay


def retry_after(response: httpx.Response, now: datetime | None = None) -> float | None:
    """``Retry-After`` in seconds (delta-seconds or an HTTP date), or None if absent or bad."""
    raw = response.headers.get("retry-after")
    if raw is None:
        return None
    raw = raw.strip()
    if raw.isascii() and raw.isdigit() and len(raw) <= 10:
        return float(int(raw))
    try:
        when = parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    seconds = (when - (now or datetime.now(UTC))).total_seconds()
    return max(0.0, math.ceil(seconds)) if math.isfinite(seconds) else None


def should_retry(status: int) -> bool:
    return status in RETRY_STATUSES or 500 <= status <= 599


def describe_transport_error(exc: httpx.TransportError) -> str:
    """A short reason for a connection-level failure ("connection refused", "timed out")."""
    if isinstance(exc, httpx.TimeoutException):
        return "timed out"
    text = str(exc).strip() or type(exc).__name__
    # httpx wraps OS errors as "[Errno 111] Connection refused"; keep the readable part.
    if text.startswith("[Errno") and "]" in text:
        text = text.split("]", 1)[1].strip()
    return text[:200]
