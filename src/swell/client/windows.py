"""Export windows: runs of whole hours, both ends inclusive, as the Export API counts them.

An hour is an integer: hours since 1970-01-01T00 UTC. The API's ``start``/``end`` are
``YYYYMMDDTHH`` and both name included hours, so a window of one hour has ``start == end``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from swell.client.errors import UsageError

#: The Export API serves at most 365 days per request.
MAX_WINDOW_HOURS = 365 * 24
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_HOUR = re.compile(r"^([0-9]{4})([0-9]{2})([0-9]{2})(?:T([0-9]{2}))?$")


def parse_hour(value: str, *, end: bool = False, name: str = "hour") -> int:
    """The hour a ``YYYYMMDDTHH`` names; a bare ``YYYYMMDD`` is its first hour, or with
    ``end`` its last (as the Export API reads it).

    Raises:
        UsageError: not that form, or no such date or hour.
    """
    match = _HOUR.match(value.strip())
    if match is None:
        raise UsageError(f"invalid {name} {value[:40]!r}: expected YYYYMMDDTHH, e.g. 20240131T05")
    year, month, day, hour = match.groups()
    try:
        date = datetime(int(year), int(month), int(day), tzinfo=UTC)
    except ValueError:
        raise UsageError(f"invalid {name} {value!r}: no such date") from None
    if date < _EPOCH:
        raise UsageError(f"invalid {name} {value!r}: before 1970")
    base = (date - _EPOCH) // timedelta(hours=1)
    if hour is None:
        return base + 23 if end else base
    if int(hour) > 23:
        raise UsageError(f"invalid {name} {value!r}: the hour must be 00 to 23")
    return base + int(hour)


def hour_of(value: str | datetime, *, end: bool = False, name: str = "hour") -> int:
    """An hour from ``YYYYMMDDTHH`` text or a datetime (naive means UTC; minutes are dropped)."""
    if isinstance(value, str):
        return parse_hour(value, end=end, name=name)
    when = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
    return (when.astimezone(UTC) - _EPOCH) // timedelta(hours=1)


def format_hour(hour: int) -> str:
    return f"{_EPOCH + timedelta(hours=hour):%Y%m%dT%H}"


def hour_start(hour: int) -> datetime:
    return _EPOCH + timedelta(hours=hour)


@dataclass(frozen=True, order=True, slots=True)
class Window:
    """Hours ``start`` to ``end``, both included."""

    start: int
    end: int

    def __post_init__(self) -> None:
        if self.end < self.start:
            raise ValueError(f"window ends before it starts: {self.start} > {self.end}")

    @property
    def hours(self) -> int:
        return self.end - self.start + 1

    @property
    def label(self) -> str:
        """``YYYYMMDDTHH-YYYYMMDDTHH``: the window's name in file names and the state file."""
        return f"{format_hour(self.start)}-{format_hour(self.end)}"

    @property
    def params(self) -> dict[str, str]:
        return {"start": format_hour(self.start), "end": format_hour(self.end)}

    def halves(self) -> tuple[Window, Window]:
        """The window cut in two (the first half gets the odd hour). Needs two hours or more."""
        if self.hours < 2:
            raise ValueError("a one-hour window cannot be split")
        middle = self.start + self.hours // 2 - 1
        return Window(self.start, middle), Window(middle + 1, self.end)

    def overlaps(self, other: Window) -> bool:
        return self.start <= other.end and other.start <= self.end

    @classmethod
    def from_label(cls, label: str) -> Window:
        first, sep, last = label.partition("-")
        if not sep:
            raise ValueError(f"not a window label: {label!r}")
        return cls(parse_hour(first), parse_hour(last))


def check_range(start: int, end: int, window_hours: int) -> None:
    """Raises UsageError for an empty range or a window size the API cannot serve."""
    if end < start:
        raise UsageError(f"--end {format_hour(end)} is before --start {format_hour(start)}")
    if not 1 <= window_hours <= MAX_WINDOW_HOURS:
        raise UsageError(
            f"--window-hours must be 1 to {MAX_WINDOW_HOURS} (the Export API's 365 days), "
            f"not {window_hours}"
        )


def plan(start: int, end: int, window_hours: int, taken: Iterable[Window] = ()) -> list[Window]:
    """Windows of at most ``window_hours`` covering the hours of [start, end] that no window in
    ``taken`` covers, in order. Each uncovered run of hours is cut from its first hour on."""
    check_range(start, end, window_hours)
    windows: list[Window] = []
    cursor = start
    for window in sorted(w for w in taken if w.end >= start and w.start <= end):
        windows.extend(_cut(cursor, min(window.start - 1, end), window_hours))
        cursor = max(cursor, window.end + 1)
    windows.extend(_cut(cursor, end, window_hours))
    return windows


def _cut(first: int, last: int, size: int) -> list[Window]:
    return [Window(h, min(h + size - 1, last)) for h in range(first, last + 1, size)]
