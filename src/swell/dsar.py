"""DSAR lifecycle: validate a request, run it as a job, report its status, serve and expire files.

A request is stored with its job in one transaction (status ``staging``). The worker
(swell.jobs) claims the job, marks the request ``submitted`` and calls :meth:`Dsar.run`:

1. seal the open parts that hold the user's events, in the org's projects (read-your-writes);
2. find the user's amplitude_ids (a userId covers every id linked to it in each project);
3. read only the blocks the user index points to, coalescing adjacent blocks into one read;
4. keep the user's lines whose ``event_time`` date lies in [startDate, endDate];
5. write one gzip NDJSON file per (project, month of event_time) under deterministic keys
   ``dsar/{request_id}/{n}.json.gz`` (a retried attempt overwrites them), and only then publish
   them (status ``done``) in one transaction.

Outputs expire ``dsar_result_ttl_seconds`` after the job is done: downloads answer 404 from then on
and housekeeping deletes the files. The status keeps answering ``done``, with no urls and the
past ``expires`` time (see docs/compatibility.md#dsar-expiry).
"""

from __future__ import annotations

import asyncio
import logging
import re
import tempfile
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Protocol

import msgspec
from isal import isal_zlib

from swell.backends.base import BlobStore, DsarStore, KeyStore, UserIndex
from swell.errors import BadRequest, DsarFailed, NotFound
from swell.model import DsarRequest, Job, Part, UserBlocks
from swell.parts import decompress_blocks
from swell.settings import Settings

logger = logging.getLogger("swell.dsar")

#: The job kind DSAR requests queue.
JOB_KIND = "dsar"
#: Longest userId accepted (the ingestion limit for ids).
MAX_USER_ID_LENGTH = 1024
#: amplitude_id is a signed 64-bit integer.
MAX_AMPLITUDE_ID = 2**63 - 1
#: Largest single read of a part: adjacent blocks are coalesced up to this many bytes. The local
#: blob store reads on the event loop, so a read stays as small as an Export streaming chunk.
MAX_READ_BYTES = 1024 * 1024
#: Output files are gzip from isal at level 2: ~1 GB/s, so a heavy user's million events compress
#: in about a second (zlib's level 6 would take ~15 s) for files about a quarter larger.
OUTPUT_LEVEL = 2
#: Reads decompressed at once, each in a worker thread.
SCAN_DEPTH = 2
#: An output's compressed bytes stay in memory up to this size, then spill to a temporary file.
SPOOL_BYTES = 1024 * 1024

_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_DIGITS = re.compile(r"[0-9]{1,19}")

Clock = Callable[[], datetime]
#: Seals the open data of (project_id, user_id, amplitude_ids) so the job reads its own writes.
Sealer = Callable[[int, str | None, set[int]], Awaitable[None]]


class DsarMetadata(DsarStore, UserIndex, KeyStore, Protocol):
    """What DSAR needs from the metadata store."""


@dataclass(frozen=True, slots=True)
class DsarParams:
    """A validated create request."""

    user_id: str | None
    amplitude_id: int | None
    start_date: str
    end_date: str


def output_key(request_id: int, n: int) -> str:
    return f"dsar/{request_id}/{n}.json.gz"


def parse_params(body: Mapping[str, Any]) -> DsarParams:
    """Validate a create request (JSON or form fields).

    ``userId`` may be a string or an integer; ``amplitudeId`` an integer or a numeric string;
    empty strings and nulls count as absent. At least one of them is required.

    Raises:
        BadRequest: a field is missing or invalid; ``field`` names it.
    """
    user_id = _user_id(body.get("userId"))
    amplitude_id = _amplitude_id(body.get("amplitudeId"))
    if user_id is None and amplitude_id is None:
        raise BadRequest("Missing userId or amplitudeId: one of them is required", field="userId")
    start = _date(body.get("startDate"), "startDate")
    end = _date(body.get("endDate"), "endDate")
    if end < start:
        raise BadRequest("Invalid endDate: it must not be before startDate", field="endDate")
    return DsarParams(user_id, amplitude_id, start.isoformat(), end.isoformat())


#: Blanks around a field's value are ignored; only ASCII ones (what /openapi.json states).
_BLANKS = " \t\r\n"


def _absent(value: object) -> bool:
    return value is None or (isinstance(value, str) and not value.strip(_BLANKS))


def _user_id(value: object) -> str | None:
    if _absent(value):
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise BadRequest("Invalid userId: expected a string", field="userId")
    if len(value) > MAX_USER_ID_LENGTH:
        raise BadRequest(
            f"Invalid userId: longer than {MAX_USER_ID_LENGTH} characters", field="userId"
        )
    return value


def _amplitude_id(value: object) -> int | None:
    if _absent(value):
        return None
    if isinstance(value, str) and _DIGITS.fullmatch(value.strip(_BLANKS)):
        value = int(value.strip(_BLANKS))
    if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= MAX_AMPLITUDE_ID:
        raise BadRequest("Invalid amplitudeId: expected a positive integer", field="amplitudeId")
    return value


def _date(value: object, name: str) -> date:
    if _absent(value):
        raise BadRequest(f"Missing {name}: expected a date YYYY-MM-DD", field=name)
    if isinstance(value, str) and _DATE.fullmatch(value.strip(_BLANKS)):
        try:
            return date.fromisoformat(value.strip(_BLANKS))
        except ValueError:
            pass
    raise BadRequest(f"Invalid {name}: expected a date YYYY-MM-DD", field=name)


def is_expired(request: DsarRequest, now: datetime) -> bool:
    return request.expires_at is not None and request.expires_at <= now


class _Writer:
    """Gzip NDJSON for one (project, month), compressed as lines arrive into a spool file: in
    memory up to ``SPOOL_BYTES``, then an anonymous temporary file, so a job holds at most one
    finished output in memory however many months it covers."""

    __slots__ = ("compressor", "events", "spool")

    def __init__(self) -> None:
        self.compressor = isal_zlib.compressobj(OUTPUT_LEVEL, isal_zlib.DEFLATED, 16 + 15)
        self.spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115
        self.events = 0

    def add(self, lines: list[bytes]) -> None:
        self.events += len(lines)
        for data in (b"\n".join(lines), b"\n"):
            chunk = self.compressor.compress(data)
            if chunk:
                self.spool.write(chunk)

    def finish(self) -> bytes:
        """The whole file; the writer is closed."""
        try:
            self.spool.write(self.compressor.flush())
            self.spool.seek(0)
            return self.spool.read()
        finally:
            self.spool.close()

    def close(self) -> None:
        self.spool.close()


class Dsar:
    """The DSAR service: create, status, outputs, and the job handler that runs requests."""

    kind = JOB_KIND

    def __init__(
        self,
        meta: DsarMetadata,
        blobs: BlobStore,
        *,
        ttl_seconds: int,
        max_events_per_month: int,
        clock: Clock,
        seal: Sealer | None = None,
    ) -> None:
        self.meta = meta
        self.blobs = blobs
        self.ttl = timedelta(seconds=ttl_seconds)
        self.max_events_per_month = max_events_per_month
        self.clock = clock
        self.seal = seal

    @classmethod
    def from_settings(
        cls,
        meta: DsarMetadata,
        blobs: BlobStore,
        settings: Settings,
        *,
        clock: Clock,
        seal: Sealer | None = None,
    ) -> Dsar:
        return cls(
            meta,
            blobs,
            ttl_seconds=settings.dsar_result_ttl_seconds,
            max_events_per_month=settings.dsar_max_events_per_month,
            clock=clock,
            seal=seal,
        )

    # -- API -------------------------------------------------------------------------------------

    async def create(self, org_id: int, params: DsarParams) -> DsarRequest:
        return await self.meta.create_dsar(
            org_id,
            params.user_id,
            params.amplitude_id,
            params.start_date,
            params.end_date,
            self.clock(),
        )

    async def get(self, org_id: int, request_id: int) -> DsarRequest:
        """The org's request. Raises NotFound for unknown ids and other orgs' requests alike."""
        request = await self.meta.get_dsar(request_id)
        if request is None or request.org_id != org_id:
            raise NotFound(f"DSAR request {request_id} not found")
        return request

    def downloadable(self, request: DsarRequest) -> int:
        """How many outputs can be downloaded now (0 unless done and not expired)."""
        if request.status != "done" or request.purged or is_expired(request, self.clock()):
            return 0
        return request.outputs

    async def output(self, org_id: int, request_id: int, n: int) -> str:
        """The blob key of output ``n``. Raises NotFound if it is not (or no longer) available."""
        request = await self.get(org_id, request_id)
        if not 0 <= n < self.downloadable(request):
            raise NotFound(f"Output {n} of DSAR request {request_id} not found")
        return output_key(request_id, n)

    # -- the job ---------------------------------------------------------------------------------

    async def run(self, job: Job) -> None:
        """Run one claimed job to its end state (done or failed). Raises to have it retried."""
        request = await self.meta.get_dsar(job.ref)
        if request is None or request.status in {"done", "failed"}:
            await self.meta.complete_job(job.id)  # nothing left to do
            return
        await self.meta.start_dsar(request.id)
        try:
            outputs = await self.collect(request)
        except DsarFailed as exc:
            await self._delete_outputs(request.id, 0, request.slots)
            await self.meta.fail_dsar(job.id, request.id, str(exc))
            logger.info("DSAR %d failed: %s", request.id, exc)
            return
        try:
            # Record the bound before writing, so cleanup knows every key an attempt may have used.
            await self.meta.reserve_dsar_outputs(request.id, len(outputs))
            for n, writer in enumerate(outputs):
                data = await asyncio.to_thread(writer.finish)
                await self.blobs.put(output_key(request.id, n), data)
        finally:
            for writer in outputs:
                writer.close()
        await self.meta.finish_dsar(job.id, request.id, len(outputs), self.clock() + self.ttl)
        # An earlier attempt that saw more files left keys past the published ones.
        await self._delete_outputs(request.id, len(outputs), request.slots)
        logger.info(
            "DSAR %d done: %d events in %d files",
            request.id,
            sum(w.events for w in outputs),
            len(outputs),
        )

    async def give_up(self, job: Job, reason: str) -> None:
        """The job failed too often: fail its request."""
        request = await self.meta.get_dsar(job.ref)
        if request is not None:
            await self._delete_outputs(request.id, 0, request.slots)
        await self.meta.fail_dsar(job.id, job.ref, reason)

    async def housekeep(self) -> None:
        """Delete the files of expired requests."""
        while expired := await self.meta.expired_dsars(self.clock()):
            for request in expired:
                await self._delete_outputs(request.id, 0, max(request.outputs, request.slots))
                await self.meta.mark_dsar_purged(request.id)

    async def _delete_outputs(self, request_id: int, start: int, stop: int) -> None:
        if stop > start:
            await self.blobs.delete([output_key(request_id, n) for n in range(start, stop)])

    async def collect(self, request: DsarRequest) -> list[_Writer]:
        """The request's output files, ordered by (project, month), still to be finished (the
        caller closes them).

        Raises:
            DsarFailed: the user has more than ``max_events_per_month`` events in one month of
                one project within the range.
        """
        projects = await self.meta.org_projects(request.org_id)
        writers: dict[tuple[int, str], _Writer] = {}
        try:
            await self._collect(request, projects, writers)
        except BaseException:
            for writer in writers.values():
                writer.close()
            raise
        return [writers[key] for key in sorted(writers)]

    async def _collect(
        self,
        request: DsarRequest,
        projects: Sequence[int],
        writers: dict[tuple[int, str], _Writer],
    ) -> None:
        start, end = request.start_date, request.end_date
        for project_id in projects:
            amplitude_ids = await self._amplitude_ids(project_id, request)
            if self.seal is not None:
                # The user's open parts of every hour, whatever the dates: parts are filed by
                # server_upload_time, and event_time can lie on either side of it (a late upload,
                # or a client clock running ahead with no client_upload_time).
                # Shielded: a cancelled seal must not drop the parts it has detached.
                await asyncio.shield(self.seal(project_id, request.user_id, amplitude_ids))
                # What was sealed may link more amplitude_ids to the user id.
                amplitude_ids = await self._amplitude_ids(project_id, request)
            if not amplitude_ids:
                continue
            located = await self.meta.user_blocks(project_id, sorted(amplitude_ids))
            await self._gather(project_id, _reads(located), amplitude_ids, start, end, writers)

    async def _gather(
        self,
        project_id: int,
        reads: Iterable[tuple[str, tuple[int, int]]],
        amplitude_ids: set[int],
        start: str,
        end: str,
        writers: dict[tuple[int, str], _Writer],
    ) -> None:
        """Add the user's lines from ``reads`` to ``writers``, in storage order.

        Decompressing and selecting run in worker threads, ``SCAN_DEPTH`` reads at a time (isal
        releases the GIL, so both cores decompress); the lines are handed to the writers in read
        order on the loop, where compressing ~100 lines takes well under a millisecond.
        """
        pending: deque[asyncio.Future[dict[str, list[bytes]]]] = deque()
        try:
            for part_name, (begin, stop) in reads:
                data = await self.blobs.read(part_name, begin, stop)
                pending.append(
                    asyncio.ensure_future(
                        asyncio.to_thread(select_lines, data, amplitude_ids, start, end)
                    )
                )
                if len(pending) >= SCAN_DEPTH:
                    self._add(project_id, await pending.popleft(), writers)
            while pending:
                self._add(project_id, await pending.popleft(), writers)
        finally:
            # A failure (or cancellation) leaves scans running in their threads: wait for them,
            # so none outlives the job, and drop their results.
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)

    def _add(
        self,
        project_id: int,
        selected: Mapping[str, list[bytes]],
        writers: dict[tuple[int, str], _Writer],
    ) -> None:
        for month, lines in selected.items():
            key = (project_id, month)
            writer = writers.get(key)
            if writer is None:
                writer = writers[key] = _Writer()
            writer.add(lines)
            if writer.events > self.max_events_per_month:
                raise DsarFailed(
                    f"The user has more than {self.max_events_per_month} events in "
                    f"{month} in project {project_id}; users with more than "
                    f"{self.max_events_per_month} events per month are not supported"
                )

    async def _amplitude_ids(self, project_id: int, request: DsarRequest) -> set[int]:
        ids: set[int] = set()
        if request.user_id is not None:
            ids.update(await self.meta.amplitude_ids_for_user(project_id, request.user_id))
        if request.amplitude_id is not None:
            ids.add(request.amplitude_id)
        return ids


class _Keys(msgspec.Struct):
    """The two fields a job reads from a record; msgspec validates the rest without building it."""

    amplitude_id: Any = None
    event_time: Any = None


_decode_keys = msgspec.json.Decoder(_Keys).decode


def select_lines(
    data: bytes, amplitude_ids: set[int], start: str, end: str
) -> dict[str, list[bytes]]:
    """The lines of whole gzip members that belong to one of ``amplitude_ids`` and whose
    ``event_time`` day lies in [start, end], by month (``YYYY-MM``), in storage order."""
    selected: dict[str, list[bytes]] = {}
    for line in user_lines(data, amplitude_ids):
        try:
            keys = _decode_keys(line)
        except msgspec.DecodeError:
            continue  # not a JSON object: no record of anyone's
        aid, event_time = keys.amplitude_id, keys.event_time
        if type(aid) is not int or aid not in amplitude_ids or not isinstance(event_time, str):
            continue
        day = event_time[:10]
        if start <= day <= end:
            selected.setdefault(day[:7], []).append(line)
    return selected


def user_lines(data: bytes, amplitude_ids: set[int]) -> list[bytes]:
    """The lines of whole gzip members that may hold one of ``amplitude_ids``, in storage order.

    A block holds ~180 records and a typical user has one of them, so lines are found by searching
    the decompressed bytes for ``"amplitude_id":<id>`` instead of parsing every record. A key
    inside a JSON string has its quotes escaped and cannot match; a nested object's key or a longer
    id can, which is why callers still check the parsed record.
    """
    raw = decompress_blocks(data)
    starts: set[int] = set()
    for aid in amplitude_ids:
        needle = b'"amplitude_id":%d' % aid
        at = raw.find(needle)
        while at >= 0:
            starts.add(raw.rfind(b"\n", 0, at) + 1)
            at = raw.find(needle, at + len(needle))
    lines = []
    for begin in sorted(starts):
        stop = raw.find(b"\n", begin)
        lines.append(raw[begin : stop if stop >= 0 else len(raw)])
    return lines


def _reads(located: Iterable[UserBlocks]) -> list[tuple[str, tuple[int, int]]]:
    """Byte ranges to read, part by part in (hour, seq) order: each wanted block once (several
    amplitude_ids may share a block), adjacent blocks coalesced into one read."""
    parts: dict[str, Part] = {}
    blocks: dict[str, set[int]] = {}
    for entry in located:
        name = entry.part.key
        parts.setdefault(name, entry.part)
        blocks.setdefault(name, set()).update(entry.blocks)
    reads: list[tuple[str, tuple[int, int]]] = []
    for name in sorted(parts, key=lambda n: (parts[n].hour, parts[n].seq)):
        part = parts[name]
        ranges = [part.block_range(b) for b in sorted(blocks[name])]
        reads.extend((name, r) for r in coalesce(ranges))
    return reads


def coalesce(ranges: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """Merge touching [start, end) byte ranges (sorted by start) into reads of bounded size."""
    merged: list[tuple[int, int]] = []
    for begin, stop in ranges:
        if merged and merged[-1][1] == begin and stop - merged[-1][0] <= MAX_READ_BYTES:
            merged[-1] = (merged[-1][0], stop)
        else:
            merged.append((begin, stop))
    return merged
