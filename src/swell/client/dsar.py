"""The DSAR API client: post, poll within the budget, download and check every output.

For each user: ``POST /api/2/dsar/requests``, then status checks on the schedule of
:mod:`swell.client.budget` until the request is ``done`` or ``failed``, then every output URL is
downloaded with the same credentials (following a redirect to object storage, where the
credentials are not sent) and its gzip checked member by member before it counts. A request that
fails, or is not done within ``deadline`` seconds, is reported and left alone: never looped on.

Every request and output is recorded in ``swell-dsar.json`` in the output directory: a re-run
downloads nothing that is there, polls the requests still outstanding instead of posting them
again, and posts anew only those that failed or expired.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import os
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson

from swell.client import archive
from swell.client.budget import (
    DEFAULT_PER_HOUR,
    GET_COST,
    POST_COST,
    Budget,
    PollSchedule,
    poll_interval,
)
from swell.client.clock import Clock, SystemClock
from swell.client.errors import (
    CorruptArchive,
    Refused,
    ServerFailed,
    UsageError,
    describe_os_error,
)
from swell.client.portal import BlockingClient
from swell.client.progress import DsarObserver, NullDsar
from swell.client.regions import DSAR_PATH, may_send_credentials, normalize
from swell.client.retry import RetryPolicy
from swell.client.session import DEFAULT_TIMEOUT, Session, body_text, raise_for_credentials
from swell.client.state import DsarState, fsync_dir, locked

#: Requests a batch keeps outstanding at once.
DEFAULT_OUTSTANDING = 100
#: How long a run waits for a request before reporting it (Amplitude's SLA is 3 days).
DEFAULT_DEADLINE = 24 * 3600.0
#: Users a batch file may name.
MAX_SUBJECTS = 100_000
MAX_USER_ID = 1024
MAX_AMPLITUDE_ID = 2**63 - 1

DONE, FAILED, TIMED_OUT, EXPIRED, POSTED = "done", "failed", "timed_out", "expired", "posted"


@dataclass(frozen=True, order=True)
class Subject:
    """Whose data: a user id, an Amplitude id, or both (the request then covers both)."""

    user_id: str | None = None
    amplitude_id: int | None = None

    def __post_init__(self) -> None:
        if self.user_id is None and self.amplitude_id is None:
            raise UsageError("a DSAR request needs a user id or an Amplitude id")
        if self.user_id is not None and not 0 < len(self.user_id) <= MAX_USER_ID:
            raise UsageError(f"a user id must have 1 to {MAX_USER_ID} characters")
        if self.amplitude_id is not None and not 0 < self.amplitude_id <= MAX_AMPLITUDE_ID:
            raise UsageError("an Amplitude id must be a positive 64-bit integer")

    @property
    def label(self) -> str:
        parts = []
        if self.user_id is not None:
            parts.append(f"user {self.user_id!r}")
        if self.amplitude_id is not None:
            parts.append(f"amplitude id {self.amplitude_id}")
        return " / ".join(parts)

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {}
        if self.user_id is not None:
            body["userId"] = self.user_id
        if self.amplitude_id is not None:
            body["amplitudeId"] = self.amplitude_id
        return body


@dataclass
class DsarResult:
    """One request's outcome. ``status`` is done, failed, timed_out (still running when the
    deadline passed: a re-run polls it again) or expired (its outputs were gone)."""

    subject: Subject
    start_date: str
    end_date: str
    request_id: int | None = None
    status: str = POSTED
    reason: str | None = None
    files: list[str] = field(default_factory=list)
    events: int = 0

    @property
    def ok(self) -> bool:
        return self.status == DONE

    def as_dict(self) -> dict[str, Any]:
        return {
            "user_id": self.subject.user_id,
            "amplitude_id": self.subject.amplitude_id,
            "start_date": self.start_date,
            "end_date": self.end_date,
            "request_id": self.request_id,
            "status": self.status,
            "reason": self.reason,
            "files": self.files,
            "events": self.events,
        }


@dataclass
class _Job:
    result: DsarResult
    key: str
    wait_from: float = 0.0
    posted_at: float = 0.0
    next_poll: float = 0.0
    urls: list[str] | None = None
    months: int = 1


def parse_date(value: str | date, name: str) -> str:
    if isinstance(value, date):
        return value.isoformat()
    text = value.strip()
    try:
        if len(text) != 10:
            raise ValueError(text)
        return date.fromisoformat(text).isoformat()
    except ValueError:
        raise UsageError(f"invalid {name} {value[:40]!r}: expected YYYY-MM-DD") from None


def _dates(start_date: str | date, end_date: str | date) -> tuple[str, str]:
    first = parse_date(start_date, "start date")
    last = parse_date(end_date, "end date")
    if last < first:
        raise UsageError(f"the end date {last} is before the start date {first}")
    return first, last


def _months(first: str, last: str) -> int:
    a, b = date.fromisoformat(first), date.fromisoformat(last)
    return (b.year - a.year) * 12 + b.month - a.month + 1


def read_subjects(path: Path) -> list[Subject]:
    """The users of a CSV file with a header naming a ``user_id`` and/or ``amplitude_id``
    column; duplicates are dropped, order is kept.

    Raises:
        UsageError: no such column, a row with neither id, a bad id, or too many rows.
        LocalError: the file cannot be read.
    """
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            return _subjects(csv.DictReader(f), path)
    except UnicodeDecodeError:
        raise UsageError(f"{path} is not UTF-8 text") from None
    except csv.Error as exc:
        raise UsageError(f"{path}: not valid CSV ({exc})") from None
    except OSError as exc:
        raise describe_os_error(exc, "read") from None


def _subjects(reader: csv.DictReader[str], path: Path) -> list[Subject]:
    columns = {name.strip().lower(): name for name in reader.fieldnames or []}
    user_col, amp_col = columns.get("user_id"), columns.get("amplitude_id")
    if user_col is None and amp_col is None:
        raise UsageError(f"{path}: the header needs a user_id or amplitude_id column")
    seen: set[Subject] = set()
    subjects: list[Subject] = []
    for row in reader:
        line = reader.line_num
        user = (row.get(user_col) or "").strip() if user_col else ""
        amp = (row.get(amp_col) or "").strip() if amp_col else ""
        if not user and not amp:
            if not any((v or "").strip() for v in row.values() if isinstance(v, str)):
                continue  # a blank line
            raise UsageError(f"{path}:{line}: the row has neither a user_id nor an amplitude_id")
        amplitude_id = None
        if amp:
            if not (amp.isascii() and amp.isdigit()) or len(amp) > 19:
                raise UsageError(f"{path}:{line}: amplitude_id {amp[:40]!r} is not a number")
            amplitude_id = int(amp)
        try:
            subject = Subject(user or None, amplitude_id)
        except UsageError as exc:
            raise UsageError(f"{path}:{line}: {exc.message}") from None
        if subject not in seen:
            seen.add(subject)
            subjects.append(subject)
            if len(subjects) > MAX_SUBJECTS:
                raise UsageError(f"{path}: more than {MAX_SUBJECTS:,} users; split the file")
    if not subjects:
        raise UsageError(f"{path}: no users in the file")
    return subjects


class AsyncDsarClient:
    """DSAR API client for one org (``org_api_key``/``org_secret_key``) at ``base_url``.

    Args:
        budget_per_hour: cost this client may spend in any rolling hour (Amplitude's whole
            budget is 14,400; give a share of it when other tools use the same org).
        deadline: seconds a run waits for a request to finish before reporting it.
        max_outstanding: requests a batch keeps open at once.
        schedule: when to poll (see ``swell.client.budget.PollSchedule``).
        trusted_hosts: hosts other than the server's own that may receive the credentials with
            an output download (Amplitude's own hosts are trusted when ``base_url`` is one).
        retry, clock, timeout, transport, observer: as for the Export client.
    """

    def __init__(
        self,
        base_url: str,
        org_api_key: str,
        org_secret_key: str,
        *,
        budget_per_hour: int = DEFAULT_PER_HOUR,
        deadline: float = DEFAULT_DEADLINE,
        max_outstanding: int = DEFAULT_OUTSTANDING,
        schedule: PollSchedule | None = None,
        trusted_hosts: Iterable[str] = (),
        retry: RetryPolicy | None = None,
        clock: Clock | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
        observer: DsarObserver | None = None,
    ) -> None:
        if not org_api_key or not org_secret_key:
            raise UsageError("the DSAR API needs an org API key and secret key")
        if budget_per_hour < POST_COST + GET_COST:
            raise UsageError(f"the budget must be at least {POST_COST + GET_COST} an hour")
        if deadline <= 0:
            raise UsageError("the deadline must be positive")
        if max_outstanding < 1:
            raise UsageError("at least one request must be allowed outstanding")
        self.base_url = normalize(base_url)
        self.org_api_key = org_api_key
        self.clock = clock or SystemClock()
        self.budget = Budget(self.clock, budget_per_hour)
        self.deadline = deadline
        self.max_outstanding = max_outstanding
        self.schedule = schedule or PollSchedule()
        self.trusted_hosts = frozenset(h.lower() for h in trusted_hosts)
        self.observer: DsarObserver = observer or NullDsar()
        self.session = Session(
            self.base_url,
            (org_api_key, org_secret_key),
            retry=retry,
            clock=self.clock,
            timeout=timeout,
            transport=transport,
            connections=4,
            on_retry=self.observer.retrying,
        )
        self.url = self.session.url(DSAR_PATH)

    async def __aenter__(self) -> AsyncDsarClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.session.aclose()

    # -- one HTTP request under the budget -------------------------------------------------------

    def _rate_limited(self, retry_after: float | None) -> None:
        self.budget.block(retry_after if retry_after is not None else 60.0)

    async def _send(self, method: str, url: str, cost: int, **kwargs: Any) -> httpx.Response:
        async def spend() -> None:
            await self.budget.spend(cost)

        response = await self.session.send(
            method, url, before=spend, on_rate_limited=self._rate_limited, **kwargs
        )
        raise_for_credentials(
            response, "--org-api-key and --org-secret-key (an org's keys, not a project's)"
        )
        return response

    async def status(self, request_id: int) -> dict[str, Any]:
        """A request's status as the server reports it.

        Raises:
            Refused: no such request for this org. CredentialsRefused, Unreachable, ServerFailed.
        """
        response = await self._send("GET", f"{self.url}/{request_id}", GET_COST)
        if response.status_code == 404:
            raise Refused(f"DSAR request {request_id} not found")
        return self._json(response, f"the status of request {request_id}")

    def _json(self, response: httpx.Response, what: str) -> dict[str, Any]:
        if response.status_code not in (200, 202):
            raise ServerFailed(
                f"unexpected HTTP {response.status_code} for {what}: {body_text(response)}"
            )
        try:
            value = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            value = None
        if not isinstance(value, dict):
            raise ServerFailed(f"{what} is not a JSON object: {body_text(response)}")
        return value

    # -- requests --------------------------------------------------------------------------------

    async def request(
        self,
        out_dir: str | Path,
        *,
        user_id: str | None = None,
        amplitude_id: int | None = None,
        start_date: str | date,
        end_date: str | date,
    ) -> DsarResult:
        """Everything about one user from ``start_date`` to ``end_date``, written to
        ``out_dir`` as ``<requestId>-<n>.json.gz``. See :meth:`batch`."""
        subject = Subject(user_id, amplitude_id)
        (result,) = await self.batch(out_dir, [subject], start_date, end_date)
        return result

    async def batch(
        self,
        out_dir: str | Path,
        subjects: Sequence[Subject],
        start_date: str | date,
        end_date: str | date,
    ) -> list[DsarResult]:
        """One request per subject, as many outstanding at once as allowed and affordable;
        returns their results in the order given. Results that are not ``done`` are reported,
        not raised.

        Raises:
            UsageError: bad dates, or ``out_dir`` holds another server's or org's requests.
            LocalError: ``out_dir`` cannot be written. CredentialsRefused, Unreachable,
                ServerFailed: the run cannot go on (what is done so far is kept and recorded).
        """
        first, last = _dates(start_date, end_date)
        directory = Path(out_dir)
        source = {"server": self.base_url, "org_api_key": self.org_api_key}
        with locked(directory, DsarState.LOCK):
            state = DsarState.open(directory, source)
            run = _Run(self, state, directory, subjects, first, last)
            await run.go()
            return [job.result for job in run.jobs]


class _Run:
    """One batch: the jobs, the queue of posts, and the loop that spends the budget."""

    def __init__(
        self,
        client: AsyncDsarClient,
        state: DsarState,
        directory: Path,
        subjects: Sequence[Subject],
        first: str,
        last: str,
    ) -> None:
        self.client = client
        self.clock = client.clock
        self.state = state
        self.directory = directory
        self.started = self.clock.now()
        self.jobs: list[_Job] = []
        self.pending: deque[_Job] = deque()
        self.outstanding: list[_Job] = []
        self.finished = 0
        months = _months(first, last)
        for subject in subjects:
            key = f"{subject.user_id or ''}|{subject.amplitude_id or ''}|{first}|{last}"
            job = _Job(DsarResult(subject, first, last), key, self.started, months=months)
            self.jobs.append(job)
            entry = state.requests.get(key, {})
            status = entry.get("status")
            request_id = entry.get("request_id")
            if status == DONE and all(_present(directory / f) for f in entry.get("files", [])):
                job.result.request_id = request_id
                job.result.status = DONE
                job.result.files = list(entry.get("files", []))
                job.result.events = int(entry.get("events", 0))
                self.finished += 1
            elif status in (POSTED, TIMED_OUT) and isinstance(request_id, int):
                job.result.request_id = request_id
                job.posted_at = self.started
                job.next_poll = self.started  # check at once: it may have finished meanwhile
                self.outstanding.append(job)
            else:
                self.pending.append(job)

    def _save(self, job: _Job) -> None:
        r = job.result
        self.state.requests[job.key] = {
            "user_id": r.subject.user_id,
            "amplitude_id": r.subject.amplitude_id,
            "start_date": r.start_date,
            "end_date": r.end_date,
            "request_id": r.request_id,
            "status": r.status,
            "reason": r.reason,
            "files": r.files,
            "events": r.events,
            "updated": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        self.state.save()

    def _counts(self) -> None:
        self.client.observer.counts(
            total=len(self.jobs),
            outstanding=len(self.outstanding),
            finished=self.finished,
            budget_left=self.client.budget.left(),
        )

    def _resolve(self, job: _Job, status: str, reason: str | None = None) -> None:
        job.result.status = status
        job.result.reason = reason
        if job in self.outstanding:
            self.outstanding.remove(job)
        self.finished += 1
        self._save(job)
        what = {
            DONE: "done",
            FAILED: "failed",
            TIMED_OUT: "not done by the deadline",
            EXPIRED: "outputs expired",
        }[status]
        detail = f": {reason}" if reason else ""
        if status == DONE:
            detail = f": {len(job.result.files)} files, {job.result.events:,} events"
        self.client.observer.event(
            f"request {job.result.request_id} ({job.result.subject.label}) {what}{detail}"
        )
        self._counts()

    async def go(self) -> None:
        client = self.client
        self._counts()
        while self.pending or self.outstanding:
            now = self.clock.now()
            for job in list(self.outstanding):
                if job.urls is None and now >= job.wait_from + client.deadline:
                    self._resolve(
                        job,
                        TIMED_OUT,
                        f"still running after {client.deadline:.0f} s; run again to keep waiting",
                    )
            ready = [j for j in self.outstanding if j.urls is not None]
            if ready:
                await self._download(ready[0])
                continue
            due = [j for j in self.outstanding if j.next_poll <= now]
            if due:
                await self._poll(min(due, key=lambda j: j.next_poll))
                continue
            if self.pending and len(self.outstanding) < client.max_outstanding:
                await self._post(self.pending.popleft())
                continue
            if not self.outstanding:
                break
            wake = min(
                min(j.next_poll for j in self.outstanding),
                min(j.wait_from + client.deadline for j in self.outstanding),
            )
            await self.clock.sleep(max(wake - now, 0.0))

    async def _post(self, job: _Job) -> None:
        client = self.client
        r = job.result
        body = {**r.subject.body(), "startDate": r.start_date, "endDate": r.end_date}
        response = await client._send("POST", client.url, POST_COST, json=body)
        if response.status_code in (400, 404, 413, 422):
            r.request_id = None
            self._resolve(job, FAILED, f"refused: {body_text(response)}")
            return
        value = client._json(response, f"the request for {r.subject.label}")
        request_id = value.get("requestId")
        if not isinstance(request_id, int) or isinstance(request_id, bool):
            raise ServerFailed(f"the DSAR API answered without a requestId: {body_text(response)}")
        r.request_id = request_id
        r.status = POSTED
        r.reason = None
        now = self.clock.now()
        job.posted_at = now
        job.wait_from = max(job.wait_from, now)
        job.next_poll = now + client.schedule.first
        self.outstanding.append(job)
        self._save(job)
        client.observer.event(f"posted request {request_id} for {r.subject.label}")
        self._counts()

    def _reserved(self) -> int:
        """Cost the next hour must keep for posts and downloads (the seed's arithmetic)."""
        downloads = sum(2 * j.months for j in self.outstanding)
        posts = POST_COST * min(len(self.pending), self.client.max_outstanding)
        return downloads + posts

    async def _poll(self, job: _Job) -> None:
        client = self.client
        r = job.result
        response = await client._send("GET", f"{client.url}/{r.request_id}", GET_COST)
        now = self.clock.now()
        if response.status_code == 404:
            self._resolve(job, FAILED, f"request {r.request_id} is unknown to the server")
            return
        value = client._json(response, f"the status of request {r.request_id}")
        status = value.get("status")
        if status == "done":
            urls = value.get("urls") or []
            if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
                raise ServerFailed(f"request {r.request_id}: urls is not a list of strings")
            job.urls = list(urls)
            return
        if status == "failed":
            reason = value.get("failReason")
            self._resolve(job, FAILED, str(reason) if reason else "failed (no reason given)")
            return
        job.next_poll = now + poll_interval(
            client.schedule,
            now - job.posted_at,
            per_hour=client.budget.per_hour,
            outstanding=len(self.outstanding),
            reserved=self._reserved(),
        )
        self._counts()

    async def _download(self, job: _Job) -> None:
        client = self.client
        r = job.result
        urls = job.urls or []
        files: list[str] = []
        events = 0
        for index, url in enumerate(urls):
            absolute = str(httpx.URL(client.url).join(url))
            if not may_send_credentials(absolute, client.base_url, client.trusted_hosts):
                host = httpx.URL(absolute).host
                self._resolve(
                    job,
                    FAILED,
                    f"output URL host {host} is not the server's; the credentials are not sent "
                    f"there (trust it with --trust-host {host})",
                )
                return
            name = f"{r.request_id}-{index}.json.gz"
            try:
                count = await self._fetch_output(absolute, self.directory / name)
            except _Gone:
                job.urls = None
                self._resolve(job, EXPIRED, "an output is gone (expired?); run again to re-request")
                return
            files.append(name)
            events += count
        r.files = files
        r.events = events
        job.urls = None
        self._resolve(job, DONE)

    async def _fetch_output(self, url: str, target: Path) -> int:
        """Download one output to ``target`` and check it; returns its line count."""
        part = target.with_name(f".{target.name}.part")
        for _ in range(3):
            async with self.client.session.stream(
                "GET",
                url,
                before=lambda: self.client.budget.spend(GET_COST),
                on_rate_limited=self.client._rate_limited,
                follow_redirects=True,
            ) as response:
                raise_for_credentials(response, "--org-api-key and --org-secret-key")
                if response.status_code in (404, 410):
                    raise _Gone()
                if response.status_code != 200:
                    await response.aread()
                    raise ServerFailed(
                        f"unexpected HTTP {response.status_code} for {url}: {body_text(response)}"
                    )
                try:
                    with part.open("wb") as f:
                        async for chunk in response.aiter_bytes():
                            f.write(chunk)
                except OSError as exc:
                    raise describe_os_error(exc, f"write {target.name}") from None
                except httpx.TransportError:
                    continue
            try:
                count = await asyncio.to_thread(_check_gzip, part)
            except CorruptArchive as exc:
                self.client.observer.event(f"{target.name}: {exc.message}; downloading it again")
                continue
            try:
                part.replace(target)
                fsync_dir(target.parent)
            except OSError as exc:
                raise describe_os_error(exc, f"write {target.name}") from None
            return count
        with contextlib.suppress(OSError):
            part.unlink()
        raise ServerFailed(f"{url}: three downloads in a row failed their checks")


class _Gone(Exception):
    """An output URL answered 404: the outputs expired or were removed."""


def _check_gzip(path: Path) -> int:
    """Check every gzip member of a DSAR output; returns its line count. fsyncs the file."""
    lines = 0
    last = b"\n"
    with path.open("rb") as f:

        def chunks() -> Iterable[bytes]:
            while chunk := f.read(archive.CHUNK):
                yield chunk

        for out in archive.gunzip(iter(chunks()), path.name.lstrip(".").removesuffix(".part")):
            lines += out.count(b"\n")
            last = out[-1:]
        os.fsync(f.fileno())
    return lines + (last != b"\n")


def _present(path: Path) -> bool:
    return path.is_file()


class DsarClient(BlockingClient[AsyncDsarClient]):
    """The blocking face of :class:`AsyncDsarClient` (same arguments)."""

    def __init__(
        self, base_url: str, org_api_key: str, org_secret_key: str, **options: Any
    ) -> None:
        super().__init__(AsyncDsarClient, base_url, org_api_key, org_secret_key, **options)

    def status(self, request_id: int) -> dict[str, Any]:
        return self._portal.call(self._client.status, request_id)

    def request(
        self,
        out_dir: str | Path,
        *,
        user_id: str | None = None,
        amplitude_id: int | None = None,
        start_date: str | date,
        end_date: str | date,
    ) -> DsarResult:
        return self._portal.call(
            self._client.request,
            out_dir,
            user_id=user_id,
            amplitude_id=amplitude_id,
            start_date=start_date,
            end_date=end_date,
        )

    def batch(
        self,
        out_dir: str | Path,
        subjects: Sequence[Subject],
        start_date: str | date,
        end_date: str | date,
    ) -> list[DsarResult]:
        return self._portal.call(self._client.batch, out_dir, subjects, start_date, end_date)


__all__ = ["AsyncDsarClient", "DsarClient", "DsarResult", "Subject", "read_subjects"]
