"""A live ``swell serve`` and the CLI with their metadata in PostgreSQL, and what a client sees when
the connection to PostgreSQL is cut while swell serves (a TCP proxy in between, closed and
reopened): the rows of docs/architecture.md's failure table, then every acknowledged event once."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.conftest import LiveServer, hours_around_now, zip_lines

pytestmark = pytest.mark.slow


def cli(*args: str, data_dir: Path, env: dict[str, str]) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "swell", *args, "--data-dir", str(data_dir)],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
    )
    assert out.returncode == 0, out.stderr
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def post(url: str, api_key: str, events: list[dict[str, Any]]) -> httpx.Response:
    return httpx.post(f"{url}/batch", json={"api_key": api_key, "events": events}, timeout=30)


def export(url: str, project: dict[str, Any], params: dict[str, str]) -> httpx.Response:
    return httpx.get(
        f"{url}/api/2/export",
        params=params,
        auth=(project["api_key"], project["secret_key"]),
        timeout=60,
    )


def wait_for(check: Callable[[], bool], what: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"{what} did not happen within {seconds} s"
        time.sleep(0.2)


def dsar_round_trip(url: str, org: dict[str, Any], user_id: str) -> list[dict[str, Any]]:
    """POST a DSAR for ``user_id``, poll it until done, and read every output."""
    auth = (org["api_key"], org["secret_key"])
    today = datetime.now(UTC)
    body = {
        "userId": user_id,
        "startDate": f"{today - timedelta(days=40):%Y-%m-%d}",
        "endDate": f"{today + timedelta(days=1):%Y-%m-%d}",
    }
    resp = httpx.post(f"{url}/api/2/dsar/requests", json=body, auth=auth, timeout=30)
    assert resp.status_code == 202, resp.text
    request_id = resp.json()["requestId"]
    status: dict[str, Any] = {}

    def done() -> bool:
        nonlocal status
        status = httpx.get(f"{url}/api/2/dsar/requests/{request_id}", auth=auth, timeout=30).json()
        assert status["status"] != "failed", status
        return bool(status["status"] == "done")

    wait_for(done, "the DSAR job")
    rows: list[dict[str, Any]] = []
    for output in status["urls"]:
        got = httpx.get(output, auth=auth, timeout=30, follow_redirects=True)
        assert got.status_code == 200
        rows.extend(orjson.loads(line) for line in gzip.decompress(got.content).splitlines())
    return rows


def test_serve_import_and_generate_keep_their_metadata_in_postgres(
    tmp_path: Path, pg_url: str
) -> None:
    data_dir = tmp_path / "node"
    env = {"SWELL_METADATA_URL": pg_url}
    org = cli("org", "create", "acme", data_dir=data_dir, env=env)
    project = cli(
        "project", "create", "web", "--org", str(org["org_id"]), data_dir=data_dir, env=env
    )
    pid = project["project_id"]
    generated = cli(
        *("generate", "--project", str(pid), "--events", "400", "--days", "2", "--users", "6"),
        data_dir=data_dir,
        env=env,
    )
    assert generated["events"] == 400
    upload = datetime.now(UTC) - timedelta(days=3)
    imported = [
        {
            "user_id": "imported-user",
            "event_type": "Imported",
            "$insert_id": f"imported-{n}",
            "event_time": f"{upload:%Y-%m-%d %H:%M:%S}.000000",
            "server_upload_time": f"{upload:%Y-%m-%d %H:%M:%S}.{n:06d}",
        }
        for n in range(20)
    ]
    source = tmp_path / "history.json"
    source.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in imported))
    summary = cli("import", str(source), "--project", str(pid), data_dir=data_dir, env=env)
    assert summary["events"] == 20
    assert not (data_dir / "meta.db").exists()  # keys, catalog and identity are in PostgreSQL

    server = LiveServer(data_dir, env).start()
    try:
        events = [
            {"user_id": "live-user", "event_type": "Live", "insert_id": f"live-{i}"}
            for i in range(30)
        ]
        resp = post(server.url, project["api_key"], events)
        assert resp.status_code == 200, resp.text
        now = datetime.now(UTC)
        everything = {
            "start": f"{now - timedelta(days=4):%Y%m%dT%H}",
            "end": f"{now + timedelta(hours=1):%Y%m%dT%H}",
        }
        resp = export(server.url, project, everything)
        assert resp.status_code == 200, resp.text
        rows = [orjson.loads(line) for line in zip_lines(resp.content)]
        assert len(rows) == 400 + 20 + 30
        assert Counter(r["user_id"] for r in rows)["live-user"] == 30
        assert {r["$insert_id"] for r in rows if r["user_id"] == "imported-user"} == {
            f"imported-{n}" for n in range(20)
        }
        found = dsar_round_trip(server.url, org, "live-user")
        assert sorted(r["$insert_id"] for r in found) == sorted(e["insert_id"] for e in events)
        assert server.terminate() == 0
    finally:
        if server.proc is not None and server.proc.poll() is None:
            server.kill()


class Proxy:
    """A TCP proxy on loopback in its own thread; ``cut()`` drops every connection and refuses
    new ones until ``restore()``, as a failed network or a restarting server would."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = 0
        self.cut_off = False
        self._open: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Proxy:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def _run(self) -> None:
        try:
            self._loop.run_until_complete(self._serve())
        finally:
            self._loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        async with server:
            await self._stop.wait()
            self._drop()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.cut_off:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.transport.abort()
            return
        self._open |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._open -= {writer, up_writer}

    def _drop(self) -> None:
        for writer in list(self._open):
            writer.transport.abort()
        self._open.clear()

    def cut(self) -> None:
        self.cut_off = True
        self._loop.call_soon_threadsafe(self._drop)

    def restore(self) -> None:
        self.cut_off = False


@pytest.fixture
def proxy(pg_url: str) -> Iterator[Proxy]:
    port = int(pg_url.rsplit(":", 1)[1].split("/", 1)[0])
    with Proxy(port) as running:
        yield running


def test_a_severed_postgres_gives_the_documented_answers_and_loses_nothing(
    tmp_path: Path, pg_url: str, proxy: Proxy
) -> None:
    host_part, database = pg_url.rsplit("/", 1)
    via_proxy = f"{host_part.rsplit(':', 1)[0]}:{proxy.port}/{database}"
    data_dir = tmp_path / "node"
    env = {
        "SWELL_METADATA_URL": via_proxy,
        "SWELL_METADATA_POOL_TIMEOUT_SECONDS": "1",
        "SWELL_SEAL_CHECK_SECONDS": "0.5",
    }
    org = cli("org", "create", "acme", data_dir=data_dir, env=env)
    project = cli(
        "project", "create", "web", "--org", str(org["org_id"]), data_dir=data_dir, env=env
    )
    server = LiveServer(data_dir, env).start()
    acknowledged: list[str] = []

    def send(user: str, tag: str, n: int = 10) -> httpx.Response:
        events = [
            {"user_id": user, "event_type": "Cut", "insert_id": f"{tag}-{i}"} for i in range(n)
        ]
        resp = post(server.url, project["api_key"], events)
        if resp.status_code == 200:
            acknowledged.extend(e["insert_id"] for e in events)
        return resp

    def ready() -> int:
        return httpx.get(f"{server.url}/readyz", timeout=30).status_code

    try:
        assert send("alice", "before").status_code == 200
        assert export(server.url, project, hours_around_now()).status_code == 200

        proxy.cut()
        # Cached state (alice, her device-less identity, the key just used) may still be
        # acknowledged from the log; anything needing PostgreSQL is a 503 naming it.
        for n in range(3):
            resp = send("alice", f"cut-{n}")
            assert resp.status_code in (200, 503), resp.text
            if resp.status_code == 503:
                assert resp.json()["cause"] == "metadata_store"
        resp = send("bob-never-seen", "new")
        assert resp.status_code == 503, resp.text
        assert resp.json()["cause"] == "metadata_store"
        assert "Traceback" not in resp.text
        resp = export(server.url, project, hours_around_now())
        assert resp.status_code == 503, resp.text
        assert resp.json()["cause"] == "metadata_store"
        assert httpx.get(f"{server.url}/healthz", timeout=30).status_code == 200
        wait_for(lambda: ready() == 503, "/readyz answering 503")

        proxy.restore()
        wait_for(lambda: ready() == 200, "/readyz answering 200 again")
        assert send("bob-never-seen", "after").status_code == 200
        resp = export(server.url, project, hours_around_now())
        assert resp.status_code == 200, resp.text
        stored = Counter(orjson.loads(line)["$insert_id"] for line in zip_lines(resp.content))
        assert stored == Counter(acknowledged)  # every acknowledged event, once
        assert server.terminate() == 0
    finally:
        if server.proc is not None and server.proc.poll() is None:
            server.kill()
