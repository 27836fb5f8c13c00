"""The Export API's domain: range parsing, the archive plan, and streaming it in constant memory.

An export is a zip whose members are the sealed parts of the range, stored as-is. The layout is
computed from the catalog (names, sizes, CRCs) before a byte is sent, so the archive is sized
(Content-Length), byte-deterministic (a strong ETag) and random-access (Range resumes).

Streaming reads the archive into a few reused 1 MiB buffers, header bytes and part bytes alike,
and hands out views of them: every chunk but the last is exactly 1 MiB whatever the part sizes,
and no chunk allocates memory. Reading each 1 MiB into a fresh bytes object made the allocator
return pages to the kernel and fault them back in, which cost about as much CPU as the copy.
"""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from swell.backends.base import BlobReader, BlobStore, Catalog, OpensReaders
from swell.errors import BadRequest, NoData
from swell.model import Part, hour_of, hour_start
from swell.ziplayout import Literal, Member, Slice, ZipLayout

MAX_RANGE_HOURS = 365 * 24
#: Amplitude documents YYYYMMDDTHH; old clients send unpadded hours (T5), which we accept too.
#: ASCII digits only: ``\d`` (and int()) would also take other scripts' digits, e.g. fullwidth.
_PARAM = re.compile(r"([0-9]{4})([0-9]{2})([0-9]{2})(?:T([0-9]{1,2}))?")
_DOS_EPOCH = datetime(1980, 1, 1, tzinfo=UTC)
CHUNK = 1 << 20


def parse_hour(name: str, value: str | None, *, end: bool) -> int:
    """Hour number of a ``start``/``end`` parameter; a bare date means its first (start) or last
    (end) hour. Raises BadRequest naming the parameter."""
    if value is None or value == "":
        raise BadRequest(
            f"Missing required parameter '{name}' (format YYYYMMDDTHH, e.g. 20220101T05)"
        )
    match = _PARAM.fullmatch(value.strip(" \t\r\n")) if len(value) <= 12 else None
    if match is None:
        raise BadRequest(f"Invalid '{name}' value {value[:40]!r}: expected YYYYMMDDTHH or YYYYMMDD")
    year, month, day, hour = match.groups()
    try:
        date = datetime(int(year), int(month), int(day), tzinfo=UTC)
    except ValueError:
        raise BadRequest(f"Invalid '{name}' value {value[:40]!r}: no such date") from None
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
    #: parts[i].name, computed once: every name is needed before the first byte (the layout and
    #: the blob checks) and again to stream, and a part computes its name on each access.
    names: tuple[str, ...] = ()
    #: parts[i].key: the blobs to read. A rewritten part's key differs from its name, and the
    #: blob of a part the catalog has since replaced stays readable for a grace period
    #: (SWELL_REPLACED_BLOB_GRACE_SECONDS), so a plan made before a swap streams whole.
    keys: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if len(self.names) != len(self.parts):
            object.__setattr__(self, "names", tuple(p.name for p in self.parts))
        if len(self.keys) != len(self.parts):
            object.__setattr__(self, "keys", tuple(p.key for p in self.parts))

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
    names = tuple(p.name for p in parts)
    members = [Member(name, p.size, p.crc32) for name, p in zip(names, parts, strict=True)]
    mtime = max(hour_start(parts[-1].hour), _DOS_EPOCH)
    layout = ZipLayout(members, mtime=mtime)
    if layout.size > max_bytes:
        raise BadRequest(
            "The file size of the exported data is too large. Shorten the time ranges and try "
            f"again. The limit size is {max_bytes} bytes (this range is {layout.size} bytes)."
        )
    return ExportPlan(tuple(parts), layout, names, tuple(p.key for p in parts))


def _refs(buffers: list[bytearray], index: int) -> int:
    return sys.getrefcount(buffers[index])


#: What _refs reports for a buffer that only its pool's list holds. Measured rather than assumed,
#: so it stays right on interpreters that count the call's own reference differently.
_IDLE_REFS = _refs([bytearray()], 0)


class BufferPool:
    """Equal-sized bytearrays handed out again only once nothing else references them.

    A chunk given to an ASGI server is not necessarily copied: uvloop's transport keeps a view of
    it queued until the socket accepts it, after the send has returned. So a buffer must not be
    refilled just because the next chunk is wanted. Whatever still holds a chunk holds a
    memoryview, and a memoryview keeps a reference to the bytearray under it, so a buffer whose
    reference count shows only the pool's list is free: nothing can read it any more. The check
    relies on nothing about the server, which is why it is used rather than a fixed ring.
    """

    def __init__(self, size: int, keep: int = 4) -> None:
        self.size = size
        self.keep = keep
        self._buffers: list[bytearray] = []
        #: Buffers created, kept or not (a consumer that holds every chunk makes one per chunk).
        self.created = 0

    def take(self) -> bytearray:
        buffers = self._buffers
        for index in range(len(buffers)):
            if _refs(buffers, index) == _IDLE_REFS:
                return buffers[index]
        buffer = bytearray(self.size)
        self.created += 1
        if len(buffers) < self.keep:
            buffers.append(buffer)
        return buffer


async def stream_export(
    plan: ExportPlan, blobs: BlobStore, start: int = 0, end: int | None = None
) -> AsyncIterator[bytes | memoryview]:
    """Archive bytes [start, end), read from the blob store piece by piece.

    With a store that opens readers (OpensReaders), every chunk but the last is a CHUNK-sized
    memoryview of a pooled buffer, valid until the consumer drops it, holding header bytes and
    part bytes alike. Otherwise chunks are header literals and the store's own chunks.

    After each chunk the event loop gets a turn (``_pause``), whether or not sending it had to wait.
    """
    end = plan.size if end is None else end
    segments = plan.layout.segments(start, end)
    if not isinstance(blobs, OpensReaders):
        async for chunk in _stream_pieces(plan, blobs, segments):
            yield chunk
        return
    pool = BufferPool(min(CHUNK, max(end - start, 1)))
    size = pool.size
    view: memoryview | None = None
    fill = 0
    pieces = list(segments)
    # Each part's reader is opened while the part before it is read, so a store whose open
    # costs a round trip (S3: the first ranged GET) keeps sending meanwhile.
    following = iter(i for i, piece in enumerate(pieces) if isinstance(piece, Slice))
    ahead = _open_next(plan, blobs, pieces, following)
    try:
        for segment in pieces:
            if isinstance(segment, Literal):
                data, pos = segment.data, 0
                while pos < len(data):
                    if view is None:
                        view, fill = memoryview(pool.take()), 0
                    n = min(size - fill, len(data) - pos)
                    view[fill : fill + n] = data[pos : pos + n]
                    fill, pos = fill + n, pos + n
                    if fill == size:
                        full, view = view, None
                        yield full
                        del full  # the pool's reference count check must not see ours
                        await _pause()
                continue
            assert ahead is not None
            opening, ahead = ahead, None
            reader = await opening
            try:
                ahead = _open_next(plan, blobs, pieces, following)
                pos = segment.start
                while pos < segment.end:
                    if view is None:
                        view, fill = memoryview(pool.take()), 0
                    n = min(size - fill, segment.end - pos)
                    await reader.read_into(pos, view[fill : fill + n])
                    fill, pos = fill + n, pos + n
                    if fill == size:
                        full, view = view, None
                        yield full
                        del full
                        await _pause()
            finally:
                await reader.aclose()
    finally:
        if ahead is not None:
            _discard(ahead)
    if view is not None:
        yield view[:fill]


def _open_next(
    plan: ExportPlan, blobs: OpensReaders, pieces: list[Literal | Slice], following: Iterator[int]
) -> asyncio.Task[BlobReader] | None:
    """Start opening the reader of the next part to be read, if there is one."""
    index = next(following, None)
    if index is None:
        return None
    piece = pieces[index]
    assert isinstance(piece, Slice)
    return asyncio.ensure_future(blobs.open_reader(plan.keys[piece.member]))


#: Readers being closed after their export stopped early (referenced until they are).
_closing: set[asyncio.Task[None]] = set()


def _discard(opening: asyncio.Task[BlobReader]) -> None:
    """Drop a reader opened ahead that will not be read (the export stopped early): cancel the
    opening, or close the reader once it is open."""
    opening.cancel()

    def close(task: asyncio.Task[BlobReader]) -> None:
        if task.cancelled() or task.exception() is not None:
            return
        closing = asyncio.ensure_future(task.result().aclose())
        _closing.add(closing)
        closing.add_done_callback(_closing.discard)

    opening.add_done_callback(close)


async def _stream_pieces(
    plan: ExportPlan, blobs: BlobStore, segments: Iterator[Literal | Slice]
) -> AsyncIterator[bytes]:
    for segment in segments:
        if isinstance(segment, Literal):
            yield segment.data
        else:
            name = plan.keys[segment.member]
            async for chunk in blobs.stream(name, segment.start, segment.end, CHUNK):
                yield chunk
                await _pause()


async def _pause() -> None:
    """Let the event loop run other tasks. Local reads never suspend, and neither does sending to
    a client that has gone away (the server drops the data at once), so without this an export
    would hold the loop for as long as it runs, and a client that hangs up would not cancel it:
    the rest of the archive would be read for nothing."""
    await asyncio.sleep(0)
