"""Backends chosen by URL, through one registry.

* metadata: ``sqlite:///path/meta.db`` (the default: under the data directory),
  ``postgresql://user@host:port/db`` (or ``postgres://``), ``memory://[name]``
* blobs: ``file:///path/blobs`` (the default, under the data directory), ``memory://[name]``,
  ``s3://bucket/prefix?endpoint=...`` (swell.backends.s3; needs the ``s3`` extra)

Each scheme names a ``module:Class``, imported only when used; its ``from_url(url)`` opens it, or
its ``from_settings(url, settings)`` where the backend has settings of its own (a pool's size).
The embedded log and the data-directory lock always live in the data directory
(swell.backends.datadir). Everything above this package asks :func:`open_backends` for a
:class:`Backends` and never names a scheme, a driver or a local path.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from swell.backends.base import BlobStore, EventLog, Metadata
from swell.backends.datadir import DataDir
from swell.errors import ConfigError
from swell.settings import Settings

METADATA_SCHEMES = {
    "sqlite": "swell.backends.sqlite:SQLiteMetadata",
    "postgresql": "swell.backends.postgres:PostgresMetadata",
    "postgres": "swell.backends.postgres:PostgresMetadata",
    "memory": "swell.backends.memory:MemoryMetadata",
}
BLOB_SCHEMES = {
    "file": "swell.backends.localfs:LocalBlobStore",
    "memory": "swell.backends.memory:MemoryBlobStore",
    "s3": "swell.backends.s3:S3BlobStore",
}


def url_path(url: str) -> Path:
    """The path of a ``scheme:///absolute/path`` or ``scheme://relative/path`` URL."""
    rest = url.split("://", 1)[1] if "://" in url else ""
    rest = rest.split("?", 1)[0]
    if not rest:
        raise ConfigError(f"{url!r} names no path")
    return Path(rest)


def _open(kind: str, schemes: dict[str, str], url: str, settings: Settings | None = None) -> Any:
    scheme = url.split("://", 1)[0] if "://" in url else ""
    target = schemes.get(scheme)
    if target is None:
        raise ConfigError(
            f"{kind} url {url!r}: unknown scheme {scheme!r}; use one of {sorted(schemes)}"
        )
    module, _, name = target.partition(":")
    try:
        backend = getattr(importlib.import_module(module), name)
    except ImportError as exc:  # an optional driver that is not installed
        raise ConfigError(
            f"{kind} url scheme {scheme!r} needs {exc.name!r}, which is not installed "
            f"(pip install 'swell[{scheme.removesuffix('ql')}]')"
        ) from None
    if settings is not None and hasattr(backend, "from_settings"):
        return backend.from_settings(url, settings)
    return backend.from_url(url)


def metadata_url(settings: Settings) -> str:
    return settings.metadata_url or f"sqlite://{settings.data_dir.resolve() / 'meta.db'}"


def blob_url(settings: Settings) -> str:
    return settings.blob_url or f"file://{settings.data_dir.resolve() / 'blobs'}"


def open_metadata(url: str, settings: Settings | None = None) -> Metadata:
    store: Metadata = _open("metadata", METADATA_SCHEMES, url, settings)
    return store


def open_blobs(url: str) -> BlobStore:
    store: BlobStore = _open("blob", BLOB_SCHEMES, url)
    return store


@dataclass
class Backends:
    """The open backends of one process, closed together."""

    meta: Metadata
    blobs: BlobStore
    log: EventLog
    #: The locked data directory (the embedded log lives there); released last. None for a
    #: project owner of a scale-out node, whose log is in PostgreSQL.
    data_dir: DataDir | None
    #: Whether closing these closes the metadata and blob stores too (a project owner's
    #: backends share the node's).
    owns_stores: bool = True

    async def aclose(self) -> None:
        try:
            await self.log.aclose()
        finally:
            try:
                if self.owns_stores:
                    await self.meta.aclose()
            finally:
                try:
                    if self.owns_stores:
                        await self.blobs.aclose()
                finally:
                    if self.data_dir is not None:
                        self.data_dir.release()


async def open_backends(settings: Settings) -> Backends:
    """Lock the data directory, clean what a crash left there, and open every backend."""
    data_dir = DataDir.lock(settings.data_dir)
    try:
        meta = open_metadata(metadata_url(settings), settings)
        try:
            blobs = open_blobs(blob_url(settings))
            log = data_dir.open_log(settings.log_segment_bytes)
        except BaseException:
            await meta.aclose()
            raise
    except BaseException:
        data_dir.release()
        raise
    return Backends(meta, blobs, log, data_dir)
