"""Hourly parts: how events for one (project, hour) are packed into an immutable gzip file.

A part is a sequence of gzip members, each holding about ``block_bytes`` of whole NDJSON lines, so
the file is one valid ``.json.gz`` for the Export API while the user index can point at single
members (blocks) for DSAR. Members are compressed as soon as they fill, so an open part holds its
data compressed in memory and sealing costs one write.
"""

from __future__ import annotations

import zlib
from collections.abc import Set
from dataclasses import dataclass, field

import orjson
from isal import igzip

from swell.model import IndexEntry, Part, Rollup
from swell.rollups import Fact, RollupAcc, fact

#: isal level 1: ~1 GB/s per core at 5.5x; zlib level 6 would cost ~6x the CPU for 30% fewer bytes.
COMPRESS_LEVEL = 1


@dataclass(slots=True)
class _UserAcc:
    user_id: str | None
    blocks: list[int] = field(default_factory=list)
    events: int = 0


@dataclass(slots=True)
class OpenPart:
    """Events of one (project, hour) not yet sealed. Not thread-safe; owned by the store."""

    project_id: int
    hour: int
    block_bytes: int
    members: list[bytes] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    size: int = 0
    crc: int = 0
    raw_bytes: int = 0
    events: int = 0
    min_time: str = ""
    max_time: str = ""
    first_lsn: int = 0
    max_lsn: int = 0
    #: Keys of the imported records this part holds (swell.store.import_key), for re-imports.
    import_keys: list[int] = field(default_factory=list)
    _lines: list[bytes] = field(default_factory=list)
    _line_bytes: int = 0
    _users: dict[int, _UserAcc] = field(default_factory=dict)
    #: Per-day rollups of the events so far (swell.rollups), written with the part.
    rollups: RollupAcc = field(default_factory=RollupAcc)

    def add(
        self,
        line: bytes,
        amplitude_id: int,
        user_id: str | None,
        upload_time: str,
        lsn: int,
        record_fact: Fact | None = None,
    ) -> None:
        """Append one record (without its newline)."""
        facts = None if record_fact is None else [record_fact]
        self.add_batch([line], [amplitude_id], [user_id], upload_time, lsn, facts)

    def add_batch(
        self,
        lines: list[bytes],
        amplitude_ids: list[int],
        user_ids: list[str | None],
        upload_time: str,
        lsn: int,
        facts: list[Fact] | None = None,
    ) -> None:
        """Append records that share one upload time and log frame (``add`` for many);
        ``facts`` are their rollup facts (swell.rollups.fact; read from the lines if None)."""
        if facts is None:
            facts = [fact(orjson.loads(line)) for line in lines]
        if not self.min_time or upload_time < self.min_time:
            self.min_time = upload_time
        if upload_time > self.max_time:
            self.max_time = upload_time
        if lsn:
            self.first_lsn = self.first_lsn or lsn
            self.max_lsn = max(self.max_lsn, lsn)
        self.events += len(lines)
        users = self._users
        pending = self._lines
        size = self._line_bytes
        limit = self.block_bytes
        block = len(self.members)
        for line, aid, uid in zip(lines, amplitude_ids, user_ids, strict=True):
            pending.append(line)
            size += len(line) + 1
            acc = users.get(aid)
            if acc is None:
                acc = users[aid] = _UserAcc(uid)
            elif uid and not acc.user_id:
                acc.user_id = uid
            if not acc.blocks or acc.blocks[-1] != block:
                acc.blocks.append(block)
            acc.events += 1
            if size >= limit:
                self.raw_bytes += size - self._line_bytes
                self._line_bytes = size
                self._close_block()
                pending = self._lines
                size = 0
                block += 1
        self.raw_bytes += size - self._line_bytes
        self._line_bytes = size
        add_fact = self.rollups.add
        for aid, f in zip(amplitude_ids, facts, strict=True):
            add_fact(aid, f)

    @property
    def memory_bytes(self) -> int:
        """Bytes this part holds in memory: its compressed blocks and the block still filling."""
        return self.size + self._line_bytes

    def amplitude_ids_of(self, user_id: str) -> list[int]:
        """The amplitude_ids this part's events carry together with ``user_id``."""
        return [aid for aid, acc in self._users.items() if acc.user_id == user_id]

    def holds_any(self, amplitude_ids: Set[int]) -> bool:
        """Whether an event of one of ``amplitude_ids`` is in this part."""
        users = self._users
        return any(aid in users for aid in amplitude_ids)

    def _close_block(self) -> None:
        if not self._lines:
            return
        self._lines.append(b"")
        member = igzip.compress(b"\n".join(self._lines), compresslevel=COMPRESS_LEVEL, mtime=0)
        self._lines = []
        self._line_bytes = 0
        self.offsets.append(self.size)
        self.members.append(member)
        self.size += len(member)
        self.crc = zlib.crc32(member, self.crc)

    def seal(self, seq: int) -> tuple[Part, bytes, list[IndexEntry]]:
        """Finish the last block; return the part record, its bytes and its user-index entries
        (its rollups are ``rollup()``)."""
        self._close_block()
        part = Part(
            project_id=self.project_id,
            hour=self.hour,
            seq=seq,
            size=self.size,
            crc32=self.crc,
            events=self.events,
            min_time=self.min_time,
            max_time=self.max_time,
            max_lsn=self.max_lsn,
            block_offsets=tuple(self.offsets),
        )
        entries = [
            IndexEntry(aid, acc.user_id, tuple(acc.blocks), acc.events)
            for aid, acc in self._users.items()
        ]
        return part, b"".join(self.members), entries

    def rollup(self) -> Rollup:
        """What this part adds to its project's per-day rollups."""
        return self.rollups.rollup()


def decompress_blocks(data: bytes) -> bytes:
    """The NDJSON text of one or more whole gzip members (blocks)."""
    raw: bytes = igzip.decompress(data)  # type: ignore[no-untyped-call]
    return raw


def record_keys(line: bytes) -> tuple[int, str | None, str, Fact]:
    """(amplitude_id, user_id, server_upload_time, rollup fact) of one stored record."""
    record = orjson.loads(line)
    return (
        int(record.get("amplitude_id") or 0),
        record.get("user_id"),
        record["server_upload_time"],
        fact(record),
    )
