"""The backend boundary: small Protocols that the embedded default and the scale-out backend share.

Semantics every implementation keeps:

* BlobStore is object storage, not a filesystem: ``put`` is atomic (whole object or nothing),
  reads stream, and a missing key raises BlobNotFound before any byte is returned.
* Metadata calls are transactional: ``add_part`` commits the catalog row and the part's user-index
  rows together; ``save_state`` commits identity changes with the log position they reflect.
* Driver exceptions never cross this boundary: implementations raise swell.errors.StorageError
  (or a subclass) instead.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol, runtime_checkable

from swell.model import Part, UserBlocks


@dataclass(frozen=True, slots=True)
class BlobInfo:
    key: str
    size: int


class BlobStore(Protocol):
    async def put(self, key: str, data: bytes) -> BlobInfo:
        """Write the whole object or nothing; an existing key is replaced atomically."""
        ...

    async def read(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        """Bytes [start, end) of an object. Raises BlobNotFound."""
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


@dataclass(frozen=True, slots=True)
class Principal:
    """Whoever a key pair authenticates: a project (``project_id`` set) or an org (it is None)."""

    org_id: int
    project_id: int | None
    secret_hash: str


class BlobReader(Protocol):
    """One open blob, read into the caller's buffers."""

    async def read_into(self, offset: int, buffer: memoryview) -> None:
        """Fill ``buffer`` with the object's bytes from ``offset`` on. Raises StorageError if the
        object ends first."""
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


@dataclass(frozen=True, slots=True)
class IndexEntry:
    """One user's presence in one sealed part (written with the part, read by DSAR)."""

    amplitude_id: int
    user_id: str | None
    blocks: tuple[int, ...]
    events: int


class Catalog(Protocol):
    async def add_part(self, part: Part, entries: Sequence[IndexEntry]) -> None:
        """Record a sealed part and its user-index entries in one transaction."""
        ...

    async def parts(self, project_id: int, start_hour: int, end_hour: int) -> list[Part]:
        """Sealed parts with start_hour <= hour <= end_hour, ordered by (hour, seq)."""
        ...

    async def next_seq(self, project_id: int, hour: int) -> int:
        """The next free part number for (project, hour)."""
        ...

    async def sealed_watermarks(self) -> dict[tuple[int, int], int]:
        """For each (project, hour), the highest log sequence number already in a sealed part."""
        ...


class UserIndex(Protocol):
    async def amplitude_ids_for_user(self, project_id: int, user_id: str) -> list[int]:
        """Every amplitude_id seen with this user_id in sealed parts of the project."""
        ...

    async def user_blocks(self, project_id: int, amplitude_ids: Sequence[int]) -> list[UserBlocks]:
        """Where these users' events are, part by part."""
        ...


@dataclass(slots=True)
class StateSnapshot:
    """Identity state loaded for one batch of events (see swell.identity)."""

    users: dict[str, int] = field(default_factory=dict)
    devices: dict[str, tuple[int, bool]] = field(default_factory=dict)
    props: dict[int, dict[str, Any]] = field(default_factory=dict)
    groups: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)


@dataclass(slots=True)
class StateChanges:
    """Identity changes to persist, per project, with the log position they reflect."""

    users: list[tuple[int, str, int]] = field(default_factory=list)
    devices: list[tuple[int, str, int, bool]] = field(default_factory=list)
    props: list[tuple[int, int, bytes]] = field(default_factory=list)
    groups: list[tuple[int, str, str, bytes]] = field(default_factory=list)
    dedup: list[tuple[int, int, int]] = field(default_factory=list)
    next_amplitude_id: int = 0
    lsn: int = 0


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
        """Persist identity changes and the log position they reflect, atomically."""
        ...

    async def state_position(self) -> tuple[int, int]:
        """(log sequence number reflected by the stored state, next amplitude_id to assign)."""
        ...

    async def load_dedup(self, since_ms: int) -> list[tuple[int, int, int]]:
        """Every (project_id, dedup key, seen_ms) seen since ``since_ms``: the dedup window, which
        identity keeps in memory (so ingestion never looks insert_ids up one by one)."""
        ...

    async def prune_dedup(self, before_ms: int) -> int:
        """Forget insert_ids seen before ``before_ms`` (whole days at a time); returns how many
        units (days) were dropped."""
        ...


# -- DSAR requests and jobs --


@dataclass(frozen=True, slots=True)
class DsarRequest:
    """One DSAR request as stored. Times are UTC; dates are ``YYYY-MM-DD`` strings."""

    id: int
    org_id: int
    user_id: str | None
    amplitude_id: int | None
    start_date: str
    end_date: str
    #: staging (not started), submitted (running), done (outputs published) or failed.
    status: str
    fail_reason: str | None
    #: How many output files were published (meaningful once done).
    outputs: int
    #: The highest number of output files any attempt may have written (cleanup bound).
    slots: int
    created_at: datetime
    expires_at: datetime | None
    #: True once housekeeping deleted the expired outputs.
    purged: bool


@dataclass(frozen=True, slots=True)
class Job:
    """A claimed unit of background work; ``ref`` points at the row it works on."""

    id: int
    kind: str
    ref: int
    #: Attempts so far, including the one this claim starts.
    attempts: int


class JobQueue(Protocol):
    async def claim_job(self, worker: str, now: datetime) -> Job | None:
        """Mark the oldest queued job that is due as running and return it (atomic claim)."""
        ...

    async def requeue_running_jobs(self) -> int:
        """Put every running job back in the queue (their worker died); returns how many."""
        ...

    async def retry_job(self, job_id: int, error: str, run_after: datetime) -> None:
        """Give a failed attempt back to the queue, due at ``run_after``."""
        ...

    async def complete_job(self, job_id: int) -> None:
        """Close a job whose work needs nothing more (e.g. found already finished)."""
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


class Metadata(KeyStore, Catalog, UserIndex, IdentityStore, DsarStore, Protocol):
    """Everything a metadata backend implements. Callers ask for the narrowest protocol."""

    async def aclose(self) -> None: ...
