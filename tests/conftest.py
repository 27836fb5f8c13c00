"""Shared fixtures: settings on a temp data dir, the app in process, a live server process."""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import settings as hypothesis_settings
from starlette.testclient import TestClient

from swell.api.app import create_app
from swell.auth import new_credentials
from swell.backends.filelog import FileLog
from swell.enrich import RequestContext
from swell.settings import Settings
from swell.store import Store
from tests.postgres import pg_url, postgres_database  # noqa: F401 (fixtures)
from tests.s3server import SeaweedFS

# No timed assertions: an example that runs long on a busy machine is not a failure.
hypothesis_settings.register_profile("swell", deadline=None)
hypothesis_settings.load_profile("swell")


@dataclass(frozen=True)
class Keys:
    org_id: int
    org_key: str
    org_secret: str
    project_id: int
    api_key: str
    secret_key: str

    @property
    def export_auth(self) -> tuple[str, str]:
        return (self.api_key, self.secret_key)

    @property
    def org_auth(self) -> tuple[str, str]:
        return (self.org_key, self.org_secret)


class FakeClock:
    """An injectable clock that moves only when a test says so."""

    def __init__(self, now: datetime = datetime(2024, 1, 1, tzinfo=UTC)) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


def hours_around_now() -> dict[str, str]:
    """Export parameters covering the current hour, safe across an hour boundary."""
    now = datetime.now(UTC)
    return {
        "start": f"{now - timedelta(hours=1):%Y%m%dT%H}",
        "end": f"{now + timedelta(hours=1):%Y%m%dT%H}",
    }


def zip_lines(body: bytes) -> list[bytes]:
    """Every NDJSON line of an export archive, read as a client reads it."""
    lines: list[bytes] = []
    with zipfile.ZipFile(io.BytesIO(body)) as zf:
        for name in zf.namelist():
            raw = gzip.decompress(zf.read(name))
            assert raw.endswith(b"\n"), name
            lines.extend(raw.splitlines())
    return lines


def live_export(
    server: LiveServer, project: dict[str, Any], *, missing_ok: bool = False
) -> list[bytes]:
    """The stored lines of the hours around now, exported from a live server."""
    resp = httpx.get(
        f"{server.url}/api/2/export",
        params=hours_around_now(),
        auth=(project["api_key"], project["secret_key"]),
        timeout=60,
    )
    if missing_ok and resp.status_code == 404:
        return []
    assert resp.status_code == 200, resp.text
    return zip_lines(resp.content)


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    """One SeaweedFS S3 server for the whole run (started on first use); tests that use it take
    a bucket or a prefix of their own. A server that cannot start fails the tests that need it."""
    server = SeaweedFS(tmp_path_factory.mktemp("seaweedfs"))
    try:
        server.start()
    except RuntimeError as exc:
        pytest.fail(f"SeaweedFS (the S3 server the s3 tests need) did not start: {exc}")
    server.create_bucket(S3_BUCKET)
    yield server
    server.kill()  # its data is temporary: no need to wait for a graceful stop


#: The session server's bucket; each test uses a prefix of its own in it.
S3_BUCKET = "swell-tests"


@pytest.fixture
def s3_url(seaweedfs: SeaweedFS, monkeypatch: pytest.MonkeyPatch) -> str:
    """A blob URL on a fresh prefix of the session's SeaweedFS, with its credentials set in this
    process's environment (where S3BlobStore reads them)."""
    for name, value in seaweedfs.env().items():
        monkeypatch.setenv(name, value)
    return seaweedfs.blob_url(S3_BUCKET, f"t-{uuid.uuid4().hex}")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    # The sealer runs rarely in tests: sealing is driven by exports and shutdown.
    return Settings(data_dir=tmp_path / "data", seal_check_seconds=3600)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c


def create_keys(client: TestClient, org_name: str = "acme") -> Keys:
    """A fresh org with one project, created through the running app's metadata store."""
    meta = client.app.state.swell.store.meta  # type: ignore[attr-defined]
    org, project = new_credentials(), new_credentials()
    assert client.portal is not None
    org_id = client.portal.call(meta.create_org, org_name, org.api_key, org.secret_hash)
    project_id = client.portal.call(
        meta.create_project, f"{org_name}-web", org_id, project.api_key, project.secret_hash
    )
    return Keys(
        org_id, org.api_key, org.secret_key, project_id, project.api_key, project.secret_key
    )


@pytest.fixture
def keys(client: TestClient) -> Keys:
    return create_keys(client)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_cli(*args: str, data_dir: Path) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "swell", *args, "--data-dir", str(data_dir)],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    result: dict[str, Any] = json.loads(out.stdout)
    return result


class LiveServer:
    """``swell serve`` in its own process, on a free loopback port."""

    def __init__(
        self, data_dir: Path, env: dict[str, str] | None = None, open_files: int | None = None
    ) -> None:
        self.data_dir = data_dir
        #: The server process's open-file limit (soft and hard), if it should differ.
        self.open_files = open_files
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        #: The server's stderr goes to a file (a pipe nobody reads would block a chatty server).
        self.log_path = data_dir.parent / f"{data_dir.name}-serve.log"

    def start(self) -> LiveServer:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                *("-m", "swell", "serve", "--data-dir", str(self.data_dir)),
                *("--port", str(self.port)),
            ],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=log,
            preexec_fn=self._limit_files if self.open_files else None,
        )
        log.close()  # the child holds its own descriptor
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.log_path.read_text(errors="replace")[-4000:]
                raise RuntimeError(f"swell serve exited with {self.proc.returncode}: {err}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.05)
        raise RuntimeError("swell serve did not become healthy within 60 s")

    def _limit_files(self) -> None:
        assert self.open_files is not None
        resource.setrlimit(resource.RLIMIT_NOFILE, (self.open_files, self.open_files))

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)

    def terminate(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(60)


@pytest.fixture
def live_keys(tmp_path: Path) -> tuple[Path, dict[str, Any], dict[str, Any]]:
    data_dir = tmp_path / "live"
    org = run_cli("org", "create", "acme", data_dir=data_dir)
    project = run_cli("project", "create", "web", "--org", str(org["org_id"]), data_dir=data_dir)
    return data_dir, org, project


@pytest.fixture
def live_server(live_keys: tuple[Path, dict[str, Any], dict[str, Any]]) -> Iterator[LiveServer]:
    server = LiveServer(live_keys[0]).start()
    yield server
    if server.proc is not None and server.proc.poll() is None:
        server.terminate()


async def crash(store: Store) -> None:
    """End a store as kill -9 would: no seal, no checkpoint, frames not yet synced are lost; the
    backends' durable state stays as it is (a named memory:// store keeps it too)."""
    for task in list(store._background):
        task.cancel()
    await asyncio.gather(*store._background, return_exceptions=True)
    log = store.log
    assert isinstance(log, FileLog)
    log._buffer.clear()  # appended but never synced: never acknowledged
    await log.aclose()
    await store.meta.aclose()
    await store.blobs.aclose()
    store.backends.data_dir.release()


def http_context(project_id: int = 1, now: datetime | None = None) -> RequestContext:
    """What an HTTP V2 request received now (or at ``now``) contributes to its records."""
    at = now or datetime.now(UTC)
    return RequestContext(
        project_id=project_id,
        path="/2/httpapi",
        default_library="http/2.0",
        server_received=at,
        server_upload=at,
        client_upload=None,
        remote_ip=None,
    )
