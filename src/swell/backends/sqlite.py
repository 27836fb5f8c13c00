"""Embedded metadata store: one SQLite database (WAL) under the data directory.

One connection, serialised by a lock and driven from worker threads, so the event loop never blocks
on SQLite. The user index is split into one clustered table per month of part hours
(``user_blocks_YYYYMM``): each B-tree stays bounded, so sealing keeps its speed as data grows.

The schema is versioned: ``sql/sqlite/NNNN_*.sql`` run in order, each in its own transaction, and
``PRAGMA user_version`` records the last one applied. Every statement is a named query of
``sql/sqlite/queries.sql`` (swell.backends.queries).
"""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import threading
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from swell import model
from swell.backends.queries import load_migrations, load_queries
from swell.errors import AlreadyExists, Conflict, MetadataUnavailable, NotFound
from swell.model import (
    FIRST_AMPLITUDE_ID,
    Annotation,
    Charge,
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
    hour_start,
)
from swell.ratelimit import decide
from swell.rollups import DAY_MS, sum_into_buckets

if TYPE_CHECKING:
    from swell.backends.base import Metadata

T = TypeVar("T")

#: insert_id dedup keys (``dedup_chunks``), packed: one row per (hour of first sight,
#: checkpoint), each a blob of little-endian int64 keys; an hour's rows are merged into one once a
#: later hour is saved. Writes append, the window is pruned by deleting whole hours, and a
#: start-up load reads a few hundred blobs rather than a row per key. (Data directories from
#: before kept one table per day, ``dedup_YYYYMMDD``; they are converted the first time the window
#: is loaded.)
HOUR_MS = 3_600_000

Q = load_queries("sqlite")

IN_CHUNK = 500


def migrations() -> list[tuple[int, str]]:
    """(version, SQL) of every schema migration, in order."""
    return [(m.version, m.sql) for m in load_migrations("sqlite")]


def _pack_keys(keys: Iterable[int]) -> bytes:
    packed = array("q", keys)
    if sys.byteorder != "little":
        packed.byteswap()
    return packed.tobytes()


def _month_table(hour: int) -> str:
    return f"user_blocks_{hour_start(hour):%Y%m}"


def _chunks(items: Sequence[T], size: int = IN_CHUNK) -> Iterator[Sequence[T]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _pack(values: Iterable[int]) -> bytes:
    return array("q", values).tobytes()


def _unpack(blob: bytes) -> tuple[int, ...]:
    values = array("q")
    values.frombytes(blob)
    return tuple(values)


class SQLiteMetadata:
    #: hour -> saved dedup chunk rows; read on first use, updated by the writes that commit.
    _dedup_chunks: dict[int, int] | None = None

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.execute("PRAGMA cache_size=-262144")
            self._migrate()
            self._month_tables = {row[0] for row in self._db.execute(Q["month_tables"])}
            self._dedup_tables = {row[0] for row in self._db.execute(Q["dedup_tables"])}
        except (sqlite3.Error, OSError) as exc:
            raise MetadataUnavailable(f"cannot open metadata database {path}: {exc}") from exc

    @classmethod
    def from_url(cls, url: str) -> SQLiteMetadata:
        from swell.backends import url_path

        return cls(url_path(url))

    def _migrate(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        for number, sql in migrations():
            if number > version:
                self._db.executescript(f"BEGIN;\n{sql}\nPRAGMA user_version = {number};\nCOMMIT;")

    @property
    def schema_version(self) -> int:
        with self._lock:
            return int(self._db.execute("PRAGMA user_version").fetchone()[0])

    # -- plumbing ------------------------------------------------------------------------------

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock, self._wrap():
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._lock, self._wrap():
            yield self._db

    @contextmanager
    def _wrap(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.IntegrityError as exc:
            raise AlreadyExists(f"metadata conflict: {exc}") from exc
        except sqlite3.Error as exc:
            raise MetadataUnavailable(f"metadata store unavailable: {exc}") from exc

    async def _run(self, fn: Callable[[], T]) -> T:
        return await asyncio.to_thread(fn)

    async def aclose(self) -> None:
        with self._lock, self._wrap():
            self._db.close()

    # -- keys ----------------------------------------------------------------------------------

    async def create_org(self, name: str, api_key: str, secret_hash: str) -> int:
        def run() -> int:
            with self._tx() as db:
                org_id = db.execute(Q["insert_org"], (name,)).lastrowid
                assert org_id is not None
                db.execute(Q["insert_key"], (api_key, org_id, None, secret_hash))
                return org_id

        return await self._run(run)

    async def create_project(self, name: str, org_id: int, api_key: str, secret_hash: str) -> int:
        def run() -> int:
            with self._tx() as db:
                if db.execute(Q["org_exists"], (org_id,)).fetchone() is None:
                    raise NotFound(f"org {org_id} does not exist")
                # A deleted project's id is never given again: its insert_ids may still be in
                # dedup windows.
                project_id = db.execute(Q["insert_project"], (org_id, name)).lastrowid
                assert project_id is not None
                db.execute(Q["insert_key"], (api_key, org_id, project_id, secret_hash))
                return project_id

        return await self._run(run)

    async def rotate_key(
        self, org_id: int, project_id: int | None, api_key: str, secret_hash: str
    ) -> None:
        def run() -> None:
            with self._tx() as db:
                db.execute(Q["delete_owner_keys"], (org_id, project_id))
                db.execute(Q["insert_key"], (api_key, org_id, project_id, secret_hash))

        await self._run(run)

    async def find_key(self, api_key: str) -> Principal | None:
        def run() -> Principal | None:
            with self._read() as db:
                row = db.execute(Q["find_key"], (api_key,)).fetchone()
            return None if row is None else Principal(row[0], row[1], row[2])

        return await self._run(run)

    async def all_orgs(self) -> list[int]:
        def run() -> list[int]:
            with self._read() as db:
                return [r[0] for r in db.execute(Q["all_orgs"])]

        return await self._run(run)

    async def org_projects(self, org_id: int) -> list[int]:
        def run() -> list[int]:
            with self._read() as db:
                rows = db.execute(Q["org_projects"], (org_id,)).fetchall()
            return [r[0] for r in rows]

        return await self._run(run)

    async def list_orgs(self) -> list[OrgInfo]:
        def run() -> list[OrgInfo]:
            with self._read() as db:
                rows = db.execute(Q["list_orgs"]).fetchall()
            return [OrgInfo(*row) for row in rows]

        return await self._run(run)

    async def list_projects(self, org_id: int | None = None) -> list[ProjectInfo]:
        def run() -> list[ProjectInfo]:
            with self._read() as db:
                rows = db.execute(Q["list_projects"], (org_id, org_id)).fetchall()
            return [ProjectInfo(*row) for row in rows]

        return await self._run(run)

    async def delete_project(self, project_id: int) -> None:
        def run() -> None:
            with self._tx() as db:
                if db.execute(Q["project_exists"], (project_id,)).fetchone() is None:
                    raise NotFound(f"project {project_id} does not exist")
                parts = db.execute(Q["count_project_parts"], (project_id,)).fetchone()[0]
                if parts:
                    raise Conflict(
                        f"project {project_id} holds {parts} sealed part(s); only an empty "
                        "project can be deleted"
                    )
                tables = ["id_users", "id_devices", "user_props", "group_props", "user_links"]
                tables += ["part_seqs", "import_keys"]
                for table in tables:
                    db.execute(Q["delete_project_rows"].format(table=table), (project_id,))
                db.execute(Q["delete_project_keys"], (project_id,))
                db.execute(Q["delete_project"], (project_id,))
                db.execute(Q["record_deleted_project"], (project_id,))

        await self._run(run)

    # -- catalog and user index -----------------------------------------------------------------

    async def add_part(
        self,
        part: Part,
        entries: Sequence[IndexEntry],
        import_keys: Sequence[int] = (),
        *,
        rollup: Rollup | None = None,
    ) -> None:
        table = _month_table(part.hour)
        blocks_rows = [
            (part.project_id, e.amplitude_id, part.hour, part.seq, _pack(e.blocks), e.events)
            for e in entries
        ]
        links = {(part.project_id, e.user_id, e.amplitude_id) for e in entries if e.user_id}

        def run() -> None:
            with self._tx() as db:
                if table not in self._month_tables:
                    db.execute(Q["create_month_table"].format(table=table))
                db.execute(
                    Q["insert_part"],
                    (
                        part.project_id,
                        part.hour,
                        part.seq,
                        part.size,
                        part.crc32,
                        part.events,
                        part.min_time,
                        part.max_time,
                        part.max_lsn,
                        _pack(part.block_offsets),
                        part.gen,
                    ),
                )
                db.executemany(Q["insert_user_blocks"].format(table=table), blocks_rows)
                db.executemany(Q["insert_user_links"], sorted(links))
                if import_keys:
                    db.execute(
                        Q["insert_import_keys"],
                        (part.project_id, part.hour, part.seq, _pack(import_keys)),
                    )
                if rollup:
                    self._write_rollup(db, part.project_id, rollup)
            self._month_tables.add(table)  # only once committed: a rollback undoes the CREATE

        await self._run(run)

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
        def run() -> list[Part]:
            with self._read() as db:
                rows = db.execute(Q["parts"], (project_id, start_hour, end_hour)).fetchall()
            return [self._part(r) for r in rows]

        return await self._run(run)

    async def allocate_part_seq(self, project_id: int, hour: int) -> int:
        def run() -> int:
            with self._tx() as db:
                stored = db.execute(Q["stored_part_seq"], (project_id, hour)).fetchone()
                top = db.execute(Q["top_part_seq"], (project_id, hour)).fetchone()[0]
                seq = max(0 if stored is None else stored[0], 0 if top is None else top + 1)
                db.execute(Q["store_part_seq"], (project_id, hour, seq + 1))
                return int(seq)

        return await self._run(run)

    async def import_keys(self, project_id: int, hour: int) -> set[int]:
        def run() -> set[int]:
            with self._read() as db:
                rows = db.execute(Q["import_keys"], (project_id, hour)).fetchall()
            keys: set[int] = set()
            for (blob,) in rows:
                keys.update(_unpack(blob))
            return keys

        return await self._run(run)

    async def drop_parts_before(self, hour: int) -> list[Part]:
        cutoff_table = _month_table(hour)

        def run() -> tuple[list[Part], list[str]]:
            with self._tx() as db:
                dropped = [self._part(r) for r in db.execute(Q["parts_before"], (hour,))]
                if not dropped:
                    return [], []
                db.execute(Q["delete_parts_before"], (hour,))
                db.execute(Q["delete_import_keys_before"], (hour,))
                db.execute(Q["delete_part_seqs_before"], (hour,))
                gone = [t for t in self._month_tables if t < cutoff_table]
                for table in gone:  # a whole month before the cutoff
                    db.execute(Q["drop_month_table"].format(table=table))
                if cutoff_table in self._month_tables:
                    db.execute(Q["delete_user_blocks_before"].format(table=cutoff_table), (hour,))
            return dropped, gone

        dropped, gone = await self._run(run)
        self._month_tables.difference_update(gone)  # only once committed
        return dropped

    async def sealed_watermarks(self) -> dict[tuple[int, int], int]:
        def run() -> dict[tuple[int, int], int]:
            with self._read() as db:
                rows = db.execute(Q["sealed_watermarks"]).fetchall()
            return {(r[0], r[1]): r[2] for r in rows}

        return await self._run(run)

    async def amplitude_ids_for_user(self, project_id: int, user_id: str) -> list[int]:
        def run() -> list[int]:
            with self._read() as db:
                rows = db.execute(
                    Q["amplitude_ids_for_user"], (project_id, user_id, project_id, user_id)
                ).fetchall()
            return sorted(r[0] for r in rows)

        return await self._run(run)

    async def user_blocks(self, project_id: int, amplitude_ids: Sequence[int]) -> list[UserBlocks]:
        ids = sorted(set(amplitude_ids))

        def run() -> list[UserBlocks]:
            found: list[tuple[Any, ...]] = []
            with self._read() as db:
                for table in sorted(self._month_tables):
                    for chunk in _chunks(ids):
                        marks = ",".join("?" * len(chunk))
                        sql = Q["user_blocks"].format(table=table, marks=marks)
                        found.extend(db.execute(sql, (project_id, *chunk)))
                parts: dict[tuple[int, int], Part] = {}
                for _, hour, seq, _, _ in found:
                    if (hour, seq) not in parts:
                        row = db.execute(Q["part"], (project_id, hour, seq)).fetchone()
                        parts[(hour, seq)] = self._part(row)
            return [
                UserBlocks(project_id, aid, parts[(hour, seq)], _unpack(blocks), events)
                for aid, hour, seq, blocks, events in found
            ]

        return await self._run(run)

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

        def lookup(db: sqlite3.Connection, sql: str, keys: Sequence[Any]) -> list[Any]:
            rows: list[Any] = []
            for chunk in _chunks(keys):
                marks = ",".join("?" * len(chunk))
                rows.extend(db.execute(sql.format(marks=marks), (project_id, *chunk)))
            return rows

        def run() -> StateSnapshot:
            snap = StateSnapshot()
            with self._read() as db:
                for uid, aid in lookup(db, Q["load_users"], users):
                    snap.users[uid] = aid
                for did, aid, anon in lookup(db, Q["load_devices"], devices):
                    snap.devices[did] = (aid, bool(anon))
                wanted = sorted(
                    {*aids, *snap.users.values(), *(d[0] for d in snap.devices.values())}
                )
                for aid, props in lookup(db, Q["load_props"], wanted):
                    snap.props[aid] = _loads(props)
                for gtype, gvalue in groups:
                    row = db.execute(Q["load_group"], (project_id, gtype, gvalue)).fetchone()
                    if row is not None:
                        snap.groups[(gtype, gvalue)] = _loads(row[0])
            return snap

        return await self._run(run)

    async def save_state(self, changes: StateChanges) -> None:
        def run() -> None:
            with self._tx() as db:
                db.executemany(Q["save_users"], changes.users)
                db.executemany(Q["save_devices"], changes.devices)
                db.executemany(Q["save_props"], changes.props)
                db.executemany(Q["save_groups"], changes.groups)
                chunks = self._save_dedup(db, changes.dedup) if changes.dedup else None
                db.executemany(
                    Q["save_position"],
                    [("state_lsn", changes.lsn), ("next_amplitude_id", changes.next_amplitude_id)],
                )
            if chunks is not None:  # only once committed: a rollback undoes them
                self._dedup_chunks = chunks

        await self._run(run)

    def _dedup_rows(self, db: sqlite3.Connection) -> dict[int, int]:
        """hour -> saved chunk rows (read once; kept up to date by the writes that commit)."""
        if self._dedup_chunks is None:
            self._dedup_chunks = dict(db.execute(Q["dedup_chunk_counts"]).fetchall())
        return self._dedup_chunks

    def _save_dedup(
        self, db: sqlite3.Connection, rows: Sequence[tuple[int, int, int]]
    ) -> dict[int, int]:
        """Append one chunk per hour of ``rows``; merge the chunks of hours before the newest one
        saved into one row each. Returns the chunk counts as they will be once committed."""
        counts = dict(self._dedup_rows(db))
        by_hour: dict[int, list[int]] = {}
        for _project, key, seen_ms in rows:
            by_hour.setdefault(seen_ms // HOUR_MS, []).append(key)
        db.executemany(
            Q["insert_dedup_chunk"], [(hour, _pack_keys(keys)) for hour, keys in by_hour.items()]
        )
        for hour in by_hour:
            counts[hour] = counts.get(hour, 0) + 1
        newest = max(by_hour)
        for hour in [h for h, n in counts.items() if n > 1 and h < newest]:
            blobs = db.execute(Q["dedup_chunks_of_hour"], (hour,)).fetchall()
            db.execute(Q["delete_dedup_hour"], (hour,))
            db.execute(Q["insert_dedup_chunk"], (hour, b"".join(blob for (blob,) in blobs)))
            counts[hour] = 1
        return counts

    async def state_position(self) -> tuple[int, int]:
        def run() -> tuple[int, int]:
            with self._read() as db:
                kv = dict(db.execute(Q["state_position"]).fetchall())
            return int(kv.get("state_lsn", 0)), int(kv.get("next_amplitude_id", FIRST_AMPLITUDE_ID))

        return await self._run(run)

    async def allocate_amplitude_ids(self, count: int, floor: int) -> int:
        def run() -> int:
            with self._tx() as db:
                row = db.execute(Q["next_amplitude_id"]).fetchone()
                first = max(FIRST_AMPLITUDE_ID if row is None else int(row[0]), floor)
                db.execute(Q["store_next_amplitude_id"], (first + count,))
                return first

        return await self._run(run)

    # -- budgets ----------------------------------------------------------------------------------

    async def charge_budget(
        self, key: str, cost: int, budget: int, window_seconds: float, now: datetime
    ) -> Charge:
        at = now.timestamp()

        def run() -> Charge:
            with self._tx() as db:
                db.execute(Q["prune_budget"], (key, at - window_seconds))
                charges = db.execute(Q["budget_charges"], (key,)).fetchall()
                charge = decide(charges, cost, budget, window_seconds, at)
                if charge.allowed and cost:
                    db.execute(Q["insert_budget_charge"], (key, at, cost))
                return charge

        return await self._run(run)

    async def load_dedup(self, since_ms: int) -> list[model.DedupChunk]:
        def run() -> list[model.DedupChunk]:
            if self._dedup_tables:
                self._convert_dedup_days()
            first_hour = since_ms // HOUR_MS  # hours that end after since_ms
            with self._read() as db:
                self._dedup_rows(db)
                return [
                    model.DedupChunk(hour, keys)
                    for hour, keys in db.execute(Q["load_dedup"], (first_hour,))
                ]

        return await self._run(run)

    def _convert_dedup_days(self) -> None:
        """Move the keys of the per-day tables an older swell wrote into hourly chunks."""
        with self._tx() as db:
            self._dedup_rows(db)
            rows: list[tuple[int, int, int]] = []
            for table in sorted(self._dedup_tables):
                rows.extend(db.execute(Q["dedup_day_rows"].format(table=table)))
            chunks = self._save_dedup(db, rows) if rows else self._dedup_chunks
            for table in self._dedup_tables:
                db.execute(Q["drop_dedup_day"].format(table=table))
        self._dedup_chunks = chunks
        self._dedup_tables.clear()

    async def prune_dedup(self, before_ms: int) -> int:
        def run() -> int:
            # An hour's keys go once the whole hour is before the cutoff.
            last = before_ms // HOUR_MS
            with self._tx() as db:
                counts = self._dedup_rows(db)
                stale = [h for h in counts if h < last]
                if stale:
                    db.execute(Q["prune_dedup"], (last,))
            for hour in stale:
                counts.pop(hour, None)
            return len(stale)

        return await self._run(run)

    # -- DSAR requests and jobs ---------------------------------------------------------------

    @staticmethod
    def _dsar(row: Sequence[Any]) -> DsarRequest:
        return DsarRequest(
            id=row[0],
            org_id=row[1],
            user_id=row[2],
            amplitude_id=row[3],
            start_date=row[4],
            end_date=row[5],
            status=row[6],
            fail_reason=row[7],
            outputs=row[8],
            slots=row[9],
            created_at=model.parse_ts(row[10]),
            expires_at=None if row[11] is None else model.parse_ts(row[11]),
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
        created = model.format_ts(now)

        def run() -> DsarRequest:
            with self._tx() as db:
                row = db.execute(
                    Q["create_dsar"],
                    (org_id, user_id, amplitude_id, start_date, end_date, created),
                ).fetchone()
                db.execute(Q["insert_job"], (row[0], created, created))
            return self._dsar(row)

        return await self._run(run)

    async def get_dsar(self, request_id: int) -> DsarRequest | None:
        def run() -> DsarRequest | None:
            with self._read() as db:
                row = db.execute(Q["get_dsar"], (request_id,)).fetchone()
            return None if row is None else self._dsar(row)

        return await self._run(run)

    async def start_dsar(self, request_id: int) -> None:
        def run() -> None:
            with self._tx() as db:
                db.execute(Q["start_dsar"], (request_id,))

        await self._run(run)

    async def reserve_dsar_outputs(self, request_id: int, count: int) -> None:
        def run() -> None:
            with self._tx() as db:
                db.execute(Q["reserve_dsar_outputs"], (count, request_id))

        await self._run(run)

    async def finish_dsar(
        self, job_id: int, request_id: int, outputs: int, expires_at: datetime
    ) -> None:
        def run() -> None:
            with self._tx() as db:
                db.execute(
                    Q["finish_dsar"],
                    (outputs, outputs, model.format_ts(expires_at), request_id),
                )
                db.execute(Q["complete_job"], (job_id,))

        await self._run(run)

    async def fail_dsar(self, job_id: int, request_id: int, reason: str) -> None:
        def run() -> None:
            with self._tx() as db:
                db.execute(Q["fail_dsar"], (reason, request_id))
                db.execute(Q["fail_job"], (reason, job_id))

        await self._run(run)

    async def expired_dsars(self, now: datetime, limit: int = 100) -> list[DsarRequest]:
        def run() -> list[DsarRequest]:
            with self._read() as db:
                rows = db.execute(Q["expired_dsars"], (model.format_ts(now), limit)).fetchall()
            return [self._dsar(r) for r in rows]

        return await self._run(run)

    async def mark_dsar_purged(self, request_id: int) -> None:
        def run() -> None:
            with self._tx() as db:
                db.execute(Q["mark_dsar_purged"], (request_id,))

        await self._run(run)

    async def claim_job(self, worker: str, now: datetime, lease_until: datetime) -> Job | None:
        stamp, lease = model.format_ts(now), model.format_ts(lease_until)

        def run() -> Job | None:
            with self._tx() as db:
                row = db.execute(Q["claim_job"], (worker, stamp, lease, stamp, stamp)).fetchone()
            return None if row is None else Job(row[0], row[1], row[2], row[3])

        return await self._run(run)

    async def extend_lease(self, job_id: int, worker: str, lease_until: datetime) -> bool:
        lease = model.format_ts(lease_until)

        def run() -> bool:
            with self._tx() as db:
                return db.execute(Q["extend_lease"], (lease, job_id, worker)).rowcount == 1

        return await self._run(run)

    async def requeue_running_jobs(self) -> int:
        def run() -> int:
            with self._tx() as db:
                return db.execute(Q["requeue_running_jobs"]).rowcount

        return await self._run(run)

    async def retry_job(
        self, job_id: int, error: str, run_after: datetime, *, count_attempt: bool = True
    ) -> None:
        def run() -> None:
            with self._tx() as db:
                db.execute(
                    Q["retry_job"],
                    (error[:2000], model.format_ts(run_after), 0 if count_attempt else 1, job_id),
                )

        await self._run(run)

    async def complete_job(self, job_id: int) -> None:
        def run() -> None:
            with self._tx() as db:
                db.execute(Q["complete_job"], (job_id,))

        await self._run(run)

    # -- part rewriting (compaction, deletion) -------------------------------------------------

    async def doom_blobs(self, keys: Sequence[str], delete_after: datetime) -> None:
        when = delete_after.timestamp()

        def run() -> None:
            with self._tx() as db:
                db.executemany(Q["doom_blob"], [(key, when) for key in keys])

        await self._run(run)

    async def take_doomed_blobs(
        self, now: datetime, retry_at: datetime, limit: int = 1000
    ) -> list[str]:
        def run() -> list[str]:
            with self._tx() as db:
                keys = [r[0] for r in db.execute(Q["due_blobs"], (now.timestamp(), limit))]
                db.executemany(Q["take_blob"], [(retry_at.timestamp(), key) for key in keys])
            return keys

        return await self._run(run)

    async def forget_blobs(self, keys: Sequence[str]) -> None:
        def run() -> None:
            with self._tx() as db:
                db.executemany(Q["forget_blob"], [(key,) for key in keys])

        await self._run(run)

    async def replace_parts(
        self,
        old: Sequence[Part],
        new: Sequence[tuple[Part, Sequence[IndexEntry]]],
        old_amplitude_ids: Sequence[int],
        delete_after: datetime,
    ) -> None:
        project_id, hour = model.rewrite_key(old, new)
        table = _month_table(hour)
        when = delete_after.timestamp()

        def run() -> None:
            with self._tx() as db:
                for part in old:
                    row = db.execute(Q["part_gen"], (project_id, hour, part.seq)).fetchone()
                    if row is None or tuple(row) != (part.gen, part.size, part.crc32):
                        raise Conflict(f"part {part.key} is no longer in the catalog as it was")
                for part, _ in new:
                    if db.execute(Q["spare_blob"], (part.key,)).rowcount != 1:
                        raise Conflict(f"the blob {part.key} of a rewritten part was swept")
                if table not in self._month_tables:
                    db.execute(Q["create_month_table"].format(table=table))
                seqs = {part.seq for part in old}
                kept: list[int] = []
                for seq, blob in db.execute(Q["hour_import_keys"], (project_id, hour)).fetchall():
                    if seq in seqs:
                        kept.extend(_unpack(blob))
                        db.execute(Q["delete_import_keys"], (project_id, hour, seq))
                delete_block = Q["delete_user_block"].format(table=table)
                db.executemany(
                    delete_block,
                    [(project_id, aid, hour, seq) for aid in old_amplitude_ids for seq in seqs],
                )
                for part in old:
                    db.execute(Q["delete_part"], (project_id, hour, part.seq))
                    db.execute(Q["doom_blob"], (part.key, when))
                insert_block = Q["insert_user_blocks"].format(table=table)
                links: set[tuple[int, str, int]] = set()
                for part, entries in new:
                    db.execute(
                        Q["insert_part"],
                        (
                            project_id,
                            hour,
                            part.seq,
                            part.size,
                            part.crc32,
                            part.events,
                            part.min_time,
                            part.max_time,
                            part.max_lsn,
                            _pack(part.block_offsets),
                            part.gen,
                        ),
                    )
                    db.executemany(
                        insert_block,
                        [
                            (project_id, e.amplitude_id, hour, part.seq, _pack(e.blocks), e.events)
                            for e in entries
                        ],
                    )
                    links.update(
                        (project_id, e.user_id, e.amplitude_id) for e in entries if e.user_id
                    )
                db.executemany(Q["insert_user_links"], sorted(links))
                if kept:
                    seq = new[0][0].seq if new else min(seqs)
                    db.execute(Q["insert_import_keys"], (project_id, hour, seq, _pack(kept)))
            self._month_tables.add(table)

        await self._run(run)

    async def crowded_hours(
        self, before_hour: int, min_parts: int, limit: int = 100, project_id: int | None = None
    ) -> list[tuple[int, int]]:
        params = (before_hour, project_id, project_id, min_parts, limit)

        def run() -> list[tuple[int, int]]:
            with self._read() as db:
                rows = db.execute(Q["crowded_hours"], params).fetchall()
            return [(r[0], r[1]) for r in rows]

        return await self._run(run)

    # -- dashboard rollups -------------------------------------------------------------------------

    @staticmethod
    def _write_rollup(db: sqlite3.Connection, project: int, rollup: Rollup) -> None:
        db.executemany(Q["insert_rollup_user_days"], [(project, d, a) for d, a in rollup.user_days])
        db.executemany(
            Q["insert_rollup_user_groups"],
            [(project, g, d, v, a) for d, g, v, a in rollup.user_groups],
        )
        db.executemany(
            Q["upsert_rollup_first_days"], [(project, a, d) for a, d in rollup.first_days]
        )
        db.executemany(Q["upsert_rollup_sessions"], [(project, *s) for s in rollup.sessions])
        db.executemany(Q["upsert_rollup_event_types"], [(project, *e) for e in rollup.event_counts])

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
        first, last = buckets[0][0], buckets[-1][1]
        per_day = new or all(lo == hi for lo, hi in buckets)

        def run() -> list[dict[str, int]]:
            with self._read() as db:
                if not per_day:
                    out: list[dict[str, int]] = []
                    for lo, hi in buckets:
                        if group_by is None:
                            (n,) = db.execute(
                                Q["active_users_in_range"], (project_id, lo, hi)
                            ).fetchone()
                            out.append({"": n} if n else {})
                        else:
                            rows = db.execute(
                                Q["active_group_users_in_range"], (project_id, group_by, lo, hi)
                            ).fetchall()
                            out.append(dict(rows))
                    return out
                if group_by is None:
                    query = "new_users_per_day" if new else "active_users_per_day"
                    days = [
                        (d, "", n)
                        for d, n in db.execute(Q[query], (project_id, first, last)).fetchall()
                    ]
                elif new:
                    days = db.execute(
                        Q["new_group_users_per_day"], (group_by, project_id, first, last)
                    ).fetchall()
                else:
                    days = db.execute(
                        Q["active_group_users_per_day"], (project_id, group_by, first, last)
                    ).fetchall()
            return sum_into_buckets(buckets, days)

        return await self._run(run)

    async def session_totals(
        self, project_id: int, first_day: int, last_day: int
    ) -> dict[int, tuple[int, int]]:
        def run() -> dict[int, tuple[int, int]]:
            with self._read() as db:
                rows = db.execute(
                    Q["session_totals"],
                    (project_id, first_day * DAY_MS, (last_day + 1) * DAY_MS),
                ).fetchall()
            return {day: (n, total) for day, n, total in rows}

        return await self._run(run)

    async def event_type_totals(
        self, project_id: int, first_day: int, last_day: int
    ) -> dict[str, int]:
        def run() -> dict[str, int]:
            with self._read() as db:
                rows = db.execute(
                    Q["event_type_totals"], (first_day, last_day, project_id)
                ).fetchall()
            return dict(rows)

        return await self._run(run)

    async def forget_user_rollups(
        self,
        project_id: int,
        amplitude_ids: Sequence[int],
        event_counts: Sequence[tuple[int, str, int]] = (),
    ) -> None:
        ids = [(project_id, a) for a in sorted(set(amplitude_ids))]

        def run() -> None:
            with self._tx() as db:
                for name in (
                    "delete_rollup_user_days",
                    "delete_rollup_user_groups",
                    "delete_rollup_first_days",
                    "delete_rollup_sessions",
                ):
                    db.executemany(Q[name], ids)
                db.executemany(
                    Q["subtract_rollup_event_types"],
                    [(n, project_id, d, t) for d, t, n in event_counts],
                )

        await self._run(run)

    async def add_annotation(
        self, project_id: int, date: str, label: str, details: str, chart_id: str | None
    ) -> Annotation:
        def run() -> Annotation:
            with self._tx() as db:
                cur = db.execute(
                    Q["insert_annotation"], (project_id, date, label, details, chart_id)
                )
            return Annotation(cur.lastrowid or 0, project_id, date, label, details, chart_id)

        return await self._run(run)

    async def annotations(self, project_id: int) -> list[Annotation]:
        def run() -> list[Annotation]:
            with self._read() as db:
                rows = db.execute(Q["annotations"], (project_id,)).fetchall()
            return [Annotation(*row) for row in rows]

        return await self._run(run)

    # -- operating: job counts -------------------------------------------------------------------

    async def job_counts(self) -> dict[tuple[str, str], int]:
        def run() -> dict[tuple[str, str], int]:
            with self._read() as db:
                rows = db.execute(Q["job_counts"]).fetchall()
            return {(kind, status): count for kind, status, count in rows}

        return await self._run(run)


def _loads(blob: bytes) -> dict[str, Any]:
    import orjson

    value = orjson.loads(blob)
    return value if isinstance(value, dict) else {}


if TYPE_CHECKING:
    _: type[Metadata] = SQLiteMetadata
