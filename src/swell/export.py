"""The Export API's domain: range parsing, the archive plan, and streaming it in constant memory.

An export is a zip whose members are the sealed parts of the range, stored as-is. The layout is
computed from the catalog (names, sizes, CRCs) before a byte is sent, so the archive is sized
(Content-Length), byte-deterministic (a strong ETag) and random-access (Range resumes).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

from swell.backends.base import BlobStore, Catalog
from swell.errors import BadRequest, NoData
from swell.model import Part, hour_of, hour_start
from swell.ziplayout import Literal, Member, ZipLayout

MAX_RANGE_HOURS = 365 * 24
#: Amplitude documents YYYYMMDDTHH; old clients send unpadded hours (T5), which we accept too.
_PARAM = re.compile(r"^(\d{4})(\d{2})(\d{2})(?:T(\d{1,2}))?$")
_DOS_EPOCH = datetime(1980, 1, 1, tzinfo=UTC)
CHUNK = 1 << 20


def parse_hour(name: str, value: str | None, *, end: bool) -> int:
    """Hour number of a ``start``/``end`` parameter; a bare date means its first (start) or last
    (end) hour. Raises BadRequest naming the parameter."""
    if value is None or value == "":
        raise BadRequest(
            f"Missing required parameter '{name}' (format YYYYMMDDTHH, e.g. 20220101T05)"
        )
    match = _PARAM.match(value.strip())
    if match is None or len(value) > 12:
        raise BadRequest(f"Invalid '{name}' value {value[:40]!r}: expected YYYYMMDDTHH or YYYYMMDD")
    year, month, day, hour = match.groups()
    try:
        date = datetime(int(year), int(month), int(day), tzinfo=UTC)
    except ValueError:
        raise BadRequest(f"Invalid '{name}' value {value!r}: no such date") from None
    if date.year < 1970:
        raise BadRequest(f"Invalid '{name}' value {value!r}: dates before 1970 are not supported")
    if hour is not None and not 0 <= int(hour) <= 23:
        raise BadRequest(f"Invalid '{name}' value {value!r}: the hour must be 00 to 23")
    base = hour_of(date)
    if hour is None:
        return base + 23 if end else base
    return base + int(hour)


def parse_range(start: str | None, end: str | None) -> tuple[int, int]:
    """(start_hour, end_hour), both inclusive. Raises BadRequest."""
    first = parse_hour("start", start, end=False)
    last = parse_hour("end", end, end=True)
    if first > last:
        raise BadRequest("Invalid range: 'start' is after 'end'")
    if last - first + 1 > MAX_RANGE_HOURS:
        raise BadRequest("Invalid range: the maximum queryable period is 365 days")
    return first, last


@dataclass(frozen=True, slots=True)
class ExportPlan:
    parts: tuple[Part, ...]
    layout: ZipLayout

    @property
    def size(self) -> int:
        return self.layout.size

    @property
    def etag(self) -> str:
        return self.layout.etag()


async def plan_export(
    catalog: Catalog, project_id: int, start_hour: int, end_hour: int, *, max_bytes: int
) -> ExportPlan:
    """The archive for the sealed parts of a range. Raises NoData (404) or BadRequest (too big)."""
    parts = await catalog.parts(project_id, start_hour, end_hour)
    if not parts:
        raise NoData()
    members = [Member(p.name, p.size, p.crc32) for p in parts]
    mtime = max(hour_start(parts[-1].hour), _DOS_EPOCH)
    layout = ZipLayout(members, mtime=mtime)
    if layout.size > max_bytes:
        raise BadRequest(
            "The file size of the exported data is too large. Shorten the time ranges and try "
            f"again. The limit size is {max_bytes} bytes (this range is {layout.size} bytes)."
        )
    return ExportPlan(tuple(parts), layout)


async def stream_export(
    plan: ExportPlan, blobs: BlobStore, start: int = 0, end: int | None = None
) -> AsyncIterator[bytes]:
    """Archive bytes [start, end), read from the blob store piece by piece."""
    for segment in plan.layout.segments(start, end):
        if isinstance(segment, Literal):
            yield segment.data
        else:
            part = plan.parts[segment.member]
            async for chunk in blobs.stream(part.name, segment.start, segment.end, CHUNK):
                yield chunk
