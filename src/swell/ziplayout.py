"""
The byte layout of an export zip, computed from member names, sizes and CRCs alone.

An export archive is a zip whose members are already-gzipped parts, STORED as they are. The layout
is a pure function of (members, mtime, force_zip64), so the archive is byte-deterministic: its size
is known before streaming (Content-Length), `etag()` is a strong validator, and
`segments(start, end)` describes any byte range without producing the bytes before it (HTTP Range
resumes of a 4 GB download). The caller turns the segments into bytes: `Literal` data is sent as
is, a `Slice` is read from the member's blob.

Wire format, per entry, in member order::

    local file header   real CRC32 and sizes; flag bit 3 (data descriptor) unset; method 0;
                        ZIP64 extra (both sizes) only when size >= 0xFFFFFFFF
    member data         exactly `size` bytes
    ... then the central directory (a ZIP64 extra, when an entry's size or offset overflows,
    carries both sizes plus the offset if that overflows),
    [ZIP64 end of central directory record + locator, only when needed], end of central directory.

No data descriptors: combined with ZIP64 they are what macOS Archive Utility mishandles. Memory is
O(number of members) (two offset arrays); headers are rebuilt per request from them.
"""

from __future__ import annotations

import hashlib
import struct
from array import array
from bisect import bisect_right
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

__all__ = ["Literal", "Member", "Slice", "ZipLayout"]

#: Bumped whenever the bytes produced for the same inputs change, so old ETags stop matching.
FORMAT_VERSION = 1

_MAX16 = 0xFFFF
_MAX32 = 0xFFFF_FFFF
_MAX64 = 0xFFFF_FFFF_FFFF_FFFF

_LOCAL_SIG = 0x04034B50
_CENTRAL_SIG = 0x02014B50
_EOCD64_SIG = 0x06064B50
_EOCD64_LOCATOR_SIG = 0x07064B50
_EOCD_SIG = 0x06054B50

_LOCAL = struct.Struct("<IHHHHHIIIHH")  # 30 bytes, then name, extra
_CENTRAL = struct.Struct("<IHHHHHHIIIHHHHHII")  # 46 bytes, then name, extra (no comment)
_EOCD64 = struct.Struct("<IQHHIIQQQQ")  # 56 bytes
_EOCD64_LOCATOR = struct.Struct("<IIQI")  # 20 bytes
_EOCD = struct.Struct("<IHHHHIIH")  # 22 bytes
_ZIP64_EXTRA_ID = 0x0001
_LOCAL_ZIP64_EXTRA_LEN = 4 + 16  # header + uncompressed and compressed size

_VERSION_DEFAULT = 20  # 2.0: STORED, plain headers
_VERSION_ZIP64 = 45  # 4.5: ZIP64 extensions
_MADE_BY = (3 << 8) | _VERSION_ZIP64  # Unix, spec 4.5; Unix so external attrs carry a file mode
_EXTERNAL_ATTR = (0o100644 << 16) & _MAX32  # regular file, rw-r--r--
_FLAG_UTF8 = 1 << 11
_METHOD_STORED = 0

_CHUNK = 64 * 1024  # adjacent literals (empty members, central directory) are merged up to this


@dataclass(frozen=True, slots=True)
class Member:
    """One archive entry: its name and the size and CRC32 of the bytes stored for it."""

    name: str
    size: int
    crc32: int


@dataclass(frozen=True, slots=True)
class Literal:
    """Archive bytes the layout itself produces (headers, central directory)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Slice:
    """Bytes [start, end) of member `member`'s data, to be read by the caller from storage."""

    member: int
    start: int
    end: int


def _dos_datetime(mtime: datetime) -> tuple[int, int]:
    """(time, date) in MS-DOS format: aware datetimes in UTC, seconds rounded down to even."""
    if mtime.tzinfo is not None:
        mtime = mtime.astimezone(UTC).replace(tzinfo=None)
    if not 1980 <= mtime.year <= 2107:
        raise ValueError(f"zip timestamps cover 1980..2107, got {mtime.isoformat()}")
    time = (mtime.hour << 11) | (mtime.minute << 5) | (mtime.second // 2)
    date = ((mtime.year - 1980) << 9) | (mtime.month << 5) | mtime.day
    return time, date


def _zip64_extra(fields: Sequence[int]) -> bytes:
    if not fields:
        return b""
    return struct.pack(f"<HH{len(fields)}Q", _ZIP64_EXTRA_ID, 8 * len(fields), *fields)


class ZipLayout:
    """A deterministic STORED zip of `members`, described as segments rather than bytes.

    Raises:
        ValueError: from the constructor, if a member cannot be represented (name longer than
            65535 UTF-8 bytes or not encodable, negative size, CRC outside 32 bits) or `mtime` is
            outside the DOS range 1980..2107.
    """

    def __init__(
        self, members: Sequence[Member], *, mtime: datetime, force_zip64: bool = False
    ) -> None:
        self._members = tuple(members)
        self._force_zip64 = force_zip64
        self._time, self._date = _dos_datetime(mtime)
        self._names: list[bytes] = []
        # _offsets[i]: local header offset of member i; _offsets[n]: start of the central directory.
        self._offsets: array[int] = array("Q")
        # _cd_offsets[i]: offset of member i's central directory entry; _cd_offsets[n]: its end.
        self._cd_offsets: array[int] = array("Q")
        # The ETag covers every input that shapes the bytes; member data is named by size and CRC.
        digest = hashlib.sha256(
            f"swell-zip/{FORMAT_VERSION} {self._time} {self._date} {int(force_zip64)}\n".encode()
        )

        pos = 0
        for i, member in enumerate(self._members):
            try:
                name = member.name.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise ValueError(f"member name is not valid UTF-8: {member.name!r}") from exc
            if len(name) > _MAX16:
                raise ValueError(f"member name longer than 65535 bytes: {member.name[:80]!r}...")
            if not 0 <= member.size <= _MAX64:
                raise ValueError(f"member size out of range: {member.size}")
            if not 0 <= member.crc32 <= _MAX32:
                raise ValueError(f"member CRC32 out of range: {member.crc32}")
            digest.update(struct.pack("<HQI", len(name), member.size, member.crc32) + name)
            self._names.append(name)
            self._offsets.append(pos)
            pos += self._local_header_len(i) + member.size
        self._offsets.append(pos)
        self._etag = f'"{digest.hexdigest()[:32]}"'

        for i in range(len(self._members)):
            self._cd_offsets.append(pos)
            pos += _CENTRAL.size + len(self._names[i]) + self._central_extra_len(i)
        self._cd_offsets.append(pos)

        self._tail = self._build_tail()
        self._size = pos + len(self._tail)

    @property
    def size(self) -> int:
        """Total archive size in bytes."""
        return self._size

    def segments(self, start: int = 0, end: int | None = None) -> Iterator[Literal | Slice]:
        """The pieces making up archive bytes [start, end), in order, trimmed to the range.

        Empty pieces are never yielded; adjacent literals are merged into chunks of about 64 KiB.
        Locating `start` is O(log n); nothing before it is built.

        Raises:
            ValueError: unless 0 <= start <= end <= size (checked at call time, not on iteration).
        """
        end = self._size if end is None else end
        if not 0 <= start <= end <= self._size:
            raise ValueError(f"range [{start}, {end}) outside archive of {self._size} bytes")
        return self._coalesce(self._trim(start, end))

    def etag(self) -> str:
        """A strong HTTP ETag, quoted (`"<32 hex digits>"`).

        It digests everything the bytes depend on: names, sizes, CRC32s, the DOS timestamp, the
        ZIP64 mode and FORMAT_VERSION. Two mtimes in the same 2-second DOS tick give the same ETag.
        """
        return self._etag

    # -- headers ---------------------------------------------------------------------------------

    def _size_zip64(self, i: int) -> bool:
        return self._force_zip64 or self._members[i].size >= _MAX32

    def _offset_zip64(self, i: int) -> bool:
        return self._force_zip64 or self._offsets[i] >= _MAX32

    def _version_needed(self, i: int) -> int:
        # Local and central headers agree, even when only the central one carries a ZIP64 extra.
        zip64 = self._size_zip64(i) or self._offset_zip64(i)
        return _VERSION_ZIP64 if zip64 else _VERSION_DEFAULT

    def _flags(self, i: int) -> int:
        return 0 if self._members[i].name.isascii() else _FLAG_UTF8

    def _local_header_len(self, i: int) -> int:
        extra = _LOCAL_ZIP64_EXTRA_LEN if self._size_zip64(i) else 0
        return _LOCAL.size + len(self._names[i]) + extra

    def _local_header(self, i: int) -> bytes:
        member, name = self._members[i], self._names[i]
        if self._size_zip64(i):
            # APPNOTE 4.5.3: a local ZIP64 extra carries both sizes.
            extra, size32 = _zip64_extra([member.size, member.size]), _MAX32
        else:
            extra, size32 = b"", member.size
        header = _LOCAL.pack(
            _LOCAL_SIG,
            self._version_needed(i),
            self._flags(i),
            _METHOD_STORED,
            self._time,
            self._date,
            member.crc32,
            size32,
            size32,
            len(name),
            len(extra),
        )
        return header + name + extra

    def _central_extra_len(self, i: int) -> int:
        if not (self._size_zip64(i) or self._offset_zip64(i)):
            return 0
        return 4 + 16 + (8 if self._offset_zip64(i) else 0)

    def _central_extra(self, i: int) -> bytes:
        # An entry that needs a ZIP64 extra for its offset alone still gets both sizes in it:
        # Info-ZIP unzip 6.0 keeps a size of exactly 0xFFFFFFFF from an earlier entry and then
        # reads a later offset-only extra as sizes (misplaced entries, "overlapped components").
        if not (self._size_zip64(i) or self._offset_zip64(i)):
            return b""
        size = self._members[i].size
        return _zip64_extra(
            [size, size, self._offsets[i]] if self._offset_zip64(i) else [size, size]
        )

    def _central_entry(self, i: int) -> bytes:
        member, name = self._members[i], self._names[i]
        extra = self._central_extra(i)
        size32 = _MAX32 if extra else member.size
        offset32 = _MAX32 if self._offset_zip64(i) else self._offsets[i]
        entry = _CENTRAL.pack(
            _CENTRAL_SIG,
            _MADE_BY,
            self._version_needed(i),
            self._flags(i),
            _METHOD_STORED,
            self._time,
            self._date,
            member.crc32,
            size32,
            size32,
            len(name),
            len(extra),
            0,  # comment length
            0,  # disk number start
            0,  # internal attributes
            _EXTERNAL_ATTR,
            offset32,
        )
        return entry + name + extra

    def _build_tail(self) -> bytes:
        count = len(self._members)
        cd_offset, cd_end = self._offsets[-1], self._cd_offsets[-1]
        cd_size = cd_end - cd_offset
        zip64 = self._force_zip64 or count >= _MAX16 or cd_size >= _MAX32 or cd_offset >= _MAX32
        tail = b""
        if zip64:
            tail += _EOCD64.pack(
                _EOCD64_SIG,
                _EOCD64.size - 12,  # size of the record after this field
                _MADE_BY,
                _VERSION_ZIP64,
                0,  # this disk
                0,  # disk holding the central directory
                count,
                count,
                cd_size,
                cd_offset,
            )
            tail += _EOCD64_LOCATOR.pack(_EOCD64_LOCATOR_SIG, 0, cd_end, 1)
        # Fields that overflow (all of them when forced) hold the sentinel; readers then use EOCD64.
        force = self._force_zip64
        count16 = _MAX16 if force or count >= _MAX16 else count
        tail += _EOCD.pack(
            _EOCD_SIG,
            0,  # this disk
            0,  # disk holding the central directory
            count16,
            count16,
            _MAX32 if force or cd_size >= _MAX32 else cd_size,
            _MAX32 if force or cd_offset >= _MAX32 else cd_offset,
            0,  # comment length
        )
        return tail

    # -- ranges ----------------------------------------------------------------------------------

    def _pieces(self, start: int, end: int) -> Iterator[tuple[int, Literal | Slice]]:
        """(offset, untrimmed piece) for each piece overlapping [start, end); builds no others."""
        n = len(self._members)
        cd_offset, tail_offset = self._offsets[-1], self._cd_offsets[-1]
        first_cd = 0
        if start < cd_offset:
            for i in range(bisect_right(self._offsets, start) - 1, n):
                offset = self._offsets[i]
                if offset >= end:
                    return
                data_offset = offset + self._local_header_len(i)
                if start < data_offset:
                    yield offset, Literal(self._local_header(i))
                size = self._members[i].size
                if size and data_offset < end:
                    yield data_offset, Slice(i, 0, size)
        elif start < tail_offset:
            first_cd = bisect_right(self._cd_offsets, start) - 1
        if start < tail_offset:
            for i in range(first_cd, n):
                if self._cd_offsets[i] >= end:
                    return
                yield self._cd_offsets[i], Literal(self._central_entry(i))
        if tail_offset < end:
            yield tail_offset, Literal(self._tail)

    def _trim(self, start: int, end: int) -> Iterator[Literal | Slice]:
        for offset, piece in self._pieces(start, end):
            length = len(piece.data) if isinstance(piece, Literal) else piece.end - piece.start
            lo, hi = max(start - offset, 0), min(end - offset, length)
            if lo >= hi:
                continue
            if isinstance(piece, Literal):
                yield piece if (lo, hi) == (0, length) else Literal(piece.data[lo:hi])
            else:
                yield Slice(piece.member, piece.start + lo, piece.start + hi)

    @staticmethod
    def _coalesce(pieces: Iterator[Literal | Slice]) -> Iterator[Literal | Slice]:
        buffer: list[bytes] = []
        buffered = 0
        for piece in pieces:
            if isinstance(piece, Literal):
                buffer.append(piece.data)
                buffered += len(piece.data)
                if buffered < _CHUNK:
                    continue
            if buffer:
                yield Literal(b"".join(buffer))
                buffer, buffered = [], 0
            if isinstance(piece, Slice):
                yield piece
        if buffer:
            yield Literal(b"".join(buffer))
