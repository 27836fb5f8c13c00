"""S3-compatible blob store (AWS S3, SeaweedFS, MinIO, ...), over obstore.

``s3://BUCKET[/PREFIX]?endpoint=http://127.0.0.1:8333&region=us-east-1``: every key is stored as
``PREFIX/key`` in BUCKET. Credentials come from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and
AWS_SESSION_TOKEN, if set), never from the URL. The parameters are listed in
docs/configuration.md ("The S3 blob store"); :class:`S3Options` holds them.

How the Protocol's promises are kept (backends/base.py):

* A put up to ``multipart_threshold`` bytes is one PUT, which S3 applies atomically. A larger put
  is a multipart upload: its object appears only when the upload completes, and an upload that
  fails is aborted (obstore aborts it), so no half object is ever visible. The put runs shielded
  from cancellation: a caller that gives up (a shutdown, a client gone) leaves the upload to
  finish or abort rather than abandoning it half-way.
* Reads are ranged GETs. A reader (an export) fetches windows of ``read_window`` bytes and keeps
  ``read_ahead`` more windows in flight while the caller consumes the current one, so the object
  store's latency overlaps with sending; each window is one bounded request. ``stream`` reads the
  same way.
* A missing key raises BlobNotFound before any byte is returned. A missing bucket, refused
  credentials, a timeout, a refused connection or an error status raise BlobStoreUnavailable
  (503): nothing obstore raises crosses this module.
* Every request has a deadline (``timeout``, ``connect_timeout``) and is retried on connection
  errors, timeouts and 5xx answers at most ``retries`` times with exponential backoff, within
  ``retry_timeout`` seconds in all, so a dead peer costs a bounded wait, never a hang.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import parse_qsl, urlsplit

import obstore
import obstore.exceptions
from obstore.store import S3Store

from swell.backends.blobkeys import check_key
from swell.errors import BlobNotFound, BlobStoreUnavailable, ConfigError
from swell.model import BlobInfo

if TYPE_CHECKING:
    from obstore.store import ClientConfig, RetryConfig, S3Config

    from swell.backends.base import BlobReader, BlobStore

T = TypeVar("T")

MIB = 1 << 20
#: S3's smallest multipart part (all but the last) and its largest.
MIN_PART = 5 * MIB
MAX_PART = 5 * 1024 * MIB
#: Parts of one multipart put uploaded at a time.
PART_CONCURRENCY = 4
#: Bucket names S3 accepts (3-63 lowercase letters, digits, dots and hyphens).
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_STATUS = re.compile(r"status code: (\d{3})")
_S3_CODE = re.compile(r"<Code>([A-Za-z]+)</Code>")


@dataclass(frozen=True, slots=True)
class S3Options:
    """The query parameters of an ``s3://`` URL (docs/configuration.md), with their defaults."""

    #: The S3 API's base URL; empty means AWS's endpoint for the region.
    endpoint: str = ""
    region: str = "us-east-1"
    #: Seconds one request may take, from connecting to the last byte of its body.
    timeout: float = 30.0
    connect_timeout: float = 5.0
    #: Retries of a request that failed to connect, timed out or got a 5xx answer.
    retries: int = 3
    #: Seconds after a request's first attempt past which it is not retried.
    retry_timeout: float = 15.0
    #: Puts larger than this use a multipart upload.
    multipart_threshold: int = 16 * MIB
    part_size: int = 8 * MIB
    #: Bytes per ranged GET when reading an object in sequence (exports, DSAR downloads).
    read_window: int = 8 * MIB
    #: Windows requested ahead of the one being read.
    read_ahead: int = 2


_FLOATS = {"timeout", "connect_timeout", "retry_timeout"}
_INTS = {"retries", "multipart_threshold", "part_size", "read_window", "read_ahead"}
_CREDENTIAL_NAMES = {
    "access_key",
    "access_key_id",
    "aws_access_key_id",
    "secret",
    "secret_key",
    "secret_access_key",
    "aws_secret_access_key",
    "session_token",
    "token",
}


def parse_url(url: str) -> tuple[str, str, S3Options]:
    """``(bucket, prefix, options)`` of an ``s3://`` URL. Raises ConfigError naming the problem."""
    parts = urlsplit(url)
    if parts.scheme != "s3":
        raise ConfigError(f"blob url {url!r}: not an s3:// URL")
    if parts.username is not None or parts.password is not None:
        raise ConfigError(
            "blob url: credentials do not belong in an s3:// URL; set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY instead"
        )
    bucket = parts.netloc
    if not _BUCKET.match(bucket) or ".." in bucket:
        raise ConfigError(
            f"blob url {url!r}: {bucket!r} is not a valid bucket name (3-63 lowercase letters, "
            "digits, dots and hyphens)"
        )
    prefix = parts.path.strip("/")
    if prefix:
        try:
            check_key(prefix)
        except Exception:
            raise ConfigError(f"blob url {url!r}: invalid key prefix {prefix!r}") from None
    values: dict[str, Any] = {}
    known = {f.name for f in fields(S3Options)}
    for name, raw in parse_qsl(parts.query, keep_blank_values=True, strict_parsing=False):
        if name.lower() in _CREDENTIAL_NAMES:
            raise ConfigError(
                f"blob url: {name!r} does not belong in an s3:// URL; set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY instead"
            )
        if name not in known:
            raise ConfigError(
                f"blob url {_redact(url)!r}: unknown parameter {name!r}; use one of {sorted(known)}"
            )
        if name in values:
            raise ConfigError(f"blob url: parameter {name!r} is given twice")
        values[name] = _value(name, raw)
    options = S3Options(**values)
    _check(options)
    return bucket, prefix, options


def _redact(url: str) -> str:
    return url.split("?", 1)[0] + ("?..." if "?" in url else "")


def _value(name: str, raw: str) -> Any:
    try:
        if name in _FLOATS:
            value: float = float(raw)
            if not 0 < value < 86_400:
                raise ValueError(raw)
            return value
        if name in _INTS:
            number = int(raw)
            if number < 0:
                raise ValueError(raw)
            return number
    except ValueError:
        kind = "a number of seconds (0 to 86400)" if name in _FLOATS else "a whole number >= 0"
        raise ConfigError(f"blob url: parameter {name}={raw!r} is not {kind}") from None
    return raw


def _check(o: S3Options) -> None:
    if o.endpoint:
        endpoint = urlsplit(o.endpoint)
        if endpoint.scheme not in ("http", "https") or not endpoint.hostname:
            raise ConfigError(
                f"blob url: endpoint={o.endpoint!r} is not an http:// or https:// URL"
            )
        if endpoint.username is not None or endpoint.password is not None:
            raise ConfigError(
                "blob url: credentials do not belong in the endpoint; set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY instead"
            )
    if not o.region:
        raise ConfigError("blob url: region= must not be empty")
    if not MIN_PART <= o.part_size <= MAX_PART:
        raise ConfigError(
            f"blob url: part_size={o.part_size} must be between {MIN_PART} and {MAX_PART} bytes "
            "(S3's limits for multipart parts)"
        )
    if o.multipart_threshold < o.part_size:
        raise ConfigError(
            f"blob url: multipart_threshold={o.multipart_threshold} must be at least "
            f"part_size={o.part_size}"
        )
    if not 64 * 1024 <= o.read_window <= 256 * MIB:
        raise ConfigError(
            f"blob url: read_window={o.read_window} must be between 65536 and {256 * MIB} bytes"
        )
    if o.read_ahead > 16:
        raise ConfigError(f"blob url: read_ahead={o.read_ahead} must be at most 16")


def _credentials(environ: Mapping[str, str]) -> dict[str, str]:
    key = environ.get("AWS_ACCESS_KEY_ID", "")
    secret = environ.get("AWS_SECRET_ACCESS_KEY", "")
    if not key or not secret:
        raise ConfigError(
            "blob url s3://...: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY to the object "
            "store's credentials"
        )
    found = {"access_key_id": key, "secret_access_key": secret}
    if environ.get("AWS_SESSION_TOKEN"):
        found["session_token"] = environ["AWS_SESSION_TOKEN"]
    return found


def _reason(exc: BaseException) -> str:
    """What went wrong, in a few words fit for a 503 body (no endpoint, no credentials)."""
    if isinstance(exc, obstore.exceptions.PermissionDeniedError | PermissionError):
        return "the object store refused the credentials or the access"
    if isinstance(exc, obstore.exceptions.UnauthenticatedError):
        return "the object store refused the credentials"
    text = str(exc)
    status, code = _STATUS.search(text), _S3_CODE.search(text)
    if status is not None:
        return f"the object store answered {status.group(1)}" + (
            f" {code.group(1)}" if code is not None else ""
        )
    lowered = text.lower()
    if "kind: timeout" in lowered or "timed out" in lowered:
        return "the object store did not answer in time"
    if "kind: connect" in lowered or "error sending request" in lowered:
        return "cannot connect to the object store"
    return "the object store request failed"


class S3BlobStore:
    """A BlobStore and OpensReaders over one bucket and key prefix (see the module docstring)."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        options: S3Options | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self.options = o = options or S3Options()
        found = _credentials(os.environ if environ is None else environ)
        config: S3Config = {
            "region": o.region,
            "access_key_id": found["access_key_id"],
            "secret_access_key": found["secret_access_key"],
        }
        if "session_token" in found:
            config["session_token"] = found["session_token"]
        if o.endpoint:
            config["endpoint"] = o.endpoint.rstrip("/")
            # Self-hosted stores rarely have a DNS name per bucket: address it by path.
            config["virtual_hosted_style_request"] = False
        client: ClientConfig = {
            "allow_http": o.endpoint.startswith("http://"),
            "timeout": timedelta(seconds=o.timeout),
            "connect_timeout": timedelta(seconds=o.connect_timeout),
        }
        retry: RetryConfig = {
            "max_retries": o.retries,
            "retry_timeout": timedelta(seconds=o.retry_timeout),
            "backoff": {
                "init_backoff": timedelta(milliseconds=100),
                "max_backoff": timedelta(seconds=2),
                "base": 2,
            },
        }
        try:
            self._store = S3Store(
                bucket,
                prefix=prefix or None,
                config=config,
                client_options=client,
                retry_config=retry,
            )
        except (obstore.exceptions.BaseError, ValueError) as exc:
            raise ConfigError(f"blob url s3://{bucket}: {exc}") from None
        self._closed = False
        #: Shielded puts still running after their caller gave up (see put).
        self._detached: set[asyncio.Future[Any]] = set()

    @classmethod
    def from_url(cls, url: str) -> S3BlobStore:
        bucket, prefix, options = parse_url(url)
        return cls(bucket, prefix, options)

    def __repr__(self) -> str:
        where = f"{self.bucket}/{self.prefix}" if self.prefix else self.bucket
        return f"S3BlobStore(s3://{where}, endpoint={self.options.endpoint or 'aws'!r})"

    # -- errors ---------------------------------------------------------------------------------

    def _check(self, key: str) -> None:
        check_key(key)
        if self._closed:
            raise BlobStoreUnavailable("blob store unavailable: it is closed")

    @contextlib.contextmanager
    def _mapped(self, action: str, key: str) -> Iterator[None]:
        """Turn what obstore raises into swell's errors (the seam: backends/base.py)."""
        try:
            yield
        except (obstore.exceptions.NotFoundError, FileNotFoundError) as exc:
            if "NoSuchBucket" in str(exc):
                raise BlobStoreUnavailable(
                    f"blob store unavailable: bucket {self.bucket!r} does not exist"
                ) from exc
            raise BlobNotFound(f"blob {key!r} not found") from None
        except (obstore.exceptions.BaseError, OSError) as exc:
            raise BlobStoreUnavailable(
                f"blob store unavailable: could not {action} {key!r}: {_reason(exc)}"
            ) from exc

    async def _call(self, action: str, key: str, call: Awaitable[T]) -> T:
        with self._mapped(action, key):
            return await call

    # -- the BlobStore Protocol -----------------------------------------------------------------

    async def put(self, key: str, data: bytes) -> BlobInfo:
        self._check(key)
        size = len(data)
        multipart = size > self.options.multipart_threshold
        with self._mapped("write", key):
            upload = asyncio.ensure_future(
                obstore.put_async(
                    self._store,
                    key,
                    data,
                    use_multipart=multipart,
                    chunk_size=self.options.part_size,
                    max_concurrency=PART_CONCURRENCY,
                )
            )
        try:
            # Shielded: cancelling obstore's future would drop a multipart upload half-way,
            # leaving its parts on the server; left alone it completes or aborts itself.
            await self._call("write", key, asyncio.shield(upload))
        except asyncio.CancelledError:
            self._detach(upload)
            raise
        return BlobInfo(key, size)

    def _detach(self, upload: asyncio.Future[Any]) -> None:
        self._detached.add(upload)

        def done(future: asyncio.Future[Any]) -> None:
            self._detached.discard(future)
            if not future.cancelled():
                future.exception()  # retrieved: its caller is gone, the put may or may not land

        upload.add_done_callback(done)

    async def read(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        self._check(key)
        if end is not None and end <= start:
            await self.head(key)  # BlobNotFound for a missing key, even for an empty range
            return b""
        try:
            with self._mapped("read", key):
                if end is None:
                    result = await obstore.get_async(
                        self._store, key, options={"range": {"offset": start}}
                    )
                    return bytes(await result.bytes_async())
                return bytes(await obstore.get_range_async(self._store, key, start=start, end=end))
        except BlobStoreUnavailable as exc:
            if not isinstance(exc, BlobNotFound) and _unsatisfiable(exc):
                await self.head(key)
                return b""  # the range starts at or past the end of the object
            raise

    async def stream(
        self, key: str, start: int = 0, end: int | None = None, chunk: int = 1 << 20
    ) -> AsyncIterator[bytes]:
        # The first step fetches the first window, so a missing key raises before any byte.
        reader = await self._open_reader(key, start)
        try:
            stop = reader.size if end is None else min(end, reader.size)
            offset = start
            while offset < stop:
                begin, view = await reader.window_at(offset)
                at = offset - begin
                take = min(chunk, stop - offset, len(view) - at)
                yield bytes(view[at : at + take])
                offset += take
            if end is not None and end > reader.size:
                raise BlobStoreUnavailable(f"blob {key!r} is shorter than expected")
        finally:
            await reader.aclose()

    async def head(self, key: str) -> BlobInfo:
        self._check(key)
        meta = await self._call("stat", key, obstore.head_async(self._store, key))
        return BlobInfo(key, int(meta["size"]))

    async def delete(self, keys: Sequence[str]) -> None:
        for key in keys:
            self._check(key)
        if keys:
            # One DeleteObjects request per 1,000 keys; S3 reports missing keys as deleted.
            await self._call("delete", keys[0], obstore.delete_async(self._store, list(keys)))

    async def open_reader(self, key: str) -> S3BlobReader:
        """A reader of one object, for reads into the caller's buffers. Raises BlobNotFound."""
        return await self._open_reader(key, 0)

    async def _open_reader(self, key: str, at: int) -> S3BlobReader:
        """A reader that has fetched the window holding byte ``at``. Its answer also gives the
        object's size: one request where a HEAD and a GET would be two (each costs the object
        store about a millisecond of CPU, which counts when parts are small)."""
        self._check(key)
        window = self.options.read_window
        begin = at - at % window
        try:
            with self._mapped("read", key):
                result = await obstore.get_async(
                    self._store, key, options={"range": (begin, begin + window)}
                )
                size = int(result.meta["size"])
                first = memoryview(await result.bytes_async())
        except BlobStoreUnavailable as exc:
            if isinstance(exc, BlobNotFound) or not _unsatisfiable(exc):
                raise
            # The window starts at or past the end (an empty object, or ``at`` beyond it).
            size, first = (await self.head(key)).size, memoryview(b"")
        if len(first) != max(0, min(window, size - begin)):
            raise BlobStoreUnavailable(f"blob {key!r} is shorter than expected")
        return S3BlobReader(self, key, size, begin, first)

    async def aclose(self) -> None:
        self._closed = True
        if self._detached:
            # Let shielded puts finish (each is bounded by its timeouts and retries).
            await asyncio.gather(*list(self._detached), return_exceptions=True)


def _unsatisfiable(exc: BaseException) -> bool:
    cause = exc.__cause__
    return cause is not None and "416" in str(cause).split("\n", 1)[0]


@dataclass(slots=True)
class _Window:
    start: int
    end: int
    fetch: asyncio.Task[memoryview] | None
    view: memoryview | None = None


class S3BlobReader:
    """One object read by ranged GETs of ``read_window`` bytes, ``read_ahead`` of them ahead.

    Sequential reads (what an export does) find their bytes already fetched or in flight; a read
    elsewhere drops the windows in flight and starts again from there. At most
    ``1 + read_ahead`` windows are held, so a reader's memory is bounded whatever the object's
    size, and a slow consumer just means the next request is sent later.
    """

    def __init__(
        self, blobs: S3BlobStore, key: str, size: int, begin: int, first: memoryview
    ) -> None:
        self.key = key
        self.size = size
        self._blobs = blobs
        self._window = blobs.options.read_window
        self._ahead = blobs.options.read_ahead
        self._windows: deque[_Window] = deque()
        if first:  # the window opening fetched: bytes [begin, begin + len(first))
            self._windows.append(_Window(begin, begin + len(first), None, first))

    async def read_into(self, offset: int, buffer: memoryview) -> None:
        """Fill ``buffer`` with the object's bytes from ``offset`` on.

        Raises BlobStoreUnavailable if the object ends before the buffer is full.
        """
        size = len(buffer)
        if offset < 0 or offset + size > self.size:
            raise BlobStoreUnavailable(f"blob {self.key!r} is shorter than expected")
        done = 0
        while done < size:
            pos = offset + done
            begin, view = await self.window_at(pos)
            at = pos - begin
            n = min(size - done, len(view) - at)
            buffer[done : done + n] = view[at : at + n]
            done += n

    async def window_at(self, pos: int) -> tuple[int, memoryview]:
        """``(start, bytes)`` of the fetched window holding byte ``pos``; the windows after it
        are requested."""
        windows = self._windows
        while windows and windows[0].end <= pos:
            windows.popleft()  # consumed: its bytes are no longer needed
        if not windows or windows[0].start > pos:
            self._drop()  # a jump: what is in flight is for elsewhere
            # Windows start at multiples of the window size: an object store that keeps objects
            # in chunks (SeaweedFS: 4 MiB) then reads whole chunks, not two halves.
            self._request(pos - pos % self._window)
        last = windows[-1]
        while len(windows) <= self._ahead and last.end < self.size:
            last = self._request(last.end)
        window = windows[0]
        if window.view is None:
            assert window.fetch is not None
            window.view = await window.fetch
        return window.start, window.view

    def _request(self, start: int) -> _Window:
        end = min(start + self._window, self.size)
        window = _Window(start, end, asyncio.create_task(self._fetch(start, end)))
        self._windows.append(window)
        return window

    async def _fetch(self, start: int, end: int) -> memoryview:
        blobs = self._blobs
        if blobs._closed:
            raise BlobStoreUnavailable("blob store unavailable: it is closed")
        data = await blobs._call(
            "read", self.key, obstore.get_range_async(blobs._store, self.key, start=start, end=end)
        )
        view = memoryview(data)
        if len(view) != end - start:
            raise BlobStoreUnavailable(f"blob {self.key!r} is shorter than expected")
        return view

    def _drop(self) -> None:
        while self._windows:
            task = self._windows.popleft().fetch
            if task is None:
                continue
            if not task.done():
                task.cancel()
            task.add_done_callback(_retrieve)

    async def aclose(self) -> None:
        self._drop()


def _retrieve(task: asyncio.Task[Any]) -> None:
    """Mark a dropped window's outcome as seen: nobody waits for it any more."""
    if not task.cancelled():
        task.exception()


if TYPE_CHECKING:
    _: type[BlobStore] = S3BlobStore
    _r: type[BlobReader] = S3BlobReader
