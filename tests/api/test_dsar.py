"""The DSAR API as clients use it: POST a request, poll its status, download and gunzip each url."""

from __future__ import annotations

import asyncio
import gzip
import itertools
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import requests
import uvicorn
from starlette.testclient import TestClient

from swell.api.app import create_app
from swell.api.dsar import OPENAPI_PATHS, DsarService
from swell.auth import new_credentials
from swell.backends.base import BlobStore
from swell.errors import ConfigError, StorageError
from swell.generate import generate_records
from swell.jobs import LEASE
from swell.model import EXPORT_KEYS, BlobInfo
from swell.settings import Settings
from swell.store import Store
from tests.conftest import FakeClock

START = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
REQUESTS = "/api/2/dsar/requests"
EXPIRES = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}")


# -- data --------------------------------------------------------------------------------------


@dataclass
class Org:
    org_id: int
    auth: tuple[str, str]
    projects: list[int]
    project_auth: tuple[str, str]


@dataclass
class World:
    settings: Settings
    acme: Org
    other: Org
    records: dict[int, list[dict[str, Any]]] = field(default_factory=dict)

    def uuids(self, project_id: int | None = None, **match: Any) -> set[str]:
        """uuids of loaded records matching ``match`` plus an event_time day range (day_from/to)."""
        day_from = match.pop("day_from", "0000-00-00")
        day_to = match.pop("day_to", "9999-99-99")
        aids = match.pop("aids", None)
        found = set()
        for project, recs in self.records.items():
            if project_id is not None and project != project_id:
                continue
            for rec in recs:
                if aids is not None and rec["amplitude_id"] not in aids:
                    continue
                if day_from <= rec["event_time"][:10] <= day_to:
                    found.add(rec["uuid"])
        return found


_counter = iter(range(1, 10**9))


def rec(project: int, aid: int, user: str | None, event_time: str, **kw: Any) -> dict[str, Any]:
    n = next(_counter)
    event = datetime.fromisoformat(event_time).replace(tzinfo=UTC)
    upload = event + kw.pop("late", timedelta(minutes=3))
    record: dict[str, Any] = dict.fromkeys(EXPORT_KEYS)
    record.update(
        {
            "$insert_id": f"ins-{n}",
            "amplitude_id": aid,
            "app": project,
            "data": {"path": "/2/httpapi"},
            "device_id": f"device-{aid}",
            "event_properties": {"n": n, "pad": "x" * 200},
            "event_time": event.strftime("%Y-%m-%d %H:%M:%S.%f"),
            "client_event_time": event.strftime("%Y-%m-%d %H:%M:%S.%f"),
            "event_type": "Page Viewed",
            "group_properties": {},
            "groups": {},
            "plan": {},
            "server_upload_time": upload.strftime("%Y-%m-%d %H:%M:%S.%f"),
            "user_id": user,
            "user_properties": {},
            "uuid": f"00000000-0000-4000-8000-{n:012d}",
        }
    )
    record.update(kw)
    return record


def build_world(settings: Settings, *, extra: int = 40) -> World:
    """Org acme (projects web, ios) and org other (one project), with alice in all three.

    In acme/web alice has amplitude_ids 5001 and 5002 (5002 partly anonymous) and bob (5003) is
    interleaved with her; acme/ios has alice as 6001; other's project has alice as 7001.
    """

    async def run() -> World:
        store = await Store.open(settings)
        try:
            meta = store.meta
            orgs = []
            for name, project_names in (("acme", ["web", "ios"]), ("other", ["app"])):
                org_creds, proj_creds = new_credentials(), new_credentials()
                org_id = await meta.create_org(name, org_creds.api_key, org_creds.secret_hash)
                projects = []
                for i, pname in enumerate(project_names):
                    creds = proj_creds if i == 0 else new_credentials()
                    projects.append(
                        await meta.create_project(
                            f"{name}-{pname}", org_id, creds.api_key, creds.secret_hash
                        )
                    )
                orgs.append(
                    Org(
                        org_id,
                        (org_creds.api_key, org_creds.secret_key),
                        projects,
                        (proj_creds.api_key, proj_creds.secret_key),
                    )
                )
            world = World(settings, orgs[0], orgs[1])
            web, ios = world.acme.projects
            (app,) = world.other.projects
            world.records[web] = [
                rec(web, 5001, "alice", "2024-01-09 23:59:59.999999"),  # a moment before the range
                rec(web, 5001, "alice", "2024-01-10 00:00:00"),  # first instant of the range
                rec(web, 5001, "alice", "2024-01-15 12:00:00"),
                # Uploaded in February, but its event_time files it in January's output.
                rec(web, 5001, "alice", "2024-01-31 23:30:00", late=timedelta(days=1)),
                rec(web, 5002, None, "2024-02-03 08:00:00"),  # anonymous, linked to alice below
                rec(web, 5002, "alice", "2024-02-04 09:00:00"),
                rec(web, 5001, "alice", "2024-02-20 23:59:59.999999"),  # last instant
                rec(web, 5001, "alice", "2024-02-21 00:00:00"),  # a moment after the range
            ]
            # bob's events share alice's hours (and parts, and some blocks) with her.
            alice = [r["event_time"] for r in world.records[web]]
            world.records[web] += [
                rec(web, 5003, "bob", _plus(alice[i % len(alice)], seconds=1 + i // len(alice)))
                for i in range(extra)
            ]
            world.records[web].sort(key=lambda r: r["server_upload_time"])
            world.records[ios] = [
                rec(ios, 6001, "alice", "2024-02-10 10:00:00"),
                rec(ios, 6002, "carol", "2024-02-10 10:00:01"),
            ]
            world.records[app] = [rec(app, 7001, "alice", "2024-01-15 12:00:00")]
            for project, records in world.records.items():
                await store.import_records(project, [(orjson.dumps(r), r) for r in records])
            return world
        finally:
            await store.aclose()

    return asyncio.run(run())


def _plus(timestamp: str, **delta: float) -> str:
    moved = datetime.fromisoformat(timestamp) + timedelta(**delta)
    return moved.strftime("%Y-%m-%d %H:%M:%S.%f")


# -- fixtures and helpers --------------------------------------------------------------------------


@pytest.fixture
def dsar_settings(tmp_path: Path) -> Settings:
    # Small blocks, so one user's events span several blocks (and coalesced reads).
    return Settings(data_dir=tmp_path / "data", seal_check_seconds=3600, block_bytes=2048)


@pytest.fixture
def world(dsar_settings: Settings) -> World:
    return build_world(dsar_settings)


def start_client(settings: Settings, clock: FakeClock | None = None) -> TestClient:
    app = create_app(settings)
    app.state.clock = clock or FakeClock(START)
    return TestClient(app, raise_server_exceptions=False)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture
def client(world: World, clock: FakeClock) -> Iterator[TestClient]:
    with start_client(world.settings, clock) as c:
        yield c


def service(client: TestClient) -> DsarService:
    svc: DsarService = client.app.state.dsar  # type: ignore[attr-defined]
    return svc


def remaining(client: TestClient, org_id: int) -> int:
    """The org's DSAR budget left, as the running app's metadata store counts it."""
    assert client.portal is not None
    left: int = client.portal.call(service(client).limiter.remaining, org_id)
    return left


def wait(client: TestClient, auth: tuple[str, str], request_id: int) -> dict[str, Any]:
    """Poll the status until done or failed (bounded)."""
    for _ in range(2000):
        response = client.get(f"{REQUESTS}/{request_id}", auth=auth)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        if body["status"] in {"done", "failed"}:
            return body
        time.sleep(0.005)
    raise AssertionError(f"request {request_id} did not finish: {body}")


def create(client: TestClient, auth: tuple[str, str], **fields: Any) -> int:
    response = client.post(REQUESTS, json=fields, auth=auth)
    assert response.status_code == 202, response.text
    request_id: int = response.json()["requestId"]
    return request_id


def download(client: TestClient, auth: tuple[str, str], url: str) -> list[dict[str, Any]]:
    response = client.get(url, auth=auth)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/gzip"
    raw = gzip.decompress(response.content)
    assert raw.endswith(b"\n")
    return [orjson.loads(line) for line in raw.splitlines()]


ALICE = {"userId": "alice", "startDate": "2024-01-10", "endDate": "2024-02-20"}


# -- the seed's example client, unchanged, against a live server -----------------------------------


def test_seed_example_client_flow_against_live_server(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "live", seal_check_seconds=3600)
    end = datetime(2020, 5, 1, tzinfo=UTC)

    async def load() -> tuple[tuple[str, str], list[dict[str, Any]]]:
        store = await Store.open(settings)
        try:
            org = new_credentials()
            org_id = await store.meta.create_org("acme", org.api_key, org.secret_hash)
            project = new_credentials()
            project_id = await store.meta.create_project(
                "web", org_id, project.api_key, project.secret_hash
            )
            records = [
                dict(r)
                for r in generate_records(project_id, events=500, days=430, users=10, end=end)
            ]
            await store.import_records(project_id, [(orjson.dumps(r), r) for r in records])
            return (org.api_key, org.secret_key), records
        finally:
            await store.aclose()

    (API_KEY, SECRET_KEY), records = asyncio.run(load())
    # The heaviest user, who has events in many months.
    AMPLITUDE_ID = Counter(r["amplitude_id"] for r in records).most_common(1)[0][0]
    expected = {
        r["uuid"]
        for r in records
        if r["amplitude_id"] == AMPLITUDE_ID
        and "2019-03-01" <= r["event_time"][:10] <= "2020-04-01"
    }
    assert len(expected) > 40
    OUTPUT_DIR = tmp_path / "out"
    OUTPUT_DIR.mkdir()

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    # The output urls name the listen address, as `swell serve` would.
    app = create_app(settings.replace(port=port))
    server = uvicorn.Server(uvicorn.Config(app, lifespan="on", log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        for _ in range(2000):
            if server.started:
                break
            time.sleep(0.01)
        assert server.started

        # ---- the seed's example client, verbatim apart from base_url and a bounded poll ----
        base_url = f"http://127.0.0.1:{port}/api/2/dsar/requests"
        payload = {
            "amplitudeId": AMPLITUDE_ID,
            "startDate": "2019-03-01",
            "endDate": "2020-04-01",
        }
        r = requests.post(base_url, auth=(API_KEY, SECRET_KEY), data=payload, timeout=30)
        request_id = r.json().get("requestId")
        polls = 0
        while True:
            r = requests.get(f"{base_url}/{request_id}", auth=(API_KEY, SECRET_KEY), timeout=30)
            response = r.json()
            if response.get("status") == "failed":
                break
            if response.get("status") == "done":
                break
            polls += 1
            assert polls < 2000
            time.sleep(0.01)
        for url in response.get("urls"):
            r = requests.get(url, auth=(API_KEY, SECRET_KEY), allow_redirects=True, timeout=30)
            index = url.split("/")[-1]
            filename = f"{AMPLITUDE_ID}-{index}.gz"
            with open(f"{OUTPUT_DIR}/{filename}", "wb") as f:
                f.write(r.content)
        # ---- end of the seed's client ----
    finally:
        server.should_exit = True
        thread.join(60)
        sock.close()

    assert response["status"] == "done", response
    assert r.status_code == 200
    months = {
        r["event_time"][:7]
        for r in records
        if r["uuid"] in expected  # one file per month in which the user has events
    }
    files = sorted(OUTPUT_DIR.iterdir())
    assert len(files) == len(months)
    got: list[dict[str, Any]] = []
    for path in files:
        lines = gzip.decompress(path.read_bytes()).splitlines()
        parsed = [orjson.loads(line) for line in lines]
        assert len({p["event_time"][:7] for p in parsed}) == 1
        got.extend(parsed)
    assert len(got) == len(expected)
    assert {g["uuid"] for g in got} == expected
    assert all(list(g) == list(EXPORT_KEYS) for g in got)


# -- results -----------------------------------------------------------------------------------


def test_user_id_covers_every_linked_amplitude_id_in_every_project_of_the_org(client, world):
    auth = world.acme.auth
    web, ios = world.acme.projects
    status = wait(client, auth, create(client, auth, **ALICE))
    assert status["status"] == "done", status
    assert len(status["urls"]) == 3  # (web, 2024-01), (web, 2024-02), (ios, 2024-02)
    files = [download(client, auth, url) for url in status["urls"]]
    keys = [({r["app"] for r in f}, {r["event_time"][:7] for r in f}) for f in files]
    assert keys == [({web}, {"2024-01"}), ({web}, {"2024-02"}), ({ios}, {"2024-02"})]
    got = [r["uuid"] for f in files for r in f]
    assert len(got) == len(set(got))
    window = {"day_from": "2024-01-10", "day_to": "2024-02-20"}
    expected = world.uuids(web, aids={5001, 5002}, **window) | world.uuids(
        ios, aids={6001}, **window
    )
    assert set(got) == expected
    assert len(expected) == 7
    # The full 55-key export record, `app` included, byte for byte as stored.
    assert all(list(r) == list(EXPORT_KEYS) for f in files for r in f)
    by_uuid = {r["uuid"]: r for recs in world.records.values() for r in recs}
    assert all(r == by_uuid[r["uuid"]] for f in files for r in f)


def test_urls_are_absolute_and_count_from_zero(client, world):
    auth = world.acme.auth
    request_id = create(client, auth, **ALICE)
    status = wait(client, auth, request_id)
    # The listen address (the test app's default settings), not the request's Host.
    assert status["urls"] == [
        f"http://127.0.0.1:8080/api/2/dsar/requests/{request_id}/outputs/{n}" for n in range(3)
    ]


def _urls(client: TestClient, world: World, headers: dict[str, Any]) -> list[str]:
    auth = world.acme.auth
    request_id = create(client, auth, **ALICE)
    wait(client, auth, request_id)
    response = client.get(f"{REQUESTS}/{request_id}", auth=auth, headers=headers)
    assert response.status_code == 200
    urls: list[str] = response.json()["urls"]
    assert len(urls) == 3
    return urls


def test_urls_never_follow_the_requests_host_header(client, world):
    spoofed = {"Host": "attacker.example:1", "X-Forwarded-Host": "attacker.example"}
    for url in _urls(client, world, spoofed):
        assert url.startswith("http://127.0.0.1:8080/api/2/dsar/requests/"), url


def test_urls_use_the_configured_public_url(world, clock):
    settings = world.settings.replace(public_url="https://swell.example/base/")
    with start_client(settings, clock) as c:
        urls = _urls(c, world, {"Host": "attacker.example:1"})
    assert all(u.startswith("https://swell.example/base/api/2/dsar/requests/") for u in urls)


def test_forwarded_host_and_proto_count_only_behind_a_trusted_proxy(world, clock):
    settings = world.settings.replace(public_url="https://swell.example", trust_forwarded_host=True)
    forwarded = {"X-Forwarded-Host": "data.example.org:8443", "X-Forwarded-Proto": "https"}
    with start_client(settings, clock) as c:
        urls = _urls(c, world, forwarded)
        assert all(u.startswith("https://data.example.org:8443/api/2/dsar/") for u in urls)
        # A forwarded value that is not a host is ignored: the public URL is used.
        for bad in [b"evil.example/path", b"a b", b"user@evil.example", "\u00e9vil".encode()]:
            urls = _urls(c, world, {"X-Forwarded-Host": bad})
            assert all(u.startswith("https://swell.example/api/2/dsar/") for u in urls), bad


@pytest.mark.parametrize(
    "value", ["swell.example", "ftp://swell.example", "https://", "https://x.example/?a=1"]
)
def test_a_public_url_that_is_not_an_http_base_url_is_refused(value):
    with pytest.raises(ConfigError, match="SWELL_PUBLIC_URL"):
        Settings.from_env({"SWELL_PUBLIC_URL": value})


def test_status_has_every_field_with_explicit_nulls(client, world):
    auth = world.acme.auth
    request_id = create(
        client, auth, amplitudeId=5001, startDate="2024-01-01", endDate="2024-01-31"
    )
    first = client.get(f"{REQUESTS}/{request_id}", auth=auth).json()
    assert set(first) == {
        "requestId",
        "userId",
        "amplitudeId",
        "startDate",
        "endDate",
        "status",
        "failReason",
        "urls",
        "expires",
    }
    assert first["status"] in {"staging", "submitted", "done"}
    if first["status"] != "done":
        assert first["urls"] == []
        assert first["expires"] is None
    done = wait(client, auth, request_id)
    assert done["requestId"] == request_id
    assert done["userId"] is None
    assert done["amplitudeId"] == 5001
    assert (done["startDate"], done["endDate"]) == ("2024-01-01", "2024-01-31")
    assert done["failReason"] is None
    assert EXPIRES.fullmatch(done["expires"])
    ttl = timedelta(seconds=world.settings.dsar_result_ttl_seconds)
    assert done["expires"] == (START + ttl).strftime("%Y-%m-%dT%H:%M:%S")


def test_amplitude_id_as_numeric_string_covers_only_that_id(client, world):
    auth = world.acme.auth
    request_id = create(
        client, auth, amplitudeId="5002", startDate="2024-01-01", endDate="2024-12-31"
    )
    status = wait(client, auth, request_id)
    assert status["amplitudeId"] == 5002
    (url,) = status["urls"]
    assert {r["uuid"] for r in download(client, auth, url)} == world.uuids(aids={5002})


@pytest.mark.parametrize(
    ("start", "end", "times"),
    [
        ("2024-01-10", "2024-01-10", {"2024-01-10 00:00:00.000000"}),
        ("2024-02-20", "2024-02-20", {"2024-02-20 23:59:59.999999"}),
        ("2024-01-09", "2024-01-09", {"2024-01-09 23:59:59.999999"}),
        ("2024-02-21", "2030-01-01", {"2024-02-21 00:00:00.000000"}),
    ],
)
def test_dates_are_inclusive_and_compare_event_time(client, world, start, end, times):
    auth = world.acme.auth
    request_id = create(client, auth, amplitudeId=5001, startDate=start, endDate=end)
    status = wait(client, auth, request_id)
    got = {r["event_time"] for url in status["urls"] for r in download(client, auth, url)}
    assert got == times


def test_late_upload_is_filed_by_event_time_month(client, world):
    auth = world.acme.auth
    request_id = create(
        client, auth, amplitudeId=5001, startDate="2024-01-31", endDate="2024-01-31"
    )
    (url,) = wait(client, auth, request_id)["urls"]
    (event,) = download(client, auth, url)
    assert event["event_time"].startswith("2024-01-31")
    assert event["server_upload_time"].startswith("2024-02-01")


def test_an_org_sees_only_its_own_projects(client, world):
    auth = world.other.auth
    status = wait(client, auth, create(client, auth, **ALICE))
    (url,) = status["urls"]
    assert {r["uuid"] for r in download(client, auth, url)} == world.uuids(aids={7001})
    # acme's amplitude_id asked through the other org finds nothing.
    status = wait(client, auth, create(client, auth, amplitudeId=5001, **_dates()))
    assert (status["status"], status["urls"]) == ("done", [])


def test_user_id_and_amplitude_id_together_cover_both(client, world):
    auth = world.acme.auth
    status = wait(client, auth, create(client, auth, userId="bob", amplitudeId=6001, **_dates()))
    assert (status["userId"], status["amplitudeId"]) == ("bob", 6001)
    got = {r["uuid"] for url in status["urls"] for r in download(client, auth, url)}
    assert got == world.uuids(aids={5003, 6001})


def _dates() -> dict[str, str]:
    return {"startDate": "2024-01-01", "endDate": "2024-12-31"}


def test_no_events_is_done_with_no_urls(client, world):
    auth = world.acme.auth
    status = wait(client, auth, create(client, auth, userId="nobody", **_dates()))
    assert (status["status"], status["urls"], status["failReason"]) == ("done", [], None)


def test_read_your_writes_events_still_open_are_included(client, world):
    auth = world.acme.auth
    web = world.acme.projects[0]
    store = client.app.state.swell.store  # type: ignore[attr-defined]
    now = datetime.now(UTC)
    fresh = rec(web, 5001, "alice", now.strftime("%Y-%m-%d %H:%M:%S"), late=timedelta(0))
    line = orjson.dumps(fresh)
    # Put the record in an open part, as ingestion does, without sealing it.
    part = store.sealer.part_for(web, int(now.timestamp() // 3600))
    part.add(line, 5001, "alice", fresh["server_upload_time"], 0)
    day = now.strftime("%Y-%m-%d")
    status = wait(client, auth, create(client, auth, amplitudeId=5001, startDate=day, endDate=day))
    (url,) = status["urls"]
    assert [r["uuid"] for r in download(client, auth, url)] == [fresh["uuid"]]


class RecordingBlobs:
    """Records every ranged read, to check which bytes of which parts a job touched."""

    def __init__(self, inner: BlobStore) -> None:
        self.inner = inner
        self.reads: list[tuple[str, int, int | None]] = []

    async def read(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        self.reads.append((key, start, end))
        return await self.inner.read(key, start, end)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_a_job_reads_only_the_blocks_the_user_index_points_to(client, world):
    recording = RecordingBlobs(service(client).dsar.blobs)
    service(client).dsar.blobs = recording  # type: ignore[assignment]
    auth = world.acme.auth
    web = world.acme.projects[0]
    status = wait(client, auth, create(client, auth, amplitudeId=5001, **_dates()))
    assert status["status"] == "done"
    meta = client.app.state.swell.store.meta  # type: ignore[attr-defined]
    assert client.portal is not None
    located = client.portal.call(meta.user_blocks, web, [5001])
    wanted = {(e.part.name, e.part.block_range(b)) for e in located for b in e.blocks}
    # bob shares alice's parts: some blocks of those parts are not hers.
    all_blocks = {
        (e.part.name, e.part.block_range(b))
        for e in client.portal.call(meta.user_blocks, web, [5003])
        for b in range(len(e.part.block_offsets))
    }
    assert all_blocks - wanted
    read: set[tuple[str, tuple[int, int]]] = set()
    for key, start, end in recording.reads:
        assert end is not None
        covered = sorted(r for name, r in wanted if name == key and start <= r[0] < end)
        # Each read is exactly a run of wanted blocks, each block read once.
        assert covered[0][0] == start
        assert covered[-1][1] == end
        assert all(a[1] == b[0] for a, b in itertools.pairwise(covered))
        assert not read & {(key, r) for r in covered}
        read |= {(key, r) for r in covered}
    assert read == wanted


def test_open_events_dated_after_their_upload_hour_are_included(client, world):
    """A client clock running ahead (and no client_upload_time) gives an event_time later than
    server_upload_time: the request's first day can lie after the hour still open."""
    auth = world.acme.auth
    web = world.acme.projects[0]
    store = client.app.state.swell.store  # type: ignore[attr-defined]
    now = datetime.now(UTC)
    ahead = now + timedelta(days=3)
    fresh = rec(web, 5001, "alice", ahead.strftime("%Y-%m-%d %H:%M:%S"))
    fresh["server_upload_time"] = now.strftime("%Y-%m-%d %H:%M:%S.%f")
    part = store.sealer.part_for(web, int(now.timestamp() // 3600))
    part.add(orjson.dumps(fresh), 5001, "alice", fresh["server_upload_time"], 0)
    day = ahead.strftime("%Y-%m-%d")
    status = wait(client, auth, create(client, auth, amplitudeId=5001, startDate=day, endDate=day))
    (url,) = status["urls"]
    assert [r["uuid"] for r in download(client, auth, url)] == [fresh["uuid"]]


def _open_event(store: Any, project: int, aid: int, user: str | None, when: datetime) -> str:
    """Put a record in the open part of ``when``'s hour, as ingestion does; returns its uuid."""
    fresh = rec(project, aid, user, when.strftime("%Y-%m-%d %H:%M:%S"), late=timedelta(0))
    part = store.sealer.part_for(project, int(when.timestamp() // 3600))
    part.add(orjson.dumps(fresh), aid, user, fresh["server_upload_time"], 0)
    return str(fresh["uuid"])


def test_a_job_seals_only_the_open_parts_holding_the_users_events(client, world):
    auth = world.acme.auth
    web = world.acme.projects[0]
    store = client.app.state.swell.store  # type: ignore[attr-defined]
    # This hour and the next: the background sealer closes only hours that have ended.
    now = datetime.now(UTC)
    this_hour, next_hour = int(now.timestamp() // 3600), int(now.timestamp() // 3600) + 1
    bob = _open_event(store, web, 5003, "bob", now)
    alice = _open_event(store, web, 5001, "alice", now + timedelta(hours=1))
    day = (now - timedelta(days=1)).strftime("%Y-%m-%d")
    until = (now + timedelta(days=1)).strftime("%Y-%m-%d")
    status = wait(client, auth, create(client, auth, userId="nobody", startDate=day, endDate=until))
    assert status["urls"] == []
    # Nothing of nobody's: both stay open.
    assert store.sealer.is_open(web, this_hour)
    assert store.sealer.is_open(web, next_hour)
    status = wait(client, auth, create(client, auth, userId="alice", startDate=day, endDate=until))
    found = {r["uuid"] for url in status["urls"] for r in download(client, auth, url)}
    assert alice in found
    assert not store.sealer.is_open(web, next_hour)  # sealed: it held alice's event
    assert store.sealer.is_open(web, this_hour)  # still open: bob's only
    status = wait(client, auth, create(client, auth, userId="bob", startDate=day, endDate=until))
    found = {r["uuid"] for url in status["urls"] for r in download(client, auth, url)}
    assert bob in found
    assert not store.sealer.is_open(web, this_hour)


def test_a_user_known_only_from_open_data_gets_all_their_open_events(client, world):
    """carol's id link is only in an open part; her later anonymous event (same amplitude_id, no
    user_id) is in another open part, and is hers too."""
    auth = world.acme.auth
    web = world.acme.projects[0]
    store = client.app.state.swell.store  # type: ignore[attr-defined]
    now = datetime.now(UTC)
    named = _open_event(store, web, 9001, "carol", now - timedelta(hours=2))
    anonymous = _open_event(store, web, 9001, None, now)
    day = (now - timedelta(days=1)).strftime("%Y-%m-%d")
    status = wait(
        client,
        auth,
        create(client, auth, userId="carol", startDate=day, endDate=now.strftime("%Y-%m-%d")),
    )
    found = [r["uuid"] for url in status["urls"] for r in download(client, auth, url)]
    assert sorted(found) == sorted([named, anonymous])


# -- request bodies ------------------------------------------------------------------------------


def test_form_encoded_body_is_accepted(client, world):
    auth = world.acme.auth
    response = client.post(REQUESTS, data={"amplitudeId": "5001", **_dates()}, auth=auth)
    assert response.status_code == 202
    status = wait(client, auth, response.json()["requestId"])
    assert status["amplitudeId"] == 5001


def test_multipart_body_is_accepted(client, world):
    auth = world.acme.auth
    response = client.post(
        REQUESTS,
        files={"userId": (None, "alice"), **{k: (None, v) for k, v in _dates().items()}},
        auth=auth,
    )
    assert response.status_code == 202, response.text
    assert wait(client, auth, response.json()["requestId"])["userId"] == "alice"


def test_json_user_id_number_is_a_string(client, world):
    auth = world.acme.auth
    status = wait(client, auth, create(client, auth, userId=12345, **_dates()))
    assert status["userId"] == "12345"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"startDate": "2024-01-01", "endDate": "2024-01-02"}, "userId"),
        (
            {"userId": "", "amplitudeId": "", "startDate": "2024-01-01", "endDate": "2024-01-02"},
            "userId",
        ),
        ({"amplitudeId": "abc", "startDate": "2024-01-01", "endDate": "2024-01-02"}, "amplitudeId"),
        ({"amplitudeId": -1, "startDate": "2024-01-01", "endDate": "2024-01-02"}, "amplitudeId"),
        ({"amplitudeId": 0, "startDate": "2024-01-01", "endDate": "2024-01-02"}, "amplitudeId"),
        ({"amplitudeId": 1.5, "startDate": "2024-01-01", "endDate": "2024-01-02"}, "amplitudeId"),
        ({"amplitudeId": True, "startDate": "2024-01-01", "endDate": "2024-01-02"}, "amplitudeId"),
        (
            {"amplitudeId": "9" * 20, "startDate": "2024-01-01", "endDate": "2024-01-02"},
            "amplitudeId",
        ),
        ({"amplitudeId": 2**63, "startDate": "2024-01-01", "endDate": "2024-01-02"}, "amplitudeId"),
        ({"userId": ["a"], "startDate": "2024-01-01", "endDate": "2024-01-02"}, "userId"),
        ({"userId": "u" * 1025, "startDate": "2024-01-01", "endDate": "2024-01-02"}, "userId"),
        ({"userId": "alice", "endDate": "2024-01-02"}, "startDate"),
        ({"userId": "alice", "startDate": "2024-01-01"}, "endDate"),
        ({"userId": "alice", "startDate": "2024-13-01", "endDate": "2024-12-02"}, "startDate"),
        ({"userId": "alice", "startDate": "20240101", "endDate": "2024-01-02"}, "startDate"),
        ({"userId": "alice", "startDate": 20240101, "endDate": "2024-01-02"}, "startDate"),
        ({"userId": "alice", "startDate": "2024-01-01", "endDate": "2024-02-30"}, "endDate"),
        ({"userId": "alice", "startDate": "2024-01-02", "endDate": "2024-01-01"}, "endDate"),
    ],
)
def test_bad_fields_are_400_naming_the_field(client, world, body, field):
    response = client.post(REQUESTS, json=body, auth=world.acme.auth)
    assert response.status_code == 400
    error = response.json()
    assert error["field"] == field
    assert field in error["error"]


@pytest.mark.parametrize(
    ("content", "content_type", "fragment"),
    [
        (b"{not json", "application/json", "Invalid JSON"),
        (b"[1, 2]", "application/json", "JSON object"),
        (b"\xff\xfe", "application/x-www-form-urlencoded", "UTF-8"),
        (b"&".join(b"f%d=1" % i for i in range(40)), "application/x-www-form-urlencoded", "fields"),
    ],
)
def test_bad_bodies_are_400(client, world, content, content_type, fragment):
    response = client.post(
        REQUESTS, content=content, headers={"content-type": content_type}, auth=world.acme.auth
    )
    assert response.status_code == 400
    assert fragment in response.json()["error"]


def test_body_size_is_bounded(client, world):
    body = {"userId": "alice", **_dates(), "pad": "x" * 20_000}
    response = client.post(REQUESTS, json=body, auth=world.acme.auth)
    assert response.status_code == 413
    assert "error" in response.json()


def _multipart(fields: dict[str, str], boundary: str = "b0und") -> bytes:
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'
        for k, v in fields.items()
    ]
    return ("".join(parts) + f"--{boundary}--\r\n").encode()


@pytest.mark.parametrize("multipart", [False, True])
def test_body_size_is_bounded_without_content_length(client, world, multipart):
    """A chunked body declares no size: the bound applies to the bytes as they arrive."""
    fields = {"userId": "alice", **_dates(), **{f"pad{i}": "x" * 4000 for i in range(8)}}
    if multipart:
        body = _multipart(fields)
        content_type = "multipart/form-data; boundary=b0und"
    else:
        body = orjson.dumps(fields)
        content_type = "application/json"
    assert len(body) > 30_000

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(body), 1000):
            yield body[i : i + 1000]

    response = client.post(
        REQUESTS, content=chunks(), headers={"content-type": content_type}, auth=world.acme.auth
    )
    assert response.status_code == 413
    assert "error" in response.json()


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (_multipart({"userId": "alice"}), "multipart/form-data"),  # no boundary
        (b"--zz\r\nnot a part", "multipart/form-data; boundary=zz"),
        (
            b'--zz\r\nContent-Disposition: form-data; name="userId"; filename="a.txt"\r\n\r\n'
            b"alice\r\n--zz--\r\n",
            "multipart/form-data; boundary=zz",
        ),
    ],
)
def test_bad_multipart_bodies_are_400(client, world, body, content_type):
    response = client.post(
        REQUESTS, content=body, headers={"content-type": content_type}, auth=world.acme.auth
    )
    assert response.status_code == 400
    assert "multipart" in response.json()["error"]


# -- authentication and ownership --------------------------------------------------------------


@pytest.mark.parametrize("who", ["missing", "wrong secret", "project key", "malformed"])
@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", REQUESTS), ("GET", f"{REQUESTS}/1"), ("GET", f"{REQUESTS}/1/outputs/0")],
)
def test_bad_credentials_are_401(client, world, who, method, path):
    kwargs: dict[str, Any] = {"json": {"userId": "alice", **_dates()}} if method == "POST" else {}
    if who == "wrong secret":
        kwargs["auth"] = (world.acme.auth[0], "0" * 32)
    elif who == "project key":
        kwargs["auth"] = world.acme.project_auth
    elif who == "malformed":
        kwargs["headers"] = {"authorization": "Basic !!!"}
    response = client.request(method, path, **kwargs)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Basic")
    assert "error" in response.json()
    # Failed authentication costs nothing.
    assert remaining(client, world.acme.org_id) == world.settings.dsar_cost_per_hour


def test_unknown_and_other_orgs_requests_are_404(client, world):
    acme, other = world.acme.auth, world.other.auth
    request_id = create(client, acme, **ALICE)
    wait(client, acme, request_id)
    for path in (f"{REQUESTS}/{request_id}", f"{REQUESTS}/{request_id}/outputs/0"):
        response = client.get(path, auth=other)
        assert response.status_code == 404
        assert "error" in response.json()
    for path in (
        f"{REQUESTS}/999999",
        f"{REQUESTS}/abc",
        f"{REQUESTS}/{'9' * 40}",
        f"{REQUESTS}/{request_id}/outputs/3",
        f"{REQUESTS}/{request_id}/outputs/-1",
        f"{REQUESTS}/{request_id}/outputs/x",
        f"{REQUESTS}/{request_id}/outputs/{'9' * 40}",
    ):
        response = client.get(path, auth=acme)
        assert response.status_code == 404, path
        assert "error" in response.json()


def test_outputs_are_404_before_done(client, world):
    # A request that is not done yet has no outputs: simulate with a request no worker runs.
    meta = client.app.state.swell.store.meta  # type: ignore[attr-defined]
    assert client.portal is not None
    stuck = client.portal.call(
        meta.create_dsar,
        world.acme.org_id,
        "alice",
        None,
        "2024-01-01",
        "2024-01-02",
        START + timedelta(days=365),
    )
    response = client.get(f"{REQUESTS}/{stuck.id}", auth=world.acme.auth)
    assert response.json()["status"] == "staging"
    assert client.get(f"{REQUESTS}/{stuck.id}/outputs/0", auth=world.acme.auth).status_code == 404


# -- rate limit ------------------------------------------------------------------------------------


def test_budget_is_shared_and_exceeding_it_is_429_with_retry_after(world, clock):
    settings = world.settings.replace(dsar_cost_per_hour=12)
    with start_client(settings, clock) as client:
        auth = world.acme.auth
        request_id = create(client, auth, **ALICE)  # 8
        for _ in range(4):  # 4 x 1
            assert client.get(f"{REQUESTS}/{request_id}", auth=auth).status_code == 200
        for method, path in (("GET", f"{REQUESTS}/{request_id}"), ("POST", REQUESTS)):
            response = client.request(method, path, json=ALICE, auth=auth)
            assert response.status_code == 429
            assert response.headers["retry-after"] == "3600"
            assert "rate limit" in response.json()["error"]
        # Another org has its own budget.
        assert client.get(f"{REQUESTS}/{request_id}", auth=world.other.auth).status_code == 404
        clock.advance(minutes=30)
        assert client.get(f"{REQUESTS}/{request_id}", auth=auth).status_code == 429
        clock.advance(minutes=30)
        status = wait(client, auth, request_id)
        assert client.get(status["urls"][0], auth=auth).status_code == 200


def test_the_budget_is_charged_after_authentication_and_before_validation(client, world):
    auth = world.acme.auth
    budget = world.settings.dsar_cost_per_hour
    assert client.post(REQUESTS, json={"userId": "alice"}, auth=auth).status_code == 400
    assert remaining(client, world.acme.org_id) == budget - 8
    assert client.get(f"{REQUESTS}/999999", auth=auth).status_code == 404
    assert client.get(f"{REQUESTS}/abc/outputs/0", auth=auth).status_code == 404
    assert remaining(client, world.acme.org_id) == budget - 10
    big = {"userId": "alice", **_dates(), "pad": "x" * 20_000}
    assert client.post(REQUESTS, json=big, auth=auth).status_code == 413
    assert remaining(client, world.acme.org_id) == budget - 18


def test_budget_is_exact_under_concurrent_requests(world, clock):
    budget = 50
    with start_client(world.settings.replace(dsar_cost_per_hour=budget), clock) as client:
        request_id = create(client, world.acme.auth, **ALICE)
        wait(client, world.acme.auth, request_id)
        spent = budget - remaining(client, world.acme.org_id)

        async def burst() -> list[int]:
            transport = httpx.ASGITransport(app=client.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
                calls = [
                    c.get(f"{REQUESTS}/{request_id}", auth=world.acme.auth) for _ in range(40)
                ] + [
                    c.get(f"{REQUESTS}/{request_id}/outputs/0", auth=world.acme.auth)
                    for _ in range(40)
                ]
                return [r.status_code for r in await asyncio.gather(*calls)]

        assert client.portal is not None
        codes = client.portal.call(burst)
    assert codes.count(429) == 80 - (budget - spent)
    assert len([c for c in codes if c == 200]) == budget - spent


# -- limits and life cycle -------------------------------------------------------------------------


def test_outputs_expire_after_the_ttl_and_are_deleted(client, world, clock):
    auth = world.acme.auth
    request_id = create(client, auth, **ALICE)
    done = wait(client, auth, request_id)
    blob_dir = world.settings.data_dir / "blobs" / "dsar" / str(request_id)
    assert len(list(blob_dir.iterdir())) == 3
    clock.advance(seconds=world.settings.dsar_result_ttl_seconds - 1)
    assert client.get(done["urls"][0], auth=auth).status_code == 200
    clock.advance(seconds=1)
    for url in done["urls"]:
        response = client.get(url, auth=auth)
        assert response.status_code == 404
        assert "error" in response.json()
    expired = client.get(f"{REQUESTS}/{request_id}", auth=auth).json()
    # Documented choice: still "done" (clients stop polling), no urls, expires in the past.
    assert (expired["status"], expired["urls"], expired["failReason"]) == ("done", [], None)
    assert expired["expires"] == done["expires"]
    assert client.portal is not None
    client.portal.call(service(client).dsar.housekeep)
    assert not blob_dir.exists()  # the files and their directory
    assert (world.settings.data_dir / "blobs").exists()


def test_too_many_events_in_a_month_fails_with_a_reason(world, clock):
    settings = world.settings.replace(dsar_max_events_per_month=2)
    with start_client(settings, clock) as client:
        auth = world.acme.auth
        status = wait(client, auth, create(client, auth, **ALICE))  # 3 in Jan, 3 in Feb (web)
        assert status["status"] == "failed"
        assert "more than 2 events in 2024-01" in status["failReason"]
        assert (status["urls"], status["expires"]) == ([], None)
        # Exactly the limit is fine.
        dates = {"startDate": "2024-01-15", "endDate": "2024-02-03"}  # 2 in Jan, 1 in Feb
        status = wait(client, auth, create(client, auth, userId="alice", **dates))
        assert status["status"] == "done"
        assert len(status["urls"]) == 2


def test_a_request_made_while_no_worker_runs_completes_after_restart(world, clock):
    async def stage() -> int:
        store = await Store.open(world.settings)
        try:
            created = await store.meta.create_dsar(
                world.acme.org_id, "alice", None, "2024-01-10", "2024-02-20", START
            )
            return created.id
        finally:
            await store.aclose()

    request_id = asyncio.run(stage())
    with start_client(world.settings, clock) as client:
        status = wait(client, world.acme.auth, request_id)
        assert status["status"] == "done"
        assert len(status["urls"]) == 3


def test_a_request_survives_a_server_restart(world, clock):
    with start_client(world.settings, clock) as client:
        request_id = create(client, world.acme.auth, **ALICE)
        first = wait(client, world.acme.auth, request_id)
    with start_client(world.settings, clock) as client:
        again = client.get(f"{REQUESTS}/{request_id}", auth=world.acme.auth).json()
        assert again == first
        files = [download(client, world.acme.auth, url) for url in again["urls"]]
        assert sum(len(f) for f in files) == 7


def test_an_interrupted_job_is_retried_without_duplicate_output(world, clock):
    """The process died mid-job: the job is still 'running' and a stale, partial set of files
    (more than the final count) is on disk. After restart it runs again and publishes exactly the
    right files; stale keys are overwritten or deleted."""

    async def crash_mid_job() -> int:
        store = await Store.open(world.settings)
        try:
            meta = store.meta
            created = await meta.create_dsar(
                world.acme.org_id, "alice", None, "2024-01-10", "2024-02-20", START
            )
            job = await meta.claim_job("crashed", START, START + LEASE)
            assert job is not None
            await meta.start_dsar(created.id)
            await meta.reserve_dsar_outputs(created.id, 5)
            for n in range(5):
                await store.blobs.put(f"dsar/{created.id}/{n}.json.gz", gzip.compress(b"stale\n"))
            return created.id
        finally:
            await store.aclose()

    request_id = asyncio.run(crash_mid_job())
    with start_client(world.settings, clock) as client:
        status = wait(client, world.acme.auth, request_id)
        assert status["status"] == "done"
        files = [download(client, world.acme.auth, url) for url in status["urls"]]
    uuids = [r["uuid"] for f in files for r in f]
    assert len(uuids) == len(set(uuids)) == 7
    blob_dir = world.settings.data_dir / "blobs" / "dsar" / str(request_id)
    assert sorted(p.name for p in blob_dir.iterdir()) == [f"{n}.json.gz" for n in range(3)]


class FlakyBlobs:
    """Fails the second put once, as a crash or a full disk midway through writing outputs would."""

    def __init__(self, inner: BlobStore) -> None:
        self.inner = inner
        self.puts = 0

    async def put(self, key: str, data: bytes) -> BlobInfo:
        self.puts += 1
        if self.puts == 2:
            raise StorageError("disk full")
        return await self.inner.put(key, data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_a_failed_attempt_is_retried_and_publishes_each_event_once(client, world):
    flaky = FlakyBlobs(service(client).dsar.blobs)
    service(client).dsar.blobs = flaky  # type: ignore[assignment]
    auth = world.acme.auth
    status = wait(client, auth, create(client, auth, **ALICE))
    assert status["status"] == "done"
    assert flaky.puts == 1 + 1 + 3  # one written, one failed, then all three again
    files = [download(client, auth, url) for url in status["urls"]]
    uuids = [r["uuid"] for f in files for r in f]
    assert len(uuids) == len(set(uuids)) == 7


# -- OpenAPI ---------------------------------------------------------------------------------------


def test_openapi_paths_describe_the_three_endpoints():
    post = OPENAPI_PATHS["/api/2/dsar/requests"]["post"]
    assert {"202", "400", "401", "429"} <= set(post["responses"])
    status = OPENAPI_PATHS["/api/2/dsar/requests/{requestId}"]["get"]
    output = OPENAPI_PATHS["/api/2/dsar/requests/{requestId}/outputs/{outputId}"]["get"]
    for op in (status, output):
        assert {"200", "401", "404", "429"} <= set(op["responses"])
    assert "application/gzip" in output["responses"]["200"]["content"]
    assert "application/x-www-form-urlencoded" in post["requestBody"]["content"]
