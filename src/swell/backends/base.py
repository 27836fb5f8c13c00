"""The backend boundary: small Protocols that every backend implements and everything above shares.

Semantics every implementation keeps (tests/contract is their executable definition, run against
every backend):

* BlobStore is object storage, not a filesystem: ``put`` is atomic (the whole object or nothing,
  and a put that raised may or may not have replaced the key), reads are ranged, and a missing key
  raises BlobNotFound before any byte is returned.
* Metadata calls are transactional: ``add_part`` commits the catalog row and the part's user-index
  rows together or not at all; ``save_state`` commits identity changes with the log position they
  reflect, and positions only move forward; ``allocate_*`` never hand out a number twice, even
  across restarts; a job claim is exclusive until its lease expires.
* EventLog: ``sync(lsn)`` returns only once every frame up to ``lsn`` is durable; after a failed
  write the log refuses all further work (LogFailed), and ``open`` replays every intact frame.
* Driver exceptions never cross this boundary: implementations raise swell.errors
  (BlobStoreUnavailable, MetadataUnavailable, LogFailed or their subclasses) instead.

The records these Protocols speak in live in swell.model.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from datetime import datetime
from typing import Protocol, runtime_checkable

from swell.model import (
    Annotation,
    BlobInfo,
    Charge,
    DedupChunk,
    DsarRequest,
    Frame,
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
)


class BlobStore(Protocol):
    async def put(self, key: str, data: bytes) -> BlobInfo:
        """Write the whole object or nothing; an existing key is replaced atomically."""
        ...

    async def read(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        """Bytes [start, end) of an object (``end`` past the object reads to its end).
        Raises BlobNotFound."""
        ...

    def stream(
        self, key: str, start: int = 0, end: int | None = None, chunk: int = 1 << 20
    ) -> AsyncIterator[bytes]:
        """Stream bytes [start, end) in chunks of at most ``chunk``. Raises BlobNotFound first."""
        ...

    async def head(self, key: str) -> BlobInfo:
        """Size of an object. Raises BlobNotFound."""
        ...

    async def delete(self, keys: Sequence[str]) -> None:
        """Delete objects; missing keys are not an error."""
        ...

    async def aclose(self) -> None: ...


class BlobReader(Protocol):
    """One open blob, read into the caller's buffers."""

    async def read_into(self, offset: int, buffer: memoryview) -> None:
        """Fill ``buffer`` with the object's bytes from ``offset`` on. Raises
        BlobStoreUnavailable if the object ends first."""
        ...

    async def aclose(self) -> None: ...


@runtime_checkable
class OpensReaders(Protocol):
    """A blob store that reads into caller buffers (LocalBlobStore does); others stream chunks."""

    async def open_reader(self, key: str) -> BlobReader:
        """Raises BlobNotFound."""
        ...


class KeyStore(Protocol):
    async def create_org(self, name: str, api_key: str, secret_hash: str) -> int: ...

    async def create_project(self, name: str, org_id: int, api_key: str, secret_hash: str) -> int:
        """Raises NotFound if the org does not exist."""
        ...

    async def rotate_key(
        self, org_id: int, project_id: int | None, api_key: str, secret_hash: str
    ) -> None:
        """Replace every key of an org (project_id None) or project with this one."""
        ...

    async def find_key(self, api_key: str) -> Principal | None:
        """The org or project that owns an api key, or None."""
        ...

    async def all_orgs(self) -> list[int]: ...

    async def org_projects(self, org_id: int) -> list[int]: ...

    async def list_orgs(self) -> list[OrgInfo]:
        """Every org, by id."""
        ...

    async def list_projects(self, org_id: int | None = None) -> list[ProjectInfo]:
        """Every project (of one org), by id, with what its catalog holds."""
        ...

    async def delete_project(self, project_id: int) -> None:
        """Remove a project that holds no sealed part: its keys, identity state and part
        numbers, in one transaction. Raises NotFound, or Conflict if it holds parts."""
        ...


class Catalog(Protocol):
    async def add_part(
        self,
        part: Part,
        entries: Sequence[IndexEntry],
        import_keys: Sequence[int] = (),
        *,
        rollup: Rollup | None = None,
    ) -> None:
        """Record a sealed part, its user-index entries, the keys of the imported records it
        holds and what it adds to the per-day rollups (``Rollups``), in one transaction. Raises
        AlreadyExists (and changes nothing) if (project, hour, seq) is already recorded."""
        ...

    async def import_keys(self, project_id: int, hour: int) -> set[int]:
        """The keys of every imported record in the project's sealed parts of ``hour``."""
        ...

    async def drop_parts_before(self, hour: int) -> list[Part]:
        """Forget every sealed part (of every project) whose hour is before ``hour``, with its
        user-index rows and import keys, in one transaction; returns them (their blobs are the
        caller's to delete)."""
        ...

    async def parts(self, project_id: int, start_hour: int, end_hour: int) -> list[Part]:
        """Sealed parts with start_hour <= hour <= end_hour, ordered by (hour, seq)."""
        ...

    async def allocate_part_seq(self, project_id: int, hour: int) -> int:
        """A part number for (project, hour) never handed out before, above every recorded one."""
        ...

    async def sealed_watermarks(self) -> dict[tuple[int, int], int]:
        """For each (project, hour), the highest log sequence number already in a sealed part."""
        ...

    # -- part rewriting (compaction, deletion) -------------------------------------------------
    #
    # A rewrite writes new blobs under keys never used before (Part.gen), then swaps catalog
    # rows in one transaction, so a reader sees the old parts or the new ones, never both or
    # neither. Blob keys on their way in or out are kept in a list of *doomed* blobs: a key is
    # doomed before its blob is written (so a rewrite that dies leaves nothing behind for good),
    # spared when the swap commits, and the swap dooms the blobs it replaced, after a grace.

    async def doom_blobs(self, keys: Sequence[str], delete_after: datetime) -> None:
        """Record that these blobs are to be deleted at ``delete_after`` (a key already doomed
        gets the new time)."""
        ...

    async def take_doomed_blobs(
        self, now: datetime, retry_at: datetime, limit: int = 1000
    ) -> list[str]:
        """Up to ``limit`` doomed keys due at or before ``now``, oldest first, marked taken and
        due again at ``retry_at``: the caller deletes their blobs, then forgets them; a sweep
        that dies leaves them to be taken again. A taken blob is never spared."""
        ...

    async def forget_blobs(self, keys: Sequence[str]) -> None:
        """Drop these keys from the doomed list (their blobs are gone)."""
        ...

    async def replace_parts(
        self,
        old: Sequence[Part],
        new: Sequence[tuple[Part, Sequence[IndexEntry]]],
        old_amplitude_ids: Sequence[int],
        delete_after: datetime,
    ) -> None:
        """In one transaction, of one (project, hour): forget the ``old`` parts (exactly as
        recorded, gen included) with their user-index rows (the rows of ``old_amplitude_ids``,
        every user the old parts hold), record the ``new`` ones with theirs, spare the new
        parts' blobs and doom the old ones' at ``delete_after``. Import keys of the old parts
        stay with the hour. User links are left alone. Raises Conflict, changing nothing, if an
        old part is no longer recorded as given, or a new part's blob is not doomed (a sweep
        took it: it may be gone)."""
        ...

    async def crowded_hours(
        self, before_hour: int, min_parts: int, limit: int = 100, project_id: int | None = None
    ) -> list[tuple[int, int]]:
        """Up to ``limit`` (project, hour) with hour < ``before_hour`` holding at least
        ``min_parts`` sealed parts, one of them at least not rewritten (gen 0: an hour
        compaction left in several parts, for their size, is not crowded), oldest first; of
        one project if ``project_id`` is given (a project owner's view: always its own)."""
        ...


class UserIndex(Protocol):
    async def amplitude_ids_for_user(self, project_id: int, user_id: str) -> list[int]:
        """Every amplitude_id seen with this user_id in sealed parts or identity state."""
        ...

    async def user_blocks(self, project_id: int, amplitude_ids: Sequence[int]) -> list[UserBlocks]:
        """Where these users' events are, part by part."""
        ...


class IdentityStore(Protocol):
    async def load_state(
        self,
        project_id: int,
        user_ids: Iterable[str],
        device_ids: Iterable[str],
        amplitude_ids: Iterable[int],
        group_keys: Iterable[tuple[str, str]],
    ) -> StateSnapshot:
        """What is stored for these keys (absent keys are simply missing from the snapshot)."""
        ...

    async def save_state(self, changes: StateChanges) -> None:
        """Persist identity changes and the log position they reflect, atomically. The stored
        position and amplitude_id floor never move backwards."""
        ...

    async def state_position(self) -> tuple[int, int]:
        """(log sequence number reflected by the stored state, next amplitude_id to assign)."""
        ...

    async def allocate_amplitude_ids(self, count: int, floor: int) -> int:
        """Reserve ``count`` consecutive amplitude_ids, none handed out before and all at least
        ``floor``; returns the first."""
        ...

    async def load_dedup(self, since_ms: int) -> list[DedupChunk]:
        """The dedup keys saved (``StateChanges.dedup``) in hours that end after ``since_ms``,
        as packed arrays per hour: the dedup window, which swell.dedup keeps in memory (so
        ingestion never looks insert_ids up one by one). A store may return several chunks for
        one hour; a start-up load must cost a copy per key, not an object per key."""
        ...

    async def prune_dedup(self, before_ms: int) -> int:
        """Forget dedup keys of hours that end at or before ``before_ms`` (whole hours at a
        time); returns how many units (hours) were dropped."""
        ...


class BudgetStore(Protocol):
    async def charge_budget(
        self, key: str, cost: int, budget: int, window_seconds: float, now: datetime
    ) -> Charge:
        """Spend ``cost`` of ``key``'s rolling-window budget if it fits, atomically: concurrent
        charges never overspend, and a refused charge spends nothing."""
        ...


class JobQueue(Protocol):
    async def claim_job(self, worker: str, now: datetime, lease_until: datetime) -> Job | None:
        """Atomically take the oldest job that is queued and due, or running with a lease that
        expired at or before ``now``; it is leased to ``worker`` until ``lease_until``."""
        ...

    async def extend_lease(self, job_id: int, worker: str, lease_until: datetime) -> bool:
        """Keep a running job leased; False if ``worker`` no longer holds it."""
        ...

    async def requeue_running_jobs(self) -> int:
        """Put every running job back in the queue (their worker died); returns how many."""
        ...

    async def retry_job(
        self, job_id: int, error: str, run_after: datetime, *, count_attempt: bool = True
    ) -> None:
        """Give a failed attempt back to the queue, due at ``run_after``. With
        ``count_attempt=False`` the attempt is not counted (the failure was not the job's)."""
        ...

    async def complete_job(self, job_id: int) -> None:
        """Close a job whose work needs nothing more (e.g. found already finished)."""
        ...

    # -- operating: job counts -------------------------------------------------------------------

    async def job_counts(self) -> dict[tuple[str, str], int]:
        """How many jobs there are of each (kind, status), finished ones included."""
        ...


class DsarStore(JobQueue, Protocol):
    async def create_dsar(
        self,
        org_id: int,
        user_id: str | None,
        amplitude_id: int | None,
        start_date: str,
        end_date: str,
        now: datetime,
    ) -> DsarRequest:
        """Store a request in status staging and queue its job, in one transaction."""
        ...

    async def get_dsar(self, request_id: int) -> DsarRequest | None: ...

    async def start_dsar(self, request_id: int) -> None:
        """staging -> submitted (a request that already finished is left alone)."""
        ...

    async def reserve_dsar_outputs(self, request_id: int, count: int) -> None:
        """Record that up to ``count`` outputs may be written, before writing them."""
        ...

    async def finish_dsar(
        self, job_id: int, request_id: int, outputs: int, expires_at: datetime
    ) -> None:
        """Publish the outputs (status done) and close the job, in one transaction."""
        ...

    async def fail_dsar(self, job_id: int, request_id: int, reason: str) -> None:
        """Mark the request failed with ``reason`` and close the job, in one transaction."""
        ...

    async def expired_dsars(self, now: datetime, limit: int = 100) -> list[DsarRequest]:
        """Done requests whose outputs expired at or before ``now`` and are not yet purged."""
        ...

    async def mark_dsar_purged(self, request_id: int) -> None: ...


# -- dashboard rollups -----------------------------------------------------------------------------


class Rollups(Protocol):
    """Per-day rollups of sealed parts (written by ``Catalog.add_part``) and chart annotations:
    what the Dashboard REST endpoints read. Days are day numbers (swell.rollups.day_number)."""

    async def count_users(
        self,
        project_id: int,
        buckets: Sequence[tuple[int, int]],
        *,
        new: bool = False,
        group_by: str | None = None,
    ) -> list[dict[str, int]]:
        """For each bucket (first day, last day), the distinct users active in it (``new``:
        whose first day seen is in it), exactly; with ``group_by`` (a swell.rollups.GROUP_BYS
        name) per value of it, else under the key "". Values with no user are absent."""
        ...

    async def session_totals(
        self, project_id: int, first_day: int, last_day: int
    ) -> dict[int, tuple[int, int]]:
        """Per day: (sessions started that day, their total length in ms). A session is one
        (amplitude_id, session_id); its length is its last event time minus its first."""
        ...

    async def event_type_totals(
        self, project_id: int, first_day: int, last_day: int
    ) -> dict[str, int]:
        """Every event type the project has ever had, with its events in the day range."""
        ...

    async def forget_user_rollups(
        self,
        project_id: int,
        amplitude_ids: Sequence[int],
        event_counts: Sequence[tuple[int, str, int]] = (),
    ) -> None:
        """Remove users from the rollups, in one transaction: their active days, group
        values, first days and sessions go; ``event_counts`` ((day, event_type, events) of the
        events removed with them) is subtracted from the event totals."""
        ...

    async def add_annotation(
        self, project_id: int, date: str, label: str, details: str, chart_id: str | None
    ) -> Annotation: ...

    async def annotations(self, project_id: int) -> list[Annotation]:
        """The project's annotations, by date then id."""
        ...


class Metadata(
    KeyStore, Catalog, UserIndex, IdentityStore, BudgetStore, DsarStore, Rollups, Protocol
):
    """Everything a metadata backend implements. Callers ask for the narrowest protocol."""

    async def aclose(self) -> None: ...


class EventLog(Protocol):
    """The durable log acknowledged events live in until sealed parts and saved state cover them."""

    def open(self, min_next_lsn: int = 1) -> Iterator[Frame]:
        """Recover the log and yield every intact frame in lsn order; exhaust it before appending.
        Numbering continues from the last frame, or from ``min_next_lsn`` if that is higher."""
        ...

    @property
    def last_lsn(self) -> int:
        """The lsn of the most recently appended frame (durable or not)."""
        ...

    def append(self, kind: int, project_id: int, hour: int, body: bytes) -> int:
        """Buffer one frame and return its lsn; ``sync(lsn)`` before acknowledging it. Raises
        LogFailed once the log has failed."""
        ...

    async def sync(self, lsn: int | None = None) -> None:
        """Wait until every frame up to ``lsn`` (default: all appended) is durable. Raises
        LogFailed."""
        ...

    def release(self, upto: int) -> int:
        """Forget frames with lsn <= ``upto`` (whole segments at a time); returns how many units
        went."""
        ...

    @property
    def failed(self) -> BaseException | None:
        """Why the log refuses work, or None while it is healthy."""
        ...

    async def aclose(self) -> None: ...
