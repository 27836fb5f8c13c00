"""The embedded durable log: an event is acknowledged only after the frame holding it is fsync'd.

Frames are appended to numbered segment files (``wal/<first lsn>.wal``)::

    length u32 | crc32(payload) u32 | lsn u64 | payload
    payload = kind u8 | project_id i64 | hour i64 | body

Every frame gets the next log sequence number (lsn). Appends only buffer in memory; ``sync(lsn)``
waits until that frame is on disk. One flush writes and fsyncs everything buffered so far, so
concurrent requests share an fsync (group commit). On open, a torn or corrupt tail of the last
segment (a write that was never acknowledged) is cut off, and replay yields every intact frame.
A frame stays in the log until sealed parts and the saved identity state both cover it.
If a write or fsync fails the log refuses all further work (LogFailed): after a failed fsync the
kernel may have dropped the dirty pages, so the only safe continuation is a restart and replay.
"""

from __future__ import annotations

import asyncio
import os
import struct
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from swell.errors import LogFailed
from swell.model import Frame

if TYPE_CHECKING:
    from swell.backends.base import EventLog

HEADER = struct.Struct("<IIQ")
PAYLOAD_HEAD = struct.Struct("<Bqq")
MAX_FRAME = 256 * 1024 * 1024
#: Pieces per writev call (Linux allows 1024).
WRITEV_CHUNKS = 1020
SEGMENT_BYTES = 64 * 1024 * 1024


class FileLog:
    def __init__(
        self,
        directory: Path,
        *,
        segment_bytes: int = SEGMENT_BYTES,
        fsync: Callable[[int], None] = os.fsync,
    ) -> None:
        self.directory = directory
        self.segment_bytes = segment_bytes
        #: How frames are made durable (os.fsync; tests pass one that fails).
        self._fsync = fsync
        self._segments: list[tuple[int, Path]] = []  # (first lsn, path), oldest first
        self._fd: int | None = None
        self._fd_size = 0
        self._next_lsn = 1
        self._durable_lsn = 0
        self._buffer: list[bytes] = []
        self._buffer_last = 0
        self._flusher: asyncio.Task[None] | None = None
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._failed: BaseException | None = None
        #: Called after each group commit with (seconds to write and fsync, frames) (/metrics).
        self.on_flush: Callable[[float, int], None] | None = None

    # -- open and replay ---------------------------------------------------------------------

    def open(self, min_next_lsn: int = 1) -> Iterator[Frame]:
        """Recover the log and yield every intact frame in lsn order.

        The generator must be exhausted before appending. Raises StorageError when a frame other
        than the tail of the last segment is damaged.
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        paths = sorted(self.directory.glob("*.wal"))
        last_lsn = 0
        for index, path in enumerate(paths):
            self._segments.append((int(path.stem), path))
            for frame in self._read_segment(path, is_last=index == len(paths) - 1):
                last_lsn = frame.lsn
                yield frame
        self._next_lsn = max(last_lsn + 1, min_next_lsn)
        self._durable_lsn = self._next_lsn - 1

    def _read_segment(self, path: Path, *, is_last: bool) -> Iterator[Frame]:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise LogFailed(f"cannot read log segment {path.name}: {exc.strerror}") from exc
        offset = 0
        while offset < len(data):
            frame, end = self._parse(data, offset)
            if frame is None:
                if not is_last:
                    raise LogFailed(f"log segment {path.name} is damaged at byte {offset}")
                try:
                    with path.open("r+b") as f:  # a torn, never-acknowledged tail
                        f.truncate(offset)
                        self._fsync(f.fileno())
                except OSError as exc:
                    raise LogFailed(f"cannot cut the torn tail of {path.name}: {exc}") from exc
                return
            yield frame
            offset = end

    @staticmethod
    def _parse(data: bytes, offset: int) -> tuple[Frame | None, int]:
        if offset + HEADER.size > len(data):
            return None, offset
        length, crc, lsn = HEADER.unpack_from(data, offset)
        start = offset + HEADER.size
        end = start + length
        if length < PAYLOAD_HEAD.size or length > MAX_FRAME or end > len(data):
            return None, offset
        payload = data[start:end]
        if zlib.crc32(payload) != crc:
            return None, offset
        kind, project_id, hour = PAYLOAD_HEAD.unpack_from(payload)
        return Frame(lsn, kind, project_id, hour, payload[PAYLOAD_HEAD.size :]), end

    # -- append and sync -----------------------------------------------------------------------

    @property
    def last_lsn(self) -> int:
        """The lsn of the most recently appended frame (durable or not)."""
        return self._next_lsn - 1

    @property
    def failed(self) -> BaseException | None:
        return self._failed

    def append(self, kind: int, project_id: int, hour: int, body: bytes) -> int:
        """Buffer one frame and return its lsn; call ``sync(lsn)`` before acknowledging it."""
        if self._failed is not None:
            raise LogFailed() from self._failed
        lsn = self._next_lsn
        self._next_lsn += 1
        head = PAYLOAD_HEAD.pack(kind, project_id, hour)
        crc = zlib.crc32(body, zlib.crc32(head))
        # Kept as three pieces (no copy of the body): the flush hands them to writev.
        self._buffer += (HEADER.pack(len(head) + len(body), crc, lsn), head, body)
        self._buffer_last = lsn
        return lsn

    async def sync(self, lsn: int | None = None) -> None:
        """Wait until every frame up to ``lsn`` (default: all appended) is fsync'd."""
        target = self.last_lsn if lsn is None else lsn
        if self._failed is not None:
            raise LogFailed() from self._failed
        if target <= self._durable_lsn:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((target, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_loop())
        await future

    async def _flush_loop(self) -> None:
        while self._buffer:
            chunks, last = self._buffer, self._buffer_last
            self._buffer = []
            started = time.perf_counter()
            try:
                await asyncio.to_thread(self._write, chunks, last)
            except BaseException as exc:
                self._failed = exc
                for _, future in self._waiters:
                    if not future.done():
                        future.set_exception(LogFailed(f"the durable log failed: {exc}"))
                self._waiters.clear()
                return
            self._durable_lsn = last
            if self.on_flush is not None:
                self.on_flush(time.perf_counter() - started, self._count_frames(chunks))
            pending = []
            for target, future in self._waiters:
                if target <= last:
                    if not future.done():
                        future.set_result(None)
                else:
                    pending.append((target, future))
            self._waiters = pending

    def _write(self, chunks: list[bytes], last_lsn: int) -> None:
        if self._fd is None or self._fd_size >= self.segment_bytes:
            self._rotate(first_lsn=last_lsn - self._count_frames(chunks) + 1)
        assert self._fd is not None
        total = 0
        for start in range(0, len(chunks), WRITEV_CHUNKS):
            batch = chunks[start : start + WRITEV_CHUNKS]
            size = sum(map(len, batch))
            written = os.writev(self._fd, batch)
            if written < size:  # a short write: finish it piece by piece
                view = memoryview(b"".join(batch))[written:]
                while view:
                    view = view[os.write(self._fd, view) :]
            total += size
        self._fsync(self._fd)
        self._fd_size += total

    @staticmethod
    def _count_frames(chunks: list[bytes]) -> int:
        return len(chunks) // 3

    def _rotate(self, first_lsn: int) -> None:
        if self._fd is not None:
            os.close(self._fd)
        path = self.directory / f"{first_lsn:020d}.wal"
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        self._fd_size = os.fstat(self._fd).st_size
        dfd = os.open(self.directory, os.O_RDONLY)
        try:
            self._fsync(dfd)
        finally:
            os.close(dfd)
        self._segments.append((first_lsn, path))

    # -- truncation ------------------------------------------------------------------------------

    def release(self, upto: int) -> int:
        """Delete whole segments whose frames all have lsn <= upto; returns how many."""
        removed = 0
        while len(self._segments) > 1 and self._segments[1][0] <= upto + 1:
            try:
                self._segments[0][1].unlink(missing_ok=True)
            except OSError:  # kept for now; a later release deletes it
                break
            self._segments.pop(0)
            removed += 1
        return removed

    @property
    def segment_count(self) -> int:
        return len(self._segments)

    async def aclose(self) -> None:
        if self._buffer:
            await self.sync()
        if self._flusher is not None:
            await asyncio.gather(self._flusher, return_exceptions=True)
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


if TYPE_CHECKING:
    _: type[EventLog] = FileLog
