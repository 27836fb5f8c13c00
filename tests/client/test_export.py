"""The Export client against a live swell: windows, resume, retries, splits, formats."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import orjson
import pytest
from starlette.responses import PlainTextResponse

from swell.client import AsyncExportClient, ExportClient, RetryPolicy
from swell.client.parquet import read as read_parquet
from swell.client.progress import PlainExport
from swell.client.windows import parse_hour
from tests.client.conftest import (
    FakeClock,
    Live,
    cli,
    one_line_error,
    single_export,
    swell,
    uuids,
    zip_lines,
)
from tests.client.proxy import Proxy


def export_args(server: str, out: Path, live: Live, *extra: str) -> list[str]:
    return [
        *("export", "--server", server, "--start", live.start, "--end", live.end),
        *("--out", str(out), "--settle-hours", "0", *extra),
    ]


def archive_lines(out: Path) -> list[bytes]:
    lines: list[bytes] = []
    for path in sorted(out.glob("*.zip")):
        lines.extend(zip_lines(path.read_bytes()))
    return lines


def test_windowed_export_equals_a_single_export_by_uuid(live: Live, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = swell(
        *export_args(live.url, out, live, "--window-hours", "5", "--parallel", "3"), env=live.env()
    )
    assert result.returncode == 0, result.stderr
    summary = result.json()
    expected = single_export(live)
    assert summary["events"] == len(expected)
    assert summary["windows"] == (summary["downloaded"] + summary["empty"])
    assert summary["windows"] >= 2 * 24 // 5  # the range really was cut into windows
    assert Counter(uuids(archive_lines(out))) == Counter(uuids(expected))
    # Not a terminal: plain progress lines, one per window.
    assert result.stderr.count("export: [") == summary["windows"]


def test_the_blocking_client_yields_every_record_once(live: Live) -> None:
    with ExportClient(live.url, *live.export_auth, window_hours=7, parallel=2) as client:
        records = list(client.export(live.start, live.end))
    assert sorted(r["uuid"] for r in records) == uuids(single_export(live))


async def test_the_async_client_yields_records_window_by_window_in_order(live: Live) -> None:
    async with AsyncExportClient(live.url, *live.export_auth, window_hours=11) as client:
        times = [r["server_upload_time"] async for r in client.export(live.start, live.end)]
    assert len(times) == len(single_export(live))
    hour_order = [t[:13] for t in times]
    assert hour_order == sorted(hour_order)


def test_a_rerun_with_the_server_stopped_downloads_nothing(live: Live, tmp_path: Path) -> None:
    out = tmp_path / "out"
    proxy = Proxy(live.url).start()
    first = swell(*export_args(proxy.url, out, live, "--window-hours", "12"), env=live.env())
    assert first.returncode == 0, first.stderr
    windows = first.json()["windows"]
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    proxy.stop()  # the same URL now refuses connections

    again = cli(*export_args(proxy.url, out, live, "--window-hours", "12"), env=live.env())
    assert again.returncode == 0, again.stderr
    summary = again.json()
    assert (summary["windows"], summary["skipped"], summary["received_bytes"]) == (0, windows, 0)
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before


def test_an_unsettled_window_is_fetched_again(live: Live, tmp_path: Path) -> None:
    """Hours that may still gain events count as done only once they have settled."""
    out = tmp_path / "out"
    args = export_args(live.url, out, live, "--window-hours", "24")
    args[args.index("--settle-hours") + 1] = "100"  # nothing in the range has settled
    first = swell(*args, env=live.env())
    assert first.json()["provisional"] == first.json()["windows"] == 2
    again = cli(*args, env=live.env())
    assert again.json()["skipped"] == 0
    assert again.json()["windows"] == 2
    assert Counter(uuids(archive_lines(out))) == Counter(uuids(single_export(live)))


def test_an_export_killed_mid_window_resumes_with_range(live: Live, tmp_path: Path) -> None:
    out = tmp_path / "out"
    proxy = Proxy(live.url).start()
    try:
        # One window holding the whole range, so the kill lands inside it.
        args = export_args(proxy.url, out, live, "--window-hours", "48", "--parallel", "1")
        full = single_export(live)
        proxy.stall_after = 100_000
        child = subprocess.Popen(
            [sys.executable, "-m", "swell", *args],
            env={**os.environ, **live.env()},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
        )
        partial = out / ".swell-partial" / f"{live.start}-{live.end}.zip"
        deadline = time.monotonic() + 30
        while not (
            proxy.stalled.is_set() and partial.exists() and partial.stat().st_size >= 100_000
        ):
            assert time.monotonic() < deadline, "the download never reached the stall"
            assert child.poll() is None
            time.sleep(0.02)
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        proxy.release()
        kept = partial.stat().st_size
        assert kept == 100_000
        state = json.loads((out / "swell-export.json").read_text())
        assert state["windows"][f"{live.start}-{live.end}"]["status"] == "partial"

        resumed = swell(*args, env=live.env())
        assert resumed.returncode == 0, resumed.stderr
        last = proxy.export_hits()[-1]
        assert (last.range, last.status) == (f"bytes={kept}-", 206)
        archive = out / f"{live.start}-{live.end}.zip"
        # Only the missing bytes came down, and the archive is the server's, byte for byte.
        assert last.sent == archive.stat().st_size - kept
        assert resumed.json()["received_bytes"] == last.sent
        assert Counter(uuids(zip_lines(archive.read_bytes()))) == Counter(uuids(full))
        assert not partial.exists()
    finally:
        proxy.stop()


async def test_429_retry_after_is_honoured(live: Live, proxy: Proxy, tmp_path: Path) -> None:
    refused: list[str] = []

    def rate_limit_first(request):  # type: ignore[no-untyped-def]
        if request.url.path == "/api/2/export" and not refused:
            refused.append(request.url.query)
            return PlainTextResponse("slow down", 429, headers={"Retry-After": "37"})
        return None

    proxy.rules.append(rate_limit_first)
    clock = FakeClock()
    async with AsyncExportClient(
        proxy.url, *live.export_auth, window_hours=48, parallel=1, clock=clock, settle_hours=0
    ) as client:
        summary = await client.export_to(tmp_path / "out", live.start, live.end)
    assert summary.downloaded == 1
    assert not summary.failed
    assert [h.status for h in proxy.export_hits()] == [429, 200]
    assert clock.sleeps
    assert clock.sleeps[0] >= 37


async def test_5xx_and_dropped_connections_are_retried(
    live: Live, proxy: Proxy, tmp_path: Path
) -> None:
    failures = iter([503, 504, 502])

    def flaky(request):  # type: ignore[no-untyped-def]
        if request.url.path == "/api/2/export":
            status = next(failures, None)
            if status is not None:
                return PlainTextResponse("busy", status)
        return None

    proxy.rules.append(flaky)
    clock = FakeClock()
    policy = RetryPolicy(attempts=5, base_delay=2.0, max_delay=10.0)
    async with AsyncExportClient(
        proxy.url, *live.export_auth, window_hours=48, clock=clock, retry=policy, settle_hours=0
    ) as client:
        summary = await client.export_to(tmp_path / "out", live.start, live.end)
    assert summary.events == len(single_export(live))
    # Capped exponential backoff with jitter: each wait in the upper half of 2, 4, 8 s.
    assert len(clock.sleeps) == 3
    for wait, ceiling in zip(clock.sleeps, (2.0, 4.0, 8.0), strict=True):
        assert ceiling / 2 <= wait <= ceiling


async def test_a_corrupt_download_is_checked_and_fetched_again(
    live: Live, proxy: Proxy, tmp_path: Path
) -> None:
    proxy.corrupt_at = 5_000  # inside the first member's gzip data
    async with AsyncExportClient(
        proxy.url, *live.export_auth, window_hours=48, settle_hours=0
    ) as client:
        summary = await client.export_to(tmp_path / "out", live.start, live.end)
    assert [h.status for h in proxy.export_hits()] == [200, 200]
    assert summary.downloaded == 1
    assert not summary.failed
    lines = archive_lines(tmp_path / "out")
    assert Counter(uuids(lines)) == Counter(uuids(single_export(live)))


async def test_a_too_large_400_splits_the_window(live: Live, proxy: Proxy, tmp_path: Path) -> None:
    """As Amplitude answers a range over its size limit (its documented text), for windows of
    more than five hours; swell's own limit answers the same way (SWELL_EXPORT_MAX_BYTES)."""

    def over_five_hours(request):  # type: ignore[no-untyped-def]
        if request.url.path != "/api/2/export":
            return None
        first = parse_hour(request.query_params["start"])
        if parse_hour(request.query_params["end"]) - first + 1 > 5:
            return PlainTextResponse(
                "The file size of the exported data is too large. Shorten the time ranges and "
                "try again. The limit size is 4GB.",
                400,
            )
        return None

    proxy.rules.append(over_five_hours)
    log = io.StringIO()
    async with AsyncExportClient(
        proxy.url, *live.export_auth, window_hours=24, observer=PlainExport(log), settle_hours=0
    ) as client:
        summary = await client.export_to(tmp_path, live.start, live.end)
    assert not summary.failed
    assert "too large for one request; fetching it as two halves" in log.getvalue()
    sizes = [
        parse_hour(h.query.split("end=")[1]) - parse_hour(h.query.split("start=")[1][:11])
        for h in proxy.export_hits()
        if h.status != 400
    ]
    assert sizes
    assert max(sizes) < 5
    assert Counter(uuids(archive_lines(tmp_path))) == Counter(uuids(single_export(live)))


def test_one_hour_over_the_limit_fails_alone(live: Live, proxy: Proxy, tmp_path: Path) -> None:
    first_hour = live.start

    def too_large(request):  # type: ignore[no-untyped-def]
        if request.url.path == "/api/2/export" and first_hour in request.url.query:
            return PlainTextResponse("The file size of the exported data is too large.", 400)
        return None

    proxy.rules.append(too_large)
    result = cli(*export_args(proxy.url, tmp_path, live, "--window-hours", "1"), env=live.env())
    one_line_error(result, 2, f"{first_hour}-{first_hour}: one hour is over")
    summary = result.json()
    assert summary["failed"]
    assert summary["windows"] == 48
    assert summary["downloaded"] + summary["empty"] == 47


def test_extract_and_parquet_read_back_the_same_records(live: Live, tmp_path: Path) -> None:
    expected = sorted((orjson.loads(line) for line in single_export(live)), key=lambda r: r["uuid"])

    ndjson = tmp_path / "ndjson"
    result = swell(
        *export_args(live.url, ndjson, live, "--window-hours", "24", "--extract"), env=live.env()
    )
    assert result.returncode == 0, result.stderr
    files = sorted(ndjson.glob("*.json.gz"))
    assert len(files) == 2
    assert not list(ndjson.glob("*.zip"))
    records = [
        orjson.loads(line) for f in files for line in gzip.decompress(f.read_bytes()).splitlines()
    ]
    assert sorted(records, key=lambda r: r["uuid"]) == expected

    parquet = tmp_path / "parquet"
    result = cli(
        *export_args(live.url, parquet, live, "--window-hours", "24", "--format", "parquet"),
        env=live.env(),
    )
    assert result.returncode == 0, result.stderr
    rows = [row for f in sorted(parquet.glob("*.parquet")) for row in read_parquet(f)]
    assert sorted(rows, key=lambda r: r["uuid"]) == expected


def test_one_directory_holds_one_export(live: Live, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert cli(*export_args(live.url, out, live), env=live.env()).returncode == 0
    other = cli(*export_args(live.url, out, live, "--extract"), env=live.env())
    one_line_error(other, 2, "use another --out directory")


def test_failures_are_one_line_with_their_exit_code(live: Live, tmp_path: Path) -> None:
    out = str(tmp_path / "out")
    base = ["export", "--start", live.start, "--end", live.end, "--out", out]
    env = live.env()
    one_line_error(
        cli(*base, "--server", "http://127.0.0.1:9", "--retries", "1", env=env),
        3,
        "server unreachable",
    )
    wrong = {**env, "AMPLITUDE_SECRET_KEY": "0" * 32}
    one_line_error(cli(*base, "--server", live.url, env=wrong), 4, "refused the project")
    no_key = {**env, "AMPLITUDE_API_KEY": ""}
    one_line_error(cli(*base, "--server", live.url, env=no_key), 2, "AMPLITUDE_API_KEY")
    one_line_error(cli(*base, env=env), 2, "--server URL")
    one_line_error(
        cli(*base, "--server", live.url, "--window-hours", "9000", env=env), 2, "window-hours"
    )
    one_line_error(
        cli(
            "export",
            "--server",
            live.url,
            "--start",
            live.end,
            "--end",
            live.start,
            "--out",
            out,
            env=env,
        ),
        2,
        "is before --start",
    )
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    one_line_error(
        cli(*base[:-1], str(blocked / "out"), "--server", live.url, env=env), 6, "could not"
    )


async def test_the_archive_matches_the_servers_bytes(live: Live, tmp_path: Path) -> None:
    async with AsyncExportClient(live.url, *live.export_auth, window_hours=48) as client:
        await client.export_to(tmp_path, live.start, live.end)
    async with httpx.AsyncClient() as http:
        response = await http.get(
            f"{live.url}/api/2/export",
            params={"start": live.start, "end": live.end},
            auth=live.export_auth,
        )
    (archive,) = tmp_path.glob("*.zip")
    assert (
        hashlib.sha256(archive.read_bytes()).digest() == hashlib.sha256(response.content).digest()
    )


@pytest.mark.parametrize("output", ["zip", "ndjson"])
async def test_an_empty_range_is_done_without_files(
    live: Live, tmp_path: Path, output: str
) -> None:
    async with AsyncExportClient(live.url, *live.export_auth, settle_hours=0) as client:
        summary = await client.export_to(tmp_path, "20100101T00", "20100102T23", output=output)  # type: ignore[arg-type]
    assert (summary.empty, summary.downloaded, summary.files) == (2, 0, [])
    state = json.loads((tmp_path / "swell-export.json").read_text())
    assert [w["status"] for w in state["windows"].values()] == ["done", "done"]
