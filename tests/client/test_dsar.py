"""The DSAR client against a live swell: every event of the users, within the budget."""

from __future__ import annotations

import gzip
import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from starlette.responses import JSONResponse

from swell.client import AsyncDsarClient, DsarClient, PollSchedule, Subject
from swell.client.budget import HOUR
from tests.client.conftest import FakeClock, Live, cli, one_line_error, single_export, swell
from tests.client.proxy import Proxy

WIDE = ("--start-date", "2000-01-01", "--end-date", "2099-12-31")


def users_events(live: Live) -> tuple[dict[str, list[bytes]], dict[int, list[bytes]]]:
    """From one plain export: each user's lines (by every amplitude_id seen with the user id,
    which is what a DSAR by userId covers), and each amplitude_id's lines."""
    by_amp: dict[int, list[bytes]] = defaultdict(list)
    amps_of: dict[str, set[int]] = defaultdict(set)
    for line in single_export(live):
        record = orjson.loads(line)
        by_amp[record["amplitude_id"]].append(line)
        if record["user_id"]:
            amps_of[record["user_id"]].add(record["amplitude_id"])
    by_user = {u: [line for a in amps for line in by_amp[a]] for u, amps in amps_of.items()}
    return by_user, by_amp


def output_lines(out: Path, files: list[str]) -> list[bytes]:
    return [line for f in files for line in gzip.decompress((out / f).read_bytes()).splitlines()]


def test_a_request_writes_every_event_of_the_user(live: Live, tmp_path: Path) -> None:
    by_user, _ = users_events(live)
    user = max(by_user, key=lambda u: len(by_user[u]))
    out = tmp_path / "out"
    result = swell(
        "dsar",
        "request",
        "--server",
        live.url,
        "--user-id",
        user,
        *WIDE,
        "--out",
        str(out),
        env=live.env(),
    )
    assert result.returncode == 0, result.stderr
    (answer,) = result.json_lines()
    assert answer["status"] == "done"
    assert answer["user_id"] == user
    assert Counter(output_lines(out, answer["files"])) == Counter(by_user[user])
    assert answer["events"] == len(by_user[user])

    # Again: everything is there, so nothing is requested (the server is not even asked).
    again = cli(
        "dsar",
        "request",
        "--server",
        "http://127.0.0.1:9",
        "--user-id",
        user,
        *WIDE,
        "--out",
        str(out),
        env=live.env(),
    )
    assert again.returncode == 2  # another server's directory: refused before any request
    same = cli(
        "dsar",
        "request",
        "--server",
        live.url,
        "--user-id",
        user,
        *WIDE,
        "--out",
        str(out),
        env=live.env(),
    )
    assert same.json_lines()[0]["request_id"] == answer["request_id"]

    status = cli("dsar", "status", str(answer["request_id"]), "--server", live.url, env=live.env())
    assert status.returncode == 0
    assert status.json()["status"] == "done"
    assert len(status.json()["urls"]) == len(answer["files"])


def test_a_batch_writes_every_event_of_every_user(live: Live, tmp_path: Path) -> None:
    by_user, by_amp = users_events(live)
    users = sorted(by_user)[:3]
    amp = max(by_amp)
    csv = tmp_path / "users.csv"
    csv.write_text(
        "user_id,amplitude_id\n"
        + "".join(f"{u},\n" for u in users)
        + f",{amp}\n"
        + f"{users[0]},\n"
    )  # a duplicate row is asked once
    out = tmp_path / "out"
    result = swell(
        "dsar",
        "batch",
        "--input",
        str(csv),
        "--server",
        live.url,
        *WIDE,
        "--out",
        str(out),
        env=live.env(),
    )
    assert result.returncode == 0, result.stderr
    answers = result.json_lines()
    assert [a["user_id"] or a["amplitude_id"] for a in answers] == [*users, amp]
    for answer in answers:
        expected = by_user[answer["user_id"]] if answer["user_id"] else by_amp[amp]
        assert Counter(output_lines(out, answer["files"])) == Counter(expected)
    state = json.loads((out / "swell-dsar.json").read_text())
    assert {r["status"] for r in state["requests"].values()} == {"done"}


def test_a_bad_batch_file_is_one_line(live: Live, tmp_path: Path) -> None:
    csv = tmp_path / "users.csv"
    csv.write_text("email\nalice@example.com\n")
    one_line_error(
        cli(
            "dsar",
            "batch",
            "--input",
            str(csv),
            "--server",
            live.url,
            *WIDE,
            "--out",
            str(tmp_path / "out"),
            env=live.env(),
        ),
        2,
        "user_id or amplitude_id column",
    )
    csv.write_text("amplitude_id\n12x\n")
    one_line_error(
        cli(
            "dsar",
            "batch",
            "--input",
            str(csv),
            "--server",
            live.url,
            *WIDE,
            "--out",
            str(tmp_path / "out"),
            env=live.env(),
        ),
        2,
        "users.csv:2: amplitude_id '12x' is not a number",
    )
    project_keys = {
        **live.env(),
        "AMPLITUDE_ORG_API_KEY": live.project["api_key"],
        "AMPLITUDE_ORG_SECRET_KEY": live.project["secret_key"],
    }
    one_line_error(
        cli(
            "dsar",
            "request",
            "--server",
            live.url,
            "--user-id",
            "u1",
            *WIDE,
            "--out",
            str(tmp_path / "o2"),
            env=project_keys,
        ),
        4,
        "not a project's",
    )


class Counting(httpx.AsyncBaseTransport):
    """Counts the requests that reach the network, at the fake clock's time."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.inner = httpx.AsyncHTTPTransport()
        self.sent: list[tuple[float, str, str]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append((self.clock.now(), request.method, request.url.path))
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


def costs(sent: list[tuple[float, str, str]]) -> list[tuple[float, int]]:
    return [(t, 8 if method == "POST" else 1) for t, method, _ in sent]


async def test_budget_aware_polling_never_exceeds_the_budget(live: Live, tmp_path: Path) -> None:
    by_user, _ = users_events(live)
    users = sorted(by_user)[:6]
    clock = FakeClock(real=0.02)
    transport = Counting(clock)
    budget = 40  # four POSTs, then a few GETs: the batch must spread over several hours
    async with AsyncDsarClient(
        live.url,
        *live.org_auth,
        budget_per_hour=budget,
        clock=clock,
        transport=transport,
        max_outstanding=3,
    ) as client:
        results = await client.batch(
            tmp_path, [Subject(u) for u in users], "2000-01-01", "2099-12-31"
        )
    assert [r.status for r in results] == ["done"] * len(users)
    for r, user in zip(results, users, strict=True):
        assert Counter(output_lines(tmp_path, r.files)) == Counter(by_user[user])
    charged = costs(transport.sent)
    assert sum(c for _, c in charged) > budget  # it really had to wait for the budget
    for t, _ in charged:
        in_hour = sum(c for s, c in charged if t - HOUR < s <= t)
        assert in_hour <= budget, (t, in_hour)
    assert clock.t - 1_000_000 > HOUR  # ... which took more than an hour of (fake) time


async def test_a_429_pauses_every_request_for_its_retry_after(
    live: Live, proxy: Proxy, tmp_path: Path
) -> None:
    refused: list[int] = []

    def limit_first_post(request):  # type: ignore[no-untyped-def]
        if request.method == "POST" and not refused:
            refused.append(1)
            return JSONResponse({"error": "budget"}, 429, headers={"Retry-After": "120"})
        return None

    proxy.rules.append(limit_first_post)
    clock = FakeClock(real=0.02)
    async with AsyncDsarClient(proxy.url, *live.org_auth, clock=clock) as client:
        by_user, _ = users_events(live)
        user = sorted(by_user)[0]
        result = await client.request(
            tmp_path, user_id=user, start_date="2000-01-01", end_date="2099-12-31"
        )
    assert result.status == "done"
    assert [h.status for h in proxy.hits[:2]] == [429, 202]
    assert max(clock.sleeps) >= 120


def fake_api(status: str, urls: list[str] | None = None) -> tuple[httpx.MockTransport, list[Any]]:
    seen: list[Any] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append((request.method, str(request.url), request.headers.get("authorization")))
        if request.method == "POST":
            return httpx.Response(202, json={"requestId": 7})
        if request.url.path.endswith("/7"):
            return httpx.Response(
                200,
                json={
                    "requestId": 7,
                    "status": status,
                    "failReason": "boom" if status == "failed" else None,
                    "urls": urls or [],
                },
            )
        return httpx.Response(200, content=gzip.compress(b'{"a":1}\n'))

    return httpx.MockTransport(handle), seen


async def test_a_request_that_never_finishes_is_reported_not_looped_on(tmp_path: Path) -> None:
    transport, seen = fake_api("submitted")
    clock = FakeClock()
    async with AsyncDsarClient(
        "https://dsar.test",
        "k",
        "s",
        clock=clock,
        transport=transport,
        deadline=6 * 3600,
        schedule=PollSchedule(first=1, fraction=0.1, longest=1800),
    ) as client:
        result = await client.request(
            tmp_path, user_id="u1", start_date="2024-01-01", end_date="2024-01-31"
        )
    assert result.status == "timed_out"
    assert result.request_id == 7
    polls = [s for s in seen if s[0] == "GET"]
    # Polling slowed with the request's age: far fewer than one a second for six hours.
    assert 20 <= len(polls) <= 100
    assert clock.t - 1_000_000 <= 6 * 3600 + 1800

    # A re-run polls request 7 again rather than posting a new one.
    transport2, seen2 = fake_api("done", ["https://dsar.test/api/2/dsar/requests/7/outputs/0"])
    async with AsyncDsarClient(
        "https://dsar.test", "k", "s", clock=FakeClock(), transport=transport2
    ) as client:
        again = await client.request(
            tmp_path, user_id="u1", start_date="2024-01-01", end_date="2024-01-31"
        )
    assert again.status == "done"
    assert again.events == 1
    assert [s[0] for s in seen2] == ["GET", "GET"]


async def test_a_failed_request_is_reported_with_its_reason(tmp_path: Path) -> None:
    transport, _ = fake_api("failed")
    with DsarClient(
        "https://dsar.test", "k", "s", clock=FakeClock(), transport=transport
    ) as client:
        result = client.request(
            tmp_path, amplitude_id=5, start_date="2024-01-01", end_date="2024-02-01"
        )
    assert (result.status, result.reason, result.files) == ("failed", "boom", [])


@pytest.mark.parametrize(
    ("url", "sent"),
    [
        ("https://dsar.test/api/2/dsar/requests/7/outputs/0", True),
        ("https://evil.example/steal", False),
        ("http://dsar.test/api/2/dsar/requests/7/outputs/0", False),  # not over https
    ],
)
async def test_credentials_go_only_to_the_servers_own_host(
    tmp_path: Path, url: str, sent: bool
) -> None:
    transport, seen = fake_api("done", [url])
    async with AsyncDsarClient(
        "https://dsar.test", "k", "s", clock=FakeClock(), transport=transport
    ) as client:
        result = await client.request(
            tmp_path, user_id="u1", start_date="2024-01-01", end_date="2024-01-31"
        )
    downloads = [s for s in seen if s[1] == url]
    assert bool(downloads) is sent
    assert result.status == ("done" if sent else "failed")
    if not sent:
        assert "--trust-host" in (result.reason or "")


async def test_an_output_redirected_to_object_storage_gets_no_credentials(tmp_path: Path) -> None:
    seen: list[tuple[str, str | None]] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append((request.url.host, request.headers.get("authorization")))
        if request.method == "POST":
            return httpx.Response(202, json={"requestId": 9})
        if request.url.host == "s3.test":
            return httpx.Response(200, content=gzip.compress(b'{"a":1}\n{"a":2}\n'))
        if request.url.path.endswith("/outputs/0"):
            return httpx.Response(302, headers={"Location": "https://s3.test/signed?x=1"})
        url = "https://analytics.amplitude.com/api/2/dsar/requests/9/outputs/0"
        return httpx.Response(200, json={"requestId": 9, "status": "done", "urls": [url]})

    async with AsyncDsarClient(
        "https://amplitude.com", "k", "s", clock=FakeClock(), transport=httpx.MockTransport(handle)
    ) as client:
        result = await client.request(
            tmp_path, user_id="u1", start_date="2024-01-01", end_date="2024-01-31"
        )
    assert (result.status, result.events, result.files) == ("done", 2, ["9-0.json.gz"])
    assert [host for host, _ in seen] == [
        "amplitude.com",
        "amplitude.com",
        "analytics.amplitude.com",
        "s3.test",
    ]
    assert all(auth for host, auth in seen if host != "s3.test")
    assert dict(seen)["s3.test"] is None
