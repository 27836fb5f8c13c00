"""The store: the one writer of events. Ingest appends here; export and DSAR read what it sealed.

Data path (docs/architecture.md):

    request -> identity.enrich -> log.append (+ open part in memory) -> log.sync (fsync) -> 200
    open part -> sealed when its hour ends, when it reaches part_max_bytes, when an export needs it,
    or at shutdown -> blob (atomic) + catalog row + user index rows (one transaction)

Recovery on open: the log is replayed; frames newer than the saved identity state are re-applied to
it, and events newer than the sealed watermark of their (project, hour) go back into open parts.
A data directory is used by one process at a time (an exclusive lock file).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import time
from collections.abc import Iterable, Mapping, Sequence, Set
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from swell import log as wal
from swell.backends import open_blobs, open_metadata
from swell.backends.base import BlobStore, Metadata
from swell.enrich import RequestContext
from swell.errors import ConfigError
from swell.identity import DEDUP_WINDOW_MS, Identity
from swell.model import hour_of, hour_of_ts
from swell.parts import OpenPart, record_keys
from swell.settings import Settings

logger = logging.getLogger("swell.store")

#: How many hours an import keeps open at once before sealing the oldest.
IMPORT_OPEN_HOURS = 8
#: Identity changes are saved when this many keys are dirty, or every CHECKPOINT_SECONDS.
CHECKPOINT_DIRTY = 50_000
CHECKPOINT_SECONDS = 2.0


class DataDirLock:
    """An exclusive lock on the data directory, held for the life of a Store."""

    def __init__(self, data_dir: Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(data_dir / "LOCK", os.O_RDWR | os.O_CREAT, 0o640)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            raise ConfigError(
                f"{data_dir} is in use by another swell process (a running server?); "
                "stop it first or use another --data-dir"
            ) from None

    def release(self) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)


class Store:
    def __init__(self, settings: Settings, meta: Metadata, blobs: BlobStore) -> None:
        self.settings = settings
        self.meta = meta
        self.blobs = blobs
        self.log = wal.Log(settings.data_dir / "wal")
        self.identity = Identity(0, max_cached=settings.identity_cache_entries)
        self._open: dict[tuple[int, int], OpenPart] = {}
        self._next_seq: dict[tuple[int, int], int] = {}
        self._seal_lock = asyncio.Lock()
        self._state_lsn = 0
        self._last_checkpoint = time.monotonic()
        self._checkpoint_lock = asyncio.Lock()
        self._background: set[asyncio.Task[Any]] = set()
        self._lock: DataDirLock | None = None

    # -- life cycle ------------------------------------------------------------------------------

    @classmethod
    async def open(cls, settings: Settings) -> Store:
        """Lock the data directory, open the embedded backends and recover the log."""
        lock = DataDirLock(settings.data_dir)
        try:
            meta = open_metadata(f"sqlite://{settings.data_dir / 'meta.db'}")
            blobs = open_blobs(f"file://{settings.data_dir / 'blobs'}")
            store = cls(settings, meta, blobs)
            store._lock = lock
            await store._recover()
        except BaseException:
            lock.release()
            raise
        return store

    async def _recover(self) -> None:
        state_lsn, next_aid = await self.meta.state_position()
        watermarks = await self.meta.sealed_watermarks()
        self.identity.next_amplitude_id = next_aid
        self.identity.load_dedup(await self.meta.load_dedup(_dedup_cutoff()))
        self._state_lsn = state_lsn
        floor = max([state_lsn, *watermarks.values()], default=0) + 1
        replayed = 0
        for frame in self.log.open(min_next_lsn=floor):
            if frame.kind == wal.STATE:
                if frame.lsn > state_lsn:
                    self.identity.replay_state(frame.project_id, frame.body)
                continue
            reopen = frame.lsn > watermarks.get((frame.project_id, frame.hour), 0)
            replay_state = frame.lsn > state_lsn
            if not (reopen or replay_state):
                continue
            for line in frame.body.split(b"\n"):
                if not line:
                    continue
                if replay_state:
                    self.identity.observe(frame.project_id, orjson.loads(line))
                if reopen:
                    aid, uid, upload = record_keys(line)
                    self._part_for(frame.project_id, frame.hour).add(
                        line, aid, uid, upload, frame.lsn
                    )
                    replayed += 1
        if replayed:
            logger.info("recovered %d acknowledged events from the log", replayed)
        await self.checkpoint(force=True)

    async def aclose(self) -> None:
        """Make everything acknowledged durable and sealed, then release the data directory."""
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        try:
            await self.log.sync()
            await self.seal(lambda part: True)
            await self.checkpoint(force=True)
        finally:
            await self.log.aclose()
            await self.meta.aclose()
            await self.blobs.aclose()
            if self._lock is not None:
                self._lock.release()
                self._lock = None

    def start_background(self) -> None:
        """Seal ended hours, save identity state and prune the dedup window periodically."""
        self._spawn(self._sealer())

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _sealer(self) -> None:
        while True:
            await asyncio.sleep(self.settings.seal_check_seconds)
            try:
                await self.seal_ended_hours(hour_of(datetime.now(UTC)))
                await self.checkpoint()
                cutoff = _dedup_cutoff()
                self.identity.forget_dedup_before(cutoff)
                await self.meta.prune_dedup(cutoff)
            except Exception:
                logger.exception("background sealing failed; will retry")

    # -- writing ---------------------------------------------------------------------------------

    def _part_for(self, project_id: int, hour: int) -> OpenPart:
        part = self._open.get((project_id, hour))
        if part is None:
            part = OpenPart(project_id, hour, self.settings.block_bytes)
            self._open[(project_id, hour)] = part
        return part

    async def ingest(self, events: Sequence[Mapping[str, Any]], ctx: RequestContext) -> int:
        """Store validated events durably; returns how many were new (not insert_id duplicates).

        Returns only once the events are fsync'd. Raises LogFailed if the log cannot be written.
        """
        keys = await self.identity.prepare(self.meta, ctx.project_id, events, ctx.server_upload)
        # From here to log.append nothing awaits: state changes and the log keep the same order.
        enriched = self.identity.enrich(events, ctx, keys)
        if enriched.lines:
            hour = hour_of(ctx.server_upload)
            body = b"\n".join([*enriched.lines, b""])
            lsn = self.log.append(wal.EVENTS, ctx.project_id, hour, body)
            part = self._part_for(ctx.project_id, hour)
            part.add_batch(
                enriched.lines,
                enriched.amplitude_ids,
                enriched.user_ids,
                ctx.server_upload_ts,
                lsn,
            )
            if part.raw_bytes >= self.settings.part_max_bytes:
                self._spawn(self.seal(lambda p, key=(ctx.project_id, hour): _key(p) == key))
        await self.log.sync()
        self._maybe_checkpoint()
        return len(enriched.lines)

    async def identify(
        self, project_id: int, identifications: Sequence[Mapping[str, Any]], *, group: bool
    ) -> None:
        """Apply /identify or /groupidentify calls durably."""
        # Load saved user or group state first, or an update after a restart would start from {}.
        await self.identity.prepare(self.meta, project_id, identifications, datetime.now(UTC))
        if group:
            body = self.identity.group_identify(project_id, identifications)
        else:
            body = self.identity.identify(project_id, identifications)
        lsn = self.log.append(wal.STATE, project_id, 0, body)
        await self.log.sync(lsn)
        self._maybe_checkpoint()

    async def import_records(
        self, project_id: int, records: Iterable[tuple[bytes, Mapping[str, Any]]]
    ) -> int:
        """File existing export records (import, generate) straight into sealed parts.

        Records keep every field as given; ``server_upload_time`` decides their hour. Identity
        state learns the ids and properties the records show, without overriding newer state.
        """
        count = 0
        batch: list[tuple[bytes, Mapping[str, Any]]] = []
        for line, record in records:
            batch.append((line, record))
            if len(batch) >= 5000:
                count += await self._import_batch(project_id, batch)
                batch = []
        count += await self._import_batch(project_id, batch)
        await self.seal(lambda part: part.project_id == project_id and part.first_lsn == 0)
        await self.checkpoint(force=True)
        return count

    async def _import_batch(
        self, project_id: int, batch: Sequence[tuple[bytes, Mapping[str, Any]]]
    ) -> int:
        if not batch:
            return 0
        await self.identity.prepare(self.meta, project_id, [r for _, r in batch], datetime.now(UTC))
        for line, record in batch:
            upload = str(record["server_upload_time"])
            hour = hour_of_ts(upload)
            aid = record.get("amplitude_id")
            uid = record.get("user_id")
            part = self._part_for(project_id, hour)
            part.add(
                line,
                aid if isinstance(aid, int) else 0,
                uid if isinstance(uid, str) else None,
                upload,
                0,
            )
            self.identity.observe(project_id, record, overwrite=False)
            if part.raw_bytes >= self.settings.part_max_bytes:
                await self.seal(lambda p, key=(project_id, hour): _key(p) == key)
        importing = sorted(k for k, p in self._open.items() if p.first_lsn == 0)
        if len(importing) > IMPORT_OPEN_HOURS:
            oldest = set(importing[: len(importing) - IMPORT_OPEN_HOURS])
            await self.seal(lambda p: _key(p) in oldest)
        if self.identity.dirty >= CHECKPOINT_DIRTY:
            await self.checkpoint(force=True)
        return len(batch)

    # -- sealing ---------------------------------------------------------------------------------

    async def seal(self, which: Any) -> int:
        """Seal every open part for which ``which(part)`` is true; returns how many were sealed.

        An open part is detached before any await, so events arriving meanwhile start a new part.
        """
        chosen = [key for key, part in self._open.items() if which(part)]
        detached = [self._open.pop(key) for key in chosen]
        async with self._seal_lock:
            for part in detached:
                await self._seal_one(part)
        if detached:
            self._release_log()
        return len(detached)

    async def seal_ended_hours(self, current_hour: int) -> int:
        return await self.seal(lambda part: part.hour < current_hour)

    async def seal_project(self, project_id: int, start_hour: int, end_hour: int) -> None:
        """Read-your-writes: seal whatever is open for the project in [start_hour, end_hour]."""
        await self._seal_for_reading(
            lambda p: p.project_id == project_id and start_hour <= p.hour <= end_hour
        )

    async def seal_user(
        self, project_id: int, user_id: str | None, amplitude_ids: Set[int]
    ) -> None:
        """Read-your-writes for one user (DSAR): seal the project's open parts, of any hour, that
        hold events of ``amplitude_ids`` or of any amplitude_id ``user_id`` has in open data or in
        this process's identity state. Parts without the user's events stay open, so a run of
        requests does not cut the current hour into a part per request."""
        wanted = set(amplitude_ids)
        if user_id is not None:
            cached = self.identity.cached_amplitude_id(project_id, user_id)
            if cached is not None:
                wanted.add(cached)
            for part in self._open.values():
                if part.project_id == project_id:
                    wanted.update(part.amplitude_ids_of(user_id))
        await self._seal_for_reading(lambda p: p.project_id == project_id and p.holds_any(wanted))

    async def _seal_for_reading(self, which: Any) -> None:
        """Seal the open parts ``which`` chooses, and wait for seals others started, so the
        catalog then shows every event acknowledged before the call."""
        await self.seal(which)
        async with self._seal_lock:  # seals started by others finish before we read the catalog
            pass

    async def _seal_one(self, part: OpenPart) -> None:
        if part.events == 0:
            return
        key = (part.project_id, part.hour)
        if key not in self._next_seq:
            self._next_seq[key] = await self.meta.next_seq(*key)
        seq = self._next_seq[key]
        self._next_seq[key] = seq + 1
        sealed, data, entries = await asyncio.to_thread(part.seal, seq)
        if part.max_lsn:
            await self.log.sync(part.max_lsn)  # never publish events that are not yet durable
        await self.blobs.put(sealed.name, data)
        await self.meta.add_part(sealed, entries)

    # -- identity checkpoints and log release ------------------------------------------------------

    def _maybe_checkpoint(self) -> None:
        due = time.monotonic() - self._last_checkpoint >= CHECKPOINT_SECONDS
        if not self._checkpoint_lock.locked() and (self.identity.dirty >= CHECKPOINT_DIRTY or due):
            self._spawn(self.checkpoint())

    async def checkpoint(self, *, force: bool = False) -> None:
        """Save identity changes with the log position they reflect, then release log segments."""
        if self._checkpoint_lock.locked() and not force:
            return
        async with self._checkpoint_lock:  # saves must land in the order their changes were taken
            lsn = self.log.last_lsn
            changes = self.identity.take_changes(lsn)
            await self.log.sync(lsn)  # state must never get ahead of what is durable
            await self.meta.save_state(changes)
            self.identity.evict()
            self._state_lsn = max(self._state_lsn, lsn)
            self._last_checkpoint = time.monotonic()
            self._release_log()

    def _release_log(self) -> None:
        pending = [p.first_lsn for p in self._open.values() if p.first_lsn]
        upto = min([self._state_lsn, *(lsn - 1 for lsn in pending)])
        with contextlib.suppress(OSError):
            self.log.release(upto)


def _dedup_cutoff() -> int:
    """Epoch ms before which an insert_id no longer deduplicates."""
    return int(time.time() * 1000) - DEDUP_WINDOW_MS


def _key(part: OpenPart) -> tuple[int, int]:
    return (part.project_id, part.hour)
