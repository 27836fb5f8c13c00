"""In-memory backends: a metadata store and a blob store that keep everything in process memory.

They are real implementations (tests/contract runs the same suite over them as over SQLite and
local files), not mocks: the unit tests and the fault-injection suite use them to run fast.
``memory://`` opens a fresh, empty store; ``memory://NAME`` opens the store of that name in this
process, so a store "restarted" in the same process finds what it held, as a server finds its
database. Every method runs without awaiting, so on one event loop each call is atomic, which is
what makes a call here a transaction.
"""

from __future__ import annotations

import sys
from array import array
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson

from swell.backends.blobkeys import check_key
from swell.errors import (
    AlreadyExists,
    BlobNotFound,
    BlobStoreUnavailable,
    Conflict,
    MetadataUnavailable as _Unavailable,
    NotFound,
)
from swell.model import (
    FIRST_AMPLITUDE_ID,
    HOUR_MS,
    Annotation,
    BlobInfo,
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
    rewrite_key,
)
from swell.ratelimit import decide
from swell.rollups import DAY_MS

if TYPE_CHECKING:
    from swell.backends.base import BlobStore, Metadata


def _now() -> str:
    return f"{datetime.now(UTC):%Y-%m-%d %H:%M:%S}"


def _name(url: str) -> str:
    return url.split("://", 1)[1].split("?", 1)[0] if "://" in url else ""


# -- metadata ----------------------------------------------------------------------------------


@dataclass
class _Job:
    kind: str
    ref: int
    status: str
    run_after: datetime
    attempts: int = 0
    worker: str | None = None
    lease_until: datetime | None = None
    last_error: str | None = None


@dataclass
class _MetaState:
    """Everything one metadata store holds (kept by name across reopen)."""

    orgs: dict[int, tuple[str, str]] = field(default_factory=dict)
    projects: dict[int, tuple[int, str, str]] = field(default_factory=dict)
    #: A deleted project's id is never given again (its insert_ids may still be in dedup windows).
    last_deleted_project: int = 0
    keys: dict[str, Principal] = field(default_factory=dict)
    parts: dict[int, dict[tuple[int, int], Part]] = field(default_factory=dict)
    part_seqs: dict[tuple[int, int], int] = field(default_factory=dict)
    import_keys: dict[tuple[int, int, int], tuple[int, ...]] = field(default_factory=dict)
    blocks: dict[tuple[int, int], dict[tuple[int, int], tuple[tuple[int, ...], int]]] = field(
        default_factory=dict
    )
    links: dict[tuple[int, str], set[int]] = field(default_factory=dict)
    users: dict[tuple[int, str], int] = field(default_factory=dict)
    devices: dict[tuple[int, str], tuple[int, bool]] = field(default_factory=dict)
    props: dict[tuple[int, int], bytes] = field(default_factory=dict)
    groups: dict[tuple[int, str, str], bytes] = field(default_factory=dict)
    state_lsn: int = 0
    next_amplitude_id: int = FIRST_AMPLITUDE_ID
    #: hour of first sight -> dedup keys saved in it
    dedup: dict[int, list[int]] = field(default_factory=dict)
    charges: dict[str, list[tuple[float, int]]] = field(default_factory=dict)
    dsars: dict[int, DsarRequest] = field(default_factory=dict)
    jobs: dict[int, _Job] = field(default_factory=dict)
    # -- part rewriting
    #: blob key -> when it is to be deleted (seconds since the epoch)
    doomed: dict[str, float] = field(default_factory=dict)
    #: doomed keys a sweep has taken (never spared)
    taken: set[str] = field(default_factory=set)
    # -- dashboard rollups
    user_days: set[tuple[int, int, int]] = field(default_factory=set)
    user_groups: set[tuple[int, str, int, str, int]] = field(default_factory=set)
    first_days: dict[tuple[int, int], int] = field(default_factory=dict)
    sessions: dict[tuple[int, int, int], tuple[int, int]] = field(default_factory=dict)
    event_types: dict[tuple[int, int, str], int] = field(default_factory=dict)
    annotations: list[Annotation] = field(default_factory=list)


_META: dict[str, _MetaState] = {}


class MemoryMetadata:
    def __init__(self, state: _MetaState | None = None) -> None:
        self._s = state or _MetaState()
        self._closed = False

    @classmethod
    def from_url(cls, url: str) -> MemoryMetadata:
        name = _name(url)
        if not name:
            return cls()
        return cls(_META.setdefault(name, _MetaState()))

    def _state(self) -> _MetaState:
        if self._closed:
            raise _Unavailable("metadata store unavailable: it is closed")
        return self._s

    async def aclose(self) -> None:
        self._closed = True

    # -- keys ----------------------------------------------------------------------------------

    async def create_org(self, name: str, api_key: str, secret_hash: str) -> int:
        s = self._state()
        if api_key in s.keys:
            raise AlreadyExists(f"metadata conflict: api key {api_key[:8]}... exists")
        org_id = max(s.orgs, default=0) + 1
        s.orgs[org_id] = (name, _now())
        s.keys[api_key] = Principal(org_id, None, secret_hash)
        return org_id

    async def create_project(self, name: str, org_id: int, api_key: str, secret_hash: str) -> int:
        s = self._state()
        if org_id not in s.orgs:
            raise NotFound(f"org {org_id} does not exist")
        if api_key in s.keys:
            raise AlreadyExists(f"metadata conflict: api key {api_key[:8]}... exists")
        project_id = max(max(s.projects, default=0), s.last_deleted_project) + 1
        s.projects[project_id] = (org_id, name, _now())
        s.keys[api_key] = Principal(org_id, project_id, secret_hash)
        return project_id

    async def rotate_key(
        self, org_id: int, project_id: int | None, api_key: str, secret_hash: str
    ) -> None:
        s = self._state()
        for key, principal in list(s.keys.items()):
            if principal.org_id == org_id and principal.project_id == project_id:
                del s.keys[key]
        s.keys[api_key] = Principal(org_id, project_id, secret_hash)

    async def find_key(self, api_key: str) -> Principal | None:
        return self._state().keys.get(api_key)

    async def all_orgs(self) -> list[int]:
        return sorted(self._state().orgs)

    async def org_projects(self, org_id: int) -> list[int]:
        return sorted(p for p, (org, _, _) in self._state().projects.items() if org == org_id)

    async def list_orgs(self) -> list[OrgInfo]:
        s = self._state()
        counts = Counter(org for org, _, _ in s.projects.values())
        return [
            OrgInfo(org_id, name, created, counts[org_id])
            for org_id, (name, created) in sorted(s.orgs.items())
        ]

    async def list_projects(self, org_id: int | None = None) -> list[ProjectInfo]:
        s = self._state()
        found = []
        for project_id, (org, name, created) in sorted(s.projects.items()):
            if org_id is None or org == org_id:
                parts = s.parts.get(project_id, {}).values()
                found.append(
                    ProjectInfo(
                        project_id, org, name, created, len(parts), sum(p.events for p in parts)
                    )
                )
        return found

    async def delete_project(self, project_id: int) -> None:
        s = self._state()
        if project_id not in s.projects:
            raise NotFound(f"project {project_id} does not exist")
        if s.parts.get(project_id):
            raise Conflict(
                f"project {project_id} holds {len(s.parts[project_id])} sealed part(s); only an "
                "empty project can be deleted"
            )
        tables: tuple[dict[Any, Any], ...] = (
            s.users,
            s.devices,
            s.props,
            s.groups,
            s.links,
            s.part_seqs,
            s.blocks,
        )
        for table in tables:
            for key in [k for k in table if k[0] == project_id]:
                del table[key]
        for api_key in [k for k, p in s.keys.items() if p.project_id == project_id]:
            del s.keys[api_key]
        s.parts.pop(project_id, None)
        del s.projects[project_id]
        s.last_deleted_project = max(s.last_deleted_project, project_id)

    # -- catalog and user index -----------------------------------------------------------------

    async def add_part(
        self,
        part: Part,
        entries: Sequence[IndexEntry],
        import_keys: Sequence[int] = (),
        *,
        rollup: Rollup | None = None,
    ) -> None:
        s = self._state()
        parts = s.parts.setdefault(part.project_id, {})
        if (part.hour, part.seq) in parts:
            raise AlreadyExists(f"metadata conflict: part {part.name} is already recorded")
        parts[(part.hour, part.seq)] = part
        if import_keys:
            s.import_keys[(part.project_id, part.hour, part.seq)] = tuple(import_keys)
        for e in entries:
            where = s.blocks.setdefault((part.project_id, e.amplitude_id), {})
            where[(part.hour, part.seq)] = (e.blocks, e.events)
            if e.user_id:
                s.links.setdefault((part.project_id, e.user_id), set()).add(e.amplitude_id)
        if rollup:
            self._write_rollup(part.project_id, rollup)

    async def parts(self, project_id: int, start_hour: int, end_hour: int) -> list[Part]:
        found = self._state().parts.get(project_id, {})
        return [found[k] for k in sorted(found) if start_hour <= k[0] <= end_hour]

    async def allocate_part_seq(self, project_id: int, hour: int) -> int:
        s = self._state()
        top = max(
            (seq + 1 for h, seq in s.parts.get(project_id, {}) if h == hour),
            default=0,
        )
        seq = max(s.part_seqs.get((project_id, hour), 0), top)
        s.part_seqs[(project_id, hour)] = seq + 1
        return seq

    async def import_keys(self, project_id: int, hour: int) -> set[int]:
        found: set[int] = set()
        for (p, h, _), keys in self._state().import_keys.items():
            if (p, h) == (project_id, hour):
                found.update(keys)
        return found

    async def drop_parts_before(self, hour: int) -> list[Part]:
        s = self._state()
        dropped: list[Part] = []
        for parts in s.parts.values():
            dropped.extend(parts.pop(key) for key in [k for k in parts if k[0] < hour])
        for where in s.blocks.values():
            for key in [k for k in where if k[0] < hour]:
                del where[key]
        stale: tuple[dict[Any, Any], ...] = (s.import_keys, s.part_seqs)
        for table in stale:
            for key in [k for k in table if k[1] < hour]:
                del table[key]
        return sorted(dropped, key=lambda p: (p.project_id, p.hour, p.seq))

    async def sealed_watermarks(self) -> dict[tuple[int, int], int]:
        marks: dict[tuple[int, int], int] = {}
        for project_id, parts in self._state().parts.items():
            for (hour, _), part in parts.items():
                key = (project_id, hour)
                marks[key] = max(marks.get(key, 0), part.max_lsn)
        return marks

    async def amplitude_ids_for_user(self, project_id: int, user_id: str) -> list[int]:
        s = self._state()
        found = set(s.links.get((project_id, user_id), ()))
        if (project_id, user_id) in s.users:
            found.add(s.users[(project_id, user_id)])
        return sorted(found)

    async def user_blocks(self, project_id: int, amplitude_ids: Sequence[int]) -> list[UserBlocks]:
        s = self._state()
        parts = s.parts.get(project_id, {})
        found: list[UserBlocks] = []
        for aid in sorted(set(amplitude_ids)):
            for (hour, seq), (blocks, events) in sorted(
                s.blocks.get((project_id, aid), {}).items()
            ):
                found.append(UserBlocks(project_id, aid, parts[(hour, seq)], blocks, events))
        return found

    # -- identity state -------------------------------------------------------------------------

    async def load_state(
        self,
        project_id: int,
        user_ids: Iterable[str],
        device_ids: Iterable[str],
        amplitude_ids: Iterable[int],
        group_keys: Iterable[tuple[str, str]],
    ) -> StateSnapshot:
        s = self._state()
        snap = StateSnapshot()
        for uid in user_ids:
            if (project_id, uid) in s.users:
                snap.users[uid] = s.users[(project_id, uid)]
        for did in device_ids:
            if (project_id, did) in s.devices:
                snap.devices[did] = s.devices[(project_id, did)]
        wanted = {*amplitude_ids, *snap.users.values(), *(d[0] for d in snap.devices.values())}
        for aid in wanted:
            if (project_id, aid) in s.props:
                snap.props[aid] = _loads(s.props[(project_id, aid)])
        for gtype, gvalue in group_keys:
            if (project_id, gtype, gvalue) in s.groups:
                snap.groups[(gtype, gvalue)] = _loads(s.groups[(project_id, gtype, gvalue)])
        return snap

    async def save_state(self, changes: StateChanges) -> None:
        s = self._state()
        for project_id, uid, aid in changes.users:
            s.users[(project_id, uid)] = aid
        for project_id, did, aid, anonymous in changes.devices:
            s.devices[(project_id, did)] = (aid, bool(anonymous))
        for project_id, aid, props in changes.props:
            s.props[(project_id, aid)] = props
        for project_id, gtype, gvalue, props in changes.groups:
            s.groups[(project_id, gtype, gvalue)] = props
        for _project, key, seen_ms in changes.dedup:
            s.dedup.setdefault(seen_ms // HOUR_MS, []).append(key)
        s.state_lsn = max(s.state_lsn, changes.lsn)
        s.next_amplitude_id = max(s.next_amplitude_id, changes.next_amplitude_id)

    async def state_position(self) -> tuple[int, int]:
        s = self._state()
        return s.state_lsn, s.next_amplitude_id

    async def allocate_amplitude_ids(self, count: int, floor: int) -> int:
        s = self._state()
        first = max(s.next_amplitude_id, floor)
        s.next_amplitude_id = first + count
        return first

    async def load_dedup(self, since_ms: int) -> list[DedupChunk]:
        s = self._state()
        first = since_ms // HOUR_MS  # hours that end after since_ms
        return [DedupChunk(h, _pack_keys(s.dedup[h])) for h in sorted(s.dedup) if h >= first]

    async def prune_dedup(self, before_ms: int) -> int:
        s = self._state()
        stale = [hour for hour in s.dedup if hour < before_ms // HOUR_MS]
        for hour in stale:
            del s.dedup[hour]
        return len(stale)

    # -- budgets ----------------------------------------------------------------------------------

    async def charge_budget(
        self, key: str, cost: int, budget: int, window_seconds: float, now: datetime
    ) -> Charge:
        s = self._state()
        at = now.timestamp()
        charges = [c for c in s.charges.get(key, []) if c[0] > at - window_seconds]
        charge = decide(charges, cost, budget, window_seconds, at)
        if charge.allowed and cost:
            charges.append((at, cost))
        if charges:
            s.charges[key] = charges
        else:
            s.charges.pop(key, None)
        return charge

    # -- DSAR requests and jobs ---------------------------------------------------------------

    async def create_dsar(
        self,
        org_id: int,
        user_id: str | None,
        amplitude_id: int | None,
        start_date: str,
        end_date: str,
        now: datetime,
    ) -> DsarRequest:
        s = self._state()
        if org_id not in s.orgs:
            raise AlreadyExists(f"metadata conflict: org {org_id} does not exist")
        request = DsarRequest(
            id=max(s.dsars, default=0) + 1,
            org_id=org_id,
            user_id=user_id,
            amplitude_id=amplitude_id,
            start_date=start_date,
            end_date=end_date,
            status="staging",
            fail_reason=None,
            outputs=0,
            slots=0,
            created_at=now,
            expires_at=None,
            purged=False,
        )
        s.dsars[request.id] = request
        s.jobs[max(s.jobs, default=0) + 1] = _Job("dsar", request.id, "queued", now)
        return request

    async def get_dsar(self, request_id: int) -> DsarRequest | None:
        return self._state().dsars.get(request_id)

    def _update(self, request_id: int, **changes: Any) -> None:
        s = self._state()
        if request_id in s.dsars:
            s.dsars[request_id] = replace(s.dsars[request_id], **changes)

    async def start_dsar(self, request_id: int) -> None:
        found = self._state().dsars.get(request_id)
        if found is not None and found.status == "staging":
            self._update(request_id, status="submitted")

    async def reserve_dsar_outputs(self, request_id: int, count: int) -> None:
        found = self._state().dsars.get(request_id)
        if found is not None:
            self._update(request_id, slots=max(found.slots, count))

    async def finish_dsar(
        self, job_id: int, request_id: int, outputs: int, expires_at: datetime
    ) -> None:
        s = self._state()
        found = s.dsars.get(request_id)
        if found is not None:
            self._update(
                request_id,
                status="done",
                fail_reason=None,
                outputs=outputs,
                slots=max(found.slots, outputs),
                expires_at=expires_at,
            )
        if job_id in s.jobs:
            s.jobs[job_id].status = "done"

    async def fail_dsar(self, job_id: int, request_id: int, reason: str) -> None:
        s = self._state()
        self._update(request_id, status="failed", fail_reason=reason, outputs=0, expires_at=None)
        if job_id in s.jobs:
            s.jobs[job_id].status = "failed"
            s.jobs[job_id].last_error = reason

    async def expired_dsars(self, now: datetime, limit: int = 100) -> list[DsarRequest]:
        due = [
            r
            for r in self._state().dsars.values()
            if r.status == "done" and not r.purged and r.expires_at is not None
            if r.expires_at <= now
        ]
        return sorted(due, key=lambda r: (r.expires_at or now, r.id))[:limit]

    async def mark_dsar_purged(self, request_id: int) -> None:
        self._update(request_id, purged=True)

    async def claim_job(self, worker: str, now: datetime, lease_until: datetime) -> Job | None:
        s = self._state()
        due = [
            (job.run_after, job_id)
            for job_id, job in s.jobs.items()
            if (job.status == "queued" and job.run_after <= now)
            or (job.status == "running" and job.lease_until is not None and job.lease_until <= now)
        ]
        if not due:
            return None
        job_id = min(due)[1]
        job = s.jobs[job_id]
        job.status, job.worker, job.lease_until = "running", worker, lease_until
        job.attempts += 1
        return Job(job_id, job.kind, job.ref, job.attempts)

    async def extend_lease(self, job_id: int, worker: str, lease_until: datetime) -> bool:
        job = self._state().jobs.get(job_id)
        if job is None or job.status != "running" or job.worker != worker:
            return False
        job.lease_until = lease_until
        return True

    async def requeue_running_jobs(self) -> int:
        running = [job for job in self._state().jobs.values() if job.status == "running"]
        for job in running:
            job.status, job.worker, job.lease_until = "queued", None, None
        return len(running)

    async def retry_job(
        self, job_id: int, error: str, run_after: datetime, *, count_attempt: bool = True
    ) -> None:
        job = self._state().jobs.get(job_id)
        if job is None:
            return
        job.status, job.worker, job.lease_until = "queued", None, None
        job.last_error, job.run_after = error[:2000], run_after
        if not count_attempt:
            job.attempts -= 1

    async def complete_job(self, job_id: int) -> None:
        job = self._state().jobs.get(job_id)
        if job is not None:
            job.status = "done"

    # -- part rewriting (compaction, deletion) -------------------------------------------------

    async def doom_blobs(self, keys: Sequence[str], delete_after: datetime) -> None:
        s = self._state()
        for key in keys:
            s.doomed[key] = delete_after.timestamp()
            s.taken.discard(key)

    async def take_doomed_blobs(
        self, now: datetime, retry_at: datetime, limit: int = 1000
    ) -> list[str]:
        s = self._state()
        due = sorted((when, key) for key, when in s.doomed.items() if when <= now.timestamp())
        keys = [key for _, key in due[:limit]]
        for key in keys:
            s.doomed[key] = retry_at.timestamp()
            s.taken.add(key)
        return keys

    async def forget_blobs(self, keys: Sequence[str]) -> None:
        s = self._state()
        for key in keys:
            s.doomed.pop(key, None)
            s.taken.discard(key)

    async def replace_parts(
        self,
        old: Sequence[Part],
        new: Sequence[tuple[Part, Sequence[IndexEntry]]],
        old_amplitude_ids: Sequence[int],
        delete_after: datetime,
    ) -> None:
        project_id, hour = rewrite_key(old, new)
        s = self._state()
        parts = s.parts.setdefault(project_id, {})
        for part in old:
            if parts.get((hour, part.seq)) != part:
                raise Conflict(f"part {part.key} is no longer in the catalog as it was")
        for part, _ in new:
            if part.key not in s.doomed or part.key in s.taken:
                raise Conflict(f"the blob {part.key} of a rewritten part was swept")
        for part, _ in new:
            del s.doomed[part.key]
        seqs = {part.seq for part in old}
        kept: list[int] = []
        for seq in sorted(seqs):
            kept.extend(s.import_keys.pop((project_id, hour, seq), ()))
        for aid in old_amplitude_ids:
            where = s.blocks.get((project_id, aid), {})
            for seq in seqs:
                where.pop((hour, seq), None)
        for part in old:
            del parts[(hour, part.seq)]
            s.doomed[part.key] = delete_after.timestamp()
        for part, entries in new:
            parts[(hour, part.seq)] = part
            for e in entries:
                where = s.blocks.setdefault((project_id, e.amplitude_id), {})
                where[(hour, part.seq)] = (e.blocks, e.events)
                if e.user_id:
                    s.links.setdefault((project_id, e.user_id), set()).add(e.amplitude_id)
        if kept:
            seq = new[0][0].seq if new else min(seqs)
            s.import_keys[(project_id, hour, seq)] = tuple(kept)

    async def crowded_hours(
        self, before_hour: int, min_parts: int, limit: int = 100, project_id: int | None = None
    ) -> list[tuple[int, int]]:
        counts: Counter[tuple[int, int]] = Counter()
        sealed: set[tuple[int, int]] = set()  # hours with a part not rewritten yet
        for owner, parts in self._state().parts.items():
            if project_id is not None and owner != project_id:
                continue
            for (hour, _), part in parts.items():
                if hour < before_hour:
                    counts[(hour, owner)] += 1
                    if not part.gen:
                        sealed.add((hour, owner))
        found = sorted(k for k, n in counts.items() if n >= min_parts and k in sealed)[:limit]
        return [(project_id, hour) for hour, project_id in found]

    # -- dashboard rollups -------------------------------------------------------------------------

    def _write_rollup(self, p: int, rollup: Rollup) -> None:
        s = self._state()
        s.user_days.update((p, d, a) for d, a in rollup.user_days)
        s.user_groups.update((p, g, d, v, a) for d, g, v, a in rollup.user_groups)
        for a, d in rollup.first_days:
            s.first_days[(p, a)] = min(d, s.first_days.get((p, a), d))
        for a, sid, lo, hi in rollup.sessions:
            old = s.sessions.get((p, a, sid))
            if old is not None:
                lo, hi = min(lo, old[0]), max(hi, old[1])
            s.sessions[(p, a, sid)] = (lo, hi)
        for d, t, n in rollup.event_counts:
            s.event_types[(p, d, t)] = s.event_types.get((p, d, t), 0) + n

    async def count_users(
        self,
        project_id: int,
        buckets: Sequence[tuple[int, int]],
        *,
        new: bool = False,
        group_by: str | None = None,
    ) -> list[dict[str, int]]:
        s = self._state()
        out: list[dict[str, int]] = []
        for lo, hi in buckets:
            users: dict[str, set[int]] = {}
            if group_by is None:
                for p, d, a in s.user_days:
                    if p == project_id and lo <= d <= hi:
                        users.setdefault("", set()).add(a)
            else:
                for p, g, d, v, a in s.user_groups:
                    if (
                        p == project_id
                        and g == group_by
                        and lo <= d <= hi
                        and (not new or s.first_days.get((p, a)) == d)
                    ):
                        users.setdefault(v, set()).add(a)
            if new and group_by is None:
                firsts = s.first_days.items()
                users = {"": {a for (p, a), d in firsts if p == project_id and lo <= d <= hi}}
            out.append({k: len(v) for k, v in users.items() if v})
        return out

    async def session_totals(
        self, project_id: int, first_day: int, last_day: int
    ) -> dict[int, tuple[int, int]]:
        out: dict[int, tuple[int, int]] = {}
        for (p, _, _), (lo, hi) in self._state().sessions.items():
            day = lo // DAY_MS
            if p == project_id and first_day <= day <= last_day:
                n, total = out.get(day, (0, 0))
                out[day] = (n + 1, total + hi - lo)
        return out

    async def event_type_totals(
        self, project_id: int, first_day: int, last_day: int
    ) -> dict[str, int]:
        out: dict[str, int] = {}
        for (p, d, t), n in self._state().event_types.items():
            if p == project_id:
                out[t] = out.get(t, 0) + (n if first_day <= d <= last_day else 0)
        return out

    async def forget_user_rollups(
        self,
        project_id: int,
        amplitude_ids: Sequence[int],
        event_counts: Sequence[tuple[int, str, int]] = (),
    ) -> None:
        s = self._state()
        gone = set(amplitude_ids)
        s.user_days = {r for r in s.user_days if not (r[0] == project_id and r[2] in gone)}
        s.user_groups = {r for r in s.user_groups if not (r[0] == project_id and r[4] in gone)}
        for a in gone:
            s.first_days.pop((project_id, a), None)
        for session in [k for k in s.sessions if k[0] == project_id and k[1] in gone]:
            del s.sessions[session]
        for d, t, n in event_counts:
            counted = (project_id, d, t)
            if counted in s.event_types:
                s.event_types[counted] = max(0, s.event_types[counted] - n)

    async def add_annotation(
        self, project_id: int, date: str, label: str, details: str, chart_id: str | None
    ) -> Annotation:
        s = self._state()
        made = Annotation(len(s.annotations) + 1, project_id, date, label, details, chart_id)
        s.annotations.append(made)
        return made

    async def annotations(self, project_id: int) -> list[Annotation]:
        found = [a for a in self._state().annotations if a.project_id == project_id]
        return sorted(found, key=lambda a: (a.date, a.id))

    # -- operating: job counts -------------------------------------------------------------------

    async def job_counts(self) -> dict[tuple[str, str], int]:
        counts: dict[tuple[str, str], int] = {}
        for job in self._state().jobs.values():
            counts[(job.kind, job.status)] = counts.get((job.kind, job.status), 0) + 1
        return counts


def _loads(blob: bytes) -> dict[str, Any]:
    value = orjson.loads(blob)
    return value if isinstance(value, dict) else {}


# -- blobs -------------------------------------------------------------------------------------

_BLOBS: dict[str, dict[str, bytes]] = {}


class MemoryBlobStore:
    def __init__(self, objects: dict[str, bytes] | None = None) -> None:
        self._objects = {} if objects is None else objects
        self._closed = False

    @classmethod
    def from_url(cls, url: str) -> MemoryBlobStore:
        name = _name(url)
        return cls(_BLOBS.setdefault(name, {}) if name else None)

    def _get(self, key: str) -> bytes:
        self._check(key)
        try:
            return self._objects[key]
        except KeyError:
            raise BlobNotFound(f"blob {key!r} not found") from None

    def _check(self, key: str) -> None:
        check_key(key)
        if self._closed:
            raise BlobStoreUnavailable("blob store unavailable: it is closed")

    async def put(self, key: str, data: bytes) -> BlobInfo:
        self._check(key)
        self._objects[key] = bytes(data)
        return BlobInfo(key, len(data))

    async def read(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        data = self._get(key)
        return data[start : len(data) if end is None else end]

    async def stream(
        self, key: str, start: int = 0, end: int | None = None, chunk: int = 1 << 20
    ) -> AsyncIterator[bytes]:
        data = self._get(key)
        stop = len(data) if end is None else end
        for offset in range(start, stop, chunk):
            piece = data[offset : min(offset + chunk, stop)]
            if not piece:
                raise BlobStoreUnavailable(f"blob {key!r} is shorter than expected")
            yield piece

    async def head(self, key: str) -> BlobInfo:
        return BlobInfo(key, len(self._get(key)))

    async def delete(self, keys: Sequence[str]) -> None:
        for key in keys:
            self._check(key)
        for key in keys:
            self._objects.pop(key, None)

    async def aclose(self) -> None:
        self._closed = True

    def keys(self) -> list[str]:
        """Every key held (for tests that look at what is stored)."""
        return sorted(self._objects)


if TYPE_CHECKING:
    _m: type[Metadata] = MemoryMetadata
    _b: type[BlobStore] = MemoryBlobStore


def _pack_keys(keys: list[int]) -> bytes:
    """Dedup keys as DedupChunk carries them: little-endian int64."""
    packed = array("q", keys)
    if sys.byteorder != "little":
        packed.byteswap()
    return packed.tobytes()
