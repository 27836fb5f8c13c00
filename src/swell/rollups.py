"""Per-day rollups: what the Dashboard REST endpoints count, gathered while a part fills.

Each event contributes a *fact* (event time, event type, session id and the values of the
group-bys swell supports), taken from the stored record by ``fact``. An open part folds its
events' facts into a ``RollupAcc``; sealing turns it into a ``swell.model.Rollup`` that the
metadata store writes in the part's catalog transaction. The store keeps *memberships*, not
counts, so a user active in many parts of a day is one user, exactly:

* (project, day, amplitude_id) and (project, day, group-by, value, amplitude_id), inserted with
  ON CONFLICT DO NOTHING: distinct active users of any day range are a count over an index range;
* (project, amplitude_id) -> first day seen, kept at its minimum (imports may bring older days):
  new users;
* (project, amplitude_id, session_id) -> first and last event time, widened by every part:
  session lengths (a session that spans parts, or hours, is one session);
* (project, day, event_type) -> events, added up: the event list's totals.

Days are UTC days of ``event_time`` (docs/compatibility.md#dashboard).
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Mapping, Sequence
from datetime import date
from typing import Any

from swell.model import Rollup, parse_ts

#: The ``g`` values of /api/2/users and the record field each reads.
GROUP_BYS: dict[str, str] = {
    "country": "country",
    "region": "region",
    "city": "city",
    "platform": "platform",
    "os": "os_name",
    "device_type": "device_type",
    "language": "language",
    "version": "version_name",
}
_FIELDS = tuple(GROUP_BYS.values())
_NAMES = tuple(GROUP_BYS)
#: How a missing group-by value is labelled (Amplitude's label for it).
NONE_LABEL = "(none)"
DAY_MS = 86_400_000
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()

#: (event_time, event_type, session_id, *group-by values in GROUP_BYS order)
Fact = tuple[Any, ...]


def fact(record: Mapping[str, Any]) -> Fact:
    """What the rollups need of one stored record."""
    get = record.get
    return (get("event_time"), get("event_type"), get("session_id"), *[get(f) for f in _FIELDS])


def day_number(d: date) -> int:
    return d.toordinal() - _EPOCH_ORDINAL


def day_date(day: int) -> date:
    return date.fromordinal(day + _EPOCH_ORDINAL)


class RollupAcc:
    """The rollups of one open part's events so far. Not thread-safe."""

    __slots__ = (
        "_days",
        "_seen",
        "event_counts",
        "first_days",
        "sessions",
        "user_days",
        "user_groups",
    )

    def __init__(self) -> None:
        self.user_days: set[tuple[int, int]] = set()
        self.user_groups: set[tuple[int, str, str, int]] = set()
        self.first_days: dict[int, int] = {}
        self.sessions: dict[tuple[int, int], list[int]] = {}
        self.event_counts: dict[tuple[int, str], int] = {}
        #: event_time date prefix -> day number (a part spans few days).
        self._days: dict[str, int] = {}
        #: (day, amplitude_id, *group-by values) already folded into user_groups.
        self._seen: set[tuple[Any, ...]] = set()

    def add(self, amplitude_id: int, f: Fact) -> None:
        event_time = f[0]
        if not isinstance(event_time, str):
            return
        prefix = event_time[:10]
        day = self._days.get(prefix)
        if day is None:
            try:
                day = day_number(parse_ts(event_time).date())
            except ValueError:
                return  # not a time: the event is in the export, not in the rollups
            if len(event_time) >= 19 and event_time[10] in " T":
                self._days[prefix] = day
        event_type = f[1]
        if isinstance(event_type, str):
            key = (day, event_type)
            self.event_counts[key] = self.event_counts.get(key, 0) + 1
        if not amplitude_id:
            return
        pair = (day, amplitude_id)
        if pair not in self.user_days:
            self.user_days.add(pair)
            first = self.first_days.get(amplitude_id)
            if first is None or day < first:
                self.first_days[amplitude_id] = day
        values = (day, amplitude_id, *f[3:])
        if values not in self._seen:  # most of a user's events of a day share their values
            self._seen.add(values)
            groups = self.user_groups
            for name, value in zip(_NAMES, f[3:], strict=True):
                label = NONE_LABEL if value is None or value == "" else str(value)
                groups.add((day, name, label, amplitude_id))
        session_id = f[2]
        if isinstance(session_id, int) and session_id >= 0:
            ms = _event_ms(event_time, day)
            if ms is None:
                return
            span = self.sessions.get((amplitude_id, session_id))
            if span is None:
                self.sessions[(amplitude_id, session_id)] = [ms, ms]
            elif ms < span[0]:
                span[0] = ms
            elif ms > span[1]:
                span[1] = ms

    def rollup(self) -> Rollup:
        return Rollup(
            user_days=tuple(sorted(self.user_days)),
            user_groups=tuple(sorted(self.user_groups)),
            first_days=tuple(sorted(self.first_days.items())),
            sessions=tuple(sorted((a, s, lo, hi) for (a, s), (lo, hi) in self.sessions.items())),
            event_counts=tuple(sorted((d, t, n) for (d, t), n in self.event_counts.items())),
        )


def _event_ms(event_time: str, day: int) -> int | None:
    """Epoch milliseconds of an event time (fast path for the stored format)."""
    try:
        if len(event_time) >= 19 and event_time[10] in " T" and event_time[13] == ":":
            ms = (
                day * DAY_MS
                + int(event_time[11:13]) * 3_600_000
                + int(event_time[14:16]) * 60_000
                + int(event_time[17:19]) * 1000
            )
            if len(event_time) >= 23 and event_time[19] == ".":
                ms += int(event_time[20:23])
            return ms
        return int(parse_ts(event_time).timestamp() * 1000)
    except ValueError:
        return None


def sum_into_buckets(
    buckets: Sequence[tuple[int, int]], days: Iterable[tuple[int, str, int]]
) -> list[dict[str, int]]:
    """Add per-day (day, label, count) rows into their buckets of (first day, last day), sorted
    and disjoint. Only right for counts whose per-day values add up (new users; single days)."""
    out: list[dict[str, int]] = [{} for _ in buckets]
    starts = [lo for lo, _ in buckets]
    for day, label, n in days:
        i = bisect_right(starts, day) - 1
        if i < 0 or day > buckets[i][1] or not n:
            continue
        into = out[i]
        into[label] = into.get(label, 0) + n
    return out
