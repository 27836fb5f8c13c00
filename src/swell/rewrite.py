"""Rewriting sealed parts: compaction of crowded hours, and the sweep of replaced blobs.

Sealed parts are immutable; a rewrite makes new ones and swaps them into the catalog:

1. the new parts are built from the old parts' lines (``OpenPart``, so blocks, CRCs and the
   user index are made exactly as sealing makes them), each numbered with a generation of its
   (project, hour) never used before (``allocate_part_seq``), so its blob key (``Part.key``) is
   one no reader can be using;
2. their keys are *doomed* (``Catalog.doom_blobs``) a day ahead, then their blobs are written:
   a rewrite that dies here leaves blobs nobody reads, which the sweep deletes a day later;
3. ``Catalog.replace_parts`` swaps the rows in one transaction: old parts, their user-index
   rows out; new parts, theirs in; new blobs spared, old blobs doomed at the grace's end
   (``SWELL_REPLACED_BLOB_GRACE_SECONDS``), so an export planned before the swap streams whole;
4. the sweep deletes doomed blobs once due: it marks them taken (a taken blob is never spared)
   and due again a minute later, deletes them, then forgets them, so a sweep that dies is
   finished by a later one.

A crash at any point leaves the old parts or the new ones in the catalog, never both and never
neither, and no blob that is not either listed in the catalog or doomed. A rewrite that finds
the hour changed under it (a concurrent rewrite, retention) gets Conflict and dooms its blobs at
once. On a scale-out node, rewrites run inside the project owner's store, whose catalog writes
are fenced by the owner's lease epoch (swell.owner): a deposed owner cannot swap.

Compaction merges the parts of an hour that is over into as few parts as
``SWELL_PART_MAX_BYTES`` allows, in catalog order, so an export's decompressed bytes are the
same before and after; member names are numbered from ``#0`` again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Protocol

import msgspec

from swell.backends.base import BlobStore, Catalog, UserIndex
from swell.errors import Conflict, StorageError
from swell.model import IndexEntry, Part
from swell.parts import OpenPart, decompress_blocks

logger = logging.getLogger("swell.rewrite")

#: How long a rewrite's new blobs stay doomed before its swap must have committed.
PENDING = timedelta(days=1)
#: When a sweep could not delete a blob (or died), one tries it again this much later.
SWEEP_RETRY = timedelta(minutes=1)


class _Keys(msgspec.Struct):
    """What a rewrite reads from a record to file it again (the rest is copied as bytes)."""

    server_upload_time: str
    amplitude_id: int | None = None
    user_id: str | None = None


_decode_keys = msgspec.json.Decoder(_Keys).decode


class RewriteCatalog(Catalog, UserIndex, Protocol):
    """What a rewrite needs of the metadata store: the catalog, and the user index to find the
    parts that hold given users."""


@dataclass(frozen=True, slots=True)
class Rewritten:
    """What one rewrite did."""

    project_id: int
    hour: int
    parts_before: int
    parts_after: int
    bytes_read: int
    bytes_written: int
    events: int


@dataclass(slots=True)
class _Built:
    parts: list[tuple[OpenPart, int]]
    #: Every amplitude_id the old parts hold (their user-index rows go with them).
    old_ids: set[int]
    bytes_read: int


class Rewriter:
    """Rewrites a store's sealed parts and sweeps the blobs rewrites replaced."""

    def __init__(
        self,
        catalog: RewriteCatalog,
        blobs: BlobStore,
        *,
        block_bytes: int,
        part_max_bytes: int,
        grace_seconds: float,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.catalog = catalog
        self.blobs = blobs
        self.block_bytes = block_bytes
        self.part_max_bytes = part_max_bytes
        self.grace = timedelta(seconds=grace_seconds)
        self.clock = clock

    # -- compaction ------------------------------------------------------------------------------

    async def compact_hour(self, project_id: int, hour: int, *, min_parts: int = 2) -> Rewritten:
        """Merge the sealed parts of (project, hour) into as few as the part size allows, if it
        holds at least ``min_parts``. Raises Conflict if the hour changed meanwhile, and the
        StorageError of a read or write that failed (nothing is swapped then)."""
        old = await self.catalog.parts(project_id, hour, hour)
        if len(old) < max(min_parts, 1):
            return Rewritten(project_id, hour, len(old), len(old), 0, 0, sum(p.events for p in old))
        built = _Built([], set(), 0)
        for part in old:
            data = await self.blobs.read(part.key)
            if len(data) != part.size:
                raise StorageError(
                    f"blob {part.key!r} has {len(data)} bytes, the catalog says {part.size}"
                )
            await asyncio.to_thread(self._refile, built, part, data)
        return await self._swap(project_id, hour, old, built)

    def _refile(self, built: _Built, part: Part, data: bytes) -> None:
        """Add every line of one old part to the new parts (in a worker thread)."""
        built.bytes_read += len(data)
        for block in range(len(part.block_offsets)):
            start, end = part.block_range(block)
            for line in decompress_blocks(data[start:end]).split(b"\n"):
                if not line:
                    continue
                keys = _decode_keys(line)
                aid = keys.amplitude_id or 0
                built.old_ids.add(aid)
                if not built.parts or built.parts[-1][0].raw_bytes >= self.part_max_bytes:
                    built.parts.append((OpenPart(part.project_id, part.hour, self.block_bytes), 0))
                target, max_lsn = built.parts[-1]
                target.add(line, aid, keys.user_id, keys.server_upload_time, 0)
                built.parts[-1] = (target, max(max_lsn, part.max_lsn))

    async def _swap(
        self, project_id: int, hour: int, old: Sequence[Part], built: _Built
    ) -> Rewritten:
        new: list[tuple[Part, Sequence[IndexEntry], bytes]] = []
        for seq, (open_part, max_lsn) in enumerate(built.parts):
            open_part.max_lsn = max_lsn  # the hour's sealed watermark must not move
            gen = await self.catalog.allocate_part_seq(project_id, hour)
            sealed, data, entries = await asyncio.to_thread(open_part.seal, seq)
            new.append((replace(sealed, gen=gen), entries, data))
        return await self._commit(project_id, hour, old, built, new)

    async def _commit(
        self,
        project_id: int,
        hour: int,
        old: Sequence[Part],
        built: _Built,
        new: Sequence[tuple[Part, Sequence[IndexEntry], bytes]],
    ) -> Rewritten:
        """Doom the new blobs, write them, swap the rows (see the module's steps 2 and 3)."""
        now = self.clock()
        keys = [part.key for part, _, _ in new]
        await self.catalog.doom_blobs(keys, now + PENDING)
        try:
            for part, _, data in new:
                await self.blobs.put(part.key, data)
            await self.catalog.replace_parts(
                old,
                [(part, entries) for part, entries, _ in new],
                sorted(built.old_ids),
                self.clock() + self.grace,
            )
        except Conflict:
            await self.catalog.doom_blobs(keys, self.clock())
            raise
        written = sum(part.size for part, _, _ in new)
        events = sum(part.events for part, _, _ in new)
        logger.info(
            "rewrote project %d hour %d: %d part(s) into %d, %d event(s)",
            project_id,
            hour,
            len(old),
            len(new),
            events,
        )
        return Rewritten(project_id, hour, len(old), len(new), built.bytes_read, written, events)

    # -- removing users' events (the core of a deletion) ------------------------------------------

    async def drop_users(self, project_id: int, amplitude_ids: Sequence[int]) -> list[Rewritten]:
        """Rewrite every sealed part that holds events of ``amplitude_ids`` (the user index says
        which) without those lines, one (project, hour) swap at a time; a part left with no
        line goes from the catalog. Parts keep their member numbers. The caller seals the
        users' unsealed events first (Store.seal_user) and owns the rest of a deletion
        (identity state, links, the log). Raises Conflict if an hour changed meanwhile (run it
        again), or the StorageError of a read or write that failed."""
        doomed = set(amplitude_ids)
        located = await self.catalog.user_blocks(project_id, sorted(doomed))
        by_hour: dict[int, dict[int, Part]] = {}
        for entry in located:
            by_hour.setdefault(entry.part.hour, {})[entry.part.seq] = entry.part
        return [
            await self._drop_in_hour(project_id, hour, by_hour[hour], doomed)
            for hour in sorted(by_hour)
        ]

    async def _drop_in_hour(
        self, project_id: int, hour: int, holding: dict[int, Part], doomed: set[int]
    ) -> Rewritten:
        old = [holding[seq] for seq in sorted(holding)]
        rebuilt: list[tuple[Part, OpenPart]] = []
        old_ids: set[int] = set()
        read = 0
        for part in old:
            data = await self.blobs.read(part.key)
            read += len(data)
            open_part = OpenPart(project_id, hour, self.block_bytes)
            await asyncio.to_thread(self._filter, part, data, open_part, doomed, old_ids)
            rebuilt.append((part, open_part))
        # The hour's sealed watermark (its highest max_lsn) must not move: recovery would replay
        # log frames above it. A part that keeps lines keeps its own; an emptied part's goes to
        # the last part that keeps lines, or to another part of the hour, rewritten as it is
        # (if the hour is left with no part, its frames are long gone from the log: a deletion
        # runs on sealed, checkpointed data).
        top = max(part.max_lsn for part in old)
        kept = [(part, open_part) for part, open_part in rebuilt if open_part.events]
        if not kept:
            others = [
                p for p in await self.catalog.parts(project_id, hour, hour) if p.seq not in holding
            ]
            if others and max(p.max_lsn for p in others) < top:
                carrier = max(others, key=lambda p: p.seq)  # rewritten as is, to carry it
                data = await self.blobs.read(carrier.key)
                read += len(data)
                open_part = OpenPart(project_id, hour, self.block_bytes)
                await asyncio.to_thread(self._filter, carrier, data, open_part, doomed, old_ids)
                old.append(carrier)
                kept = [(carrier, open_part)]
        new: list[tuple[Part, Sequence[IndexEntry], bytes]] = []
        for i, (part, open_part) in enumerate(kept):
            open_part.max_lsn = top if i == len(kept) - 1 else part.max_lsn
            gen = await self.catalog.allocate_part_seq(project_id, hour)
            sealed, data, entries = await asyncio.to_thread(open_part.seal, part.seq)
            new.append((replace(sealed, gen=gen), entries, data))
        built = _Built([], old_ids, read)
        return await self._commit(project_id, hour, old, built, new)

    def _filter(
        self, part: Part, data: bytes, into: OpenPart, doomed: set[int], old_ids: set[int]
    ) -> None:
        """Copy one part's lines but the doomed users' into ``into`` (in a worker thread)."""
        for block in range(len(part.block_offsets)):
            start, end = part.block_range(block)
            for line in decompress_blocks(data[start:end]).split(b"\n"):
                if not line:
                    continue
                keys = _decode_keys(line)
                aid = keys.amplitude_id or 0
                old_ids.add(aid)
                if aid not in doomed:
                    into.add(line, aid, keys.user_id, keys.server_upload_time, 0)

    # -- the sweep -------------------------------------------------------------------------------

    async def sweep(self, limit: int = 1000) -> int:
        """Delete the doomed blobs that are due; returns how many went."""
        now = self.clock()
        keys = await self.catalog.take_doomed_blobs(now, now + SWEEP_RETRY, limit)
        if not keys:
            return 0
        await self.blobs.delete(keys)  # a failure (or a crash) leaves them taken, retried later
        await self.catalog.forget_blobs(keys)
        return len(keys)
