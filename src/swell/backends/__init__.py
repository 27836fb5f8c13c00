"""Open backends from URLs: ``sqlite:///path/meta.db``, ``file:///path/blobs``."""

from __future__ import annotations

from pathlib import Path

from swell.backends.base import BlobStore, Metadata
from swell.errors import ConfigError


def open_metadata(url: str) -> Metadata:
    scheme = url.split(":", 1)[0]
    if scheme == "sqlite":
        from swell.backends.sqlite import SQLiteMetadata

        return SQLiteMetadata(Path(url.removeprefix("sqlite://")))
    raise ConfigError(f"metadata url: unknown scheme {scheme!r}; use one of ['sqlite']")


def open_blobs(url: str) -> BlobStore:
    scheme = url.split(":", 1)[0]
    if scheme == "file":
        from swell.backends.localfs import LocalBlobStore

        return LocalBlobStore(Path(url.removeprefix("file://")))
    raise ConfigError(f"blob url: unknown scheme {scheme!r}; use one of ['file']")
