"""Read Amplitude export data (an Export API zip, a gzip, or NDJSON) for ``swell import``."""

from __future__ import annotations

import io
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, cast

import orjson
from isal import igzip, isal_zlib

from swell.errors import BadRequest
from swell.model import parse_ts

_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a zip with members, an empty zip
_GZIP_MAGIC = b"\x1f\x8b"
_BOM = b"\xef\xbb\xbf"
_BUFFER = 1 << 20

# What a damaged zip or gzip raises from the stdlib and isal; mapped to BadRequest.
_CORRUPT: tuple[type[Exception], ...] = (
    OSError,  # gzip.BadGzipFile, truncated reads
    EOFError,  # gzip stream ended before its end marker
    zlib.error,
    cast("type[Exception]", isal_zlib.error),  # its stub calls it an instance
    zipfile.BadZipFile,  # also a bad member CRC
    NotImplementedError,  # a zip compression method zipfile cannot read
    RuntimeError,  # an encrypted zip member
)


def read_records(path: Path) -> Iterator[tuple[bytes, dict[str, Any]]]:
    """Yield ``(line, record)`` for every export record in ``path``, in file order.

    ``path`` is an Export API zip (members are gzip, possibly multi-member, or plain NDJSON), a
    gzip of NDJSON, or NDJSON; the format is told by magic bytes, not the name. ``line`` is the
    record as compact JSON with its keys in the given order and no newline; ``record`` is it
    parsed. Blank lines are skipped. Streams: memory is bounded by the longest line.

    Raises:
        BadRequest: ``path`` cannot be read, a zip or gzip is corrupt, or a line is not a JSON
            object with a ``server_upload_time`` export timestamp. The message starts
            ``{path}:{member}:{line}:`` (member only for zips) to point at the culprit.
    """
    if not path.exists():
        raise BadRequest(f"{path}: no such file")
    if not path.is_file():
        raise BadRequest(f"{path}: not a regular file")
    return _read(path)


def _read(path: Path) -> Iterator[tuple[bytes, dict[str, Any]]]:
    try:
        file = path.open("rb")
    except OSError as exc:
        raise BadRequest(f"{path}: cannot read: {exc.strerror or exc}") from exc
    with file:
        try:
            magic = file.read(4)
            file.seek(0)
        except OSError as exc:
            raise BadRequest(f"{path}: cannot read: {exc.strerror or exc}") from exc
        if magic in _ZIP_MAGIC:
            yield from _read_zip(path, file)
        else:
            yield from _read_stream(f"{path}", file)


def _read_zip(path: Path, file: IO[bytes]) -> Iterator[tuple[bytes, dict[str, Any]]]:
    try:
        archive = zipfile.ZipFile(file)
    except _CORRUPT as exc:
        raise BadRequest(f"{path}: not a readable zip: {exc}") from exc
    with archive:
        for info in archive.infolist():
            if info.is_dir():
                continue
            where = f"{path}:{info.filename}"
            try:
                member = archive.open(info)
            except _CORRUPT as exc:
                raise BadRequest(f"{where}: cannot open zip member: {exc}") from exc
            with member:
                yield from _read_stream(where, member)


def _read_stream(where: str, raw: IO[bytes]) -> Iterator[tuple[bytes, dict[str, Any]]]:
    """Lines of ``raw``, gunzipped first if it starts with the gzip magic."""
    lineno = 0
    kind = "data"
    try:
        buffered = io.BufferedReader(cast("io.RawIOBase", raw), _BUFFER)
        if buffered.peek(2)[:2] == _GZIP_MAGIC:
            # IGzipFile is isal's (faster) gzip.GzipFile: streaming, reads multi-member gzip.
            lines: io.BufferedIOBase = igzip.IGzipFile(  # type: ignore[no-untyped-call]
                fileobj=buffered, mode="rb"
            )
            kind = "gzip"
        else:
            lines = buffered
        with buffered, lines:
            for lineno, line in enumerate(lines, 1):
                text = line.strip()
                if lineno == 1 and text.startswith(_BOM):
                    text = text[len(_BOM) :].lstrip()
                if text:
                    yield _parse(where, lineno, text)
    except _CORRUPT as exc:
        # Reads are buffered, so the damage is somewhere after the last line handed out.
        if isinstance(exc, zipfile.BadZipFile):
            kind = "zip member"
        raise BadRequest(f"{where}: corrupt {kind} after line {lineno}: {exc}") from exc


def _parse(where: str, lineno: int, text: bytes) -> tuple[bytes, dict[str, Any]]:
    try:
        record = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"{where}:{lineno}: not JSON: {exc}") from exc
    if not isinstance(record, dict):
        raise BadRequest(f"{where}:{lineno}: not a JSON object but {_json_type(record)}")
    upload = record.get("server_upload_time")
    if upload is None:
        raise BadRequest(f"{where}:{lineno}: missing server_upload_time")
    if not isinstance(upload, str):
        raise BadRequest(
            f"{where}:{lineno}: server_upload_time must be a string, not {_json_type(upload)}"
        )
    try:
        parse_ts(upload)
    except ValueError as exc:
        raise BadRequest(
            f"{where}:{lineno}: server_upload_time {upload!r} is not a timestamp"
        ) from exc
    return orjson.dumps(record), record


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"
