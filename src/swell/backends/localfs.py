"""Embedded blob store: one file per key under a root directory.

A put writes a temporary file in ``<root>/.staging``, fsyncs it, renames it over the key and fsyncs
the key's directory, so an object appears whole or not at all, and survives power loss once put
returns. A put cut short (a crash, a full disk) leaves at most a file in ``.staging``, which is
emptied when the store is opened, but for the files of puts still running in another live
process (scale-out nodes on one machine may share the directory; a staged file's name carries its
writer's pid).
Deleting a key's last file removes its (now empty) directory, so expired DSAR outputs leave
nothing behind; directories a crash left empty under ``dsar/`` are removed when the store opens.
Every OSError becomes BlobStoreUnavailable (BlobNotFound for a missing key).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import threading
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from swell.backends.blobkeys import check_key
from swell.errors import BlobNotFound, BlobStoreUnavailable, InvalidBlobKey
from swell.model import BlobInfo

if TYPE_CHECKING:
    from swell.backends.base import BlobStore

_puts = itertools.count()
#: Where puts write before renaming into place; no key may start with it.
STAGING = ".staging"


class LocalBlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._staging = root / STAGING
        self._prefix = f"{os.fspath(root).rstrip('/')}/"
        try:
            self._staging.mkdir(parents=True, exist_ok=True)
            for leftover in self._staging.iterdir():  # puts that never finished
                if not leftover.is_dir() and not _written_by_another_live_process(leftover):
                    leftover.unlink(missing_ok=True)
            self._prune_tree(root / "dsar")
        except OSError as exc:
            raise BlobStoreUnavailable(f"cannot open blob store {root}: {exc.strerror}") from exc

    @classmethod
    def from_url(cls, url: str) -> LocalBlobStore:
        from swell.backends import url_path

        return cls(url_path(url))

    def _prune_tree(self, top: Path) -> None:
        """Remove the empty directories under ``top`` (deepest first)."""
        if not top.is_dir():
            return
        for directory, _, files in os.walk(top, topdown=False):
            if not files:
                with contextlib.suppress(OSError):  # not empty: a subdirectory stayed
                    os.rmdir(directory)

    def _file(self, key: str) -> str:
        """The file holding ``key``. A plain string: an export resolves one per part and read, and
        building a Path costs more than the stat or open it is for."""
        if check_key(key)[0] == STAGING:
            raise InvalidBlobKey(f"invalid blob key {key!r}")
        return self._prefix + key

    def _path(self, key: str) -> Path:
        return Path(self._file(key))

    async def put(self, key: str, data: bytes) -> BlobInfo:
        path = self._path(key)
        await asyncio.to_thread(self._put_sync, path, data)
        return BlobInfo(key, len(data))

    def _put_sync(self, path: Path, data: bytes) -> None:
        # Unique per put: concurrent puts of one key each rename their own whole file.
        tmp = self._staging / f"{path.name}.{os.getpid()}.{threading.get_ident()}.{next(_puts)}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
            try:
                view = memoryview(data)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
                os.fsync(fd)
            finally:
                os.close(fd)
            for attempt in range(2):
                path.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.replace(tmp, path)
                    break
                except FileNotFoundError:  # a delete pruned the emptied directory meanwhile
                    if attempt:
                        raise
            _fsync_dir(path.parent)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            raise BlobStoreUnavailable(
                f"blob store unavailable: could not write {path.name}: {exc.strerror}"
            ) from exc

    def _open(self, key: str) -> int:
        try:
            return os.open(self._file(key), os.O_RDONLY)
        except FileNotFoundError:
            raise BlobNotFound(f"blob {key!r} not found") from None
        except OSError as exc:
            raise BlobStoreUnavailable(
                f"blob store unavailable: could not open {key!r}: {exc.strerror}"
            ) from exc

    async def read(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        fd = self._open(key)
        try:
            size = os.fstat(fd).st_size
            stop = size if end is None else min(end, size)
            return os.pread(fd, max(0, stop - start), start) if stop > start else b""
        except OSError as exc:
            raise BlobStoreUnavailable(
                f"blob store unavailable: could not read {key!r}: {exc.strerror}"
            ) from exc
        finally:
            os.close(fd)

    async def stream(
        self, key: str, start: int = 0, end: int | None = None, chunk: int = 1 << 20
    ) -> AsyncIterator[bytes]:
        # Reads run on the event loop: parts are page-cache friendly and a thread hop per chunk
        # costs ~4x CPU per GB (docs/benchmarks.md). Large chunks keep the loop responsive.
        fd = self._open(key)
        try:
            stop = os.fstat(fd).st_size if end is None else end
            offset = start
            while offset < stop:
                data = os.pread(fd, min(chunk, stop - offset), offset)
                if not data:
                    raise BlobStoreUnavailable(f"blob {key!r} is shorter than expected")
                offset += len(data)
                yield data
        except OSError as exc:
            raise BlobStoreUnavailable(
                f"blob store unavailable: could not read {key!r}: {exc.strerror}"
            ) from exc
        finally:
            os.close(fd)

    async def open_reader(self, key: str) -> LocalBlobReader:
        """A reader of one object, for reads into the caller's buffers. Raises BlobNotFound."""
        return LocalBlobReader(key, self._open(key))

    async def head(self, key: str) -> BlobInfo:
        try:
            return BlobInfo(key, os.stat(self._file(key)).st_size)
        except FileNotFoundError:
            raise BlobNotFound(f"blob {key!r} not found") from None
        except OSError as exc:
            raise BlobStoreUnavailable(
                f"blob store unavailable: could not stat {key!r}: {exc.strerror}"
            ) from exc

    async def delete(self, keys: Sequence[str]) -> None:
        parents: set[Path] = set()
        for key in keys:
            path = self._path(key)
            try:
                path.unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise BlobStoreUnavailable(
                    f"blob store unavailable: could not delete {key!r}: {exc.strerror}"
                ) from exc
            parents.add(path.parent)
        for parent in sorted(parents, reverse=True):
            self._prune(parent)

    def _prune(self, directory: Path) -> None:
        """Remove ``directory`` and its parents up to the root while they are empty."""
        while directory != self.root and self.root in directory.parents:
            try:
                directory.rmdir()
            except OSError:  # not empty, or already gone: stop here
                return
            directory = directory.parent

    async def aclose(self) -> None:
        return None


class LocalBlobReader:
    """An open blob file; reads fill the caller's buffer, so nothing is allocated per read."""

    def __init__(self, key: str, fd: int) -> None:
        self.key = key
        self._fd = fd

    async def read_into(self, offset: int, buffer: memoryview) -> None:
        """Fill ``buffer`` with the object's bytes from ``offset`` on.

        Raises BlobStoreUnavailable if the object ends before the buffer is full.
        """
        # On the event loop, as LocalBlobStore.stream reads: parts are page-cache friendly.
        done, size = 0, len(buffer)
        try:
            while done < size:
                got = os.preadv(self._fd, [buffer[done:] if done else buffer], offset + done)
                if got <= 0:
                    raise BlobStoreUnavailable(f"blob {self.key!r} is shorter than expected")
                done += got
        except OSError as exc:
            raise BlobStoreUnavailable(
                f"blob store unavailable: could not read {self.key!r}: {exc.strerror}"
            ) from exc

    async def aclose(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)


def _written_by_another_live_process(staged: Path) -> bool:
    """Whether a staged file belongs to a put still running in another process on this machine
    (its name carries the writer's pid), as when scale-out nodes share one directory."""
    parts = staged.name.rsplit(".", 3)
    if len(parts) != 4 or not parts[1].isdigit():
        return False
    pid = int(parts[1])
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, another user's
    return True


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


if TYPE_CHECKING:
    _: type[BlobStore] = LocalBlobStore
