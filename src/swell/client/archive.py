"""Reading Export API archives, and checking them before they count.

An export is a zip whose members are gzip files of NDJSON (swell stores them as they are; any
member may also be deflated, which is undocumented for Amplitude but costs nothing to accept).
:func:`verify` checks everything a corrupt or cut download could get wrong: the central
directory, each member's local header against it (name length, CRC and sizes), the CRC and
sizes of each member's bytes, and then, decompressing every gzip member of every file, the gzip
CRC32 and ISIZE of each. Nothing but gzip members may follow one another in a file (no trailing
bytes).

The work is CPU-bound (decompression) and blocking: run it in a worker thread.
"""

from __future__ import annotations

import struct
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, cast

from isal import igzip, isal_zlib

from swell.client.errors import CorruptArchive

#: Bytes read at a time. Small enough that restarting the gzip decompressor at each member
#: boundary (it hands back the rest of the chunk as a copy) stays cheap: measured on swell's
#: 256 KiB members, 128 KiB reads were as fast as 1 MiB ones.
CHUNK = 128 * 1024
#: A complete gzip member holding b"\n": appended to an extracted file whose last line lacks one,
#: so concatenated files never run two records together.
NEWLINE_MEMBER = igzip.compress(b"\n", 1, mtime=0)

_LOCAL = struct.Struct("<4s2B4HL2L2H")
_LOCAL_MAGIC = b"PK\x03\x04"
_ZIP64_EXTRA = 0x0001
_DATA_DESCRIPTOR = 0x08
_GZIP_ERROR = cast("type[Exception]", isal_zlib.error)


@dataclass(frozen=True, slots=True)
class Member:
    name: str
    #: Where the member's bytes start in the archive.
    offset: int
    #: Bytes in the archive (stored or deflated).
    size: int
    #: Bytes of the gzip file once inflated (== size for stored members).
    file_size: int
    crc: int
    method: int


@dataclass(frozen=True, slots=True)
class Checked:
    """What :func:`verify` found in an archive that passed."""

    members: int
    #: NDJSON lines, i.e. records.
    events: int
    #: Decompressed NDJSON bytes.
    data_bytes: int


def members(f: BinaryIO, path: Path) -> list[Member]:
    """The archive's file members, their local headers checked against the central directory.

    Raises:
        CorruptArchive: not a zip, or any header disagrees.
    """
    size = f.seek(0, 2)
    try:
        infos = zipfile.ZipFile(f).infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError, OSError) as exc:
        raise CorruptArchive(f"{path.name} is not a valid zip archive ({exc})") from None
    found: list[Member] = []
    for info in infos:
        if info.is_dir():
            continue
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise CorruptArchive(
                f"{path.name}: member {info.filename} uses compression method "
                f"{info.compress_type}, not stored or deflate"
            )
        f.seek(info.header_offset)
        header = f.read(_LOCAL.size)
        if len(header) != _LOCAL.size:
            raise CorruptArchive(f"{path.name}: the local header of {info.filename} is cut off")
        fields = _LOCAL.unpack(header)
        magic, flags, crc, csize, usize, name_len, extra_len = (
            fields[0],
            fields[3],
            fields[7],
            fields[8],
            fields[9],
            fields[10],
            fields[11],
        )
        if magic != _LOCAL_MAGIC:
            raise CorruptArchive(f"{path.name}: no local header for {info.filename}")
        name = f.read(name_len)
        extra = f.read(extra_len)
        if name != info.orig_filename.encode("utf-8" if info.flag_bits & 0x800 else "cp437"):
            raise CorruptArchive(f"{path.name}: local header names another file than the index")
        if not flags & _DATA_DESCRIPTOR:
            if csize == 0xFFFFFFFF or usize == 0xFFFFFFFF:
                usize, csize = _zip64_sizes(extra, usize, csize)
            if (crc, csize, usize) != (info.CRC, info.compress_size, info.file_size):
                raise CorruptArchive(
                    f"{path.name}: {info.filename}'s local header disagrees with the index "
                    "(CRC or sizes)"
                )
        offset = info.header_offset + _LOCAL.size + name_len + extra_len
        if offset + info.compress_size > size:
            raise CorruptArchive(f"{path.name}: {info.filename} runs past the end of the file")
        found.append(
            Member(
                info.filename,
                offset,
                info.compress_size,
                info.file_size,
                info.CRC,
                info.compress_type,
            )
        )
    return found


def _zip64_sizes(extra: bytes, usize: int, csize: int) -> tuple[int, int]:
    pos = 0
    while pos + 4 <= len(extra):
        tag, length = struct.unpack_from("<HH", extra, pos)
        if tag == _ZIP64_EXTRA:
            values = list(struct.unpack_from(f"<{length // 8}Q", extra, pos + 4))
            if usize == 0xFFFFFFFF and values:
                usize = values.pop(0)
            if csize == 0xFFFFFFFF and values:
                csize = values.pop(0)
            return usize, csize
        pos += 4 + length
    return usize, csize


def member_bytes(f: BinaryIO, member: Member, path: Path) -> Iterator[bytes]:
    """The member's gzip file, in chunks; the zip CRC and sizes are checked at the end.

    Raises:
        CorruptArchive: at the end, if the CRC or a size is wrong.
    """
    f.seek(member.offset)
    left = member.size
    crc = 0
    produced = 0
    inflater = zlib.decompressobj(-15) if member.method == zipfile.ZIP_DEFLATED else None
    while left:
        chunk = f.read(min(CHUNK, left))
        if not chunk:
            raise CorruptArchive(f"{path.name}: {member.name} is cut off")
        left -= len(chunk)
        if inflater is not None:
            try:
                chunk = inflater.decompress(chunk)
            except zlib.error as exc:
                raise CorruptArchive(
                    f"{path.name}: {member.name} does not inflate ({exc})"
                ) from None
        if chunk:
            crc = isal_zlib.crc32(chunk, crc)
            produced += len(chunk)
            yield chunk
    if inflater is not None and not inflater.eof:
        raise CorruptArchive(f"{path.name}: {member.name}'s deflate stream is cut off")
    if produced != member.file_size or crc != member.crc:
        raise CorruptArchive(f"{path.name}: {member.name} fails its zip CRC or size check")


def gunzip(chunks: Iterator[bytes], name: str) -> Iterator[bytes]:
    """Decompress a multi-member gzip stream, checking every member's CRC32 and ISIZE.

    Raises:
        CorruptArchive: bad gzip data, a bad check value, a cut-off member, or trailing bytes.
    """
    decompressor = isal_zlib.decompressobj(31)
    pending = False  # the current decompressor has input but has not reached its member's end
    empty = True
    for chunk in chunks:
        data: bytes = chunk
        while data:
            empty = False
            pending = True
            try:
                out = decompressor.decompress(data)
            except _GZIP_ERROR as exc:
                raise CorruptArchive(f"{name}: bad gzip data ({exc})") from None
            if out:
                yield out
            if decompressor.eof:
                data = decompressor.unused_data
                decompressor = isal_zlib.decompressobj(31)
                pending = False
            else:
                data = b""
    if empty:
        raise CorruptArchive(f"{name}: empty file, not gzip")
    if pending:
        raise CorruptArchive(f"{name}: the last gzip member is cut off")


def verify(
    path: Path,
    gz_sink: Callable[[bytes], object] | None = None,
    line_sink: Callable[[list[bytes]], object] | None = None,
) -> Checked:
    """Check an archive end to end (see the module docstring); returns what it holds.

    ``gz_sink`` receives each member's gzip bytes in order, with :data:`NEWLINE_MEMBER` after
    any file whose last line lacks its newline; together they form one multi-member gzip of the
    archive's NDJSON. ``line_sink`` receives the NDJSON lines in batches. Both see the data
    before the checks that follow it, so whatever they write must be discarded when this raises.

    Raises:
        CorruptArchive: the first check that fails.
        OSError: the file could not be read.
    """
    events = data_bytes = 0
    with path.open("rb") as f:
        found = members(f, path)
        for member in found:
            label = f"{path.name}: {member.name}"
            chunks = member_bytes(f, member, path)
            if gz_sink is not None:
                chunks = _tee(chunks, gz_sink)
            last = b"\n"
            raw = gunzip(chunks, label)
            if line_sink is not None:
                raw = _lines_to(raw, line_sink)
            for out in raw:
                events += out.count(b"\n")
                data_bytes += len(out)
                last = out[-1:]
            if last != b"\n":
                events += 1
                if gz_sink is not None:
                    gz_sink(NEWLINE_MEMBER)
    return Checked(len(found), events, data_bytes)


def _tee(chunks: Iterator[bytes], sink: Callable[[bytes], object]) -> Iterator[bytes]:
    for chunk in chunks:
        sink(chunk)
        yield chunk


def _lines_to(raw: Iterator[bytes], sink: Callable[[list[bytes]], object]) -> Iterator[bytes]:
    """Pass chunks through, handing whole non-empty lines to ``sink`` as they complete."""
    carry = b""
    for out in raw:
        yield out
        data = carry + out if carry else out
        cut = data.rfind(b"\n")
        if cut < 0:
            carry = data
            continue
        lines = [line for line in data[:cut].split(b"\n") if line]
        if lines:
            sink(lines)
        carry = data[cut + 1 :]
    if carry:
        sink([carry])


def iter_lines(path: Path) -> Iterator[list[bytes]]:
    """The NDJSON lines of an archive in batches, in member order (verified again on the way).

    Raises:
        CorruptArchive, OSError: as :func:`verify`.
    """
    batches: list[list[bytes]] = []
    with path.open("rb") as f:
        for member in members(f, path):
            raw = gunzip(member_bytes(f, member, path), f"{path.name}: {member.name}")
            for _ in _lines_to(raw, batches.append):
                if batches:
                    yield from batches
                    batches.clear()
            yield from batches
            batches.clear()
