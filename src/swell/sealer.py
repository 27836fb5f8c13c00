"""The open parts, and how they become sealed parts without ever dropping one.

Every acknowledged event sits in an open part (one per project and hour) until it is sealed:
written to the blob store, then recorded in the catalog with its user-index rows. Sealing a part
first *freezes* it: it leaves the open set, later events of its hour start a new open part, and
the frozen part waits for its blob and its catalog row. It is forgotten only once both are
committed. Until then it stays in memory and keeps its log frames pinned (``pinned_lsn``), so a
seal that fails loses nothing: it is retried with capped backoff (``retry_due``, driven by the
store's background loop), or by the next export or DSAR that needs it.

Per (project, hour) parts are published in order: a key holds at most one frozen part, and its
open part is not frozen while an older one of the same key is still unpublished. Recovery relies
on that order (it replays the log frames above each key's highest sealed frame).

A failed publish keeps the part number it was given (the metadata store never hands one out
twice), so a retry that finds its catalog row already committed (the reply was lost) knows its
own part by number and checksum.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from swell.errors import AlreadyExists, StorageError
from swell.model import Part
from swell.parts import OpenPart

if TYPE_CHECKING:
    from swell.backends.base import BlobStore, Catalog, EventLog

logger = logging.getLogger("swell.sealer")

Key = tuple[int, int]
Which = Callable[[OpenPart], bool]

#: Backoff between retries of a failing seal: FIRST_RETRY_SECONDS, doubling up to the cap.
FIRST_RETRY_SECONDS = 0.5
MAX_RETRY_SECONDS = 30.0


@dataclass
class _Frozen:
    """A part taken out of the open set, waiting to be published."""

    part: OpenPart
    #: Its part number, allocated on the first attempt and kept by every retry.
    seq: int | None = None


@dataclass
class SealFailure:
    """Why seals are failing, since when, and when the next background retry is due."""

    error: StorageError
    since: float
    failures: int
    retry_at: float

    def describe(self, now: float) -> dict[str, Any]:
        return {
            "error": self.error.message,
            "cause": self.error.cause,
            "failing_seconds": round(now - self.since, 3),
            "failures": self.failures,
        }


class Sealer:
    """The registry of open and frozen parts of one store. Not thread-safe; one event loop."""

    def __init__(
        self,
        catalog: Catalog,
        blobs: BlobStore,
        log: EventLog,
        *,
        block_bytes: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.catalog = catalog
        self.blobs = blobs
        self.log = log
        self.block_bytes = block_bytes
        self.clock = clock
        self._open: dict[Key, OpenPart] = {}
        self._frozen: dict[Key, _Frozen] = {}
        self._lock = asyncio.Lock()
        #: Set while any frozen part failed its last attempt.
        self.failure: SealFailure | None = None
        #: Parts published, and attempts that failed, since the sealer started.
        self.sealed = 0
        self.failed_attempts = 0
        #: Background retries of frozen parts since the sealer started (for /metrics).
        self.retries = 0

    # -- the open set ------------------------------------------------------------------------------

    def part_for(self, project_id: int, hour: int) -> OpenPart:
        """The open part that takes (project, hour)'s next events."""
        part = self._open.get((project_id, hour))
        if part is None:
            part = self._open[(project_id, hour)] = OpenPart(project_id, hour, self.block_bytes)
        return part

    def unsealed(self) -> Iterator[OpenPart]:
        """Every part not sealed yet: frozen ones first, then open ones."""
        for frozen in self._frozen.values():
            yield frozen.part
        yield from self._open.values()

    def unsealed_states(self) -> Iterator[tuple[str, OpenPart]]:
        """Every part not sealed yet with its state: "frozen" (waiting for a retry) or "open"."""
        for frozen in self._frozen.values():
            yield "frozen", frozen.part
        for part in self._open.values():
            yield "open", part

    def is_open(self, project_id: int, hour: int) -> bool:
        return (project_id, hour) in self._open

    def pinned_lsn(self) -> int | None:
        """The oldest log frame an unsealed part holds (None when none holds one)."""
        firsts = [p.first_lsn for p in self.unsealed() if p.first_lsn]
        return min(firsts, default=None)

    def unsealed_bytes(self) -> int:
        """Memory held by unsealed parts (compressed blocks plus the pending block)."""
        return sum(p.memory_bytes for p in self.unsealed())

    @property
    def failing(self) -> bool:
        return self.failure is not None

    @property
    def frozen_parts(self) -> int:
        return len(self._frozen)

    # -- sealing -----------------------------------------------------------------------------------

    async def seal(self, which: Which, *, include_open: bool = True) -> int:
        """Publish every unsealed part ``which`` chooses (only frozen ones unless
        ``include_open``); returns how many were published.

        A frozen part of a chosen key goes first, whether or not it is chosen itself, so per-key
        order holds. Raises the first StorageError met, after trying every chosen key; the parts
        that failed stay frozen, and no open part is frozen behind a failed one.
        """
        async with self._lock:
            keys = {k for k, f in self._frozen.items() if which(f.part)}
            if include_open:
                keys.update(k for k, p in self._open.items() if which(p))
            published = 0
            first_error: StorageError | None = None
            for key in sorted(keys):
                try:
                    if key in self._frozen:
                        published += await self._publish(key)
                    part = self._open.get(key)
                    if include_open and part is not None and which(part):
                        del self._open[key]
                        self._frozen[key] = _Frozen(part)
                        published += await self._publish(key)
                except StorageError as exc:
                    first_error = first_error or exc
                    self._failed(exc)
            if not self._frozen:
                if self.failure is not None:
                    logger.info(
                        "sealing recovered after %d failed attempt(s)", self.failure.failures
                    )
                self.failure = None
            if first_error is not None:
                raise first_error
            return published

    async def retry_due(self) -> int:
        """Retry the frozen parts once their backoff has passed; returns how many were published.
        Raises the StorageError of a retry that failed again."""
        if self.failure is None or self.clock() < self.failure.retry_at:
            return 0
        self.retries += 1
        return await self.seal(lambda part: True, include_open=False)

    def retry_in(self) -> float | None:
        """Seconds until the next background retry is due (None when nothing is failing)."""
        if self.failure is None:
            return None
        return max(0.0, self.failure.retry_at - self.clock())

    async def _publish(self, key: Key) -> int:
        """Blob, then catalog row, of ``key``'s frozen part; forget it once both are committed."""
        frozen = self._frozen[key]
        part = frozen.part
        if part.events == 0:
            del self._frozen[key]
            return 0
        if frozen.seq is None:
            frozen.seq = await self.catalog.allocate_part_seq(*key)
        sealed, data, entries = await asyncio.to_thread(part.seal, frozen.seq)
        rollup = await asyncio.to_thread(part.rollup)
        if part.max_lsn:
            await self.log.sync(part.max_lsn)  # never publish events that are not yet durable
        await self.blobs.put(sealed.key, data)
        try:
            await self.catalog.add_part(sealed, entries, part.import_keys, rollup=rollup)
        except AlreadyExists:
            if not await self._recorded(sealed):
                raise
        del self._frozen[key]
        self.sealed += 1
        return 1

    async def _recorded(self, sealed: Part) -> bool:
        """Whether the catalog already holds exactly this part (an earlier attempt committed)."""
        for part in await self.catalog.parts(sealed.project_id, sealed.hour, sealed.hour):
            if part.seq == sealed.seq:
                return part.crc32 == sealed.crc32 and part.size == sealed.size
        return False

    def _failed(self, exc: StorageError) -> None:
        now = self.clock()
        self.failed_attempts += 1
        failures = 1 if self.failure is None else self.failure.failures + 1
        delay = min(MAX_RETRY_SECONDS, FIRST_RETRY_SECONDS * 2 ** (failures - 1))
        delay *= random.uniform(0.8, 1.0)  # jitter
        since = now if self.failure is None else self.failure.since
        self.failure = SealFailure(exc, since, failures, now + delay)
        logger.warning(
            "sealing failed (%d in a row; %d part(s) kept unsealed, retry in %.1f s): %s",
            failures,
            len(self._frozen),
            delay,
            exc.message,
        )
