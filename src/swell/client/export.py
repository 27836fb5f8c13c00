"""The Export API client: a range in windows, several in flight, every archive checked.

A range is cut into windows of ``window_hours``; up to ``parallel`` are downloaded at once. Each
window's archive is downloaded to a partial file, resumed with ``Range``/``If-Range`` after a
dropped connection (or a killed process) when the server offers it (``Accept-Ranges: bytes`` and
an ``ETag``, as swell does; Amplitude does not, so there a window restarts), and checked end to
end (:mod:`swell.client.archive`) before it counts as done. Then:

* a 400 "too large" (the 4 GB limit) or a 504 that outlasts the retries splits the window in two,
  down to single hours;
* a 404 ``Raw data files were not found.`` is a window without data, not an error;
* connection errors, 429 (after ``Retry-After``) and 5xx are retried with backoff
  (:mod:`swell.client.retry`).

:meth:`AsyncExportClient.export` yields the records; :meth:`AsyncExportClient.export_to` writes
one file per window (the archive, its NDJSON as one ``.json.gz``, or Parquet) and a state file, so
the next run fetches only what is missing. Windows partition the range's hours exactly, so no
record is fetched twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import tempfile
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import httpx
import orjson

from swell.client import archive
from swell.client.clock import Clock, SystemClock
from swell.client.errors import (
    ClientError,
    CorruptArchive,
    CredentialsRefused,
    LocalError,
    Refused,
    ServerFailed,
    TooLarge,
    Unreachable,
    UsageError,
    describe_os_error,
)
from swell.client.portal import BlockingClient
from swell.client.progress import ExportObserver, NullExport, WindowDone
from swell.client.regions import EXPORT_PATH, normalize
from swell.client.retry import RetryPolicy, describe_transport_error, retry_after, should_retry
from swell.client.session import DEFAULT_TIMEOUT, Session, body_text
from swell.client.state import ExportState, fsync_dir, locked
from swell.client.windows import Window, check_range, hour_of, plan

Output = Literal["zip", "ndjson", "parquet"]
OUTPUTS: tuple[Output, ...] = ("zip", "ndjson", "parquet")
#: The text of Amplitude's 404 for a range without data, which ETL clients match.
NO_DATA = "raw data files were not found"
#: Partial downloads live here inside the output directory.
PARTIAL_DIR = ".swell-partial"
#: Observers hear about received bytes at most once per this many.
REPORT_BYTES = 1 << 20
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+)$")
_SUFFIX: dict[Output, str] = {"zip": ".zip", "ndjson": ".json.gz", "parquet": ".parquet"}


class _Split(Exception):
    """The window must be fetched as two halves (too large, or it keeps timing out)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _NoData(Exception):
    """A 404 "Raw data files were not found.": the window has no data."""


@dataclass
class _Partial:
    """A download in progress: its ETag (None when the server cannot resume) and full size."""

    etag: str | None = None
    length: int | None = None


@dataclass
class WindowFailure:
    window: Window
    error: ClientError


@dataclass
class ExportSummary:
    """What :meth:`AsyncExportClient.export_to` did. ``failed`` windows are retried next run."""

    windows: int = 0
    downloaded: int = 0
    empty: int = 0
    skipped: int = 0
    #: Windows fetched before their hours settled: written, and fetched again next run.
    provisional: int = 0
    events: int = 0
    received_bytes: int = 0
    files: list[str] = field(default_factory=list)
    failed: list[WindowFailure] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "windows": self.windows,
            "downloaded": self.downloaded,
            "empty": self.empty,
            "skipped": self.skipped,
            "provisional": self.provisional,
            "failed": [f"{f.window.label}: {f.error.message}" for f in self.failed],
            "events": self.events,
            "received_bytes": self.received_bytes,
            "files": len(self.files),
            "seconds": round(self.seconds, 3),
        }


class AsyncExportClient:
    """Export API client for one project (``api_key``/``secret_key``) at ``base_url``.

    Args:
        base_url: ``https://amplitude.com``, ``https://analytics.eu.amplitude.com``
            (``swell.client.REGIONS``) or any swell server.
        window_hours: hours per request (1 to 8760).
        parallel: windows in flight at once.
        retry: attempts and backoff for each request.
        clock: time and sleep (tests inject a fake one).
        timeout: seconds to wait for any byte of an answer.
        transport: an httpx transport (tests use ``httpx.MockTransport``).
        observer: told of progress (``swell.client.progress``).
        verify_attempts: downloads of a window whose archive fails its checks before giving up.
        settle_hours: hours after a window's last hour ends before ``export_to`` counts it as
            done. A window fetched sooner may still gain events (the current hour is still being
            written; Amplitude makes an hour exportable up to 2 hours after it ends), so it is
            written but fetched again by the next run.
        now: the current time (tests pass a fixed one).
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        secret_key: str,
        *,
        window_hours: int = 24,
        parallel: int = 4,
        retry: RetryPolicy | None = None,
        clock: Clock | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
        observer: ExportObserver | None = None,
        verify_attempts: int = 3,
        settle_hours: int = 3,
        now: Callable[[], datetime] | None = None,
    ) -> None:
        if not api_key or not secret_key:
            raise UsageError("the Export API needs a project API key and secret key")
        if not 1 <= parallel <= 64:
            raise UsageError(f"parallel must be 1 to 64, not {parallel}")
        check_range(0, 0, window_hours)
        self.base_url = normalize(base_url)
        self.api_key = api_key
        self.window_hours = window_hours
        self.parallel = parallel
        self.retry = retry or RetryPolicy()
        self.clock = clock or SystemClock()
        self.observer: ExportObserver = observer or NullExport()
        self.verify_attempts = max(1, verify_attempts)
        if settle_hours < 0:
            raise UsageError("settle_hours must be 0 or more")
        self.settle_hours = settle_hours
        self._now = now or _utcnow
        self.session = Session(
            self.base_url,
            (api_key, secret_key),
            retry=self.retry,
            clock=self.clock,
            timeout=timeout,
            transport=transport,
            connections=parallel,
        )
        self.url = self.session.url(EXPORT_PATH)

    async def __aenter__(self) -> AsyncExportClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self.session.aclose()

    # -- records ---------------------------------------------------------------------------------

    async def export(
        self, start: str | datetime, end: str | datetime
    ) -> AsyncIterator[dict[str, Any]]:
        """Every record of hours ``start`` to ``end`` (both included), window by window in order;
        a window's records come only after its whole archive passed its checks."""
        async for batch in self.export_batches(start, end):
            for record in batch:
                yield record

    async def export_batches(
        self, start: str | datetime, end: str | datetime
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """As :meth:`export`, in lists of records (cheaper per record)."""
        first, last = _range(start, end)
        windows = deque(plan(first, last, self.window_hours))
        with tempfile.TemporaryDirectory(prefix="swell-export-") as tmp:
            ahead: deque[asyncio.Task[list[Path]]] = deque()

            def launch() -> None:
                if windows:
                    task = self._fetch_verified(windows.popleft(), Path(tmp))
                    ahead.append(asyncio.ensure_future(task))

            for _ in range(self.parallel):
                launch()
            try:
                while ahead:
                    paths = await ahead.popleft()
                    launch()
                    for path in paths:
                        lines = archive.iter_lines(path)
                        while (batch := await asyncio.to_thread(_parse_next, lines)) is not None:
                            yield batch
                        path.unlink()
            finally:
                for task in ahead:
                    task.cancel()
                for task in ahead:
                    with contextlib.suppress(BaseException):
                        await task

    async def _fetch_verified(self, window: Window, directory: Path) -> list[Path]:
        """The window's checked archive files (none if it has no data), splitting as needed."""
        path = directory / f"{window.label}.zip"
        partial = _Partial()
        try:
            for _ in range(self.verify_attempts):
                if not await self._download(window, path, partial, lambda _p: None):
                    return []
                try:
                    await asyncio.to_thread(archive.verify, path)
                except CorruptArchive as exc:
                    self._discard(path, partial, exc)
                    continue
                return [path]
            raise CorruptArchive(f"{window.label}: every download failed its checks")
        except _Split as split:
            path.unlink(missing_ok=True)
            halves = self._halves(window, split)
            return [p for half in halves for p in await self._fetch_verified(half, directory)]

    # -- files -----------------------------------------------------------------------------------

    async def export_to(
        self,
        out_dir: str | Path,
        start: str | datetime,
        end: str | datetime,
        *,
        output: Output = "zip",
    ) -> ExportSummary:
        """Write hours ``start`` to ``end`` into ``out_dir``: per window ``<label>.zip`` (the
        archive), ``<label>.json.gz`` (``output="ndjson"``: its records as one gzip NDJSON) or
        ``<label>.parquet``, plus ``swell-export.json``, the state that makes the next run skip
        every window already done (without contacting the server if nothing is left).

        Raises:
            UsageError: bad arguments, or ``out_dir`` holds another server's or key's export.
            LocalError: the directory cannot be written (or another run holds it).
            Unreachable, CredentialsRefused, Refused, ServerFailed: the run cannot go on;
                windows finished before are kept. Failures of single windows are returned in
                ``ExportSummary.failed`` instead, after every other window is done.
        """
        if output not in OUTPUTS:
            raise UsageError(f"unknown output {output!r}: use one of {', '.join(OUTPUTS)}")
        if output == "parquet":
            from swell.client import parquet

            parquet.require()
        first, last = _range(start, end)
        directory = Path(out_dir)
        started = time.monotonic()
        summary = ExportSummary()
        source = {"server": self.base_url, "api_key": self.api_key, "output": output}
        with locked(directory, ExportState.LOCK):
            state = ExportState.open(directory, source)
            todo, skipped = self._todo(state, directory, first, last, output)
            summary.skipped = skipped
            self.observer.planned(list(todo), skipped)
            if todo:
                (directory / PARTIAL_DIR).mkdir(exist_ok=True)
                await _workers(
                    self.parallel, lambda: self._work(todo, state, directory, output, summary)
                )
        summary.seconds = time.monotonic() - started
        summary.windows = summary.downloaded + summary.empty + len(summary.failed)
        return summary

    def _todo(
        self, state: ExportState, directory: Path, first: int, last: int, output: Output
    ) -> tuple[deque[Window], int]:
        """Windows still to fetch in [first, last], and how many done ones cover part of it.

        Windows being downloaded (``partial``) or fetched before their hours were complete
        (``provisional``) are fetched again with the same bounds when the range holds them
        whole; otherwise they are dropped, files and all, and their hours planned afresh.
        """
        done: list[Window] = []
        again: list[Window] = []
        wanted = Window(first, last)
        for label, entry in list(state.windows.items()):
            try:
                window = Window.from_label(label)
            except (ValueError, ClientError):
                raise LocalError(f"{state.path} names a window {label!r} it cannot read") from None
            status = entry.get("status")
            if status == "done":
                if all(_present(directory / name) for name in entry.get("files", [])):
                    done.append(window)
                else:  # a file was removed: fetch the window again
                    del state.windows[label]
            elif window.overlaps(wanted):
                if first <= window.start and window.end <= last:
                    again.append(window)
                else:
                    _remove(directory / PARTIAL_DIR / f"{label}.zip")
                    _remove(directory / f"{label}{_SUFFIX[output]}")
                    del state.windows[label]
        skipped = sum(1 for w in done if w.overlaps(wanted))
        todo = sorted(again + plan(first, last, self.window_hours, done + again))
        return deque(todo), skipped

    async def _work(
        self,
        todo: deque[Window],
        state: ExportState,
        directory: Path,
        output: Output,
        summary: ExportSummary,
    ) -> None:
        while todo:
            window = todo.popleft()
            try:
                done = await self._window_to_files(window, state, directory, output)
            except _Split as split:
                first, second = self._halves(window, split)
                todo.appendleft(second)
                todo.appendleft(first)
                continue
            except (CorruptArchive, TooLarge) as exc:
                # This window alone: the others go on, and the next run tries it again.
                summary.failed.append(WindowFailure(window, exc))
                self.observer.failed(window, exc.message)
                continue
            summary.received_bytes += done.received
            summary.events += done.events
            summary.files.extend(done.files)
            if done.empty:
                summary.empty += 1
            else:
                summary.downloaded += 1
            if not done.final:
                summary.provisional += 1
            self.observer.finished(done)

    async def _window_to_files(
        self, window: Window, state: ExportState, directory: Path, output: Output
    ) -> WindowDone:
        label = window.label
        part = directory / PARTIAL_DIR / f"{label}.zip"
        entry = state.windows.get(label, {})
        partial = _Partial(entry.get("etag"), entry.get("length"))
        if entry.get("status") != "partial" or not partial.etag:
            part.unlink(missing_ok=True)
            partial = _Partial()
        received = 0

        def started(p: _Partial) -> None:
            state.windows[label] = {
                "status": "partial",
                "part": f"{PARTIAL_DIR}/{part.name}",
                "etag": p.etag,
                "length": p.length,
            }
            state.save()

        try:
            for _ in range(self.verify_attempts):
                before = _size(part)
                found = await self._download(window, part, partial, started)
                received += max(0, _size(part) - (before if partial.etag else 0))
                status = "done" if self._settled(window) else "provisional"
                if not found:
                    _remove(directory / f"{label}{_SUFFIX[output]}")  # a provisional file
                    state.windows[label] = {"status": status, "files": [], "events": 0, "bytes": 0}
                    state.save()
                    return WindowDone(window, (), 0, received, 0, status == "done")
                size = _size(part)
                try:
                    files, checked = await asyncio.to_thread(
                        _finish, part, directory, label, output
                    )
                except CorruptArchive as exc:
                    self._discard(part, partial, exc)
                    state.windows.pop(label, None)
                    state.save()
                    continue
                except OSError as exc:
                    raise describe_os_error(exc, f"write the files of window {label}") from None
                state.windows[label] = {
                    "status": status,
                    "files": files,
                    "events": checked.events,
                    "bytes": size,
                }
                state.save()
                return WindowDone(
                    window, tuple(files), checked.events, received, size, status == "done"
                )
        except _Split:
            part.unlink(missing_ok=True)
            if state.windows.pop(label, None) is not None:
                state.save()
            raise
        raise CorruptArchive(
            f"{label}: {self.verify_attempts} downloads all failed their integrity checks"
        )

    def _settled(self, window: Window) -> bool:
        """Whether every hour of ``window`` ended at least ``settle_hours`` ago."""
        return window.end + 1 + self.settle_hours <= hour_of(self._now())

    def _discard(self, path: Path, partial: _Partial, exc: CorruptArchive) -> None:
        path.unlink(missing_ok=True)
        partial.etag = partial.length = None
        self.observer.retrying(f"{exc.message}; downloading it again", 0.0)

    def _halves(self, window: Window, split: _Split) -> tuple[Window, Window]:
        halves = window.halves()
        self.observer.split(window, halves, split.reason)
        return halves

    # -- one window's archive --------------------------------------------------------------------

    async def _download(
        self,
        window: Window,
        path: Path,
        partial: _Partial,
        started: Callable[[_Partial], None],
    ) -> bool:
        """Download ``window``'s archive to ``path`` (resuming what is there when ``partial``
        has an ETag); False for a window without data.

        Raises:
            _Split: the window is too large for one request, or keeps timing out (504).
            Unreachable, ServerFailed: retries ran out; CredentialsRefused, Refused: no retry
                helps. LocalError: ``path`` cannot be written.
        """
        failures = 0
        last = ""
        all_connection = True
        only_504 = True
        while True:
            offset = _size(path) if partial.etag else 0
            progress_from = offset
            headers = {"Accept-Encoding": "identity"}
            if offset:
                headers["Range"] = f"bytes={offset}-"
                headers["If-Range"] = partial.etag or ""
            wait_for: float | None = None
            try:
                request = self.session.http.build_request(
                    "GET", self.url, params=window.params, headers=headers
                )
                response = await self.session.http.send(
                    request, auth=self.session.auth, stream=True
                )
                try:
                    status = response.status_code
                    if status in (200, 206):
                        if await self._receive(window, response, path, partial, offset, started):
                            return True
                        last = "the archive changed while resuming"
                        only_504 = False
                    elif status == 416:
                        if _unsatisfied_length(response) == offset and offset:
                            return True  # the previous run had received every byte
                        _remove(path)
                        partial.etag = partial.length = None
                        continue
                    else:
                        await response.aread()
                        try:
                            self._answer(window, response)  # raises unless worth a retry
                        except _NoData:
                            _remove(path)
                            return False
                        wait_for = retry_after(response)
                        last = f"HTTP {status}"
                        all_connection = False
                        only_504 = only_504 and status == 504
                finally:
                    await response.aclose()
            except httpx.TransportError as exc:
                last = describe_transport_error(exc)
                only_504 = False
            except OSError as exc:
                raise describe_os_error(exc, f"write {path.name}") from None
            if partial.etag and _size(path) > progress_from:
                failures = 0  # resumable progress: a flaky link may take many attempts
            failures += 1
            if failures >= self.retry.attempts:
                if only_504 and window.hours > 1:
                    raise _Split(f"timed out (HTTP 504) {failures} times")
                attempts = f"after {failures} attempt{'s' * (failures != 1)}"
                if all_connection:
                    raise Unreachable(f"server unreachable: {self.base_url}: {last} ({attempts})")
                raise ServerFailed(f"{window.label}: the server kept failing: {last} ({attempts})")
            if wait_for is not None and wait_for > self.retry.max_retry_after:
                raise ServerFailed(f"{window.label}: the server asks to wait {wait_for:.0f} s")
            delay = self.retry.wait(failures, wait_for)
            self.observer.retrying(f"{window.label}: {last}", delay)
            await self.clock.sleep(delay)

    def _answer(self, window: Window, response: httpx.Response) -> None:
        """Raise for an answer that is final; return for one worth retrying."""
        status = response.status_code
        if status == 404 and NO_DATA in response.text.lower():
            raise _NoData()
        if status in (401, 403):
            raise CredentialsRefused(
                f"{self.base_url} refused the project credentials (HTTP {status}): check "
                "--api-key and --secret-key (or AMPLITUDE_API_KEY/AMPLITUDE_SECRET_KEY) and the "
                "region"
            )
        if status == 400 and "too large" in response.text.lower():
            if window.hours == 1:
                raise TooLarge(
                    f"{window.label}: one hour is over the server's export size limit "
                    f"({body_text(response, 160)})"
                )
            raise _Split("too large for one request")
        if should_retry(status):
            return
        if status == 404:
            raise Refused(
                f"{self.url} answered 404 ({body_text(response, 120)}): is "
                f"{self.base_url} the API's base URL?"
            )
        if status == 400:
            raise Refused(f"{window.label}: the server refused it: {body_text(response)}")
        raise ServerFailed(
            f"{window.label}: unexpected HTTP {status} from the server: {body_text(response)}"
        )

    async def _receive(
        self,
        window: Window,
        response: httpx.Response,
        path: Path,
        partial: _Partial,
        offset: int,
        started: Callable[[_Partial], None],
    ) -> bool:
        """Write a 200/206 body to ``path``; False when a 206 does not continue the file."""
        etag = response.headers.get("etag")
        resumable = bool(etag) and response.headers.get("accept-ranges", "").lower() == "bytes"
        length = _int(response.headers.get("content-length"))
        if response.status_code == 206:
            match = _CONTENT_RANGE.match(response.headers.get("content-range", ""))
            if match is None or int(match.group(1)) != offset or etag != partial.etag:
                _remove(path)
                partial.etag = partial.length = None
                return False
            total: int | None = int(match.group(3))
            mode = "ab"
        else:
            total = length
            offset = 0
            mode = "wb"
        partial.etag = etag if resumable else None
        partial.length = total
        started(partial)
        pending = 0
        with path.open(mode) as f:
            async for chunk in response.aiter_raw():
                f.write(chunk)
                pending += len(chunk)
                if pending >= REPORT_BYTES:
                    self.observer.received(window, pending, total)
                    pending = 0
        if pending:
            self.observer.received(window, pending, total)
        if total is not None and _size(path) != total:
            raise httpx.ReadError(f"got {_size(path)} of {total} bytes")
        return True


def _finish(
    part: Path, directory: Path, label: str, output: Output
) -> tuple[list[str], archive.Checked]:
    """Check a downloaded archive and put the window's file in place (in a worker thread).

    Raises:
        CorruptArchive: the archive failed a check (nothing is written).
        OSError: writing failed.
    """
    name = f"{label}{_SUFFIX[output]}"
    final = directory / name
    if output == "zip":
        checked = archive.verify(part)
        _fsync(part)
        part.replace(final)
    else:
        tmp = part.with_name(f"{name}.part")
        try:
            if output == "ndjson":
                with tmp.open("wb") as f:
                    checked = archive.verify(part, gz_sink=f.write)
                    f.flush()
                    os.fsync(f.fileno())
            else:
                from swell.client import parquet

                checked = parquet.convert(part, tmp)
                _fsync(tmp)
            tmp.replace(final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        part.unlink()
    fsync_dir(directory)
    return [name], checked


def _parse_next(lines: Iterator[list[bytes]]) -> list[dict[str, Any]] | None:
    """The next batch of lines, parsed (None at the end)."""
    batch = next(lines, None)
    if batch is None:
        return None
    try:
        return [orjson.loads(line) for line in batch]
    except orjson.JSONDecodeError as exc:
        raise CorruptArchive(f"a line is not JSON ({exc})") from None


def _range(start: str | datetime, end: str | datetime) -> tuple[int, int]:
    first = hour_of(start, name="start")
    last = hour_of(end, end=True, name="end")
    check_range(first, last, 1)
    return first, last


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _remove(path: Path) -> None:
    path.unlink(missing_ok=True)


def _present(path: Path) -> bool:
    return path.is_file()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _int(value: str | None) -> int | None:
    if value is None or not value.isascii() or not value.isdigit() or len(value) > 18:
        return None
    return int(value)


def _unsatisfied_length(response: httpx.Response) -> int | None:
    raw = response.headers.get("content-range", "")
    if raw.startswith("bytes */"):
        return _int(raw[len("bytes */") :])
    return None


async def _workers(count: int, work: Callable[[], Awaitable[None]]) -> None:
    """Run ``count`` copies of ``work``; the first exception cancels the rest and is raised."""
    tasks = [asyncio.ensure_future(work()) for _ in range(count)]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            if task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task


class ExportClient(BlockingClient[AsyncExportClient]):
    """The blocking face of :class:`AsyncExportClient` (same arguments), for scripts.

    It runs the async client on its own event loop in a background thread, so downloads go on
    while the caller handles records. Use it as a context manager, or call :meth:`close`.
    """

    def __init__(self, base_url: str, api_key: str, secret_key: str, **options: Any) -> None:
        super().__init__(AsyncExportClient, base_url, api_key, secret_key, **options)

    def export(self, start: str | datetime, end: str | datetime) -> Iterator[dict[str, Any]]:
        """Every record of hours ``start`` to ``end`` (see :meth:`AsyncExportClient.export`)."""
        for batch in self._portal.iterate(self._client.export_batches(start, end)):
            yield from batch

    def export_to(
        self,
        out_dir: str | Path,
        start: str | datetime,
        end: str | datetime,
        *,
        output: Output = "zip",
    ) -> ExportSummary:
        """See :meth:`AsyncExportClient.export_to`."""
        return self._portal.call(self._client.export_to, out_dir, start, end, output=output)


__all__ = [
    "OUTPUTS",
    "AsyncExportClient",
    "ExportClient",
    "ExportSummary",
    "Output",
    "WindowFailure",
]
