"""The ``swell`` command line, run as a user runs it: a subprocess, JSON on stdout, exit codes."""

from __future__ import annotations

import gzip
import io
import json
import re
import subprocess
import sys
import zipfile
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from starlette.testclient import TestClient
from typer.testing import CliRunner

from swell import cli
from swell.api.app import create_app
from swell.model import EXPORT_KEYS, format_ts, hour_of_ts, hour_start
from swell.settings import Settings
from tests.conftest import LiveServer, run_cli

HEX32 = re.compile(r"^[0-9a-f]{32}$")
BASE = datetime(2024, 3, 5, tzinfo=UTC)


@dataclass(frozen=True)
class Result:
    returncode: int
    stdout: str
    stderr: str


def swell(*args: str, data_dir: Path | None = None, **env: str) -> Result:
    """Run the CLI in process (typer's CliRunner); ``test_python_dash_m_swell`` covers the real
    entry point in a subprocess."""
    extra = ["--data-dir", str(data_dir)] if data_dir is not None else []
    result = CliRunner().invoke(cli.app, [*args, *extra], env=env)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return Result(result.exit_code, result.stdout, result.stderr)


def assert_one_line_error(result: Result, message: str, *, prefix: bool = False) -> None:
    """Exit code 2, nothing on stdout, exactly one line on stderr (``message``, or its start)."""
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stdout == ""
    if prefix:
        assert result.stderr.startswith(f"swell: {message}"), result.stderr
        assert result.stderr.count("\n") == 1
        assert result.stderr.endswith("\n")
    else:
        assert result.stderr == f"swell: {message}\n"
    assert "Traceback" not in result.stderr


@pytest.fixture
def project(tmp_path: Path) -> dict[str, Any]:
    data_dir = tmp_path / "data"
    org = json.loads(swell("org", "create", "acme", data_dir=data_dir).stdout)
    created = swell("project", "create", "web", "--org", str(org["org_id"]), data_dir=data_dir)
    return {**json.loads(created.stdout), "data_dir": data_dir}


@pytest.fixture
def app_client(project: dict[str, Any]) -> Iterator[TestClient]:
    """The app on the CLI's data directory (open it only after the CLI is done with it)."""
    settings = Settings(data_dir=project["data_dir"], seal_check_seconds=3600)
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        yield client


def export_members(
    client: TestClient, project: dict[str, Any], start: str, end: str
) -> dict[str, list[bytes]]:
    resp = client.get(
        "/api/2/export",
        params={"start": start, "end": end},
        auth=(project["api_key"], project["secret_key"]),
    )
    assert resp.status_code == 200, resp.text
    with zipfile.ZipFile(io.BytesIO(resp.content)) as zf:
        return {name: gzip.decompress(zf.read(name)).splitlines() for name in zf.namelist()}


# -- org and project -----------------------------------------------------------------------------


def test_org_and_project_create_print_their_keys_once(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = swell("org", "create", "acme", data_dir=data_dir)
    assert first.returncode == 0, first.stderr
    org = json.loads(first.stdout)
    assert list(org) == ["org_id", "api_key", "secret_key"]
    assert org["org_id"] == 1
    assert HEX32.match(org["api_key"])
    assert HEX32.match(org["secret_key"])
    assert org["api_key"] != org["secret_key"]
    assert first.stdout == json.dumps(org) + "\n"

    second = json.loads(swell("org", "create", "globex", data_dir=data_dir).stdout)
    assert second["org_id"] == 2

    result = swell("project", "create", "web", "--org", "2", data_dir=data_dir)
    assert result.returncode == 0, result.stderr
    project = json.loads(result.stdout)
    assert list(project) == ["project_id", "org_id", "api_key", "secret_key"]
    assert (project["project_id"], project["org_id"]) == (1, 2)
    assert HEX32.match(project["api_key"])
    assert HEX32.match(project["secret_key"])
    assert len({org["api_key"], second["api_key"], project["api_key"]}) == 3


def test_project_create_for_a_missing_org_fails_with_one_line(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    run_cli("org", "create", "acme", data_dir=data_dir)
    result = swell("project", "create", "web", "--org", "999", data_dir=data_dir)
    assert_one_line_error(result, "org 999 does not exist")


def test_created_keys_work_against_the_server(
    project: dict[str, Any], app_client: TestClient
) -> None:
    resp = app_client.post(
        "/2/httpapi",
        json={
            "api_key": project["api_key"],
            "events": [{"user_id": "cli-user", "event_type": "x"}],
        },
    )
    assert resp.json()["code"] == 200
    now = datetime.now(UTC)
    members = export_members(
        app_client,
        project,
        f"{now - timedelta(hours=1):%Y%m%dT%H}",
        f"{now + timedelta(hours=1):%Y%m%dT%H}",
    )
    [line] = [line for lines in members.values() for line in lines]
    assert orjson.loads(line)["app"] == project["project_id"]


# -- import --------------------------------------------------------------------------------------


def export_record(project_id: int, upload: datetime, n: int) -> dict[str, Any]:
    """A full 55-key record with unusual but legal values everywhere."""
    record: dict[str, Any] = dict.fromkeys(EXPORT_KEYS)
    record.update(
        {
            "$insert_id": f"import-{n}",
            "$schema": 12,
            "amplitude_id": 1_263_130_950_579 + n % 7,
            "app": project_id,
            "city": "Zürich",
            "client_event_time": format_ts(upload - timedelta(seconds=n)),
            "client_upload_time": format_ts(upload - timedelta(milliseconds=300)),
            "data": {
                "path": "/batch",
                "vacuum_source_id": "x",
                "group_first_event": {},
                "group_ids": {"3124": [2357687219]},
            },
            "data_type": "event",
            "device_id": f"f48913e6-c106-5429-a296-{n % 5:012d}",
            "event_id": 991179682 + n,
            "event_properties": {"Total Price": 6396.0, "Drop Id": n, "nested": {"a": [1, None]}},
            "event_time": format_ts(upload - timedelta(seconds=n)),
            "event_type": "Property Drop Purchased" if n % 2 else "Page Viewed",
            "group_properties": {"[Segment] Group": {"90f9": {}}},
            "groups": {"[Segment] Group": ["90f9"]},
            "is_attribution_event": False,
            "library": "amplitude-ts/2.0.0",
            "location_lat": 47.3769,
            "location_lng": 8.5417,
            "paying": True if n % 3 == 0 else None,
            "plan": {"branch": "main", "source": "web", "version": "3"},
            "processed_time": format_ts(upload + timedelta(milliseconds=500)),
            "server_received_time": format_ts(upload - timedelta(milliseconds=4)),
            "server_upload_time": format_ts(upload),
            "session_id": 1_709_600_000_000 + n,
            "user_id": f"user-{n % 4}" if n % 5 else None,
            "user_properties": {"plan": "pro", "tags": ["a", "b"], "score": 1.5e-7},
            "uuid": f"a6ec45f6-0016-4907-b433-{n:012d}",
            "version_name": "1.2.3",
        }
    )
    return record


def write_export_zip(path: Path, project_id: int, members: dict[int, list[bytes]]) -> None:
    """An Export API zip: one gzip NDJSON member per hour, named as Amplitude names them."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for hour, lines in members.items():
            start = hour_start(hour)
            name = f"{project_id}/{project_id}_{start:%Y-%m-%d}_{start.hour}#0.json.gz"
            zf.writestr(name, gzip.compress(b"".join(line + b"\n" for line in lines)))


def test_import_of_an_export_zip_round_trips_byte_for_byte(
    project: dict[str, Any], tmp_path: Path
) -> None:
    pid = project["project_id"]
    uploads = [BASE + timedelta(hours=h, minutes=7 * i) for h in (0, 5, 23, 24) for i in range(5)]
    lines = [orjson.dumps(export_record(pid, up, n)) for n, up in enumerate(uploads)]
    by_hour: dict[int, list[bytes]] = defaultdict(list)
    for line in lines:
        by_hour[hour_of_ts(orjson.loads(line)["server_upload_time"])].append(line)
    # The zip files the last hour's lines under the first hour's member: import goes by the
    # records' server_upload_time, not the member name.
    first, *rest = sorted(by_hour)
    members = {first: by_hour[first] + by_hour[rest[-1]], **{h: by_hour[h] for h in rest[:-1]}}
    archive = tmp_path / "export.zip"
    write_export_zip(archive, pid, members)

    result = swell("import", str(archive), "--project", str(pid), data_dir=project["data_dir"])
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert list(summary) == ["project_id", "events", "skipped", "expired", "seconds"]
    assert (summary["project_id"], summary["events"], summary["skipped"]) == (pid, len(lines), 0)

    settings = Settings(data_dir=project["data_dir"], seal_check_seconds=3600)
    with TestClient(create_app(settings)) as client:
        exported = export_members(client, project, "20240305T00", "20240306T23")
    assert set(exported) == {
        f"{pid}/{pid}_2024-03-05_0#0.json.gz",
        f"{pid}/{pid}_2024-03-05_5#0.json.gz",
        f"{pid}/{pid}_2024-03-05_23#0.json.gz",
        f"{pid}/{pid}_2024-03-06_0#0.json.gz",
    }
    for name, got in exported.items():
        hour = hour_of_ts(orjson.loads(got[0])["server_upload_time"])
        assert name.endswith(f"{hour_start(hour):%Y-%m-%d}_{hour_start(hour).hour}#0.json.gz")
        assert sorted(got) == sorted(by_hour[hour]), name
    assert sum(len(v) for v in exported.values()) == len(lines)


def test_import_of_plain_ndjson_and_gzip_files(project: dict[str, Any], tmp_path: Path) -> None:
    pid = project["project_id"]
    lines = [orjson.dumps(export_record(pid, BASE + timedelta(minutes=i), i)) for i in range(6)]
    (tmp_path / "a.json").write_bytes(b"\n".join(lines[:3]) + b"\n\n")
    (tmp_path / "b.json.gz").write_bytes(gzip.compress(b"\n".join(lines[3:])))
    result = swell(
        "import",
        str(tmp_path / "a.json"),
        str(tmp_path / "b.json.gz"),
        "--project",
        str(pid),
        data_dir=project["data_dir"],
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["events"] == 6
    settings = Settings(data_dir=project["data_dir"], seal_check_seconds=3600)
    with TestClient(create_app(settings)) as client:
        exported = export_members(client, project, "20240305T00", "20240305T00")
    assert sorted(line for got in exported.values() for line in got) == sorted(lines)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            b"this is not json\n",
            "{path}:1: not JSON: ",
        ),
        (b'{"event_type": "x"}\n', "{path}:1: missing server_upload_time"),
        (b"[1, 2]\n", "{path}:1: not a JSON object but an array"),
    ],
    ids=["not-json", "no-upload-time", "array"],
)
def test_import_of_a_bad_file_exits_2_with_a_clear_message(
    project: dict[str, Any], tmp_path: Path, content: bytes, message: str
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_bytes(content)
    result = swell(
        "import", str(bad), "--project", str(project["project_id"]), data_dir=project["data_dir"]
    )
    assert_one_line_error(result, message.format(path=bad), prefix=True)


def test_import_of_a_corrupt_zip_or_missing_file_exits_2(
    project: dict[str, Any], tmp_path: Path
) -> None:
    pid = str(project["project_id"])
    missing = tmp_path / "nope.zip"
    assert_one_line_error(
        swell("import", str(missing), "--project", pid, data_dir=project["data_dir"]),
        f"{missing}: no such file",
    )
    corrupt = tmp_path / "corrupt.zip"
    write_export_zip(corrupt, 1, {hour_of_ts("2024-03-05 00:00:00.000000"): [b'{"a":1}'] * 50})
    data = bytearray(corrupt.read_bytes())
    data[60:80] = b"\x00" * 20  # inside the first member's compressed data
    corrupt.write_bytes(bytes(data))
    result = swell("import", str(corrupt), "--project", pid, data_dir=project["data_dir"])
    assert_one_line_error(result, f"{corrupt}:", prefix=True)


def test_import_into_a_missing_project_exits_2(project: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "ok.json"
    path.write_bytes(orjson.dumps(export_record(999, BASE, 1)) + b"\n")
    result = swell("import", str(path), "--project", "999", data_dir=project["data_dir"])
    assert_one_line_error(result, "project 999 does not exist")


def test_import_while_a_server_holds_the_data_dir_exits_2(
    live_server: LiveServer, live_keys: tuple[Path, dict[str, Any], dict[str, Any]], tmp_path: Path
) -> None:
    data_dir, _, project = live_keys
    path = tmp_path / "ok.json"
    path.write_bytes(orjson.dumps(export_record(project["project_id"], BASE, 1)) + b"\n")
    result = swell("import", str(path), "--project", str(project["project_id"]), data_dir=data_dir)
    assert_one_line_error(result, f"{data_dir} is in use by another swell process", prefix=True)
    assert live_server.proc is not None
    assert live_server.terminate() == 0


# -- generate ------------------------------------------------------------------------------------


def test_generate_then_export_those_days(project: dict[str, Any]) -> None:
    pid = project["project_id"]
    result = swell(
        "generate",
        "--project",
        str(pid),
        "--events",
        "2000",
        "--days",
        "2",
        "--users",
        "50",
        data_dir=project["data_dir"],
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert (summary["project_id"], summary["events"]) == (pid, 2000)

    now = datetime.now(UTC)
    settings = Settings(data_dir=project["data_dir"], seal_check_seconds=3600)
    with TestClient(create_app(settings)) as client:
        members = export_members(
            client,
            project,
            f"{now - timedelta(days=2, hours=1):%Y%m%dT%H}",
            f"{now + timedelta(hours=1):%Y%m%dT%H}",
        )
    records = [orjson.loads(line) for lines in members.values() for line in lines]
    assert len(records) == 2000
    assert all(list(r) == list(EXPORT_KEYS) for r in records)
    assert {r["app"] for r in records} == {pid}
    assert len({r["uuid"] for r in records}) == 2000
    assert 1 < len({r["user_id"] for r in records if r["user_id"]}) <= 50
    for name, lines in members.items():
        hours = {hour_of_ts(orjson.loads(line)["server_upload_time"]) for line in lines}
        [hour] = hours
        assert f"_{hour_start(hour):%Y-%m-%d}_{hour_start(hour).hour}#" in name


# -- serve ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"SWELL_PORT": "abc"}, "SWELL_PORT has value 'abc'. Not a valid int."),
        ({"SWELL_PORT": "-1"}, "SWELL_PORT has value -1: it must be between 1 and 65535."),
        ({"SWELL_PORT": "99999"}, "SWELL_PORT has value 99999: it must be between 1 and 65535."),
        (
            {"SWELL_SEAL_CHECK_SECONDS": "-5"},
            "SWELL_SEAL_CHECK_SECONDS has value -5.0: it must be between 0.05 and 86400.",
        ),
        (
            {"SWELL_TRUST_FORWARDED_FOR": "maybe"},
            "SWELL_TRUST_FORWARDED_FOR has value 'maybe'. Not a valid bool.",
        ),
    ],
    ids=["port-abc", "port-negative", "port-too-high", "seal-check-negative", "bool"],
)
def test_serve_with_a_bad_setting_exits_2_naming_the_variable(
    tmp_path: Path, env: dict[str, str], message: str
) -> None:
    result = swell("serve", data_dir=tmp_path / "data", **env)
    assert_one_line_error(result, message)


def test_python_dash_m_swell(tmp_path: Path) -> None:
    """The real entry point, as a subprocess: JSON on stdout, and a one-line error with exit 2."""
    data_dir = tmp_path / "data"
    org = run_cli("org", "create", "acme", data_dir=data_dir)
    assert list(org) == ["org_id", "api_key", "secret_key"]
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "swell",
            "project",
            "create",
            "web",
            "--org=7",
            f"--data-dir={data_dir}",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == "swell: org 7 does not exist\n"
    version = subprocess.run(
        [sys.executable, "-m", "swell", "version"], capture_output=True, text=True, check=False
    )
    assert version.returncode == 0
    assert re.match(r"^\d+\.\d+", version.stdout)
