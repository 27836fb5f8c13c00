"""State files: what a run has finished, so the next run does only the rest.

Each output directory holds one JSON state file, rewritten atomically (a temporary file in the
same directory, fsync'd, renamed over the old one, then the directory fsync'd) whenever a window
or a request changes, and a lock so two runs never write one directory at once. A state file
records which server and which key produced the directory (never a secret), so a directory is
never filled from two sources.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from swell.client.errors import LocalError, UsageError, describe_os_error

VERSION = 1


@contextlib.contextmanager
def locked(directory: Path, name: str) -> Iterator[None]:
    """Create ``directory`` if needed and hold ``name`` (a lock file in it) for the block.

    Raises:
        LocalError: the directory cannot be created, or another run holds the lock.
    """
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(directory / name, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise describe_os_error(exc, "create the output directory") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LocalError(f"another swell run is writing to {directory}") from None
        yield
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` all at once, durably.

    Raises:
        LocalError: the write failed (the old file, if any, is intact).
    """
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with tmp.open("wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
        fsync_dir(path.parent)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise describe_os_error(exc, "write") from None


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _load(path: Path) -> dict[str, Any] | None:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise describe_os_error(exc, "read the state file") from None
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise LocalError(f"{path} is not a valid state file (remove it to start over)") from None
    if not isinstance(value, dict) or value.get("version") != VERSION:
        raise LocalError(f"{path} is not a state file of this version (remove it to start over)")
    return value


def _check_source(path: Path, saved: dict[str, Any], source: dict[str, str]) -> None:
    for key, value in source.items():
        if saved.get(key) != value:
            raise UsageError(
                f"{path.parent} holds data from {key} {saved.get(key)!r}, not {value!r}; "
                "use another --out directory"
            )


@dataclass
class ExportState:
    """``swell-export.json``: each window's status, keyed by its label.

    A window entry is ``{"status": "done", "files": [...], "events": N, "bytes": N}`` (files is
    empty for a window with no data), or ``{"status": "partial", "part": name, "etag": ...,
    "length": N}`` while its archive is being downloaded.
    """

    path: Path
    source: dict[str, str]
    windows: dict[str, dict[str, Any]] = field(default_factory=dict)

    FILE = "swell-export.json"
    LOCK = ".swell-export.lock"

    @classmethod
    def open(cls, directory: Path, source: dict[str, str]) -> ExportState:
        """Load the directory's state (or start one) for ``source`` (server, key, output).

        Raises:
            UsageError: the directory holds another source's export.
            LocalError: the state file cannot be read or is not one.
        """
        path = directory / cls.FILE
        saved = _load(path)
        if saved is None:
            return cls(path, dict(source))
        _check_source(path, saved, source)
        windows = saved.get("windows")
        if not isinstance(windows, dict):
            raise LocalError(f"{path} is not a valid state file (remove it to start over)")
        return cls(path, dict(source), windows)

    def save(self) -> None:
        body = {"version": VERSION, **self.source, "windows": dict(sorted(self.windows.items()))}
        write_atomic(self.path, orjson.dumps(body, option=orjson.OPT_INDENT_2))


@dataclass
class DsarState:
    """``swell-dsar.json``: one entry per request key (subject and dates) with its request id,
    status and files, so a re-run polls what is outstanding instead of posting it again."""

    path: Path
    source: dict[str, str]
    requests: dict[str, dict[str, Any]] = field(default_factory=dict)

    FILE = "swell-dsar.json"
    LOCK = ".swell-dsar.lock"

    @classmethod
    def open(cls, directory: Path, source: dict[str, str]) -> DsarState:
        path = directory / cls.FILE
        saved = _load(path)
        if saved is None:
            return cls(path, dict(source))
        _check_source(path, saved, source)
        requests = saved.get("requests")
        if not isinstance(requests, dict):
            raise LocalError(f"{path} is not a valid state file (remove it to start over)")
        return cls(path, dict(source), requests)

    def save(self) -> None:
        body = {"version": VERSION, **self.source, "requests": self.requests}
        write_atomic(self.path, orjson.dumps(body, option=orjson.OPT_INDENT_2))
