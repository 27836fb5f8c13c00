"""The embedded data directory: one process at a time (``LOCK``), the log in ``wal/``, readable
by its owner only.

Opening it takes an exclusive lock and removes what a crash can leave behind at its top level
(``*.tmp`` files of writes that never finished). The blob store cleans its own directory
(swell.backends.localfs).

``meta.db`` holds user ids, user properties and key hashes; the parts and DSAR outputs hold the
events. Every swell command calls :func:`make_private` first: it sets the umask to 077, so every
directory swell creates is 0700 and every file 0600, and tightens what an older swell (or an
operator) left readable by others.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import stat
from pathlib import Path
from typing import Any

from swell.backends.filelog import FileLog
from swell.errors import ConfigError

logger = logging.getLogger("swell.datadir")


class DataDir:
    """A locked data directory; held for the life of a store."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def lock(cls, path: Path) -> DataDir:
        """Raises ConfigError if another process holds the directory."""
        try:
            path.mkdir(parents=True, exist_ok=True)
            fd = os.open(path / "LOCK", os.O_RDWR | os.O_CREAT, 0o640)
        except OSError as exc:
            raise ConfigError(f"cannot use data directory {path}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ConfigError(
                f"{path} is in use by another swell process (a running server?); "
                "stop it first or use another --data-dir"
            ) from None
        data_dir = cls(path, fd)
        data_dir.clean()
        return data_dir

    def clean(self) -> int:
        """Remove ``*.tmp`` leftovers of interrupted writes; returns how many went."""
        removed = 0
        for leftover in self.path.glob("*.tmp"):
            try:
                leftover.unlink()
                removed += 1
            except OSError as exc:
                logger.warning("cannot remove leftover %s: %s", leftover, exc.strerror)
        if removed:
            logger.info("removed %d leftover temporary file(s) from %s", removed, self.path)
        return removed

    def marker(self, name: str) -> dict[str, Any] | None:
        """A small JSON document kept beside the data (e.g. which org the demo made), or None."""
        try:
            value = json.loads((self.path / f"{name}.json").read_text())
        except (OSError, ValueError):
            return None
        return value if isinstance(value, dict) else None

    def set_marker(self, name: str, value: dict[str, Any]) -> None:
        """Write a marker whole or not at all."""
        write_atomically(self.path / f"{name}.json", json.dumps(value).encode())

    def open_log(self, segment_bytes: int) -> FileLog:
        return FileLog(self.path / "wal", segment_bytes=segment_bytes)

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def write_atomically(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data``, whole or not at all (``path.tmp``, fsync, rename)."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


#: Files and directories swell creates are readable and writable by their owner only.
UMASK = 0o077
DIR_MODE = 0o700
FILE_MODE = 0o600
#: Directories whose entries are checked too; deeper entries are protected by the 0700
#: directories above them (walking every part file would make start-up grow with the data).
CHECKED_SUBDIRS = ("wal", "blobs")


def make_private(data_dir: Path) -> list[Path]:
    """Set the umask to 077, create ``data_dir`` (0700) if needed, and tighten the modes of the
    directory, its entries and the entries of ``wal/`` and ``blobs/``; returns what was changed
    (each change is logged as a warning). Symbolic links are left alone."""
    os.umask(UMASK)
    data_dir.mkdir(parents=True, exist_ok=True)
    changed: list[Path] = []
    _tighten(data_dir, changed)
    for sub in ("", *CHECKED_SUBDIRS):
        folder = data_dir / sub if sub else data_dir
        try:
            entries = list(os.scandir(folder))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for entry in entries:
            _tighten(Path(entry.path), changed)
    for path in changed:
        logger.warning("%s was readable by other users; its mode is now owner-only", path)
    return changed


def _tighten(path: Path, changed: list[Path]) -> None:
    try:
        info = path.lstat()
    except FileNotFoundError:
        return
    if stat.S_ISLNK(info.st_mode):
        return
    wanted = DIR_MODE if stat.S_ISDIR(info.st_mode) else FILE_MODE
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077:
        os.chmod(path, mode & wanted)
        changed.append(path)
