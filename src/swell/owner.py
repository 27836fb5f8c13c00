"""The worker side of a scale-out node: lease projects and own them, one worker at a time each.

A :class:`ProjectOwner` is the embedded store's code, unchanged, over a project's share of the
cluster: a swell.store.Store whose metadata is the owner's fenced view of PostgreSQL (every write
checks the lease), whose log is the project's frames (swell.backends.postgres_cluster.PgFrameLog)
and whose blobs are the shared object store. It consumes the project's inbox in order: each
request is enriched (identity, dedup, user properties, the 55-key record) and its records
committed as a frame together with the inbox position, so a request is enriched exactly once
whatever fails. Parts are sealed as in the embedded store (hour ended, size, shutdown) and when
a node asks for read-your-writes (a seal request).

:class:`Workers` runs every owner of one process: it takes the lease of every project nobody
holds (or whose lease ran out), renews its own, and starts a project again (from what is
committed) when its log failed or its lease was lost. A worker that dies stops renewing; another
takes its projects once their leases expire and recovers them from PostgreSQL and the object
store: nothing acknowledged is lost, nothing is sealed twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from typing import TYPE_CHECKING, Any

from swell import inbox
from swell.backends import Backends
from swell.errors import LeaseLost, LogFailed, SealBacklogFull, StorageError
from swell.settings import Settings
from swell.store import Store

if TYPE_CHECKING:
    from swell.backends.base import BlobStore
    from swell.backends.postgres import PostgresMetadata
    from swell.backends.postgres_cluster import PgFrameLog

logger = logging.getLogger("swell.owner")

#: Inbox entries read at a time.
BATCH = 200
#: Longest wait for new entries when no notification arrives.
IDLE_POLL_SECONDS = 1.0
#: Wait before starting a project again after its owner failed.
RESTART_SECONDS = 1.0


def worker_name() -> str:
    """This process, as leases name it."""
    return f"{socket.gethostname()}:{os.getpid()}"


class ProjectOwner:
    """One leased project: its store, fed from the inbox, sealed on request."""

    def __init__(
        self,
        settings: Settings,
        cluster: PostgresMetadata,
        blobs: BlobStore,
        project_id: int,
        owner: str,
        epoch: int,
    ) -> None:
        self.settings = settings
        self.cluster = cluster
        self.blobs = blobs
        self.project_id = project_id
        self.owner = owner
        self.epoch = epoch
        self.store: Store | None = None
        self.log: PgFrameLog | None = None
        self._wake = asyncio.Event()
        self._stopping = False

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        """Finish the entry in hand, then return from :meth:`run`."""
        self._stopping = True
        self._wake.set()

    async def open(self) -> None:
        """Recover the project from what is committed (frames, state, catalog)."""
        view = await self.cluster.scoped(self.project_id, self.owner, self.epoch)
        log = view.frame_log()
        await log.load()
        backends = Backends(meta=view, blobs=self.blobs, log=log, data_dir=None, owns_stores=False)
        self.store = await Store.recovered(self.settings, backends)
        self.log = log
        self.store.start_background()

    async def run(self) -> None:
        """Consume the inbox and answer seal requests until cancelled, or until the log fails or
        the lease is lost (raised: the caller starts the project again)."""
        assert self.store is not None
        assert self.log is not None
        delay = 0.0
        while not self._stopping:
            try:
                consumed = await self._consume()
                await self._answer_seal_requests()
                delay = 0.0
            except (LogFailed, LeaseLost):
                raise
            except SealBacklogFull as exc:
                logger.warning("project %d waits for seals: %s", self.project_id, exc.message)
                consumed, delay = 0, min(30.0, max(1.0, delay * 2))
            except StorageError as exc:
                logger.warning("project %d waits for storage: %s", self.project_id, exc.message)
                consumed, delay = 0, min(30.0, max(0.5, delay * 2))
            if consumed:
                continue
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay or IDLE_POLL_SECONDS):
                    await self._wake.wait()

    async def _consume(self) -> int:
        assert self.store is not None
        assert self.log is not None
        entries = await self.cluster.read_inbox(self.project_id, self.log.consumed_position, BATCH)
        for seq, payload in entries:
            if self._stopping:
                break
            entry = inbox.decode(payload)
            self.log.consumed(seq)
            if entry.kind == inbox.EVENTS:
                await self.store.ingest(entry.items, entry.ctx)
            else:
                await self.store.identify(
                    self.project_id, entry.items, group=entry.kind == inbox.GROUP_IDENTIFY
                )
            await self.log.sync()  # the position, even when every event was a duplicate
        return len(entries)

    async def _answer_seal_requests(self) -> None:
        assert self.store is not None
        assert self.log is not None
        pending = await self.cluster.pending_seals([self.project_id])
        upto = pending.get(self.project_id)
        if upto is None or self.log.consumed_position < upto:
            return  # nothing asked, or not consumed that far yet (the loop goes on consuming)
        reached = self.log.consumed_position
        await self.store.seal(lambda part: part.project_id == self.project_id)
        await self.cluster.complete_seals(self.project_id, reached)

    async def drop(self) -> None:
        """Forget the project without sealing or saving, as a killed process would: memory may
        hold effects of frames that were never committed; the next owner recovers what is."""
        store, self.store = self.store, None
        if store is None:
            return
        background = list(store._background)
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        # Nothing to close: the log holds no resource (and must not commit what it buffered),
        # and the stores are the node's.

    async def aclose(self) -> None:
        """Seal and save what can be, then give the lease back."""
        if self.store is not None:
            await self.store.aclose()
            self.store = None
        with contextlib.suppress(StorageError):
            await self.cluster.release_lease(self.project_id, self.owner, self.epoch)


class Workers:
    """Every project owner of this process, and the leases they hold."""

    def __init__(
        self,
        settings: Settings,
        cluster: PostgresMetadata,
        blobs: BlobStore,
        *,
        name: str | None = None,
    ) -> None:
        self.settings = settings
        self.cluster = cluster
        self.blobs = blobs
        self.name = name or worker_name()
        self.ttl = settings.lease_seconds
        self.owners: dict[int, ProjectOwner] = {}
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._background: list[asyncio.Task[Any]] = []
        self._stopping = False
        self._last_maintenance = 0.0

    def start(self) -> None:
        self._background = [
            asyncio.create_task(self._leases(), name="swell-leases"),
            asyncio.create_task(self._listen(), name="swell-seal-listener"),
        ]

    async def _leases(self) -> None:
        while not self._stopping:
            try:
                await self._take_and_renew()
                if time.monotonic() - self._last_maintenance > 60:
                    self._last_maintenance = time.monotonic()
                    await self.cluster.maintain_inbox()
            except StorageError as exc:
                logger.warning("%s: leases wait for storage: %s", self.name, exc.message)
            except Exception:
                logger.exception("%s: lease loop failed; will retry", self.name)
            await asyncio.sleep(self.ttl / 3)

    async def _take_and_renew(self) -> None:
        for project_id, owner in list(self.owners.items()):
            task = self._tasks.get(project_id)
            if task is None or task.done():
                self.owners.pop(project_id, None)  # ended: free to be taken again below
                continue
            if not await self.cluster.renew_lease(project_id, self.name, owner.epoch, self.ttl):
                logger.warning("%s: lost the lease of project %d", self.name, project_id)
                task.cancel()  # its writes are refused anyway (fenced); drop it now
        for project in await self.cluster.list_projects():
            if project.id in self.owners:
                continue
            epoch = await self.cluster.acquire_lease(project.id, self.name, self.ttl)
            if epoch is not None:
                self._start(project.id, epoch)

    def _start(self, project_id: int, epoch: int) -> None:
        owner = ProjectOwner(self.settings, self.cluster, self.blobs, project_id, self.name, epoch)
        self.owners[project_id] = owner
        self._tasks[project_id] = asyncio.create_task(
            self._own(owner), name=f"swell-project-{project_id}"
        )

    async def _own(self, owner: ProjectOwner) -> None:
        """Run one owner until it is stopped (then seal, save and give the lease back), or
        until its log fails or its lease is lost (then drop it: a later start recovers what is
        committed)."""
        project_id = owner.project_id
        try:
            await owner.open()
            logger.info("%s: owns project %d (epoch %d)", self.name, project_id, owner.epoch)
            await owner.run()
            await owner.aclose()  # stopped: a clean hand-over
        except (LogFailed, LeaseLost, StorageError) as exc:
            logger.warning("%s: project %d stops: %s", self.name, project_id, exc.message)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("%s: project %d failed", self.name, project_id)
        finally:
            if self.owners.get(project_id) is owner:
                del self.owners[project_id]
            await owner.drop()

    async def _listen(self) -> None:
        """Wake an owner as soon as a node asks it to seal."""
        while not self._stopping:
            try:
                async for project_id in self.cluster.seal_requests():
                    owner = self.owners.get(project_id)
                    if owner is not None:
                        owner.wake()
            except StorageError as exc:
                logger.warning("%s: seal notifications wait: %s", self.name, exc.message)
            await asyncio.sleep(1.0)

    async def aclose(self, grace_seconds: float = 30.0) -> None:
        """Stop consuming, seal and save every owned project, and give the leases back."""
        self._stopping = True
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        for owner in self.owners.values():
            owner.stop()
        tasks = list(self._tasks.values())
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=grace_seconds)
            for task in late:  # dropped unsealed: their frames are committed
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
