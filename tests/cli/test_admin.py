"""The admin's commands: list orgs and projects, rotate keys (on a running server too), delete an
empty project, idempotent and resumable imports, retention, clean one-line errors."""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from starlette.testclient import TestClient

from swell import __version__, cli
from swell.api.app import create_app
from swell.settings import Settings
from swell.store import Store
from tests.cli.test_cli import BASE, assert_one_line_error, export_record, swell
from tests.conftest import LiveServer, free_port, hours_around_now, zip_lines


def lines_of(result: Any) -> list[dict[str, Any]]:
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def make_org(data_dir: Path, name: str = "acme") -> dict[str, Any]:
    result = swell("org", "create", name, data_dir=data_dir)
    assert result.returncode == 0, result.stderr
    org: dict[str, Any] = json.loads(result.stdout)
    return org


def make_project(data_dir: Path, org_id: int, name: str = "web") -> dict[str, Any]:
    result = swell("project", "create", name, "--org", str(org_id), data_dir=data_dir)
    assert result.returncode == 0, result.stderr
    project: dict[str, Any] = json.loads(result.stdout)
    return project


def exported_records(data_dir: Path, project: dict[str, Any], start: str, end: str) -> list[Any]:
    settings = Settings(data_dir=data_dir, seal_check_seconds=3600)
    with TestClient(create_app(settings)) as client:
        resp = client.get(
            "/api/2/export",
            params={"start": start, "end": end},
            auth=(project["api_key"], project["secret_key"]),
        )
    if resp.status_code == 404:
        return []
    assert resp.status_code == 200, resp.text
    return [orjson.loads(line) for line in zip_lines(resp.content)]


# -- orgs and projects ---------------------------------------------------------------------------


def test_orgs_and_projects_are_listed(tmp_path: Path) -> None:
    acme, other = make_org(tmp_path, "acme"), make_org(tmp_path, "other")
    web = make_project(tmp_path, acme["org_id"], "web")
    ios = make_project(tmp_path, acme["org_id"], "ios")
    orgs = lines_of(swell("org", "list", data_dir=tmp_path))
    assert [(o["org_id"], o["name"], o["projects"]) for o in orgs] == [
        (acme["org_id"], "acme", 2),
        (other["org_id"], "other", 0),
    ]
    projects = lines_of(swell("project", "list", data_dir=tmp_path))
    assert [(p["project_id"], p["name"], p["parts"], p["events"]) for p in projects] == [
        (web["project_id"], "web", 0, 0),
        (ios["project_id"], "ios", 0, 0),
    ]
    assert (
        lines_of(swell("project", "list", "--org", str(other["org_id"]), data_dir=tmp_path)) == []
    )
    assert "secret" not in swell("project", "list", data_dir=tmp_path).stdout


def test_rotated_keys_are_refused_at_once_by_a_running_server(tmp_path: Path) -> None:
    org = make_org(tmp_path)
    project = make_project(tmp_path, org["org_id"])
    server = LiveServer(tmp_path).start()
    try:
        export = f"{server.url}/api/2/export"
        old = (project["api_key"], project["secret_key"])
        assert httpx.get(export, params=hours_around_now(), auth=old).status_code == 404
        rotated = json.loads(
            swell("project", "rotate-keys", str(project["project_id"]), data_dir=tmp_path).stdout
        )
        assert rotated["project_id"] == project["project_id"]
        assert rotated["api_key"] != project["api_key"]
        assert httpx.get(export, params=hours_around_now(), auth=old).status_code == 401
        new = (rotated["api_key"], rotated["secret_key"])
        assert httpx.get(export, params=hours_around_now(), auth=new).status_code == 404
        new_org = json.loads(
            swell("org", "rotate-keys", str(org["org_id"]), data_dir=tmp_path).stdout
        )
        dsar = f"{server.url}/api/2/dsar/requests/1"
        assert httpx.get(dsar, auth=(org["api_key"], org["secret_key"])).status_code == 401
        assert httpx.get(dsar, auth=(new_org["api_key"], new_org["secret_key"])).status_code == 404
        # Ingestion (an api_key alone) stops taking the old key within a second.
        body = {"api_key": project["api_key"], "events": [{"user_id": "u-1234", "event_type": "e"}]}
        deadline = time.monotonic() + 10
        while httpx.post(f"{server.url}/2/httpapi", json=body).status_code == 200:
            assert time.monotonic() < deadline, "the old api_key kept working"
            time.sleep(0.1)
        assert httpx.post(f"{server.url}/2/httpapi", json=body).status_code == 400
        body["api_key"] = rotated["api_key"]
        assert httpx.post(f"{server.url}/2/httpapi", json=body).status_code == 200
    finally:
        assert server.terminate() == 0


def test_rotating_or_deleting_what_does_not_exist_is_one_line(tmp_path: Path) -> None:
    make_org(tmp_path)
    assert_one_line_error(
        swell("org", "rotate-keys", "9", data_dir=tmp_path), "org 9 does not exist"
    )
    for command in ("rotate-keys", "delete"):
        assert_one_line_error(
            swell("project", command, "9", data_dir=tmp_path), "project 9 does not exist"
        )


def test_only_an_empty_project_can_be_deleted(tmp_path: Path) -> None:
    org = make_org(tmp_path)
    full = make_project(tmp_path, org["org_id"], "full")
    empty = make_project(tmp_path, org["org_id"], "empty")
    path = tmp_path / "one.json"
    path.write_bytes(orjson.dumps(export_record(full["project_id"], BASE, 1)) + b"\n")
    assert (
        swell(
            "import", str(path), "--project", str(full["project_id"]), data_dir=tmp_path
        ).returncode
        == 0
    )
    assert_one_line_error(
        swell("project", "delete", str(full["project_id"]), data_dir=tmp_path),
        f"project {full['project_id']} holds 1 sealed part(s); "
        "only an empty project can be deleted",
    )
    done = lines_of(swell("project", "delete", str(empty["project_id"]), data_dir=tmp_path))
    assert done == [{"project_id": empty["project_id"], "deleted": True}]
    assert [p["project_id"] for p in lines_of(swell("project", "list", data_dir=tmp_path))] == [
        full["project_id"]
    ]


def test_a_project_with_events_still_in_the_log_is_not_empty(tmp_path: Path) -> None:
    org = make_org(tmp_path)
    project = make_project(tmp_path, org["org_id"])
    server = LiveServer(tmp_path).start()
    body = {"api_key": project["api_key"], "events": [{"user_id": "u-1234", "event_type": "e"}]}
    assert httpx.post(f"{server.url}/2/httpapi", json=body).status_code == 200
    assert_one_line_error(
        swell("project", "delete", str(project["project_id"]), data_dir=tmp_path),
        f"{tmp_path} is in use by another swell process",
        prefix=True,
    )
    server.kill()  # the event is only in the log
    assert_one_line_error(
        swell("project", "delete", str(project["project_id"]), data_dir=tmp_path),
        f"project {project['project_id']} holds 1 event(s) not sealed yet; only an empty "
        "project can be deleted",
    )


# -- imports -------------------------------------------------------------------------------------


def test_importing_the_same_data_again_stores_it_once(tmp_path: Path) -> None:
    org = make_org(tmp_path)
    project = make_project(tmp_path, org["org_id"])
    pid = str(project["project_id"])
    records = [
        export_record(project["project_id"], BASE + timedelta(minutes=i), i) for i in range(8)
    ]
    first, overlapping = tmp_path / "first.json", tmp_path / "second.json.gz"
    first.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in records[:5]))
    overlapping.write_bytes(gzip.compress(b"".join(orjson.dumps(r) + b"\n" for r in records[3:])))
    one = lines_of(swell("import", str(first), "--project", pid, data_dir=tmp_path))[0]
    assert (one["events"], one["skipped"]) == (5, 0)
    again = lines_of(swell("import", str(first), "--project", pid, data_dir=tmp_path))[0]
    assert (again["events"], again["skipped"]) == (0, 5)
    rest = lines_of(swell("import", str(overlapping), "--project", pid, data_dir=tmp_path))[0]
    assert (rest["events"], rest["skipped"]) == (3, 2)
    stored = exported_records(tmp_path, project, "20240305T00", "20240305T01")
    assert Counter(r["uuid"] for r in stored) == Counter(r["uuid"] for r in records)


def test_imported_records_are_filed_under_the_target_project(tmp_path: Path) -> None:
    org = make_org(tmp_path)
    project = make_project(tmp_path, org["org_id"])
    path = tmp_path / "from-elsewhere.json"
    path.write_bytes(orjson.dumps(export_record(187520, BASE, 1)) + b"\n")  # Amplitude's app id
    assert (
        swell(
            "import", str(path), "--project", str(project["project_id"]), data_dir=tmp_path
        ).returncode
        == 0
    )
    [record] = exported_records(tmp_path, project, "20240305T00", "20240305T00")
    assert record["app"] == project["project_id"]
    assert record["uuid"] == export_record(187520, BASE, 1)["uuid"]


@pytest.mark.slow
def test_an_interrupted_generate_finishes_when_run_again(tmp_path: Path) -> None:
    org = make_org(tmp_path)
    project = make_project(tmp_path, org["org_id"])
    args = [
        *("generate", "--project", str(project["project_id"]), "--events", "40000"),
        *("--days", "2", "--users", "300", "--end", "20240310T00", "--data-dir", str(tmp_path)),
    ]
    env = {**os.environ, "SWELL_PART_MAX_BYTES": "65536"}
    blobs = tmp_path / "blobs" / str(project["project_id"])
    with subprocess.Popen(
        [sys.executable, "-m", "swell", *args], env=env, stdout=subprocess.DEVNULL
    ) as proc:
        deadline = time.monotonic() + 120
        while not (blobs.is_dir() and len(list(blobs.iterdir())) >= 3):
            assert proc.poll() is None, "generate finished before it could be interrupted"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    resumed = subprocess.run(
        [sys.executable, "-m", "swell", *args], env=env, capture_output=True, text=True, check=True
    )
    summary = json.loads(resumed.stdout)
    assert summary["skipped"] > 0
    assert summary["events"] + summary["skipped"] == 40000
    stored = exported_records(tmp_path, project, "20240307T00", "20240310T00")
    assert len(stored) == len({r["uuid"] for r in stored}) == 40000


# -- retention -----------------------------------------------------------------------------------


async def test_retention_drops_parts_older_than_the_window(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, seal_check_seconds=3600, retention_days=3)
    store = await Store.open(settings)
    try:
        org = await store.meta.create_org("acme", "k" * 32, "h")
        pid = await store.meta.create_project("web", org, "p" * 32, "h")
        now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
        records = [
            export_record(pid, now - timedelta(days=days, minutes=5), n)
            for n, days in enumerate([10, 5, 4, 2, 1, 0])
        ]
        # Import skips what is already past the window; make older parts as an earlier
        # store without retention would have left them.
        store.settings = settings.replace(retention_days=0)
        await store.import_records(pid, [(orjson.dumps(r), r) for r in records])
        store.settings = settings
        assert await store.apply_retention() == 3
        left = await store.meta.parts(pid, 0, 10**7)
        assert len(left) == 3
        names = {p.name for p in left}
        on_disk = {
            str(p.relative_to(tmp_path / "blobs")) for p in (tmp_path / "blobs").rglob("*.json.gz")
        }
        assert on_disk == names  # the dropped parts' files are gone too
        assert (store.retention_dropped_parts, store.retention_dropped_events) == (3, 3)
        assert await store.apply_retention() == 0
        result = await store.import_records(pid, [(orjson.dumps(records[0]), records[0])])
        assert (result.stored, result.expired) == (0, 1)
    finally:
        await store.aclose()


# -- errors and help -----------------------------------------------------------------------------


def test_a_bad_setting_is_one_line_and_exit_2_for_every_command(tmp_path: Path) -> None:
    for args in (
        ["org", "list"],
        ["project", "list"],
        ["generate", "--project", "1", "--events", "1"],
    ):
        result = swell(*args, data_dir=tmp_path, SWELL_PORT="99999")
        assert_one_line_error(result, "SWELL_PORT has value 99999: it must be between 1 and 65535.")


def test_serve_on_a_busy_port_or_a_data_dir_in_use_is_one_line(tmp_path: Path) -> None:
    server = LiveServer(tmp_path / "a").start()
    try:
        busy = swell("serve", "--port", str(server.port), data_dir=tmp_path / "b")
        assert_one_line_error(busy, f"cannot listen on 127.0.0.1:{server.port}: ", prefix=True)
        in_use = swell("serve", "--port", str(free_port()), data_dir=tmp_path / "a")
        assert_one_line_error(
            in_use, f"{tmp_path / 'a'} is in use by another swell process", prefix=True
        )
        demo = swell("demo", "--port", str(server.port), data_dir=tmp_path / "c")
        assert_one_line_error(demo, f"cannot listen on 127.0.0.1:{server.port}: ", prefix=True)
        assert not (tmp_path / "c" / "demo.json").exists()  # nothing generated for nothing
    finally:
        assert server.terminate() == 0


def test_help_shows_the_environment_variables_and_version_works() -> None:
    help_text = swell("serve", "--help").stdout
    assert "env SWELL_HOST" in help_text
    assert "env SWELL_PORT" in help_text
    assert "env SWELL_DATA_DIR" in help_text
    assert swell("--version").stdout == f"{__version__}\n"


def test_an_interrupted_first_demo_start_resumes_with_the_same_org(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, seal_check_seconds=3600)

    async def start(events: int) -> dict[str, dict[str, Any]]:
        return await cli._prepare_demo(settings, events)

    async def interrupt_generation() -> None:
        store = await Store.open(settings)
        try:  # what a first start leaves when it is stopped while generating
            org = await store.meta.create_org("demo", "o" * 32, "h")
            pid = await store.meta.create_project("demo", org, "p" * 32, "h")
            end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
            store.backends.data_dir.set_marker(
                "demo",
                {"org_id": org, "project_id": pid, "end": end.isoformat(), "generated": False},
            )
            records = list(cli._generated(pid, 3000, 7, 100, 0, end))[:1000]
            await store.import_records(pid, records)
        finally:
            await store.aclose()

    asyncio.run(interrupt_generation())
    info = asyncio.run(start(3000))
    orgs = lines_of(swell("org", "list", data_dir=tmp_path))
    assert [o["org_id"] for o in orgs] == [info["org"]["org_id"]]  # no orphan
    projects = lines_of(swell("project", "list", data_dir=tmp_path))
    assert [p["events"] for p in projects] == [3000]


def test_a_first_demo_start_generates_its_events_and_a_second_does_not(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, seal_check_seconds=3600)
    first = asyncio.run(cli._prepare_demo(settings, 2000))
    assert [p["events"] for p in lines_of(swell("project", "list", data_dir=tmp_path))] == [2000]
    second = asyncio.run(cli._prepare_demo(settings, 2000))  # fresh keys, the same data
    assert second["project"]["project_id"] == first["project"]["project_id"]
    assert second["project"]["api_key"] != first["project"]["api_key"]
    assert [p["events"] for p in lines_of(swell("project", "list", data_dir=tmp_path))] == [2000]


def test_serve_with_an_unreachable_metadata_store_is_one_line(tmp_path: Path) -> None:
    dead = free_port()  # nothing listens there
    env = {
        **os.environ,
        "SWELL_METADATA_URL": f"postgresql://postgres@127.0.0.1:{dead}/swell",
        "SWELL_METADATA_POOL_TIMEOUT_SECONDS": "1",
    }
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "swell",
            "serve",
            "--data-dir",
            str(tmp_path),
            "--port",
            str(free_port()),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith("swell: metadata store unavailable: ")
    assert result.stderr.count("\n") == 1, result.stderr
