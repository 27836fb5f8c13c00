"""PostgreSQL metadata store: every Metadata Protocol on one database that many processes share.

``SWELL_METADATA_URL=postgresql://user@host:5432/db`` (or ``postgres://``; any libpq parameter may
follow in the query string, e.g. ``?sslmode=require``). Connections come from one
psycopg_pool.AsyncConnectionPool per process, between ``SWELL_METADATA_POOL_MIN_SIZE`` and
``..._MAX_SIZE`` connections; a call waits at most ``SWELL_METADATA_POOL_TIMEOUT_SECONDS`` for
one, each connection is checked before use, and every statement is bounded by
``SWELL_METADATA_STATEMENT_TIMEOUT_SECONDS`` (on the server, and on the client in case the server
stops answering). The pool opens on the first call, which also migrates the schema.

What must hold with many processes on one database, and how:

* job claims: ``FOR UPDATE SKIP LOCKED`` plus a lease (``claim_job``);
* part numbers and amplitude_id blocks: one ``INSERT ... ON CONFLICT DO UPDATE ... RETURNING``
  each, atomic under the row lock it takes;
* budget charges: the key's row in ``budget_keys`` is locked for the charge's transaction;
* ``add_part``: one transaction; ``save_state``: one transaction whose positions use
  ``greatest()``, so they only move forward;
* partitions (the user index by month) are created and dropped under an advisory lock, outside
  the transactions that write into them;
* migrations (``sql/postgres/NNNN_*.sql``, recorded in ``swell_schema``) run under a session
  advisory lock, each in its own transaction: two nodes starting at once do not race.

Driver errors stop here: a unique (or other integrity) violation becomes AlreadyExists, as in
SQLite; every other psycopg error, a pool timeout and a client-side timeout become
MetadataUnavailable. A serialization failure or deadlock is retried a few times first (the
transaction was rolled back whole). Every statement is a named query of
``sql/postgres/queries.sql``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from array import array
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

import orjson
import psycopg
from psycopg import AsyncConnection, AsyncCursor, errors as pg_errors, sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import AsyncConnectionPool

from swell.backends.postgres_cluster import ClusterMixin, Scope
from swell.backends.queries import load_migrations, load_queries
from swell.errors import AlreadyExists, ConfigError, Conflict, MetadataUnavailable, NotFound
from swell.model import (
    FIRST_AMPLITUDE_ID,
    HOUR_MS,
    Annotation,
    Charge,
    DedupChunk,
    DsarRequest,
    IndexEntry,
    Job,
    OrgInfo,
    Part,
    Principal,
    ProjectInfo,
    Rollup,
    StateChanges,
    StateSnapshot,
    UserBlocks,
    hour_of,
    hour_start,
    rewrite_key,
)
from swell.ratelimit import decide
from swell.rollups import DAY_MS, sum_into_buckets

if TYPE_CHECKING:
    from swell.backends.base import Metadata
    from swell.settings import Settings

T = TypeVar("T")
Cursor = AsyncCursor[tuple[Any, ...]]
Connection = AsyncConnection[tuple[Any, ...]]

logger = logging.getLogger("swell.backends.postgres")

Q = load_queries("postgres")

#: Advisory lock keys (pg_advisory_lock's bigint space is shared by every application on the
#: database; these are swell's: "swell" in ASCII, then a small number).
SCHEMA_LOCK = 0x7377656C6C_0001
PARTITION_LOCK = 0x7377656C6C_0002

#: Attempts of a transaction that PostgreSQL rolled back for a serialization failure or deadlock.
TX_ATTEMPTS = 3

#: What a project deletion empties besides its keys (a deletable project has no sealed part, so
#: no user-index rows). Its dedup keys stay (they carry no project); its id is never reused.
PROJECT_TABLES = (
    "id_users",
    "id_devices",
    "user_props",
    "group_props",
    "user_links",
    "part_seqs",
    "import_keys",
)


@dataclass(frozen=True, slots=True)
class PoolOptions:
    """The pool's bounds and timeouts (SWELL_METADATA_POOL_*, SWELL_METADATA_*_TIMEOUT_*)."""

    min_size: int = 1
    max_size: int = 10
    #: How long a call waits for a free connection (or for one to be made).
    timeout: float = 5.0
    #: libpq's connect_timeout, unless the URL sets one.
    connect_timeout: int = 5
    #: The server's statement_timeout; the client gives up on a call after the pool timeout
    #: plus twice this.
    statement_timeout: float = 30.0

    @classmethod
    def from_settings(cls, settings: Settings) -> PoolOptions:
        return cls(
            min_size=settings.metadata_pool_min_size,
            max_size=settings.metadata_pool_max_size,
            timeout=settings.metadata_pool_timeout_seconds,
            connect_timeout=settings.metadata_connect_timeout_seconds,
            statement_timeout=settings.metadata_statement_timeout_seconds,
        )

    def check(self) -> None:
        """Raises ConfigError for bounds that cannot work."""
        if self.max_size < 1 or self.min_size > self.max_size:
            raise ConfigError(
                f"SWELL_METADATA_POOL_MIN_SIZE ({self.min_size}) must be at most "
                f"SWELL_METADATA_POOL_MAX_SIZE ({self.max_size}), which must be at least 1"
            )
        for name, value in (
            ("SWELL_METADATA_POOL_TIMEOUT_SECONDS", self.timeout),
            ("SWELL_METADATA_STATEMENT_TIMEOUT_SECONDS", self.statement_timeout),
        ):
            if not value > 0:
                raise ConfigError(f"{name} has value {value!r}. Must be more than 0.")


def _pack(values: Iterable[int]) -> bytes:
    return array("q", values).tobytes()


def _unpack(blob: bytes) -> tuple[int, ...]:
    values = array("q")
    values.frombytes(blob)
    return tuple(values)


def _key(text: str) -> bytes:
    """An identifier from an event as stored (bytea: text cannot hold U+0000)."""
    return text.encode("utf-8", "surrogatepass")


def _text(blob: bytes) -> str:
    return bytes(blob).decode("utf-8", "surrogatepass")


def _message(text: str) -> str:
    """Free text for a text column (error messages may quote input, and text cannot hold NUL)."""
    return text.replace("\x00", "\\x00")


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


def _loads(blob: bytes) -> dict[str, Any]:
    value = orjson.loads(blob)
    return value if isinstance(value, dict) else {}


def _month_partition(hour: int) -> tuple[str, int, int]:
    """The user index partition of a part hour: (name, first hour, first hour of next month)."""
    start = hour_start(hour)
    month = datetime(start.year, start.month, 1, tzinfo=UTC)
    following = datetime(start.year + start.month // 12, start.month % 12 + 1, 1, tzinfo=UTC)
    return f"user_blocks_{month:%Y%m}", hour_of(month), hour_of(following)


def _partition_month_end(name: str) -> int:
    """The first hour after a user index partition's month (``user_blocks_YYYYMM``)."""
    month = datetime.strptime(name[12:], "%Y%m").replace(tzinfo=UTC)
    return _month_partition(hour_of(month))[2]


def _pack_keys(keys: Iterable[int]) -> bytes:
    """Dedup keys as DedupChunk carries them: little-endian int64."""
    packed = array("q", keys)
    if sys.byteorder != "little":
        packed.byteswap()
    return packed.tobytes()


def _event_counts(project: int, counts: Sequence[tuple[int, str, int]]) -> dict[str, Any]:
    return {
        "project_id": project,
        "days": [d for d, _, _ in counts],
        "event_types": [_key(t) for _, t, _ in counts],
        "events": [n for _, _, n in counts],
    }


def describe_url(url: str) -> str:
    """Where a conninfo points, without its password (for messages and logs)."""
    try:
        params = conninfo_to_dict(url)
    except psycopg.Error:
        return "postgresql (unparsable url)"
    host = params.get("host") or params.get("hostaddr") or "localhost"
    return f"postgresql://{host}:{params.get('port') or 5432}/{params.get('dbname') or ''}"


class PostgresMetadata(ClusterMixin):
    def __init__(self, url: str, options: PoolOptions | None = None) -> None:
        self.options = options or PoolOptions()
        self.options.check()
        try:
            params = conninfo_to_dict(url)
        except psycopg.Error as exc:
            raise ConfigError(f"metadata url is not a valid PostgreSQL url: {exc}") from None
        params.setdefault("connect_timeout", str(max(2, self.options.connect_timeout)))
        params.setdefault("application_name", "swell")
        self.where = describe_url(url)
        self._pool: AsyncConnectionPool[Connection] = AsyncConnectionPool(
            make_conninfo("", **params),
            kwargs={"autocommit": True},
            min_size=self.options.min_size,
            max_size=self.options.max_size,
            timeout=self.options.timeout,
            # After an outage a new attempt starts with the next call instead of waiting out a
            # long backoff; the pool keeps at least one attempt going meanwhile.
            reconnect_timeout=max(self.options.timeout * 2, 10.0),
            check=AsyncConnectionPool.check_connection,
            configure=self._configure,
            open=False,
            name="swell-metadata",
        )
        self._deadline = self.options.timeout + 2 * self.options.statement_timeout
        self._opened = False
        self._ready = False
        self._closed = False
        self._open_lock = asyncio.Lock()
        #: Partitions known to exist (user_blocks_YYYYMM).
        self._partitions: set[str] = set()
        #: Set on a project owner's view (scoped): every write transaction checks the lease.
        self._scope: Scope | None = None
        self._inbox_days: set[int] = set()

    @classmethod
    def from_url(cls, url: str) -> PostgresMetadata:
        return cls(url)

    @classmethod
    def from_settings(cls, url: str, settings: Settings) -> PostgresMetadata:
        return cls(url, PoolOptions.from_settings(settings))

    async def _configure(self, conn: Connection) -> None:
        ms = int(self.options.statement_timeout * 1000)
        await conn.execute(
            sql.SQL("SET statement_timeout = {}; SET TIME ZONE 'UTC'").format(sql.Literal(ms))
        )

    # -- plumbing ------------------------------------------------------------------------------

    async def _open(self) -> AsyncConnectionPool[Connection]:
        """The pool, opened and the schema migrated on first use."""
        if self._closed:
            raise MetadataUnavailable("metadata store unavailable: it is closed")
        if not self._ready:
            async with self._open_lock:
                if not self._ready:
                    if not self._opened:
                        await self._pool.open(wait=False)
                        self._opened = True
                    await self._migrate()
                    self._partitions = set(await self._list_partitions())
                    self._ready = True
        return self._pool

    async def _migrate(self) -> None:
        async with self._errors(), self._pool.connection() as conn:
            await conn.execute(Q["lock_schema"], {"key": SCHEMA_LOCK})
            try:
                await conn.execute(Q["create_schema_table"])
                cur = await conn.execute(Q["schema_version"])
                row = await cur.fetchone()
                version = int(row[0]) if row else 0
                for migration in load_migrations("postgres"):
                    if migration.version <= version:
                        continue
                    logger.info("migrating %s to schema %d", self.where, migration.version)
                    async with conn.transaction():
                        await conn.execute("SET LOCAL statement_timeout = 0")
                        await conn.execute(migration.sql)
                        await conn.execute(
                            Q["record_migration"],
                            {"version": migration.version, "name": migration.name},
                        )
            finally:
                await conn.execute(Q["unlock_schema"], {"key": SCHEMA_LOCK})

    async def _list_partitions(self) -> list[str]:
        async def run(cur: Cursor) -> list[str]:
            names: list[str] = []
            await cur.execute(Q["partitions"], {"parent": "user_blocks"})
            names.extend(r[0] for r in await cur.fetchall())
            return names

        return await self._call(run, transaction=False, opened=True)

    async def schema_version(self) -> int:
        """The last migration applied."""

        async def run(cur: Cursor) -> int:
            await cur.execute(Q["schema_version"])
            row = await cur.fetchone()
            return int(row[0]) if row else 0

        return await self._call(run, transaction=False)

    @contextlib.asynccontextmanager
    async def _errors(self) -> AsyncIterator[None]:
        """Driver errors in, swell errors out; and a deadline, should the server stop answering."""
        try:
            async with asyncio.timeout(self._deadline):
                yield
        except TimeoutError as exc:
            raise MetadataUnavailable(
                f"metadata store unavailable: {self.where} did not answer within "
                f"{self._deadline:g} s"
            ) from exc
        except psycopg.IntegrityError as exc:
            raise AlreadyExists(f"metadata conflict: {exc}") from exc
        except (psycopg.Error, OSError) as exc:
            detail = str(exc).strip() or type(exc).__name__
            raise MetadataUnavailable(
                f"metadata store unavailable: {self.where}: {detail}"
            ) from exc

    async def _call(
        self,
        fn: Callable[[Cursor], Awaitable[T]],
        *,
        transaction: bool = True,
        opened: bool = False,
    ) -> T:
        """Run ``fn`` on a pooled connection, in one transaction unless ``transaction`` is False
        (a single read). Retries serialization failures and deadlocks; maps driver errors."""
        pool = self._pool if opened else await self._open()
        for attempt in range(1, TX_ATTEMPTS + 1):
            try:
                async with self._errors(), pool.connection() as conn:
                    if not transaction:
                        async with conn.cursor(binary=True) as cur:
                            return await fn(cur)
                    async with conn.transaction(), conn.cursor(binary=True) as cur:
                        if self._scope is not None:
                            await self._fence(cur, self._scope)
                        return await fn(cur)
            except MetadataUnavailable as exc:
                if attempt == TX_ATTEMPTS or not isinstance(
                    exc.__cause__, pg_errors.TransactionRollback
                ):
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    async def _ensure_partition(self, parent: str, name: str, start: int, end: int) -> None:
        if name in self._partitions:
            return

        async def run(cur: Cursor) -> None:
            await cur.execute(Q["lock_partitions"], {"key": PARTITION_LOCK})
            await cur.execute(
                sql.SQL(Q["create_partition"]).format(
                    partition=sql.Identifier(name),
                    parent=sql.Identifier(parent),
                    start=sql.Literal(start),
                    end=sql.Literal(end),
                )
            )

        await self._call(run)
        self._partitions.add(name)  # only once committed

    async def aclose(self) -> None:
        if self._closed or self._scope is not None:  # a scoped view shares its parent's pool
            return
        self._closed = True
        if self._opened:
            try:
                await self._pool.close(timeout=5.0)
            except (psycopg.Error, OSError) as exc:  # pragma: no cover - closing a dead pool
                logger.warning("closing the metadata pool: %s", exc)

    # -- keys ----------------------------------------------------------------------------------

    async def create_org(self, name: str, api_key: str, secret_hash: str) -> int:
        async def run(cur: Cursor) -> int:
            await cur.execute(Q["insert_org"], {"name": name})
            row = await cur.fetchone()
            assert row is not None
            org_id = int(row[0])
            await cur.execute(
                Q["insert_key"],
                {
                    "api_key": api_key,
                    "org_id": org_id,
                    "project_id": None,
                    "secret_hash": secret_hash,
                },
            )
            return org_id

        return await self._call(run)

    async def create_project(self, name: str, org_id: int, api_key: str, secret_hash: str) -> int:
        async def run(cur: Cursor) -> int:
            await cur.execute(Q["org_exists"], {"org_id": org_id})
            if await cur.fetchone() is None:
                raise NotFound(f"org {org_id} does not exist")
            await cur.execute(Q["insert_project"], {"org_id": org_id, "name": name})
            row = await cur.fetchone()
            assert row is not None
            project_id = int(row[0])
            await cur.execute(
                Q["insert_key"],
                {
                    "api_key": api_key,
                    "org_id": org_id,
                    "project_id": project_id,
                    "secret_hash": secret_hash,
                },
            )
            return project_id

        return await self._call(run)

    async def rotate_key(
        self, org_id: int, project_id: int | None, api_key: str, secret_hash: str
    ) -> None:
        async def run(cur: Cursor) -> None:
            await cur.execute(Q["delete_owner_keys"], {"org_id": org_id, "project_id": project_id})
            await cur.execute(
                Q["insert_key"],
                {
                    "api_key": api_key,
                    "org_id": org_id,
                    "project_id": project_id,
                    "secret_hash": secret_hash,
                },
            )

        await self._call(run)

    async def find_key(self, api_key: str) -> Principal | None:
        if "\x00" in api_key:
            return None  # no key has one (keys are generated), and text cannot hold it

        async def run(cur: Cursor) -> Principal | None:
            await cur.execute(Q["find_key"], {"api_key": api_key})
            row = await cur.fetchone()
            return None if row is None else Principal(row[0], row[1], row[2])

        return await self._call(run, transaction=False)

    async def all_orgs(self) -> list[int]:
        async def run(cur: Cursor) -> list[int]:
            await cur.execute(Q["all_orgs"])
            return [r[0] for r in await cur.fetchall()]

        return await self._call(run, transaction=False)

    async def org_projects(self, org_id: int) -> list[int]:
        async def run(cur: Cursor) -> list[int]:
            await cur.execute(Q["org_projects"], {"org_id": org_id})
            return [r[0] for r in await cur.fetchall()]

        return await self._call(run, transaction=False)

    async def list_orgs(self) -> list[OrgInfo]:
        async def run(cur: Cursor) -> list[OrgInfo]:
            await cur.execute(Q["list_orgs"])
            return [OrgInfo(*row) for row in await cur.fetchall()]

        return await self._call(run, transaction=False)

    async def list_projects(self, org_id: int | None = None) -> list[ProjectInfo]:
        async def run(cur: Cursor) -> list[ProjectInfo]:
            await cur.execute(Q["list_projects"], {"org_id": org_id})
            return [ProjectInfo(*row) for row in await cur.fetchall()]

        return await self._call(run, transaction=False)

    async def delete_project(self, project_id: int) -> None:
        async def run(cur: Cursor) -> None:
            params = {"project_id": project_id}
            await cur.execute(Q["project_exists"], params)
            if await cur.fetchone() is None:
                raise NotFound(f"project {project_id} does not exist")
            await cur.execute(Q["count_project_parts"], params)
            row = await cur.fetchone()
            if row and row[0]:
                raise Conflict(
                    f"project {project_id} holds {row[0]} sealed part(s); only an empty "
                    "project can be deleted"
                )
            for table in PROJECT_TABLES:
                await cur.execute(
                    sql.SQL(Q["delete_project_rows"]).format(table=sql.Identifier(table)), params
                )
            await cur.execute(Q["delete_project_keys"], params)
            await cur.execute(Q["delete_project"], params)

        await self._call(run)

    # -- catalog and user index -----------------------------------------------------------------

    async def add_part(
        self,
        part: Part,
        entries: Sequence[IndexEntry],
        import_keys: Sequence[int] = (),
        *,
        rollup: Rollup | None = None,
    ) -> None:
        await self._ensure_partition("user_blocks", *_month_partition(part.hour))
        links = sorted({(_key(e.user_id), e.amplitude_id) for e in entries if e.user_id})

        async def run(cur: Cursor) -> None:
            await cur.execute(
                Q["insert_part"],
                {
                    "project_id": part.project_id,
                    "hour": part.hour,
                    "seq": part.seq,
                    "size": part.size,
                    "crc32": part.crc32,
                    "events": part.events,
                    "min_time": part.min_time,
                    "max_time": part.max_time,
                    "max_lsn": part.max_lsn,
                    "blocks": _pack(part.block_offsets),
                    "gen": part.gen,
                },
            )
            if entries:
                await cur.execute(
                    Q["insert_user_blocks"],
                    {
                        "project_id": part.project_id,
                        "hour": part.hour,
                        "seq": part.seq,
                        "amplitude_ids": [e.amplitude_id for e in entries],
                        "blocks": [_pack(e.blocks) for e in entries],
                        "events": [e.events for e in entries],
                    },
                )
            if links:
                await cur.execute(
                    Q["insert_user_links"],
                    {
                        "project_id": part.project_id,
                        "user_ids": [u for u, _ in links],
                        "amplitude_ids": [a for _, a in links],
                    },
                )
            if import_keys:
                await cur.execute(
                    Q["insert_import_keys"],
                    {
                        "project_id": part.project_id,
                        "hour": part.hour,
                        "seq": part.seq,
                        "keys": _pack(import_keys),
                    },
                )
            if rollup:
                await self._write_rollup(cur, part.project_id, rollup)

        await self._call(run)

    async def import_keys(self, project_id: int, hour: int) -> set[int]:
        async def run(cur: Cursor) -> set[int]:
            await cur.execute(Q["import_keys"], {"project_id": project_id, "hour": hour})
            keys: set[int] = set()
            for (blob,) in await cur.fetchall():
                keys.update(_unpack(blob))
            return keys

        return await self._call(run, transaction=False)

    async def drop_parts_before(self, hour: int) -> list[Part]:
        await self._open()

        async def run(cur: Cursor) -> tuple[list[Part], list[str]]:
            params = {"hour": hour}
            await cur.execute(Q["delete_parts_before"], params)
            dropped = sorted(
                (self._part(r) for r in await cur.fetchall()),
                key=lambda p: (p.project_id, p.hour, p.seq),
            )
            if not dropped:
                return [], []
            await cur.execute(Q["delete_import_keys_before"], params)
            await cur.execute(Q["delete_part_seqs_before"], params)
            # Whole months before the cutoff go as partitions (every node's, not only those this
            # one has seen), the rest row by row.
            await cur.execute(Q["lock_partitions"], {"key": PARTITION_LOCK})
            await cur.execute(Q["partitions"], {"parent": "user_blocks"})
            gone = sorted(r[0] for r in await cur.fetchall() if _partition_month_end(r[0]) <= hour)
            for name in gone:
                await cur.execute(
                    sql.SQL(Q["drop_partition"]).format(partition=sql.Identifier(name))
                )
            await cur.execute(Q["delete_user_blocks_before"], params)
            return dropped, gone

        dropped, gone = await self._call(run)
        self._partitions.difference_update(gone)  # only once committed
        return dropped

    @staticmethod
    def _part(row: Sequence[Any]) -> Part:
        return Part(
            project_id=row[0],
            hour=row[1],
            seq=row[2],
            size=row[3],
            crc32=row[4],
            events=row[5],
            min_time=row[6],
            max_time=row[7],
            max_lsn=row[8],
            block_offsets=_unpack(row[9]),
            gen=row[10],
        )

    async def parts(self, project_id: int, start_hour: int, end_hour: int) -> list[Part]:
        async def run(cur: Cursor) -> list[Part]:
            await cur.execute(
                Q["parts"],
                {"project_id": project_id, "start_hour": start_hour, "end_hour": end_hour},
            )
            return [self._part(r) for r in await cur.fetchall()]

        return await self._call(run, transaction=False)

    async def allocate_part_seq(self, project_id: int, hour: int) -> int:
        async def run(cur: Cursor) -> int:
            await cur.execute(Q["allocate_part_seq"], {"project_id": project_id, "hour": hour})
            row = await cur.fetchone()
            assert row is not None
            return int(row[0])

        return await self._call(run, transaction=False)

    async def sealed_watermarks(self) -> dict[tuple[int, int], int]:
        async def run(cur: Cursor) -> dict[tuple[int, int], int]:
            await cur.execute(Q["sealed_watermarks"])
            return {(r[0], r[1]): r[2] for r in await cur.fetchall()}

        return await self._call(run, transaction=False)

    async def amplitude_ids_for_user(self, project_id: int, user_id: str) -> list[int]:
        async def run(cur: Cursor) -> list[int]:
            await cur.execute(
                Q["amplitude_ids_for_user"], {"project_id": project_id, "user_id": _key(user_id)}
            )
            return [r[0] for r in await cur.fetchall()]

        return await self._call(run, transaction=False)

    async def user_blocks(self, project_id: int, amplitude_ids: Sequence[int]) -> list[UserBlocks]:
        ids = sorted(set(amplitude_ids))

        async def run(cur: Cursor) -> list[UserBlocks]:
            await cur.execute(Q["user_blocks"], {"project_id": project_id, "amplitude_ids": ids})
            parts: dict[tuple[int, int], Part] = {}
            found: list[UserBlocks] = []
            for row in await cur.fetchall():
                key = (row[4], row[5])
                part = parts.get(key)
                if part is None:
                    part = parts[key] = self._part(row[3:])
                found.append(UserBlocks(project_id, row[0], part, _unpack(row[1]), row[2]))
            return found

        return await self._call(run, transaction=False)

    # -- identity state -------------------------------------------------------------------------

    async def load_state(
        self,
        project_id: int,
        user_ids: Iterable[str],
        device_ids: Iterable[str],
        amplitude_ids: Iterable[int],
        group_keys: Iterable[tuple[str, str]],
    ) -> StateSnapshot:
        users, devices, aids = list(user_ids), list(device_ids), list(amplitude_ids)
        groups = list(group_keys)

        async def run(cur: Cursor) -> StateSnapshot:
            snap = StateSnapshot()
            if users:
                keys = [_key(u) for u in users]
                await cur.execute(Q["load_users"], {"project_id": project_id, "keys": keys})
                for uid, aid in await cur.fetchall():
                    snap.users[_text(uid)] = aid
            if devices:
                keys = [_key(d) for d in devices]
                await cur.execute(Q["load_devices"], {"project_id": project_id, "keys": keys})
                for did, aid, anonymous in await cur.fetchall():
                    snap.devices[_text(did)] = (aid, bool(anonymous))
            wanted = sorted({*aids, *snap.users.values(), *(d[0] for d in snap.devices.values())})
            if wanted:
                await cur.execute(Q["load_props"], {"project_id": project_id, "keys": wanted})
                for aid, props in await cur.fetchall():
                    snap.props[aid] = _loads(props)
            if groups:
                await cur.execute(
                    Q["load_groups"],
                    {
                        "project_id": project_id,
                        "group_types": [_key(t) for t, _ in groups],
                        "group_values": [_key(v) for _, v in groups],
                    },
                )
                for gtype, gvalue, props in await cur.fetchall():
                    snap.groups[(_text(gtype), _text(gvalue))] = _loads(props)
            return snap

        # One snapshot for every read of the batch, as SQLite's single connection gives.
        return await self._call(run)

    async def save_state(self, changes: StateChanges) -> None:
        # Last write wins per key, as INSERT OR REPLACE does (ON CONFLICT may touch a row once).
        users = {(p, u): a for p, u, a in changes.users}
        devices = {(p, d): (a, anon) for p, d, a, anon in changes.devices}
        props = {(p, a): blob for p, a, blob in changes.props}
        groups = {(p, t, v): blob for p, t, v, blob in changes.groups}
        by_hour: dict[int, list[int]] = {}
        for _project, key, seen_ms in changes.dedup:
            by_hour.setdefault(seen_ms // HOUR_MS, []).append(key)

        async def run(cur: Cursor) -> None:
            if users:
                await cur.execute(
                    Q["save_users"],
                    {
                        "project_ids": [p for p, _ in users],
                        "user_ids": [_key(u) for _, u in users],
                        "amplitude_ids": list(users.values()),
                    },
                )
            if devices:
                await cur.execute(
                    Q["save_devices"],
                    {
                        "project_ids": [p for p, _ in devices],
                        "device_ids": [_key(d) for _, d in devices],
                        "amplitude_ids": [a for a, _ in devices.values()],
                        "anonymous": [bool(anon) for _, anon in devices.values()],
                    },
                )
            if props:
                await cur.execute(
                    Q["save_props"],
                    {
                        "project_ids": [p for p, _ in props],
                        "amplitude_ids": [a for _, a in props],
                        "props": list(props.values()),
                    },
                )
            if groups:
                await cur.execute(
                    Q["save_groups"],
                    {
                        "project_ids": [p for p, _, _ in groups],
                        "group_types": [_key(t) for _, t, _ in groups],
                        "group_values": [_key(v) for _, _, v in groups],
                        "props": list(groups.values()),
                    },
                )
            if by_hour:
                await cur.execute(
                    Q["insert_dedup_chunk"],
                    {"hours": list(by_hour), "keys": [_pack_keys(k) for k in by_hour.values()]},
                )
                await cur.execute(Q["merge_dedup_hours"], {"newest": max(by_hour)})
            if self._scope is None:
                await cur.execute(
                    Q["save_position"],
                    {"lsn": changes.lsn, "next_amplitude_id": changes.next_amplitude_id},
                )
            else:  # an owner's view: its project's position, the one amplitude_id floor
                await cur.execute(
                    Q["save_project_state_lsn"],
                    {"project_id": self._scope.project_id, "lsn": changes.lsn},
                )
                await cur.execute(
                    Q["save_next_amplitude_id"],
                    {"next_amplitude_id": changes.next_amplitude_id},
                )

        await self._call(run)

    async def state_position(self) -> tuple[int, int]:
        async def run(cur: Cursor) -> dict[str, int]:
            await cur.execute(Q["state_position"])
            return {r[0]: int(r[1]) for r in await cur.fetchall()}

        kv = await self._call(run, transaction=False)
        lsn = kv.get("state_lsn", 0)
        if self._scope is not None:
            lsn = (await self.project_position(self._scope.project_id))[1]
        return lsn, kv.get("next_amplitude_id", FIRST_AMPLITUDE_ID)

    async def allocate_amplitude_ids(self, count: int, floor: int) -> int:
        async def run(cur: Cursor) -> int:
            await cur.execute(
                Q["allocate_amplitude_ids"],
                {"first": FIRST_AMPLITUDE_ID, "floor": floor, "count": count},
            )
            row = await cur.fetchone()
            assert row is not None
            return int(row[0])

        return await self._call(run, transaction=False)

    async def load_dedup(self, since_ms: int) -> list[DedupChunk]:
        async def run(cur: Cursor) -> list[DedupChunk]:
            # Hours that end after since_ms.
            await cur.execute(Q["load_dedup"], {"hour": since_ms // HOUR_MS})
            return [DedupChunk(r[0], bytes(r[1])) for r in await cur.fetchall()]

        return await self._call(run, transaction=False)

    async def prune_dedup(self, before_ms: int) -> int:
        async def run(cur: Cursor) -> int:
            await cur.execute(Q["prune_dedup"], {"hour": before_ms // HOUR_MS})
            row = await cur.fetchone()
            return int(row[0]) if row else 0

        return await self._call(run)

    # -- budgets ----------------------------------------------------------------------------------

    async def charge_budget(
        self, key: str, cost: int, budget: int, window_seconds: float, now: datetime
    ) -> Charge:
        at = now.timestamp()

        async def run(cur: Cursor) -> Charge:
            await cur.execute(Q["lock_budget"], {"key": key})
            await cur.execute(Q["budget_charges"], {"key": key, "cutoff": at - window_seconds})
            charges = [(float(r[0]), int(r[1])) for r in await cur.fetchall()]
            charge = decide(charges, cost, budget, window_seconds, at)
            if charge.allowed and cost:
                await cur.execute(Q["insert_budget_charge"], {"key": key, "at": at, "cost": cost})
            return charge

        return await self._call(run)

    # -- DSAR requests and jobs ---------------------------------------------------------------

    @staticmethod
    def _dsar(row: Sequence[Any]) -> DsarRequest:
        return DsarRequest(
            id=row[0],
            org_id=row[1],
            user_id=None if row[2] is None else _text(row[2]),
            amplitude_id=row[3],
            start_date=row[4],
            end_date=row[5],
            status=row[6],
            fail_reason=row[7],
            outputs=row[8],
            slots=row[9],
            created_at=_utc(row[10]),
            expires_at=None if row[11] is None else _utc(row[11]),
            purged=bool(row[12]),
        )

    async def create_dsar(
        self,
        org_id: int,
        user_id: str | None,
        amplitude_id: int | None,
        start_date: str,
        end_date: str,
        now: datetime,
    ) -> DsarRequest:
        async def run(cur: Cursor) -> DsarRequest:
            await cur.execute(
                Q["create_dsar"],
                {
                    "org_id": org_id,
                    "user_id": None if user_id is None else _key(user_id),
                    "amplitude_id": amplitude_id,
                    "start_date": start_date,
                    "end_date": end_date,
                    "now": now,
                },
            )
            row = await cur.fetchone()
            assert row is not None
            await cur.execute(Q["insert_job"], {"ref": row[0], "now": now})
            return self._dsar(row)

        return await self._call(run)

    async def get_dsar(self, request_id: int) -> DsarRequest | None:
        async def run(cur: Cursor) -> DsarRequest | None:
            await cur.execute(Q["get_dsar"], {"id": request_id})
            row = await cur.fetchone()
            return None if row is None else self._dsar(row)

        return await self._call(run, transaction=False)

    async def _update(self, query: str, params: dict[str, Any]) -> int:
        async def run(cur: Cursor) -> int:
            await cur.execute(Q[query], params)
            return cur.rowcount

        return await self._call(run, transaction=False)

    async def start_dsar(self, request_id: int) -> None:
        await self._update("start_dsar", {"id": request_id})

    async def reserve_dsar_outputs(self, request_id: int, count: int) -> None:
        await self._update("reserve_dsar_outputs", {"id": request_id, "count": count})

    async def finish_dsar(
        self, job_id: int, request_id: int, outputs: int, expires_at: datetime
    ) -> None:
        async def run(cur: Cursor) -> None:
            await cur.execute(
                Q["finish_dsar"],
                {"id": request_id, "outputs": outputs, "expires_at": expires_at},
            )
            await cur.execute(Q["complete_job"], {"id": job_id})

        await self._call(run)

    async def fail_dsar(self, job_id: int, request_id: int, reason: str) -> None:
        text = _message(reason)

        async def run(cur: Cursor) -> None:
            await cur.execute(Q["fail_dsar"], {"id": request_id, "reason": text})
            await cur.execute(Q["fail_job"], {"id": job_id, "reason": text})

        await self._call(run)

    async def expired_dsars(self, now: datetime, limit: int = 100) -> list[DsarRequest]:
        async def run(cur: Cursor) -> list[DsarRequest]:
            await cur.execute(Q["expired_dsars"], {"now": now, "limit": limit})
            return [self._dsar(r) for r in await cur.fetchall()]

        return await self._call(run, transaction=False)

    async def mark_dsar_purged(self, request_id: int) -> None:
        await self._update("mark_dsar_purged", {"id": request_id})

    async def claim_job(self, worker: str, now: datetime, lease_until: datetime) -> Job | None:
        async def run(cur: Cursor) -> Job | None:
            await cur.execute(
                Q["claim_job"], {"worker": worker, "now": now, "lease_until": lease_until}
            )
            row = await cur.fetchone()
            return None if row is None else Job(row[0], row[1], row[2], row[3])

        return await self._call(run, transaction=False)

    async def extend_lease(self, job_id: int, worker: str, lease_until: datetime) -> bool:
        params = {"id": job_id, "worker": worker, "lease_until": lease_until}
        return await self._update("extend_lease", params) == 1

    async def requeue_running_jobs(self) -> int:
        return await self._update("requeue_running_jobs", {})

    async def retry_job(
        self, job_id: int, error: str, run_after: datetime, *, count_attempt: bool = True
    ) -> None:
        params = {
            "id": job_id,
            "error": _message(error[:2000]),
            "run_after": run_after,
            "uncounted": 0 if count_attempt else 1,
        }
        await self._update("retry_job", params)

    async def complete_job(self, job_id: int) -> None:
        await self._update("complete_job", {"id": job_id})

    # -- part rewriting (compaction, deletion) -------------------------------------------------

    async def doom_blobs(self, keys: Sequence[str], delete_after: datetime) -> None:
        async def run(cur: Cursor) -> None:
            await cur.execute(
                Q["doom_blobs"], {"keys": sorted(set(keys)), "delete_after": _utc(delete_after)}
            )

        await self._call(run)

    async def take_doomed_blobs(
        self, now: datetime, retry_at: datetime, limit: int = 1000
    ) -> list[str]:
        params = {"now": _utc(now), "retry_at": _utc(retry_at), "limit": limit}

        async def run(cur: Cursor) -> list[str]:
            await cur.execute(Q["take_doomed_blobs"], params)
            return sorted(r[0] for r in await cur.fetchall())

        return await self._call(run)

    async def forget_blobs(self, keys: Sequence[str]) -> None:
        async def run(cur: Cursor) -> None:
            await cur.execute(Q["forget_blobs"], {"keys": sorted(set(keys))})

        await self._call(run)

    async def replace_parts(
        self,
        old: Sequence[Part],
        new: Sequence[tuple[Part, Sequence[IndexEntry]]],
        old_amplitude_ids: Sequence[int],
        delete_after: datetime,
    ) -> None:
        project_id, hour = rewrite_key(old, new)
        await self._ensure_partition("user_blocks", *_month_partition(hour))
        seqs = sorted({p.seq for p in old})
        where = {"project_id": project_id, "hour": hour, "seqs": seqs}

        async def run(cur: Cursor) -> None:
            await cur.execute(Q["lock_hour_parts"], {"project_id": project_id, "hour": hour})
            recorded = {r[0]: (r[1], r[2], r[3]) for r in await cur.fetchall()}
            for part in old:
                if recorded.get(part.seq) != (part.gen, part.size, part.crc32):
                    raise Conflict(f"part {part.key} is no longer in the catalog as it was")
            fresh = sorted(part.key for part, _ in new)
            await cur.execute(Q["spare_blobs"], {"keys": fresh})
            if len(await cur.fetchall()) != len(fresh):
                raise Conflict("the blob of a rewritten part was swept")
            await cur.execute(
                Q["delete_hour_user_blocks"],
                {**where, "amplitude_ids": sorted(set(old_amplitude_ids))},
            )
            await cur.execute(Q["delete_hour_import_keys"], where)
            kept = [key for (blob,) in await cur.fetchall() for key in _unpack(blob)]
            await cur.execute(Q["delete_hour_parts"], where)
            await cur.execute(
                Q["doom_blobs"],
                {"keys": sorted(p.key for p in old), "delete_after": _utc(delete_after)},
            )
            links: set[tuple[bytes, int]] = set()
            for part, entries in new:
                await cur.execute(
                    Q["insert_part"],
                    {
                        "project_id": project_id,
                        "hour": hour,
                        "seq": part.seq,
                        "size": part.size,
                        "crc32": part.crc32,
                        "events": part.events,
                        "min_time": part.min_time,
                        "max_time": part.max_time,
                        "max_lsn": part.max_lsn,
                        "blocks": _pack(part.block_offsets),
                        "gen": part.gen,
                    },
                )
                if entries:
                    await cur.execute(
                        Q["insert_user_blocks"],
                        {
                            "project_id": project_id,
                            "hour": hour,
                            "seq": part.seq,
                            "amplitude_ids": [e.amplitude_id for e in entries],
                            "blocks": [_pack(e.blocks) for e in entries],
                            "events": [e.events for e in entries],
                        },
                    )
                links.update((_key(e.user_id), e.amplitude_id) for e in entries if e.user_id)
            if links:
                ordered = sorted(links)
                await cur.execute(
                    Q["insert_user_links"],
                    {
                        "project_id": project_id,
                        "user_ids": [u for u, _ in ordered],
                        "amplitude_ids": [a for _, a in ordered],
                    },
                )
            if kept:
                await cur.execute(
                    Q["insert_import_keys"],
                    {
                        "project_id": project_id,
                        "hour": hour,
                        "seq": new[0][0].seq if new else seqs[0],
                        "keys": _pack(kept),
                    },
                )

        await self._call(run)

    async def crowded_hours(
        self, before_hour: int, min_parts: int, limit: int = 100, project_id: int | None = None
    ) -> list[tuple[int, int]]:
        scope = self._scope.project_id if self._scope is not None else project_id

        async def run(cur: Cursor) -> list[tuple[int, int]]:
            await cur.execute(
                Q["crowded_hours"],
                {
                    "before_hour": before_hour,
                    "min_parts": min_parts,
                    "limit": limit,
                    "project_id": scope,
                },
            )
            return [(r[0], r[1]) for r in await cur.fetchall()]

        return await self._call(run, transaction=False)

    # -- dashboard rollups -------------------------------------------------------------------------

    @staticmethod
    async def _write_rollup(cur: Cursor, project: int, rollup: Rollup) -> None:
        if rollup.user_days:
            await cur.execute(
                Q["insert_rollup_user_days"],
                {
                    "project_id": project,
                    "days": [d for d, _ in rollup.user_days],
                    "amplitude_ids": [a for _, a in rollup.user_days],
                },
            )
        if rollup.user_groups:
            await cur.execute(
                Q["insert_rollup_user_groups"],
                {
                    "project_id": project,
                    "days": [r[0] for r in rollup.user_groups],
                    "group_bys": [r[1] for r in rollup.user_groups],
                    "values": [_key(r[2]) for r in rollup.user_groups],
                    "amplitude_ids": [r[3] for r in rollup.user_groups],
                },
            )
        if rollup.first_days:
            await cur.execute(
                Q["upsert_rollup_first_days"],
                {
                    "project_id": project,
                    "amplitude_ids": [a for a, _ in rollup.first_days],
                    "days": [d for _, d in rollup.first_days],
                },
            )
        if rollup.sessions:
            await cur.execute(
                Q["upsert_rollup_sessions"],
                {
                    "project_id": project,
                    "amplitude_ids": [r[0] for r in rollup.sessions],
                    "session_ids": [r[1] for r in rollup.sessions],
                    "firsts": [r[2] for r in rollup.sessions],
                    "lasts": [r[3] for r in rollup.sessions],
                },
            )
        if rollup.event_counts:
            await cur.execute(
                Q["upsert_rollup_event_types"], _event_counts(project, rollup.event_counts)
            )

    async def count_users(
        self,
        project_id: int,
        buckets: Sequence[tuple[int, int]],
        *,
        new: bool = False,
        group_by: str | None = None,
    ) -> list[dict[str, int]]:
        if not buckets:
            return []
        per_day = new or all(lo == hi for lo, hi in buckets)
        args: dict[str, Any] = {
            "project_id": project_id,
            "group_by": group_by,
            "first": buckets[0][0],
            "last": buckets[-1][1],
        }

        async def run(cur: Cursor) -> list[dict[str, int]]:
            if not per_day:
                out: list[dict[str, int]] = []
                for lo, hi in buckets:
                    one = {**args, "first": lo, "last": hi}
                    if group_by is None:
                        await cur.execute(Q["active_users_in_range"], one)
                        row = await cur.fetchone()
                        n = int(row[0]) if row else 0
                        out.append({"": n} if n else {})
                    else:
                        await cur.execute(Q["active_group_users_in_range"], one)
                        out.append({_text(v): int(n) for v, n in await cur.fetchall()})
                return out
            if group_by is None:
                await cur.execute(Q["new_users_per_day" if new else "active_users_per_day"], args)
                days = [(int(d), "", int(n)) for d, n in await cur.fetchall()]
            else:
                query = "new_group_users_per_day" if new else "active_group_users_per_day"
                await cur.execute(Q[query], args)
                days = [(int(d), _text(v), int(n)) for d, v, n in await cur.fetchall()]
            return sum_into_buckets(buckets, days)

        return await self._call(run, transaction=False)

    async def session_totals(
        self, project_id: int, first_day: int, last_day: int
    ) -> dict[int, tuple[int, int]]:
        async def run(cur: Cursor) -> dict[int, tuple[int, int]]:
            await cur.execute(
                Q["session_totals"],
                {
                    "project_id": project_id,
                    "start_ms": first_day * DAY_MS,
                    "end_ms": (last_day + 1) * DAY_MS,
                },
            )
            return {int(d): (int(n), int(t)) for d, n, t in await cur.fetchall()}

        return await self._call(run, transaction=False)

    async def event_type_totals(
        self, project_id: int, first_day: int, last_day: int
    ) -> dict[str, int]:
        async def run(cur: Cursor) -> dict[str, int]:
            await cur.execute(
                Q["event_type_totals"],
                {"project_id": project_id, "first": first_day, "last": last_day},
            )
            return {_text(t): int(n) for t, n in await cur.fetchall()}

        return await self._call(run, transaction=False)

    async def forget_user_rollups(
        self,
        project_id: int,
        amplitude_ids: Sequence[int],
        event_counts: Sequence[tuple[int, str, int]] = (),
    ) -> None:
        ids = {"project_id": project_id, "amplitude_ids": sorted(set(amplitude_ids))}

        async def run(cur: Cursor) -> None:
            for name in (
                "delete_rollup_user_days",
                "delete_rollup_user_groups",
                "delete_rollup_first_days",
                "delete_rollup_sessions",
            ):
                await cur.execute(Q[name], ids)
            if event_counts:
                await cur.execute(
                    Q["subtract_rollup_event_types"], _event_counts(project_id, event_counts)
                )

        await self._call(run)

    async def add_annotation(
        self, project_id: int, date: str, label: str, details: str, chart_id: str | None
    ) -> Annotation:
        async def run(cur: Cursor) -> Annotation:
            await cur.execute(
                Q["insert_annotation"],
                {
                    "project_id": project_id,
                    "date": date,
                    "label": label,
                    "details": details,
                    "chart_id": chart_id,
                },
            )
            row = await cur.fetchone()
            if row is None:  # pragma: no cover - RETURNING always gives the row
                raise MetadataUnavailable("metadata store returned no annotation id")
            return Annotation(int(row[0]), project_id, date, label, details, chart_id)

        return await self._call(run)

    async def annotations(self, project_id: int) -> list[Annotation]:
        async def run(cur: Cursor) -> list[Annotation]:
            await cur.execute(Q["annotations"], {"project_id": project_id})
            return [
                Annotation(int(i), int(p), d, label, details, chart)
                for i, p, d, label, details, chart in await cur.fetchall()
            ]

        return await self._call(run, transaction=False)

    # -- operating: job counts -------------------------------------------------------------------

    async def job_counts(self) -> dict[tuple[str, str], int]:
        async def run(cur: Cursor) -> dict[tuple[str, str], int]:
            await cur.execute(Q["job_counts"], {})
            return {(kind, status): count for kind, status, count in await cur.fetchall()}

        return await self._call(run, transaction=False)


if TYPE_CHECKING:
    _: type[Metadata] = PostgresMetadata
