"""The store: the one writer of events. Ingest appends here; export and DSAR read what it sealed.

Data path (docs/architecture.md):

    request -> identity.enrich -> log.append (+ open part in memory) -> log.sync -> 200
    open part -> sealed (swell.sealer) when its hour ends, when it reaches part_max_bytes, when an
    export or DSAR needs it, or at shutdown -> blob (atomic) + catalog row + user index rows

Recovery on open: the log is replayed; frames newer than the saved identity state are re-applied to
it, and events newer than the sealed watermark of their (project, hour) go back into open parts.
Log frames are released only once sealed parts and saved identity state both cover them, so a
failing blob or metadata store never loses an acknowledged event: writes keep being acknowledged
while the log is durable, and everything is sealed and saved once the store recovers.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence, Set
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from swell.backends import Backends, open_backends
from swell.enrich import RequestContext
from swell.errors import Conflict, LogFailed, SealBacklogFull, StorageError
from swell.identity import DEDUP_WINDOW_MS, Identity
from swell.model import FrameKind, hour_of, hour_of_ts, hour_start
from swell.parts import OpenPart, record_keys
from swell.rewrite import Rewriter, Rewritten
from swell.rollups import fact
from swell.sealer import Sealer, Which
from swell.settings import Settings

logger = logging.getLogger("swell.store")

#: How many hours an import keeps open at once before sealing the oldest.
IMPORT_OPEN_HOURS = 8
#: Identity changes are saved when this many keys are dirty, or every CHECKPOINT_SECONDS.
CHECKPOINT_DIRTY = 50_000
CHECKPOINT_SECONDS = 2.0


class Store:
    def __init__(self, settings: Settings, backends: Backends) -> None:
        self.settings = settings
        self.backends = backends
        self.meta = backends.meta
        self.blobs = backends.blobs
        self.log = backends.log
        self.identity = Identity(
            max_cached=settings.identity_cache_entries, max_dedup_keys=settings.dedup_max_keys
        )
        self.sealer = Sealer(self.meta, self.blobs, self.log, block_bytes=settings.block_bytes)
        self._state_lsn = 0
        self._last_checkpoint = time.monotonic()
        self._checkpoint_lock = asyncio.Lock()
        #: Why the last identity checkpoint failed (None once one succeeds).
        self.checkpoint_error: StorageError | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._wake = asyncio.Event()
        #: What retention has dropped since the store opened.
        self.retention_dropped_parts = 0
        self.retention_dropped_events = 0
        # -- part rewriting (compaction)
        self.rewriter = Rewriter(
            self.meta,
            self.blobs,
            block_bytes=settings.block_bytes,
            part_max_bytes=settings.part_max_bytes,
            grace_seconds=settings.replaced_blob_grace_seconds,
        )
        self._last_compaction = float("-inf")

    # -- life cycle ------------------------------------------------------------------------------

    @classmethod
    async def open(
        cls, settings: Settings, *, wrap: Callable[[Backends], Backends] | None = None
    ) -> Store:
        """Lock the data directory, open the backends and recover the log. ``wrap`` may replace
        the backends before use (the fault-injection tests wrap them)."""
        backends = await open_backends(settings)
        if wrap is not None:
            backends = wrap(backends)
        return await cls.recovered(settings, backends)

    @classmethod
    async def recovered(cls, settings: Settings, backends: Backends) -> Store:
        """A store over open backends, with its log recovered (the backends are closed if that
        fails)."""
        try:
            store = cls(settings, backends)
            await store._recover()
        except BaseException:
            await backends.aclose()
            raise
        return store

    async def _recover(self) -> None:
        state_lsn, next_aid = await self.meta.state_position()
        watermarks = await self.meta.sealed_watermarks()
        self.identity.raise_amplitude_id_floor(next_aid)
        self.identity.load_dedup(await self.meta.load_dedup(_dedup_cutoff()))
        self._state_lsn = state_lsn
        floor = max([state_lsn, *watermarks.values()], default=0) + 1
        oldest = self._retention_cutoff_hour()
        replayed = 0
        for frame in self.log.open(min_next_lsn=floor):
            if frame.kind == FrameKind.STATE:
                if frame.lsn > state_lsn:
                    self.identity.replay_state(frame.project_id, frame.body)
                continue
            reopen = frame.lsn > watermarks.get((frame.project_id, frame.hour), 0)
            if oldest is not None and frame.hour < oldest:
                reopen = False  # retention has dropped that hour: do not bring it back
            replay_state = frame.lsn > state_lsn
            if not (reopen or replay_state):
                continue
            for line in frame.body.split(b"\n"):
                if not line:
                    continue
                if replay_state:
                    self.identity.observe(frame.project_id, orjson.loads(line))
                if reopen:
                    aid, uid, upload, record_fact = record_keys(line)
                    self.sealer.part_for(frame.project_id, frame.hour).add(
                        line, aid, uid, upload, frame.lsn, record_fact
                    )
                    replayed += 1
        if replayed:
            logger.info("recovered %d acknowledged events from the log", replayed)
        try:
            await self.checkpoint(force=True)
        except StorageError as exc:  # the events are in the log; the sealer loop retries
            logger.warning("identity checkpoint at start-up failed: %s", exc.message)

    async def aclose(self) -> None:
        """Seal and save what can be, then close the backends and release the data directory.

        A seal or checkpoint that fails now loses nothing: its events stay in the log, and the next
        start recovers them.
        """
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        try:
            await self.log.sync()
            await self.seal(lambda part: True)
            await self.checkpoint(force=True)
        except StorageError as exc:
            logger.warning(
                "shutdown could not seal or save everything (%s); %d part(s) stay in the log "
                "and are recovered at the next start",
                exc.message,
                sum(1 for _ in self.sealer.unsealed()),
            )
        finally:
            await self.backends.aclose()

    def start_background(self) -> None:
        """Seal ended hours, retry failed seals, save identity state and prune the dedup window."""
        self._spawn(self._background_loop())

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled() and isinstance(task.exception(), StorageError):
            logger.warning("background work failed; it is retried: %s", task.exception())
        elif not task.cancelled() and task.exception() is not None:
            logger.error("background work failed", exc_info=task.exception())

    async def _background_loop(self) -> None:
        while True:
            delay = self.settings.seal_check_seconds
            retry_in = self.sealer.retry_in()
            if retry_in is not None:
                delay = min(delay, retry_in)
            self._wake.clear()
            # asyncio.timeout, not wait_for: on 3.11, wait_for can swallow a cancellation that
            # arrives as the event is set, and the loop would never stop.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()
            await self._background_step()

    async def _background_step(self) -> None:
        """One round of background work; each piece fails on its own (and is logged)."""
        steps = (
            self._retry_seals,
            self._seal_ended_hours,
            self.checkpoint,
            self._prune_dedup,
            self.apply_retention,
            self._compact_due,
        )
        for step in steps:
            try:
                await step()
            except StorageError:
                pass  # logged where it failed; readiness reports it
            except Exception:
                logger.exception("background work failed; will retry")

    async def _retry_seals(self) -> None:
        try:
            await self.sealer.retry_due()
        finally:
            self._release_log()

    async def _seal_ended_hours(self) -> None:
        # While seals fail, only the backoff retries them: ended hours wait until it succeeds.
        if not self.sealer.failing:
            await self.seal_ended_hours(hour_of(datetime.now(UTC)))

    async def _prune_dedup(self) -> None:
        cutoff = _dedup_cutoff()
        self.identity.forget_dedup_before(cutoff)
        await self.meta.prune_dedup(cutoff)

    # -- health ------------------------------------------------------------------------------------

    def readiness(self) -> dict[str, dict[str, Any]]:
        """What ``/readyz`` reports: every check and whether it passes."""
        now = time.monotonic()
        failed = self.log.failed
        checks: dict[str, dict[str, Any]] = {
            "log": {"ok": failed is None}
            | ({} if failed is None else {"error": f"the durable log failed: {failed}"}),
            "seal": {"ok": not self.sealer.failing, "unsealed_parts": self.sealer.frozen_parts}
            | ({} if self.sealer.failure is None else self.sealer.failure.describe(now)),
            "metadata": {"ok": self.checkpoint_error is None}
            | (
                {}
                if self.checkpoint_error is None
                else {"error": self.checkpoint_error.message, "cause": self.checkpoint_error.cause}
            ),
        }
        unsealed = self.sealer.unsealed_bytes()
        checks["backlog"] = {
            "ok": not self._backlog_full(unsealed),
            "unsealed_bytes": unsealed,
            "limit_bytes": self.settings.max_unsealed_bytes,
        }
        return checks

    async def ensure_available(self) -> None:
        """Raise what keeps the store from serving reads of its own writes right now: a failed
        log, or seals or identity saves that still fail when tried again now."""
        failed = self.log.failed
        if failed is not None:
            raise LogFailed(f"the durable log failed: {failed}")
        if self.sealer.failing:
            try:
                await self.sealer.seal(lambda part: True, include_open=False)
            finally:
                self._release_log()
        if self.checkpoint_error is not None:
            await self.checkpoint(force=True)

    def _backlog_full(self, unsealed: int | None = None) -> bool:
        """Whether ingestion must wait: seals fail and too much is held unsealed meanwhile."""
        if not self.sealer.failing:
            return False
        held = self.sealer.unsealed_bytes() if unsealed is None else unsealed
        return held > self.settings.max_unsealed_bytes

    # -- writing ---------------------------------------------------------------------------------

    async def ingest(self, events: Sequence[Mapping[str, Any]], ctx: RequestContext) -> int:
        """Store validated events durably; returns how many were new (not insert_id duplicates).

        Returns only once the events are durable. Raises LogFailed if the log cannot be written,
        SealBacklogFull while seals fail and too much is unsealed, and MetadataUnavailable if
        identity state the events need cannot be loaded.
        """
        if self._backlog_full():
            raise SealBacklogFull(
                f"{self.sealer.unsealed_bytes()} bytes of acknowledged events wait to be sealed "
                f"(limit {self.settings.max_unsealed_bytes}) while the store fails: "
                f"{self.sealer.failure.error.message if self.sealer.failure else ''}"
            )
        keys = await self.identity.prepare(self.meta, ctx.project_id, events, ctx.server_upload)
        # From here to log.append nothing awaits: state changes and the log keep the same order.
        enriched = self.identity.enrich(events, ctx, keys)
        if enriched.lines:
            hour = hour_of(ctx.server_upload)
            body = b"\n".join([*enriched.lines, b""])
            lsn = self.log.append(FrameKind.EVENTS, ctx.project_id, hour, body)
            part = self.sealer.part_for(ctx.project_id, hour)
            part.add_batch(
                enriched.lines,
                enriched.amplitude_ids,
                enriched.user_ids,
                ctx.server_upload_ts,
                lsn,
                enriched.facts,
            )
            if part.raw_bytes >= self.settings.part_max_bytes and not self.sealer.failing:
                self._spawn(self.seal(_only((ctx.project_id, hour))))
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
        lsn = self.log.append(FrameKind.STATE, project_id, 0, body)
        await self.log.sync(lsn)
        self._maybe_checkpoint()

    async def import_records(
        self,
        project_id: int,
        records: Iterable[tuple[bytes, Mapping[str, Any]]],
        *,
        progress: Callable[[int], None] | None = None,
    ) -> Imported:
        """File existing export records (import, generate) straight into sealed parts.

        Records keep every field as given but ``app``, which becomes ``project_id``;
        ``server_upload_time`` decides their hour. A record whose uuid (else ``$insert_id`` and
        ``device_id``) an earlier import already stored in the project is skipped, so importing
        the same data again, or again after an interruption, stores each record once. Records
        older than the retention window are skipped too. Identity state learns the ids and
        properties the records show, without overriding newer state. ``progress`` is called
        with the number of records read so far, now and then.

        Raises StorageError if a part cannot be sealed (imported records are not in the log).
        """
        result = Imported()
        batch: list[tuple[bytes, Mapping[str, Any]]] = []
        seen: dict[int, set[int]] = {}
        for line, record in records:
            batch.append((line, record))
            if len(batch) >= 5000:
                await self._import_batch(project_id, batch, seen, result)
                batch = []
                if progress is not None:
                    progress(result.read)
        await self._import_batch(project_id, batch, seen, result)
        await self.seal(lambda part: part.project_id == project_id and part.first_lsn == 0)
        await self.checkpoint(force=True)
        if progress is not None:
            progress(result.read)
        return result

    async def _import_batch(
        self,
        project_id: int,
        batch: Sequence[tuple[bytes, Mapping[str, Any]]],
        seen: dict[int, set[int]],
        result: Imported,
    ) -> None:
        if not batch:
            return
        records = [r for _, r in batch]
        await self.identity.prepare(
            self.meta, project_id, records, datetime.now(UTC), reserve=False
        )
        oldest = self._retention_cutoff_hour()
        for line, record in batch:
            result.read += 1
            upload = str(record["server_upload_time"])
            hour = hour_of_ts(upload)
            if oldest is not None and hour < oldest:
                result.expired += 1
                continue
            key = import_key(project_id, record)
            if key is not None:
                keys = seen.get(hour)
                if keys is None:
                    keys = seen[hour] = await self.meta.import_keys(project_id, hour)
                if key in keys:
                    result.skipped += 1
                    continue
                keys.add(key)
            if record.get("app") != project_id:
                record = {**record, "app": project_id}
                line = orjson.dumps(record)
            aid = record.get("amplitude_id")
            uid = record.get("user_id")
            part = self.sealer.part_for(project_id, hour)
            part.add(
                line,
                aid if isinstance(aid, int) else 0,
                uid if isinstance(uid, str) else None,
                upload,
                0,
                fact(record),
            )
            if key is not None:
                part.import_keys.append(key)
            result.stored += 1
            self.identity.observe(project_id, record, overwrite=False)
            if part.raw_bytes >= self.settings.part_max_bytes:
                await self.seal(_only((project_id, hour)))
        importing = sorted(_key(p) for p in self.sealer.unsealed() if p.first_lsn == 0 and p.events)
        if len(importing) > IMPORT_OPEN_HOURS:
            oldest_open = set(importing[: len(importing) - IMPORT_OPEN_HOURS])
            await self.seal(lambda p: _key(p) in oldest_open)
        # Keys of hours no longer open are committed with their parts: read them again if needed.
        still_open = {hour for p, hour in importing if p == project_id}
        for hour in [h for h in seen if h not in still_open]:
            del seen[hour]
        if self.identity.dirty >= CHECKPOINT_DIRTY:
            await self.checkpoint(force=True)

    # -- retention -------------------------------------------------------------------------------

    def _retention_cutoff_hour(self) -> int | None:
        """The first hour still kept (None when retention is off)."""
        days = self.settings.retention_days
        if not days:
            return None
        return hour_of(datetime.now(UTC)) - days * 24

    async def apply_retention(self) -> int:
        """Drop sealed parts older than the retention window, catalog first, then their blobs;
        returns how many went."""
        cutoff = self._retention_cutoff_hour()
        if cutoff is None:
            return 0
        dropped = await self.meta.drop_parts_before(cutoff)
        if dropped:
            await self.blobs.delete([part.key for part in dropped])
            self.retention_dropped_parts += len(dropped)
            self.retention_dropped_events += sum(part.events for part in dropped)
            logger.info(
                "retention: dropped %d part(s), %d event(s), filed before %s",
                len(dropped),
                sum(part.events for part in dropped),
                hour_start(cutoff).strftime("%Y-%m-%d %H:00 UTC"),
            )
        return len(dropped)

    # -- sealing ---------------------------------------------------------------------------------

    async def seal(self, which: Which) -> int:
        """Seal every unsealed part for which ``which(part)`` is true; returns how many were
        sealed. Raises the StorageError of a seal that failed (its part stays unsealed)."""
        try:
            return await self.sealer.seal(which)
        except StorageError:
            self._wake.set()  # the background loop schedules the retry
            raise
        finally:
            self._release_log()

    async def seal_ended_hours(self, current_hour: int) -> int:
        return await self.seal(lambda part: part.hour < current_hour)

    async def seal_project(self, project_id: int, start_hour: int, end_hour: int) -> None:
        """Read-your-writes: seal whatever is unsealed for the project in [start_hour, end_hour].
        Raises StorageError if that cannot be done now."""
        await self.seal(lambda p: p.project_id == project_id and start_hour <= p.hour <= end_hour)

    async def seal_user(
        self, project_id: int, user_id: str | None, amplitude_ids: Set[int]
    ) -> None:
        """Read-your-writes for one user (DSAR): seal the project's unsealed parts, of any hour,
        that hold events of ``amplitude_ids`` or of any amplitude_id ``user_id`` has in unsealed
        data or in this process's identity state. Parts without the user's events stay open, so a
        run of requests does not cut the current hour into a part per request."""
        wanted = set(amplitude_ids)
        if user_id is not None:
            cached = self.identity.cached_amplitude_id(project_id, user_id)
            if cached is not None:
                wanted.add(cached)
            for part in self.sealer.unsealed():
                if part.project_id == project_id:
                    wanted.update(part.amplitude_ids_of(user_id))
        await self.seal(lambda p: p.project_id == project_id and p.holds_any(wanted))

    # -- identity checkpoints and log release ------------------------------------------------------

    def _maybe_checkpoint(self) -> None:
        due = time.monotonic() - self._last_checkpoint >= CHECKPOINT_SECONDS
        if not self._checkpoint_lock.locked() and (self.identity.dirty >= CHECKPOINT_DIRTY or due):
            self._spawn(self.checkpoint())

    async def checkpoint(self, *, force: bool = False) -> None:
        """Save identity changes with the log position they reflect, then release log segments.

        If the save fails, the changes stay pending (the next checkpoint saves them) and the log
        keeps the frames they came from. Raises the StorageError.
        """
        if self._checkpoint_lock.locked() and not force:
            return
        async with self._checkpoint_lock:  # saves must land in the order their changes were taken
            lsn = self.log.last_lsn
            changes = self.identity.take_changes(lsn)
            try:
                await self.log.sync(lsn)  # state must never get ahead of what is durable
                await self.meta.save_state(changes)
            except StorageError as exc:
                self.identity.restore_changes(changes)
                if self.checkpoint_error is None:
                    logger.warning("saving identity state failed; will retry: %s", exc.message)
                self.checkpoint_error = exc
                raise
            if self.checkpoint_error is not None:
                logger.info("saving identity state recovered")
            self.checkpoint_error = None
            self.identity.evict()
            self._state_lsn = max(self._state_lsn, lsn)
            self._last_checkpoint = time.monotonic()
            self._release_log()

    def _release_log(self) -> None:
        pinned = self.sealer.pinned_lsn()
        upto = self._state_lsn if pinned is None else min(self._state_lsn, pinned - 1)
        self.log.release(upto)

    # -- compaction ------------------------------------------------------------------------------

    async def compact(
        self, project_id: int | None = None, *, min_parts: int = 2, limit: int = 1000
    ) -> list[Rewritten]:
        """Merge the parts of ended hours (of one project) holding at least ``min_parts`` sealed
        parts, oldest first, up to ``limit`` hours; then delete replaced blobs that are due. An
        hour whose parts are still being sealed, or that changed meanwhile, is left for a later
        round."""
        current = hour_of(datetime.now(UTC))
        busy = {_key(part) for part in self.sealer.unsealed()}
        crowded = await self.meta.crowded_hours(current, max(min_parts, 2), limit, project_id)
        done: list[Rewritten] = []
        for key in crowded:
            if key in busy:
                continue
            try:
                done.append(await self.rewriter.compact_hour(*key, min_parts=min_parts))
            except Conflict as exc:  # changed under us: the next round sees what committed
                logger.info("compaction of project %d hour %d skipped: %s", *key, exc.message)
        await self.rewriter.sweep()
        return done

    async def drop_user_events(self, project_id: int, amplitude_ids: Set[int]) -> list[Rewritten]:
        """Remove every stored event of ``amplitude_ids`` from the project's sealed parts: seal
        the unsealed parts that hold some, rewrite the sealed parts that hold some without
        them, then delete replaced blobs that are due. (A deletion's part rewrite; its identity
        state, user links and log frames are not touched here.)"""
        await self.seal_user(project_id, None, amplitude_ids)
        done = await self.rewriter.drop_users(project_id, sorted(amplitude_ids))
        await self.rewriter.sweep()
        return done

    async def _compact_due(self) -> None:
        """Background compaction, every SWELL_COMPACT_CHECK_SECONDS (off with min parts 0)."""
        if time.monotonic() - self._last_compaction < self.settings.compact_check_seconds:
            return
        self._last_compaction = time.monotonic()
        if self.settings.compact_min_parts:
            await self.compact(min_parts=self.settings.compact_min_parts, limit=10)
        else:
            await self.rewriter.sweep()


@dataclass
class Imported:
    """What an import did with the records it read."""

    read: int = 0
    stored: int = 0
    #: Already stored by an earlier import (same uuid, else same $insert_id and device_id).
    skipped: int = 0
    #: Older than the retention window.
    expired: int = 0


def import_key(project_id: int, record: Mapping[str, Any]) -> int | None:
    """What makes an imported record the same as one stored before: its uuid, else its
    ``$insert_id`` with its ``device_id`` (None when it has neither)."""
    uuid = record.get("uuid")
    if isinstance(uuid, str) and uuid:
        text = f"{project_id}\x00u\x00{uuid}"
    else:
        insert_id = record.get("$insert_id")
        if not isinstance(insert_id, str) or not insert_id:
            return None
        text = f"{project_id}\x00i\x00{record.get('device_id') or ''}\x00{insert_id}"
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _dedup_cutoff() -> int:
    """Epoch ms before which an insert_id no longer deduplicates."""
    return int(time.time() * 1000) - DEDUP_WINDOW_MS


def _key(part: OpenPart) -> tuple[int, int]:
    return (part.project_id, part.hour)


def _only(key: tuple[int, int]) -> Which:
    """Chooses the part of one (project, hour)."""
    return lambda part: _key(part) == key
