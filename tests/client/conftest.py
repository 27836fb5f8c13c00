"""Fixtures for the client tests: one live swell with generated history, shared by the package,
a recording proxy in front of it per test, and a fake clock for the backoff and the budget."""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.client.proxy import Proxy
from tests.conftest import LiveServer, run_cli

#: Generated history: EVENTS events over DAYS days ending at the current hour (exclusive).
EVENTS = 3000
DAYS = 2
USERS = 40


@dataclass(frozen=True)
class Live:
    server: LiveServer
    project: dict[str, Any]
    org: dict[str, Any]
    #: The generated history's hours, YYYYMMDDTHH (every hour before the current one).
    start: str
    end: str

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def export_auth(self) -> tuple[str, str]:
        return (self.project["api_key"], self.project["secret_key"])

    @property
    def org_auth(self) -> tuple[str, str]:
        return (self.org["api_key"], self.org["secret_key"])

    def env(self) -> dict[str, str]:
        return {
            "AMPLITUDE_API_KEY": self.project["api_key"],
            "AMPLITUDE_SECRET_KEY": self.project["secret_key"],
            "AMPLITUDE_ORG_API_KEY": self.org["api_key"],
            "AMPLITUDE_ORG_SECRET_KEY": self.org["secret_key"],
        }


def history(data_dir: Path, events: int, days: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """An org and a project with ``events`` generated events (a fresh data directory)."""
    org = run_cli("org", "create", "acme", data_dir=data_dir)
    project = run_cli("project", "create", "web", "--org", str(org["org_id"]), data_dir=data_dir)
    run_cli(
        *("generate", "--project", str(project["project_id"]), "--events", str(events)),
        *("--days", str(days), "--users", str(USERS)),
        data_dir=data_dir,
    )
    return org, project


def hours(days: int) -> tuple[str, str]:
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    return f"{now - timedelta(days=days):%Y%m%dT%H}", f"{now - timedelta(hours=1):%Y%m%dT%H}"


@pytest.fixture(scope="package")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    data_dir = tmp_path_factory.mktemp("client") / "data"
    org, project = history(data_dir, EVENTS, DAYS)
    # Behind the tests' reverse proxy (tests/client/proxy.py), which sets X-Forwarded-Host.
    server = LiveServer(data_dir, env={"SWELL_TRUST_FORWARDED_HOST": "1"}).start()
    start, end = hours(DAYS)
    try:
        yield Live(server, project, org, start, end)
    finally:
        server.terminate()


@pytest.fixture
def proxy(live: Live) -> Iterator[Proxy]:
    p = Proxy(live.url).start()
    yield p
    p.stop()


def zip_lines(body: bytes) -> list[bytes]:
    lines: list[bytes] = []
    with zipfile.ZipFile(io.BytesIO(body)) as zf:
        for name in zf.namelist():
            lines.extend(gzip.decompress(zf.read(name)).splitlines())
    return lines


def single_export(live: Live, start: str | None = None, end: str | None = None) -> list[bytes]:
    """Every line of one plain GET of the range: what the windowed client must equal."""
    response = httpx.get(
        f"{live.url}/api/2/export",
        params={"start": start or live.start, "end": end or live.end},
        auth=live.export_auth,
        timeout=60,
    )
    assert response.status_code == 200, response.text
    return zip_lines(response.content)


def uuids(lines: list[bytes]) -> list[str]:
    return sorted(json.loads(line)["uuid"] for line in lines)


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        lines = self.stdout.strip().splitlines()
        assert len(lines) == 1, self.stdout
        return json.loads(lines[0])

    def json_lines(self) -> list[Any]:
        return [json.loads(line) for line in self.stdout.strip().splitlines()]


def swell(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> Result:
    """``python -m swell ARGS`` as a user runs it (stdin closed, not a terminal)."""
    import os

    out = subprocess.run(
        [sys.executable, "-m", "swell", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,
    )
    return Result(out.returncode, out.stdout, out.stderr)


def cli(*args: str, env: dict[str, str] | None = None) -> Result:
    """The same command in process (typer's runner): no interpreter start-up, for the many
    small cases; ``swell`` runs the real entry point."""
    from typer.testing import CliRunner

    from swell import cli as swell_cli

    result = CliRunner().invoke(swell_cli.app, list(args), env=env)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return Result(result.exit_code, result.stdout, result.stderr)


def one_line_error(result: Result, code: int, fragment: str) -> None:
    """The command failed with ``code`` and exactly one ``swell:`` line naming ``fragment``."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    errors = [line for line in result.stderr.splitlines() if line.startswith("swell:")]
    assert len(errors) == 1, result.stderr
    assert fragment in errors[0], errors[0]
    assert "Traceback" not in result.stderr


class FakeClock:
    """Monotonic time that moves only when slept; each sleep also yields to the event loop for
    a moment of real time (``real``), so a live server's jobs still get to run."""

    def __init__(self, real: float = 0.0) -> None:
        self.t = 1_000_000.0
        self.real = real
        self.sleeps: list[float] = []

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += max(seconds, 0.0)
        await asyncio.sleep(self.real)
