"""Every backend, opened by URL: the contract tests run once per backend.

A scale-out backend joins by adding its scheme to BLOB_BACKENDS or METADATA_BACKENDS (with a skip
mark where its server is absent); the tests themselves do not change. PostgreSQL's database comes
from tests/postgres.py (skipped, with the reason, where no server answers).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from swell.backends import open_blobs, open_metadata
from swell.backends.base import BlobStore, Metadata

#: s3: a prefix of the session's SeaweedFS (tests/s3server.py), started on first use.
BLOB_BACKENDS = ["memory", "file", "s3"]
METADATA_BACKENDS = ["memory", "sqlite", "postgres"]


@dataclass
class Opener:
    """Opens the same store again and again, as processes that share it would."""

    kind: str
    url: str

    def blobs(self) -> BlobStore:
        return open_blobs(self.url)

    def metadata(self) -> Metadata:
        return open_metadata(self.url)


def _url(kind: str, tmp_path: Path, what: str, request: pytest.FixtureRequest) -> str:
    if kind == "s3":
        url: str = request.getfixturevalue("s3_url")
        return url
    if kind == "memory":
        return f"memory://contract-{what}-{uuid.uuid4().hex}"
    if kind == "file":
        return f"file://{tmp_path / 'blobs'}"
    if kind == "sqlite":
        return f"sqlite://{tmp_path / 'meta.db'}"
    raise AssertionError(kind)


@pytest.fixture(params=BLOB_BACKENDS)
def blob_opener(request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    return Opener(request.param, _url(request.param, tmp_path, "blobs", request))


@pytest.fixture(params=METADATA_BACKENDS)
def meta_opener(request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    if request.param == "postgres":
        return Opener("postgres", request.getfixturevalue("pg_url"))
    return Opener(request.param, _url(request.param, tmp_path, "meta", request))


@pytest.fixture
async def blobs(blob_opener: Opener) -> AsyncIterator[BlobStore]:
    store = blob_opener.blobs()
    yield store
    await store.aclose()


@pytest.fixture
async def meta(meta_opener: Opener) -> AsyncIterator[Metadata]:
    store = meta_opener.metadata()
    yield store
    await store.aclose()


Reopen = Callable[[], Metadata]
