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
4. the sweep deletes doomed blobs once due.

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

import msgspec

from swell.backends.base import BlobStore, Catalog
from swell.errors import Conflict, StorageError
from swell.model import IndexEntry, Part
from swell.parts import OpenPart, decompress_blocks

logger = logging.getLogger("swell.rewrite")

#: How long a rewrite's new blobs stay doomed before its swap must have committed.
PENDING = timedelta(days=1)
#: When a blob could not be deleted, the sweep tries it again this much later.
SWEEP_RETRY = timedelta(minutes=1)


class _Keys(msgspec.Struct):
    """What a rewrite reads from a record to file it again (the rest is copied as bytes)."""

    server_upload_time: str
    amplitude_id: int | None = None
    user_id: str | None = None


_decode_keys = msgspec.json.Decoder(_Keys).decode


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
        catalog: Catalog,
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

    # -- the sweep -------------------------------------------------------------------------------

    async def sweep(self, limit: int = 1000) -> int:
        """Delete the doomed blobs that are due; returns how many went."""
        now = self.clock()
        keys = await self.catalog.take_doomed_blobs(now, limit)
        if not keys:
            return 0
        try:
            await self.blobs.delete(keys)
        except StorageError:
            await self.catalog.doom_blobs(keys, now + SWEEP_RETRY)
            raise
        return len(keys)
