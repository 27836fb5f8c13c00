"""The s3:// URL, its parameters and credentials, and how a dead or silent peer is reported."""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import fields
from pathlib import Path

import pytest

from swell.backends import open_blobs
from swell.backends.s3 import MIB, S3BlobStore, S3Options, parse_url
from swell.errors import BlobNotFound, BlobStoreUnavailable, ConfigError

SECRET = "wJalrXUtnFEMI"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": SECRET}


@pytest.fixture
def credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)


def test_a_url_names_bucket_prefix_and_options() -> None:
    bucket, prefix, options = parse_url(
        "s3://swell-parts/prod/eu?endpoint=http://127.0.0.1:8333&region=eu-west-1"
        "&timeout=12.5&retries=1&multipart_threshold=33554432&part_size=16777216"
        "&read_window=4194304&read_ahead=3&connect_timeout=2&retry_timeout=7"
    )
    assert (bucket, prefix) == ("swell-parts", "prod/eu")
    assert options == S3Options(
        endpoint="http://127.0.0.1:8333",
        region="eu-west-1",
        timeout=12.5,
        connect_timeout=2.0,
        retries=1,
        retry_timeout=7.0,
        multipart_threshold=32 * MIB,
        part_size=16 * MIB,
        read_window=4 * MIB,
        read_ahead=3,
    )


def test_defaults_apply_to_a_bare_bucket() -> None:
    assert parse_url("s3://swell-parts") == ("swell-parts", "", S3Options())
    assert parse_url("s3://swell-parts/")[1] == ""


@pytest.mark.parametrize(
    ("url", "words"),
    [
        (f"s3://AKIDEXAMPLE:{SECRET}@bucket/p", "AWS_ACCESS_KEY_ID"),
        ("s3://bucket/p?access_key_id=AKIDEXAMPLE", "AWS_ACCESS_KEY_ID"),
        (f"s3://bucket/p?secret_access_key={SECRET}", "AWS_SECRET_ACCESS_KEY"),
        (f"s3://bucket/p?endpoint=http://AKIDEXAMPLE:{SECRET}@127.0.0.1:9000", "AWS_ACCESS_KEY_ID"),
        (f"s3://bucket/p?endpont=http://127.0.0.1:9000&x={SECRET}", "unknown parameter 'endpont'"),
        ("s3://bucket/p?timeout=soon", "timeout='soon' is not a number of seconds"),
        ("s3://bucket/p?timeout=0", "timeout='0'"),
        ("s3://bucket/p?retries=-1", "retries='-1' is not a whole number"),
        ("s3://bucket/p?retries=1&retries=2", "given twice"),
        ("s3://bucket/p?part_size=1024", "part_size=1024 must be between"),
        ("s3://bucket/p?multipart_threshold=6000000", "must be at least part_size"),
        ("s3://bucket/p?read_window=10", "read_window=10"),
        ("s3://bucket/p?read_ahead=99", "read_ahead=99"),
        ("s3://bucket/p?endpoint=ftp://host", "not an http:// or https:// URL"),
        ("s3://bucket/p?region=", "region= must not be empty"),
        ("s3://Bucket_Name/p", "not a valid bucket name"),
        ("s3://b/p", "not a valid bucket name"),
        ("s3://bucket/a/../b", "invalid key prefix"),
        ("s3://bucket/a//b", "invalid key prefix"),
    ],
)
def test_bad_urls_are_refused_with_the_reason(url: str, words: str) -> None:
    with pytest.raises(ConfigError, match="blob url") as caught:
        parse_url(url)
    assert words in caught.value.message
    assert SECRET not in caught.value.message  # a refused URL is never echoed with its secrets


def test_every_parameter_is_documented_with_its_default() -> None:
    text = (Path(__file__).parents[2] / "docs" / "configuration.md").read_text()
    section = text[text.index("## The S3 blob store") :]
    for f in fields(S3Options):
        row = next(line for line in section.splitlines() if line.startswith(f"| `{f.name}` |"))
        shown = f"{f.default:g}" if isinstance(f.default, float) else str(f.default)
        expected = f"| `{shown}` |" if shown else "| (empty) |"
        assert expected in row, (f.name, row)


def test_credentials_come_only_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
    with pytest.raises(ConfigError, match="set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"):
        open_blobs("s3://swell-parts/p?endpoint=http://127.0.0.1:9")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    with pytest.raises(ConfigError, match="AWS_SECRET_ACCESS_KEY"):
        open_blobs("s3://swell-parts/p?endpoint=http://127.0.0.1:9")


def test_the_registry_opens_s3_urls(credentials: None) -> None:
    store = open_blobs("s3://swell-parts/prod?endpoint=http://127.0.0.1:9&region=us-east-1")
    assert isinstance(store, S3BlobStore)
    assert (store.bucket, store.prefix) == ("swell-parts", "prod")
    assert SECRET not in repr(store)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def silent_peer() -> Iterator[int]:
    """A port that accepts connections (the kernel completes them) and never answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(64)
        yield int(s.getsockname()[1])


async def test_a_dead_peer_is_unavailable_not_missing(credentials: None) -> None:
    port = _closed_port()
    store = open_blobs(f"s3://swell-parts/p?endpoint=http://127.0.0.1:{port}&retries=1")
    try:
        calls: list[Callable[[], Awaitable[object]]] = [
            lambda: store.put("1/a.json.gz", b"data"),
            lambda: store.read("1/a.json.gz"),
            lambda: store.head("1/a.json.gz"),
            lambda: store.delete(["1/a.json.gz"]),
            lambda: store.open_reader("1/a.json.gz"),
        ]
        for call in calls:
            with pytest.raises(BlobStoreUnavailable) as caught:
                await call()
            assert not isinstance(caught.value, BlobNotFound)
            assert "cannot connect to the object store" in caught.value.message
            assert "AKIDEXAMPLE" not in caught.value.message
        chunks = store.stream("1/a.json.gz")
        with pytest.raises(BlobStoreUnavailable):
            await anext(chunks)
    finally:
        await store.aclose()


async def test_a_silent_peer_times_out(credentials: None, silent_peer: int) -> None:
    url = f"s3://swell-parts/p?endpoint=http://127.0.0.1:{silent_peer}&timeout=0.5&retries=0"
    store = open_blobs(url)
    try:
        with pytest.raises(BlobStoreUnavailable, match="did not answer in time"):
            await store.read("1/a.json.gz", 0, 10)
        with pytest.raises(BlobStoreUnavailable, match="did not answer in time"):
            await store.put("1/a.json.gz", b"data")
    finally:
        await store.aclose()


async def test_a_closed_store_refuses_work(credentials: None) -> None:
    store = open_blobs(f"s3://swell-parts/p?endpoint=http://127.0.0.1:{_closed_port()}")
    await store.aclose()
    with pytest.raises(BlobStoreUnavailable, match="closed"):
        await store.read("1/a.json.gz")
