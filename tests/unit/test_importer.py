from __future__ import annotations

import gzip
import io
import json
import zipfile
from datetime import UTC, datetime
from itertools import groupby
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings, strategies as st

from swell.errors import BadRequest
from swell.generate import generate_records
from swell.importer import read_records
from swell.model import hour_of_ts, part_name

END = datetime(2025, 7, 2, tzinfo=UTC)
UPLOAD = "2025-07-01 17:14:33.149000"


@pytest.fixture(scope="module")
def records() -> list[dict[str, Any]]:
    return list(generate_records(636686, events=600, days=1, users=50, seed=3, end=END))


def ndjson(records: list[dict[str, Any]]) -> bytes:
    return b"".join(orjson.dumps(record) + b"\n" for record in records)


def multi_member_gzip(data: bytes, block: int = 2000) -> bytes:
    """A gzip of ``data`` made of several members, as swell's parts are."""
    return b"".join(gzip.compress(data[i : i + block]) for i in range(0, len(data), block)) or (
        gzip.compress(b"")
    )


def write_export_zip(path: Path, records: list[dict[str, Any]], project: int = 636686) -> None:
    """An Export API zip: one ``{p}/{p}_{date}_{H}#{n}.json.gz`` member per hour."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(f"{project}/", b"")  # a directory entry, to be skipped
        for hour, group in groupby(records, key=lambda r: hour_of_ts(r["server_upload_time"])):
            archive.writestr(part_name(project, hour, 627), multi_member_gzip(ndjson(list(group))))


def read_all(path: Path) -> list[tuple[bytes, dict[str, Any]]]:
    return list(read_records(path))


def test_reads_an_export_zip_of_multi_member_gzip_parts(
    tmp_path: Path, records: list[dict[str, Any]]
) -> None:
    path = tmp_path / "export.zip"
    write_export_zip(path, records)
    with zipfile.ZipFile(path) as archive:
        assert len(archive.namelist()) > 5
        assert "636686/636686_2025-07-01_9#627.json.gz" in archive.namelist()

    read = read_all(path)

    assert [line for line, _ in read] == [orjson.dumps(record) for record in records]
    assert [record for _, record in read] == records


def test_reads_plain_json_members_and_deflated_zips(
    tmp_path: Path, records: list[dict[str, Any]]
) -> None:
    path = tmp_path / "export.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("1/1_2025-07-01_0#0.json.gz", gzip.compress(ndjson(records[:10])))
        archive.writestr("1/plain.json", ndjson(records[10:20]))

    assert [record for _, record in read_all(path)] == records[:20]


def test_reads_a_gzip_file_whatever_its_name(tmp_path: Path, records: list[dict[str, Any]]) -> None:
    path = tmp_path / "events.txt"
    path.write_bytes(multi_member_gzip(ndjson(records)))

    assert [line for line, _ in read_all(path)] == [orjson.dumps(r) for r in records]


def test_reads_ndjson_skipping_blank_lines(tmp_path: Path, records: list[dict[str, Any]]) -> None:
    path = tmp_path / "events.ndjson"
    lines = [orjson.dumps(record) for record in records[:3]]
    path.write_bytes(b"\xef\xbb\xbf" + lines[0] + b"\r\n\n   \n" + lines[1] + b"\n" + lines[2])

    assert [line for line, _ in read_all(path)] == lines


def test_lines_are_compacted_keeping_key_order(tmp_path: Path) -> None:
    path = tmp_path / "events.json"
    path.write_text(
        '  { "zeta": 1, "server_upload_time": "'
        + UPLOAD
        + '",\t"alpha": {"b": [1, 2.5], "a": null} }\n'
    )

    [(line, record)] = read_all(path)

    assert line == b'{"zeta":1,"server_upload_time":"%s","alpha":{"b":[1,2.5],"a":null}}' % (
        UPLOAD.encode()
    )
    assert list(record) == ["zeta", "server_upload_time", "alpha"]


def test_an_empty_file_and_an_empty_zip_hold_no_records(tmp_path: Path) -> None:
    empty = tmp_path / "empty.json"
    empty.write_bytes(b"")
    archive = tmp_path / "empty.zip"
    zipfile.ZipFile(archive, "w").close()

    assert read_all(empty) == []
    assert read_all(archive) == []


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
json_objects = st.dictionaries(
    st.text(max_size=10).filter(lambda key: key != "server_upload_time"), json_values, max_size=8
)


@settings(max_examples=60, deadline=None)
@given(
    objects=st.lists(
        st.tuples(json_objects, st.integers(min_value=0, max_value=8)), min_size=1, max_size=5
    ),
    form=st.sampled_from(["zip", "gzip", "ndjson"]),
)
def test_any_json_object_survives_the_round_trip(
    tmp_path_factory: pytest.TempPathFactory,
    objects: list[tuple[dict[str, Any], int]],
    form: str,
) -> None:
    records = []
    for fields, at in objects:
        items = list(fields.items())
        items.insert(min(at, len(items)), ("server_upload_time", UPLOAD))
        records.append(dict(items))
    # Written the way other tools write JSON: spaced, ASCII-escaped.
    data = "".join(json.dumps(record) + "\n" for record in records).encode()
    path = tmp_path_factory.mktemp("round-trip") / "data"
    if form == "zip":
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("1/1_2025-07-01_17#0.json.gz", multi_member_gzip(data, block=50))
    elif form == "gzip":
        path.write_bytes(multi_member_gzip(data, block=50))
    else:
        path.write_bytes(data)

    read = read_all(path)

    assert [line for line, _ in read] == [orjson.dumps(record) for record in records]
    assert [list(record) for _, record in read] == [list(record) for record in records]


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b'{"server_upload_time": ', "not JSON"),
        (b"\xff\xfe{}", "not JSON"),
        (b"[1, 2]", "not a JSON object but an array"),
        (b'"text"', "not a JSON object but a string"),
        (b'{"event_type": "x"}', "missing server_upload_time"),
        (b'{"server_upload_time": null}', "missing server_upload_time"),
        (b'{"server_upload_time": 1751390073}', "must be a string, not a number"),
        (b'{"server_upload_time": "yesterday"}', "'yesterday' is not a timestamp"),
        (b'{"server_upload_time": "2025-13-01 00:00:00"}', "is not a timestamp"),
    ],
)
def test_a_bad_line_names_file_and_line(tmp_path: Path, line: bytes, reason: str) -> None:
    good = b'{"server_upload_time": "%s"}' % UPLOAD.encode()
    path = tmp_path / "events.json"
    path.write_bytes(good + b"\n\n" + line + b"\n" + good + b"\n")

    with pytest.raises(BadRequest) as caught:
        read_all(path)

    assert caught.value.message.startswith(f"{path}:3: ")
    assert reason in caught.value.message


def test_a_bad_line_in_a_zip_names_the_member(
    tmp_path: Path, records: list[dict[str, Any]]
) -> None:
    path = tmp_path / "export.zip"
    member = "1/1_2025-07-01_17#0.json.gz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(member, gzip.compress(ndjson(records[:4]) + b"{oops}\n"))

    with pytest.raises(BadRequest, match=r"not JSON") as caught:
        read_all(path)

    assert caught.value.message.startswith(f"{path}:{member}:5: ")


def test_a_corrupt_gzip_is_a_bad_request(tmp_path: Path, records: list[dict[str, Any]]) -> None:
    data = gzip.compress(ndjson(records))
    garbled = tmp_path / "garbled.json.gz"
    garbled.write_bytes(data[:20] + bytes(b ^ 0x55 for b in data[20:200]) + data[200:])
    truncated = tmp_path / "truncated.json.gz"
    truncated.write_bytes(data[: len(data) // 2])

    for path in (garbled, truncated):
        with pytest.raises(BadRequest) as caught:
            read_all(path)
        assert caught.value.message.startswith(f"{path}: corrupt gzip after line ")


def test_a_truncated_zip_is_a_bad_request(tmp_path: Path, records: list[dict[str, Any]]) -> None:
    whole = tmp_path / "whole.zip"
    write_export_zip(whole, records)
    path = tmp_path / "truncated.zip"
    path.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])

    with pytest.raises(BadRequest, match=r"not a readable zip"):
        read_all(path)


def test_a_zip_member_with_a_bad_crc_is_a_bad_request(
    tmp_path: Path, records: list[dict[str, Any]]
) -> None:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:  # stored, so a flipped byte reaches the CRC
        archive.writestr("1/1_2025-07-01_17#0.json", ndjson(records[:50]))
    data = bytearray(buffer.getvalue())
    data[500] ^= 0x01
    path = tmp_path / "export.zip"
    path.write_bytes(bytes(data))

    with pytest.raises(BadRequest) as caught:
        read_all(path)

    assert caught.value.message.startswith(f"{path}:1/1_2025-07-01_17#0.json: corrupt zip member")


def test_a_missing_path_or_a_directory_is_a_bad_request(tmp_path: Path) -> None:
    with pytest.raises(BadRequest, match=r"no such file"):
        read_records(tmp_path / "nope.zip")
    with pytest.raises(BadRequest, match=r"not a regular file"):
        read_records(tmp_path)
