"""What many swell nodes share on PostgreSQL beyond the Metadata Protocols: the ``Cluster``
Protocol (backends/base.py), mixed into PostgresMetadata.

* the **inbox**: every acknowledged request, appended by API nodes (committed before the 200);
* **project leases** with fencing epochs: one worker owns a project at a time, and every write
  its scoped view makes checks the epoch in the same transaction (``FOR SHARE``), so a deposed
  owner's writes are refused;
* **frames**: an owner's durable log of a project (:class:`PgFrameLog`, an EventLog), committed
  together with the inbox position they were made from, so every request is enriched once;
* **seal requests**: read-your-writes across nodes, woken by ``NOTIFY``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

import psycopg
from isal import igzip
from psycopg import AsyncCursor, sql

from swell.backends.queries import load_queries
from swell.errors import LeaseLost, LogFailed, MetadataUnavailable, StorageError
from swell.model import EPOCH, Frame

if TYPE_CHECKING:
    from psycopg_pool import AsyncConnectionPool

    from swell.backends.base import EventLog

T = TypeVar("T")
Cursor = AsyncCursor[tuple[Any, ...]]

logger = logging.getLogger("swell.backends.postgres")

Q = load_queries("postgres")

#: NOTIFY channels: an API node asks for a seal; a worker says it sealed.
SEAL_CHANNEL = "swell_seal"
#: Inbox days kept as partitions ahead of today.
DAYS_AHEAD = 3
MAINTENANCE_LOCK = 0x7377656C6C_0003
#: Held while inbox partitions are made: two nodes doing it at once would collide.
INBOX_PARTITION_LOCK = 0x7377656C6C_0004


@dataclass(frozen=True, slots=True)
class Scope:
    """A project owner's view: its project, its name and its lease's epoch."""

    project_id: int
    owner: str
    epoch: int


@dataclass(frozen=True, slots=True)
class Lease:
    project_id: int
    owner: str
    epoch: int
    live: bool


def _deflate(body: bytes) -> bytes:
    """A frame's body as stored: gzip at isal's level 1 (the column is not compressed again)."""
    packed: bytes = igzip.compress(body, compresslevel=1, mtime=0)
    return packed


def _inflate(stored: bytes) -> bytes:
    body: bytes = igzip.decompress(stored)  # type: ignore[no-untyped-call]
    return body


def today() -> int:
    """Days since the epoch (UTC): the inbox's partition key."""
    return (datetime.now(UTC) - EPOCH).days


class ClusterMixin:
    """The Cluster Protocol on PostgresMetadata's pool and error mapping."""

    #: Days whose inbox partition this process made sure of.
    _inbox_days: set[int]

    if TYPE_CHECKING:
        _scope: Scope | None
        _pool: AsyncConnectionPool[Any]

        async def _call(
            self,
            fn: Callable[[Cursor], Awaitable[T]],
            *,
            transaction: bool = True,
            opened: bool = False,
        ) -> T: ...

        async def _open(self) -> AsyncConnectionPool[Any]: ...

        def _errors(self) -> contextlib.AbstractAsyncContextManager[None]: ...

    # -- scoped views --------------------------------------------------------------------------

    async def scoped(self, project_id: int, owner: str, epoch: int) -> Any:
        """This store as the owner of ``project_id`` under lease ``epoch`` sees it: every write
        transaction checks the lease (LeaseLost otherwise), identity positions are the
        project's own, and closing it leaves the shared pool open."""
        import copy

        await self._open()  # the view shares this store's (open, migrated) pool
        view = copy.copy(self)
        view._scope = Scope(project_id, owner, epoch)
        return view

    async def _fence(self, cur: Cursor, scope: Scope) -> None:
        await cur.execute(
            Q["check_lease"],
            {"project_id": scope.project_id, "owner": scope.owner, "epoch": scope.epoch},
        )
        if await cur.fetchone() is None:
            raise LeaseLost(
                f"project {scope.project_id} is no longer leased to {scope.owner} "
                f"(epoch {scope.epoch})"
            )

    def frame_log(self) -> PgFrameLog:
        """The durable log of this view's project (a scoped view only)."""
        assert self._scope is not None, "frames belong to a project owner's scoped view"
        return PgFrameLog(self, self._scope.project_id)

    # -- inbox ---------------------------------------------------------------------------------

    async def append_inbox(self, project_id: int, payload: bytes) -> int:
        day = today()
        if day not in self._inbox_days:
            await self._make_inbox_partitions(day)

        async def run(cur: Cursor) -> int:
            await cur.execute(
                Q["append_inbox"],
                {"day": day, "project_id": project_id, "payload": payload},
            )
            row = await cur.fetchone()
            assert row is not None
            return int(row[0])

        return await self._call(run, transaction=False)

    async def _make_inbox_partitions(self, first: int) -> None:
        """The default partition and one per day from yesterday to a few days ahead (a day whose
        rows already went to the default partition keeps them there)."""

        async def run(cur: Cursor) -> None:
            await cur.execute("SELECT pg_advisory_xact_lock(%s)", (INBOX_PARTITION_LOCK,))
            await cur.execute(Q["create_inbox_default"])
            for day in range(first - 1, first + DAYS_AHEAD):
                try:
                    async with cur.connection.transaction():
                        await cur.execute(
                            sql.SQL(Q["create_inbox_partition"]).format(
                                partition=sql.Identifier(f"inbox_{day}"),
                                start=sql.Literal(day),
                                end=sql.Literal(day + 1),
                            )
                        )
                except (psycopg.errors.CheckViolation, psycopg.errors.DuplicateTable):
                    pass

        await self._call(run)
        self._inbox_days.update(range(first, first + DAYS_AHEAD))

    async def read_inbox(self, project_id: int, after: int, limit: int) -> list[tuple[int, bytes]]:
        async def run(cur: Cursor) -> list[tuple[int, bytes]]:
            await cur.execute(
                Q["read_inbox"], {"project_id": project_id, "after": after, "limit": limit}
            )
            return [(int(seq), bytes(payload)) for seq, payload in await cur.fetchall()]

        return await self._call(run, transaction=False)

    async def inbox_head(self, project_id: int) -> int:
        return await self._one(Q["inbox_head"], {"project_id": project_id})

    async def maintain_inbox(self) -> int:
        """Make the next days' partitions, drop days wholly consumed, delete consumed rows of the
        default partition and old seal requests; returns how many partitions were dropped."""

        async def run(cur: Cursor) -> int:
            await cur.execute("SELECT pg_try_advisory_xact_lock(%s)", (MAINTENANCE_LOCK,))
            row = await cur.fetchone()
            if row is None or not row[0]:
                return 0  # another node is at it
            first = today()
            dropped = 0
            await cur.execute(Q["inbox_partitions_droppable"])
            for (partition,) in await cur.fetchall():
                if int(partition.removeprefix("inbox_")) >= first - 1:
                    continue
                await cur.execute(
                    sql.SQL(Q["inbox_partition_pending"]).format(
                        partition=sql.Identifier(partition)
                    )
                )
                if await cur.fetchone() is None:
                    await cur.execute(
                        sql.SQL(Q["drop_partition"]).format(partition=sql.Identifier(partition))
                    )
                    dropped += 1
            await cur.execute(Q["delete_consumed_default_rows"])
            await cur.execute(Q["forget_seal_requests"])
            return dropped

        await self._make_inbox_partitions(today())
        return await self._call(run)

    # -- leases ----------------------------------------------------------------------------------

    async def acquire_lease(
        self, project_id: int, owner: str, ttl: float, *, steal: bool = False
    ) -> int | None:
        async def run(cur: Cursor) -> int | None:
            await cur.execute(
                Q["acquire_lease"],
                {"project_id": project_id, "owner": owner, "ttl": ttl, "steal": steal},
            )
            row = await cur.fetchone()
            return None if row is None else int(row[0])

        return await self._call(run)

    async def renew_lease(self, project_id: int, owner: str, epoch: int, ttl: float) -> bool:
        async def run(cur: Cursor) -> bool:
            await cur.execute(
                Q["renew_lease"],
                {"project_id": project_id, "owner": owner, "epoch": epoch, "ttl": ttl},
            )
            return await cur.fetchone() is not None

        return await self._call(run)

    async def release_lease(self, project_id: int, owner: str, epoch: int) -> None:
        async def run(cur: Cursor) -> None:
            await cur.execute(
                Q["release_lease"], {"project_id": project_id, "owner": owner, "epoch": epoch}
            )

        await self._call(run)

    async def leases(self) -> list[Lease]:
        async def run(cur: Cursor) -> list[Lease]:
            await cur.execute(Q["leases"])
            return [
                Lease(int(p), str(o), int(e), bool(live)) for p, o, e, live in await cur.fetchall()
            ]

        return await self._call(run, transaction=False)

    async def project_position(self, project_id: int) -> tuple[int, int]:
        """(inbox position consumed, frame position identity state reflects) of a project."""

        async def run(cur: Cursor) -> tuple[int, int]:
            await cur.execute(Q["project_position"], {"project_id": project_id})
            row = await cur.fetchone()
            return (0, 0) if row is None else (int(row[0]), int(row[1]))

        return await self._call(run, transaction=False)

    # -- frames ----------------------------------------------------------------------------------

    async def read_frames(self, project_id: int) -> list[Frame]:
        async def run(cur: Cursor) -> list[Frame]:
            await cur.execute(Q["read_frames"], {"project_id": project_id})
            return [
                Frame(int(lsn), int(kind), project_id, int(hour), _inflate(bytes(body)))
                for lsn, kind, hour, body in await cur.fetchall()
            ]

        return await self._call(run, transaction=False)

    async def commit_frames(
        self, project_id: int, frames: list[Frame], inbox_pos: int, release_upto: int
    ) -> None:
        """In one (fenced) transaction: the frames, the inbox position they were made from, and
        the release of frames at or below ``release_upto``."""

        async def run(cur: Cursor) -> None:
            if frames:
                await cur.execute(
                    Q["insert_frames"],
                    {
                        "project_id": project_id,
                        "lsns": [f.lsn for f in frames],
                        "kinds": [f.kind for f in frames],
                        "hours": [f.hour for f in frames],
                        "bodies": [_deflate(f.body) for f in frames],
                    },
                )
            if inbox_pos:
                await cur.execute(Q["save_inbox_pos"], {"project_id": project_id, "pos": inbox_pos})
            if release_upto:
                await cur.execute(
                    Q["release_frames"], {"project_id": project_id, "upto": release_upto}
                )

        await self._call(run)

    # -- seal requests ---------------------------------------------------------------------------

    async def request_seal(self, project_id: int, upto: int) -> int:
        async def run(cur: Cursor) -> int:
            await cur.execute(Q["request_seal"], {"project_id": project_id, "upto": upto})
            row = await cur.fetchone()
            assert row is not None
            await cur.execute(Q["notify"], {"channel": SEAL_CHANNEL, "payload": str(project_id)})
            return int(row[0])

        return await self._call(run)

    async def seal_request_done(self, request_id: int) -> bool:
        async def run(cur: Cursor) -> bool:
            await cur.execute(Q["seal_request_done"], {"id": request_id})
            row = await cur.fetchone()
            return bool(row and row[0])

        return await self._call(run, transaction=False)

    async def pending_seals(self, project_ids: list[int]) -> dict[int, int]:
        """For each of these projects with a seal request not done yet: the highest ``upto``."""

        async def run(cur: Cursor) -> dict[int, int]:
            await cur.execute(Q["pending_seals"], {"project_ids": project_ids})
            return {int(p): int(upto) for p, upto in await cur.fetchall()}

        return await self._call(run, transaction=False)

    async def complete_seals(self, project_id: int, upto: int) -> None:
        async def run(cur: Cursor) -> None:
            await cur.execute(Q["complete_seals"], {"project_id": project_id, "upto": upto})

        await self._call(run)

    async def seal_requests(self) -> AsyncIterator[int]:
        """Project ids as seal requests for them are made (LISTEN on a connection of its own;
        ends when the connection fails)."""
        pool = await self._open()
        try:
            async with pool.connection() as conn:  # no deadline: it waits as long as it listens
                await conn.execute(f"LISTEN {SEAL_CHANNEL}")
                try:
                    async for note in conn.notifies():
                        with contextlib.suppress(ValueError):
                            yield int(note.payload)
                finally:
                    with contextlib.suppress(psycopg.Error):
                        await conn.execute("UNLISTEN *")
        except (psycopg.Error, OSError) as exc:
            raise MetadataUnavailable(f"metadata store unavailable: {exc}") from exc

    async def _one(self, query: str, params: dict[str, Any]) -> int:
        async def run(cur: Cursor) -> int:
            await cur.execute(query, params)
            row = await cur.fetchone()
            return 0 if row is None else int(row[0])

        return await self._call(run, transaction=False)


class PgFrameLog:
    """A project owner's EventLog in PostgreSQL: frames are buffered by ``append`` and committed
    by ``sync``, with the inbox position they were made from (:meth:`consumed`) and any release,
    in the owner's fenced transaction. Load it (:meth:`load`) before ``open``.

    A commit that fails leaves the log failed (LogFailed): what was appended may or may not be
    committed, and the owner's memory holds its effects either way, so the owner starts the
    project again from what is committed (as a process restarts after its fsync failed).
    """

    def __init__(self, store: ClusterMixin, project_id: int) -> None:
        self.store = store
        self.project_id = project_id
        self._frames: list[Frame] = []
        self._loaded: list[Frame] | None = None
        self._next_lsn = 1
        self._durable_lsn = 0
        self._consumed = 0
        self._committed_consumed = 0
        self._release = 0
        self._lock = asyncio.Lock()
        self._failed: BaseException | None = None
        #: Commits made, and the seconds they took (for operators).
        self.commits = 0
        self.commit_seconds = 0.0

    async def load(self) -> None:
        """Read the project's committed frames and inbox position (before ``open``)."""
        self._loaded = await self.store.read_frames(self.project_id)
        self._committed_consumed = self._consumed = (
            await self.store.project_position(self.project_id)
        )[0]

    @property
    def consumed_position(self) -> int:
        """The inbox position whose requests are all in committed frames."""
        return self._committed_consumed

    def consumed(self, inbox_pos: int) -> None:
        """The frames appended from now on (and the next sync) come from requests up to
        ``inbox_pos``."""
        self._consumed = max(self._consumed, inbox_pos)

    def open(self, min_next_lsn: int = 1) -> Iterator[Frame]:
        assert self._loaded is not None, "load() the log first"
        frames, self._loaded = self._loaded, []
        last = max((f.lsn for f in frames), default=0)
        self._next_lsn = max(last + 1, min_next_lsn)
        self._durable_lsn = self._next_lsn - 1
        yield from frames

    @property
    def last_lsn(self) -> int:
        return self._next_lsn - 1

    @property
    def failed(self) -> BaseException | None:
        return self._failed

    def append(self, kind: int, project_id: int, hour: int, body: bytes) -> int:
        if self._failed is not None:
            raise LogFailed() from self._failed
        assert project_id == self.project_id, "a frame log holds one project"
        lsn = self._next_lsn
        self._next_lsn += 1
        self._frames.append(Frame(lsn, kind, project_id, hour, body))
        return lsn

    async def sync(self, lsn: int | None = None) -> None:
        target = self.last_lsn if lsn is None else lsn
        if self._failed is not None:
            raise LogFailed() from self._failed
        async with self._lock:  # concurrent syncs share the commit that covers them
            if target <= self._durable_lsn and self._consumed <= self._committed_consumed:
                return
            frames, self._frames = self._frames, []
            consumed, release = self._consumed, self._release
            last = frames[-1].lsn if frames else self._durable_lsn
            started = time.monotonic()
            try:
                await self.store.commit_frames(self.project_id, frames, consumed, release)
            except StorageError as exc:
                self._failed = exc
                raise LogFailed(f"the project's log could not be committed: {exc.message}") from exc
            except BaseException as exc:  # cancelled mid-commit: it may or may not have landed
                self._failed = exc
                raise
            self.commits += 1
            self.commit_seconds += time.monotonic() - started
            self._durable_lsn = max(self._durable_lsn, last)
            self._committed_consumed = consumed

    def release(self, upto: int) -> int:
        """Frames at or below ``upto`` are deleted with the next commit."""
        self._release = max(self._release, upto)
        return 0

    async def aclose(self) -> None:
        if self._failed is None and (self._frames or self._consumed > self._committed_consumed):
            with contextlib.suppress(StorageError):
                await self.sync()


if TYPE_CHECKING:
    _: type[EventLog] = PgFrameLog
