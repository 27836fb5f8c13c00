"""Records shared by every layer: the export record's keys, parts, blocks, time formats, and the
records that cross the backend boundary (swell.backends.base speaks in these)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from enum import IntEnum
from typing import Any

#: The 55 top-level keys of Amplitude's current export record, sorted as Amplitude sorts them.
EXPORT_KEYS: tuple[str, ...] = (
    "$insert_id",
    "$insert_key",
    "$schema",
    "adid",
    "amplitude_attribution_ids",
    "amplitude_event_type",
    "amplitude_id",
    "app",
    "city",
    "client_event_time",
    "client_upload_time",
    "country",
    "data",
    "data_type",
    "device_brand",
    "device_carrier",
    "device_family",
    "device_id",
    "device_manufacturer",
    "device_model",
    "device_type",
    "dma",
    "event_id",
    "event_properties",
    "event_time",
    "event_type",
    "global_user_properties",
    "group_properties",
    "groups",
    "idfa",
    "ip_address",
    "is_attribution_event",
    "language",
    "library",
    "location_lat",
    "location_lng",
    "os_name",
    "os_version",
    "partner_id",
    "paying",
    "plan",
    "platform",
    "processed_time",
    "region",
    "sample_rate",
    "server_received_time",
    "server_upload_time",
    "session_id",
    "source_id",
    "start_version",
    "user_creation_time",
    "user_id",
    "user_properties",
    "uuid",
    "version_name",
)

#: Keys whose empty value is ``{}`` rather than ``null`` in Amplitude's export.
DICT_KEYS: frozenset[str] = frozenset(
    {"data", "event_properties", "group_properties", "groups", "plan", "user_properties"}
)

TS_FORMAT = "%Y-%m-%d %H:%M:%S.%f"
DAY_MS = 86_400_000
HOUR_MS = 3_600_000
#: The first amplitude_id a metadata store hands out (Amplitude's ids are this large too).
FIRST_AMPLITUDE_ID = 100_000_000_000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def format_ts(dt: datetime) -> str:
    """Amplitude's export time format: ``2025-07-01 17:14:33.145000`` (UTC, space, 6 digits)."""
    return dt.astimezone(UTC).strftime(TS_FORMAT)


def parse_ts(value: str) -> datetime:
    """Parse an export timestamp (space or ``T`` separated, optional fraction) as UTC.

    Raises:
        ValueError: the string is not such a timestamp.
    """
    text = value.strip().replace("T", " ")
    if text.endswith("Z"):
        text = text[:-1]
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        return dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


def ms_to_datetime(ms: int) -> datetime:
    return EPOCH + timedelta(milliseconds=ms)


def hour_of(dt: datetime) -> int:
    """The hour number (hours since the epoch, UTC) that files a record."""
    return int((dt - EPOCH).total_seconds() // 3600)


def hour_start(hour: int) -> datetime:
    return EPOCH + timedelta(hours=hour)


def hour_of_ts(value: str) -> int:
    """Hour number of an export timestamp string; fast path for the canonical format.

    Raises:
        ValueError: the string is not a timestamp.
    """
    if len(value) >= 13 and value[4] == "-" and value[10] in " T":
        prefix = value[:13]
        hour = _HOURS.get(prefix)
        if hour is None:
            if not prefix.isascii():  # int() would read other scripts' digits
                raise ValueError(f"not an ASCII timestamp: {value[:40]!r}")
            hour_of_day = int(value[11:13])
            if not 0 <= hour_of_day <= 23:
                raise ValueError(f"hour out of range in {value!r}")
            dt = datetime(int(value[0:4]), int(value[5:7]), int(value[8:10]), tzinfo=UTC)
            hour = int((dt - EPOCH).total_seconds() // 3600) + hour_of_day
            if len(_HOURS) >= _HOURS_CACHED:
                _HOURS.clear()
            _HOURS[prefix] = hour
        return hour
    return hour_of(parse_ts(value))


#: ``YYYY-MM-DD HH`` -> hour number: records come in runs of one hour (imports, replays).
_HOURS: dict[str, int] = {}
_HOURS_CACHED = 4096


_EPOCH_ORDINAL = EPOCH.toordinal()


def part_name(project_id: int, hour: int, seq: int) -> str:
    """Member and blob name of a part: ``{p}/{p}_{YYYY-MM-DD}_{H}#{n}.json.gz``, hour not padded."""
    # An export names every part of its range before the first byte (Part.name is not cached),
    # so this avoids building and formatting a datetime: ~1 µs instead of ~6.
    day, hour_of_day = divmod(hour, 24)
    day_text = date.fromordinal(_EPOCH_ORDINAL + day).isoformat()
    return f"{project_id}/{project_id}_{day_text}_{hour_of_day}#{seq}.json.gz"


def part_key(project_id: int, hour: int, seq: int, gen: int) -> str:
    """Blob key of a part (see Part.key)."""
    name = part_name(project_id, hour, seq)
    if not gen:
        return name
    return f"{name[: -len('.json.gz')]}.r{gen}.json.gz"


@dataclass(frozen=True, slots=True)
class Part:
    """A sealed, immutable hourly part: a multi-member gzip of NDJSON export records."""

    project_id: int
    hour: int
    seq: int
    size: int
    crc32: int
    events: int
    min_time: str
    max_time: str
    max_lsn: int
    #: Byte offset of each gzip member (block); block i spans offsets[i] .. offsets[i+1] (or size).
    block_offsets: tuple[int, ...]
    #: 0 for a part as sealed; a rewritten part (compaction, deletion) carries a number of its
    #: (project, hour) never used before, so its blob never overwrites one still being read.
    gen: int = 0

    @property
    def name(self) -> str:
        """The part's member name in an export."""
        return part_name(self.project_id, self.hour, self.seq)

    @property
    def key(self) -> str:
        """The part's blob key: its name as sealed, ``...#{seq}.r{gen}.json.gz`` once rewritten."""
        return part_key(self.project_id, self.hour, self.seq, self.gen)

    def block_range(self, block: int) -> tuple[int, int]:
        start = self.block_offsets[block]
        end = self.block_offsets[block + 1] if block + 1 < len(self.block_offsets) else self.size
        return start, end


def rewrite_key(old: Sequence[Part], new: Sequence[tuple[Part, Any]]) -> tuple[int, int]:
    """The one (project, hour) of a part rewrite (Catalog.replace_parts). Raises ValueError if
    it has no old part or spans several (project, hour)."""
    keys = {(p.project_id, p.hour) for p in old} | {(p.project_id, p.hour) for p, _ in new}
    if len(keys) != 1 or not old:
        raise ValueError("a rewrite replaces parts of one (project, hour)")
    return keys.pop()


@dataclass(frozen=True, slots=True)
class UserBlocks:
    """Which blocks of one part hold one user's events (the user index's unit)."""

    project_id: int
    amplitude_id: int
    part: Part
    blocks: tuple[int, ...]
    events: int


@dataclass(frozen=True, slots=True)
class IndexEntry:
    """One user's presence in one sealed part (written with the part, read by DSAR)."""

    amplitude_id: int
    user_id: str | None
    blocks: tuple[int, ...]
    events: int


@dataclass(frozen=True, slots=True)
class BlobInfo:
    key: str
    size: int


@dataclass(frozen=True, slots=True)
class Principal:
    """Whoever a key pair authenticates: a project (``project_id`` set) or an org (it is None)."""

    org_id: int
    project_id: int | None
    secret_hash: str


@dataclass(frozen=True, slots=True)
class OrgInfo:
    id: int
    name: str
    created_at: str
    projects: int


@dataclass(frozen=True, slots=True)
class ProjectInfo:
    id: int
    org_id: int
    name: str
    created_at: str
    #: Sealed parts and the events in them.
    parts: int
    events: int


# -- identity state --


@dataclass(slots=True)
class StateSnapshot:
    """Identity state loaded for one batch of events (see swell.identity)."""

    users: dict[str, int] = field(default_factory=dict)
    devices: dict[str, tuple[int, bool]] = field(default_factory=dict)
    props: dict[int, dict[str, Any]] = field(default_factory=dict)
    groups: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DedupChunk:
    """insert_id dedup keys first seen in one hour, packed: what ``load_dedup`` gives back."""

    #: Hours since the epoch (UTC) of first sight.
    hour: int
    #: The keys as little-endian int64, in no particular order (swell.dedup.pack_keys).
    keys: bytes


@dataclass(slots=True)
class StateChanges:
    """Identity changes to persist, per project, with the log position they reflect."""

    users: list[tuple[int, str, int]] = field(default_factory=list)
    devices: list[tuple[int, str, int, bool]] = field(default_factory=list)
    props: list[tuple[int, int, bytes]] = field(default_factory=list)
    groups: list[tuple[int, str, str, bytes]] = field(default_factory=list)
    dedup: list[tuple[int, int, int]] = field(default_factory=list)
    #: No amplitude_id below this may be handed out again (ids seen in imported records count).
    next_amplitude_id: int = 0
    lsn: int = 0


# -- the durable log --


class FrameKind(IntEnum):
    #: body = NDJSON export records of one (project, hour)
    EVENTS = 1
    #: body = one JSON object: an identity change not tied to an event (identify calls)
    STATE = 2


@dataclass(frozen=True, slots=True)
class Frame:
    """One acknowledged unit of the log: a batch's records, or an identity change."""

    lsn: int
    kind: int
    project_id: int
    hour: int
    body: bytes


# -- background work --


@dataclass(frozen=True, slots=True)
class Job:
    """A claimed unit of background work; ``ref`` points at the row it works on."""

    id: int
    kind: str
    ref: int
    #: Attempts so far, including the one this claim starts.
    attempts: int


@dataclass(frozen=True, slots=True)
class DsarRequest:
    """One DSAR request as stored. Times are UTC; dates are ``YYYY-MM-DD`` strings."""

    id: int
    org_id: int
    user_id: str | None
    amplitude_id: int | None
    start_date: str
    end_date: str
    #: staging (not started), submitted (running), done (outputs published) or failed.
    status: str
    fail_reason: str | None
    #: How many output files were published (meaningful once done).
    outputs: int
    #: The highest number of output files any attempt may have written (cleanup bound).
    slots: int
    created_at: datetime
    expires_at: datetime | None
    #: True once housekeeping deleted the expired outputs.
    purged: bool


@dataclass(frozen=True, slots=True)
class Charge:
    """The outcome of charging a cost budget (swell.ratelimit)."""

    allowed: bool
    #: Budget left in the current window after this charge (or without it, if refused).
    remaining: int
    #: Whole seconds until the refused charge would fit (0 when allowed).
    retry_after: int


# -- dashboard rollups ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rollup:
    """What one sealed part adds to its project's per-day rollups (swell.rollups), written in the
    part's catalog transaction. Days are UTC event-time days, counted from 1970-01-01 (day 0)."""

    #: (day, amplitude_id): the user was active that day.
    user_days: tuple[tuple[int, int], ...] = ()
    #: (day, group-by name, value, amplitude_id): active that day with that value.
    user_groups: tuple[tuple[int, str, str, int], ...] = ()
    #: (amplitude_id, day): the first day this part saw the user.
    first_days: tuple[tuple[int, int], ...] = ()
    #: (amplitude_id, session_id, first event ms, last event ms).
    sessions: tuple[tuple[int, int, int, int], ...] = ()
    #: (day, event_type, events).
    event_counts: tuple[tuple[int, str, int], ...] = ()

    def __bool__(self) -> bool:
        return bool(self.user_days or self.event_counts)


@dataclass(frozen=True, slots=True)
class Annotation:
    """A chart annotation (Amplitude's Chart Annotations API)."""

    id: int
    project_id: int
    date: str
    label: str
    details: str
    chart_id: str | None
