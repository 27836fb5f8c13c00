"""A scale-out node: many of them share one PostgreSQL database and one object store.

Which deployment runs is decided by the metadata store: on PostgreSQL, ``swell serve`` is a node
of the scale-out deployment; on anything else it is the embedded one (swell.store.Store). A node
plays a role (``SWELL_ROLE`` / ``--role``):

* **api**: the HTTP APIs through :class:`ClusterFront`. A request is validated as always, then
  appended to the project's inbox and acknowledged once that row is committed; exports and DSAR
  read what the catalog and object store hold, after asking the project's owner to seal
  everything acknowledged so far (a seal request, waited for at most ``SWELL_SEAL_WAIT_SECONDS``,
  then 503 with cause ``owner``).
* **worker**: project owners (swell.owner.Workers) and DSAR jobs, no HTTP.
* **all** (the default): both in one process.

Nothing of a node's state is needed by another: any node answers any request, and a node that
dies loses nothing it acknowledged (the inbox row is committed before the 200).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Mapping, Sequence, Set
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from swell import inbox
from swell.backends import blob_url as configured_blob_url, metadata_url, open_blobs, open_metadata
from swell.enrich import RequestContext
from swell.errors import ConfigError, OwnerUnavailable, StorageError
from swell.settings import Settings

if TYPE_CHECKING:
    from swell.backends.base import BlobStore
    from swell.backends.postgres import PostgresMetadata
    from swell.owner import Workers
    from swell.store import Store

logger = logging.getLogger("swell.node")

#: How often a waiting export polls its seal request, and a node checks its metadata store.
SEAL_POLL_SECONDS = 0.02
HEALTH_SECONDS = 2.0


def is_scale_out(settings: Settings) -> bool:
    """Whether these settings make a scale-out node (metadata on PostgreSQL)."""
    return metadata_url(settings).split("://", 1)[0] in {"postgresql", "postgres"}


async def open_cluster(settings: Settings) -> tuple[PostgresMetadata, BlobStore]:
    """The shared metadata (PostgreSQL) and blob stores of a scale-out node."""
    from swell.backends.postgres import PostgresMetadata

    meta = open_metadata(metadata_url(settings), settings)
    if not isinstance(meta, PostgresMetadata):
        await meta.aclose()
        raise ConfigError("a scale-out node needs SWELL_METADATA_URL=postgresql://...")
    try:
        blobs = open_blobs(configured_blob_url(settings))
    except BaseException:
        await meta.aclose()
        raise
    return meta, blobs


class ClusterFront:
    """What the HTTP layer needs, on a scale-out node (the embedded Store offers the same)."""

    def __init__(self, settings: Settings, meta: PostgresMetadata, blobs: BlobStore) -> None:
        self.settings = settings
        self.meta = meta
        self.blobs = blobs
        #: Why the metadata store could not be reached at the last check (None while it can).
        self.unavailable: StorageError | None = None
        self.workers: Workers | None = None
        self._health: asyncio.Task[None] | None = None

    # -- writing: the inbox ------------------------------------------------------------------------

    async def ingest(self, events: Sequence[Mapping[str, Any]], ctx: RequestContext) -> int:
        """Append the validated events to their project's inbox; returns once committed (the
        owner enriches them, and drops insert_id duplicates, in inbox order)."""
        await self.meta.append_inbox(ctx.project_id, inbox.encode(inbox.EVENTS, ctx, events))
        return len(events)

    async def identify(
        self, project_id: int, identifications: Sequence[Mapping[str, Any]], *, group: bool
    ) -> None:
        now = datetime.now(UTC)
        ctx = RequestContext(
            project_id=project_id,
            path="/groupidentify" if group else "/identify",
            default_library="http/1.0",
            server_received=now,
            server_upload=now,
            client_upload=None,
            remote_ip=None,
        )
        kind = inbox.GROUP_IDENTIFY if group else inbox.IDENTIFY
        await self.meta.append_inbox(project_id, inbox.encode(kind, ctx, identifications))

    # -- reading one's writes: seal requests -----------------------------------------------------

    async def seal_project(self, project_id: int, start_hour: int, end_hour: int) -> None:
        """Everything acknowledged for the project before this call is sealed when it returns.
        Raises OwnerUnavailable if its owner does not answer in time (or StorageError)."""
        upto = await self.meta.inbox_head(project_id)
        if upto == 0:
            return  # nothing was ever acknowledged through the inbox
        request_id = await self.meta.request_seal(project_id, upto)
        deadline = time.monotonic() + self.settings.seal_wait_seconds
        while not await self.meta.seal_request_done(request_id):
            if time.monotonic() >= deadline:
                raise OwnerUnavailable(
                    f"no worker sealed project {project_id} within "
                    f"{self.settings.seal_wait_seconds:g} s (is a worker running?)"
                )
            await asyncio.sleep(SEAL_POLL_SECONDS)

    async def seal_user(
        self, project_id: int, user_id: str | None, amplitude_ids: Set[int]
    ) -> None:
        """Read-your-writes for a DSAR: the owner seals the project's open parts."""
        await self.seal_project(project_id, 0, 0)

    # -- health ------------------------------------------------------------------------------------

    async def ensure_available(self) -> None:
        if self.unavailable is not None:
            raise type(self.unavailable)(self.unavailable.message)

    def readiness(self) -> dict[str, dict[str, Any]]:
        error = self.unavailable
        checks: dict[str, dict[str, Any]] = {
            "metadata": {"ok": error is None}
            | ({} if error is None else {"error": error.message, "cause": error.cause})
        }
        if self.workers is not None:
            checks["owners"] = {"ok": True, "projects": sorted(self.workers.owners)}
        return checks

    def start_background(self) -> None:
        self._health = asyncio.create_task(self._check_health(), name="swell-health")

    async def _check_health(self) -> None:
        while True:
            try:
                await self.meta.all_orgs()
                if self.unavailable is not None:
                    logger.info("the metadata store is reachable again")
                self.unavailable = None
            except StorageError as exc:
                if self.unavailable is None:
                    logger.warning("the metadata store is unreachable: %s", exc.message)
                self.unavailable = exc
            await asyncio.sleep(HEALTH_SECONDS)

    async def aclose(self) -> None:
        if self._health is not None:
            self._health.cancel()
            await asyncio.gather(self._health, return_exceptions=True)
        try:
            if self.workers is not None:
                await self.workers.aclose()
        finally:
            try:
                await self.meta.aclose()
            finally:
                await self.blobs.aclose()


async def open_node(settings: Settings) -> ClusterFront:
    """A scale-out node's front, with its project owners running unless its role is api."""
    from swell.owner import Workers

    meta, blobs = await open_cluster(settings)
    front = ClusterFront(settings, meta, blobs)
    if settings.role != "api":
        front.workers = Workers(settings, meta, blobs)
        front.workers.start()
    return front


@contextlib.asynccontextmanager
async def owning(settings: Settings, project_id: int) -> AsyncIterator[Store]:
    """A store that owns one project of the scale-out deployment for a while (``swell import``,
    ``generate``, ``project delete``): it takes the project's lease from whoever holds it (whose
    writes are refused from then on), recovers the project, and on leaving seals and saves
    everything and gives the lease back (a worker takes it again)."""
    from swell.owner import ProjectOwner, worker_name

    meta, blobs = await open_cluster(settings)
    try:
        name = f"{worker_name()}/cli"
        epoch = await meta.acquire_lease(project_id, name, settings.lease_seconds, steal=True)
        assert epoch is not None, "a steal always takes the lease"
        owner = ProjectOwner(settings, meta, blobs, project_id, name, epoch)

        async def renew() -> None:
            while True:
                await asyncio.sleep(settings.lease_seconds / 3)
                with contextlib.suppress(StorageError):  # a lost lease fails the next write
                    await meta.renew_lease(project_id, name, epoch, settings.lease_seconds)

        renewing = asyncio.create_task(renew())
        try:
            await owner.open()
            assert owner.store is not None
            yield owner.store
        finally:
            renewing.cancel()
            await asyncio.gather(renewing, return_exceptions=True)
            await owner.aclose()
    finally:
        try:
            await meta.aclose()
        finally:
            await blobs.aclose()
