"""The Dashboard REST API's numbers, read from the per-day rollups (swell.rollups).

Active and new users (``/api/2/users``), average session length (``/api/2/sessions/average``),
the event list (``/api/2/events/list``) and annotations. Every query reads the metadata store's
rollup tables over an index range; no part is opened. Days are UTC event-time days; the choices
where Amplitude leaves room are in docs/compatibility.md#dashboard.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

from swell.errors import BadRequest
from swell.rollups import GROUP_BYS, day_date, day_number

if TYPE_CHECKING:
    from swell.backends.base import Rollups

#: The longest range a query may span (days): ten years, so a response stays bounded.
MAX_DAYS = 3660
#: A grouped query returns at most this many values (those with the most users; the rest are
#: left out, as Amplitude keeps the top segments of a group-by).
MAX_GROUPS = 100
INTERVALS = (1, 7, 30)
#: What an event list's ``totals`` count: events of the last 7 days, today (UTC) included.
TOTALS_DAYS = 7
MAX_LABEL = 1000
MAX_DETAILS = 10_000
MAX_CHART_ID = 100

_DAY = re.compile(r"[0-9]{8}", re.ASCII)
_ISO_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", re.ASCII)
_SERIES_META = {"segmentIndex": 0}


def parse_day(name: str, value: str | None) -> int:
    """A YYYYMMDD parameter as a day number. Raises BadRequest."""
    if value is None or value == "":
        raise BadRequest(f"Missing required parameter: '{name}' (YYYYMMDD)")
    if not _DAY.fullmatch(value):
        raise BadRequest(f"Invalid '{name}': expected YYYYMMDD")
    try:
        return day_number(date(int(value[:4]), int(value[4:6]), int(value[6:])))
    except ValueError:
        raise BadRequest(f"Invalid '{name}': not a calendar date") from None


def parse_days(params: Mapping[str, str]) -> tuple[int, int]:
    """(first, last) day of ``start`` and ``end``, both included. Raises BadRequest."""
    first = parse_day("start", params.get("start"))
    last = parse_day("end", params.get("end"))
    if first > last:
        raise BadRequest("Invalid range: 'start' is after 'end'")
    if last - first + 1 > MAX_DAYS:
        raise BadRequest(f"Invalid range: at most {MAX_DAYS} days can be queried at once")
    return first, last


def _no_segments(params: Mapping[str, str]) -> None:
    """swell computes whole-project numbers: a segment filter would be silently ignored, so it
    is refused instead."""
    segments = params.get("s")
    if segments not in (None, "", "[]"):
        raise BadRequest("Segment filters ('s') are not supported")


@dataclass(frozen=True, slots=True)
class UsersQuery:
    first: int
    last: int
    new: bool
    interval: int
    group_by: str | None


def parse_users(params: Mapping[str, str]) -> UsersQuery:
    """The parameters of /api/2/users. Raises BadRequest."""
    first, last = parse_days(params)
    metric = params.get("m") or "active"
    if metric not in ("active", "new"):
        raise BadRequest("Invalid 'm': expected 'active' or 'new'")
    raw_interval = params.get("i") or "1"
    if raw_interval not in {str(i) for i in INTERVALS}:
        raise BadRequest("Invalid 'i': expected 1 (daily), 7 (weekly) or 30 (monthly)")
    group_by = params.get("g") or None
    if group_by is not None and group_by not in GROUP_BYS:
        raise BadRequest(f"Invalid 'g': supported group-bys are {', '.join(GROUP_BYS)}")
    _no_segments(params)
    return UsersQuery(first, last, metric == "new", int(raw_interval), group_by)


def buckets(first: int, last: int, interval: int) -> list[tuple[int, int]]:
    """The (first day, last day) of each interval of the range, clipped to it: days, weeks
    starting on Sunday, or calendar months."""
    out: list[tuple[int, int]] = []
    day = first
    while day <= last:
        if interval == 1:
            end = day
        elif interval == 7:
            end = day + (2 - day) % 7  # weeks end on Saturday; day 2 (1970-01-03) was one
        else:
            d = day_date(day)
            following = date(d.year + d.month // 12, d.month % 12 + 1, 1)
            end = day_number(following) - 1
        out.append((day, min(end, last)))
        day = min(end, last) + 1
    return out


def _iso(day: int) -> str:
    return day_date(day).isoformat()


async def users(meta: Rollups, project_id: int, query: UsersQuery) -> dict[str, Any]:
    """The ``data`` of /api/2/users: one series per group value (or one), one value a bucket."""
    spans = buckets(query.first, query.last, query.interval)
    counts = await meta.count_users(project_id, spans, new=query.new, group_by=query.group_by)
    if query.group_by is None:
        labels: list[Any] = [0]
        series = [[c.get("", 0) for c in counts]]
    else:
        totals: dict[str, int] = {}
        for c in counts:
            for label, n in c.items():
                totals[label] = totals.get(label, 0) + n
        chosen = sorted(totals, key=lambda label: (-totals[label], label))[:MAX_GROUPS]
        labels = list(chosen)
        series = [[c.get(label, 0) for c in counts] for label in chosen]
    return {
        "series": series,
        "seriesLabels": labels,
        "seriesMeta": [dict(_SERIES_META) for _ in series],
        "xValues": [_iso(lo) for lo, _ in spans],
    }


async def average_sessions(meta: Rollups, project_id: int, first: int, last: int) -> dict[str, Any]:
    """The ``data`` of /api/2/sessions/average: seconds per session, per day of session start."""
    totals = await meta.session_totals(project_id, first, last)
    days = range(first, last + 1)
    averages: list[float] = []
    for day in days:
        sessions, total_ms = totals.get(day, (0, 0))
        averages.append(total_ms / 1000 / sessions if sessions else 0)
    return {
        "series": [averages],
        "seriesLabels": [0],
        "seriesMeta": [dict(_SERIES_META)],
        "xValues": [_iso(day) for day in days],
    }


def event_type_id(name: str) -> int:
    """A stable positive id for an event type (clients key the event list by ``id``)."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=4).digest(), "big") >> 1


async def events_list(meta: Rollups, project_id: int, today: date) -> list[dict[str, Any]]:
    """The ``data`` of /api/2/events/list: every event type with its last 7 days' events."""
    last = day_number(today)
    totals = await meta.event_type_totals(project_id, last - TOTALS_DAYS + 1, last)
    return [
        {
            "id": event_type_id(name),
            "value": name,
            "name": name,
            "display": name,
            "totals": totals[name],
            "hidden": False,
            "deleted": False,
            "non_active": False,
            "flow_hidden": False,
            "autohidden": False,
            "in_waitroom": False,
            "clusters_hidden": False,
            "timeline_hidden": False,
        }
        for name in sorted(totals, key=lambda n: (-totals[n], n))
    ]


@dataclass(frozen=True, slots=True)
class NewAnnotation:
    date: str
    label: str
    details: str
    chart_id: str | None


def _text(params: Mapping[str, str], name: str, limit: int, *, required: bool) -> str | None:
    value = params.get(name)
    if value is None or value == "":
        if required:
            raise BadRequest(f"Missing required parameter: '{name}'")
        return None
    if len(value) > limit:
        raise BadRequest(f"Invalid '{name}': longer than {limit} characters")
    if "\x00" in value:
        raise BadRequest(f"Invalid '{name}': contains a NUL character")
    return value


def parse_annotation(params: Mapping[str, str], project_id: int) -> NewAnnotation:
    """The parameters of POST /api/2/annotations. Raises BadRequest."""
    app_id = params.get("app_id")
    if app_id not in (None, "") and app_id != str(project_id):
        raise BadRequest("Invalid 'app_id': not the project these credentials belong to")
    day = _text(params, "date", 10, required=True)
    assert day is not None
    if not _ISO_DAY.fullmatch(day):
        raise BadRequest("Invalid 'date': expected YYYY-MM-DD")
    try:
        date.fromisoformat(day)
    except ValueError:
        raise BadRequest("Invalid 'date': not a calendar date") from None
    label = _text(params, "label", MAX_LABEL, required=True)
    assert label is not None
    details = _text(params, "details", MAX_DETAILS, required=False) or ""
    chart_id = _text(params, "chart_id", MAX_CHART_ID, required=False)
    return NewAnnotation(day, label, details, chart_id)


def today_utc() -> date:
    return datetime.now(UTC).date()
