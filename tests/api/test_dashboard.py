"""The Dashboard REST endpoints read as a connector reads them, against numbers the test
computes from its own events (never from swell's code)."""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from typing import Any

import orjson
import pytest
from starlette.testclient import TestClient

from tests.conftest import Keys

TODAY = datetime.now(UTC).date()
FIRST = TODAY - timedelta(days=40)
COUNTRIES = ["US", "DE", None]
TYPES = ["Open", "Play", "Pause", "Buy"]


def make_events(seed: int = 7) -> list[dict[str, Any]]:
    rnd = random.Random(seed)
    events: list[dict[str, Any]] = []
    for n in range(600):
        user = f"user-{rnd.randrange(25):04d}"
        day = FIRST + timedelta(days=rnd.randrange(41))
        start = datetime(day.year, day.month, day.day, rnd.randrange(23), tzinfo=UTC)
        in_session = rnd.random() < 0.7
        at = start + timedelta(seconds=rnd.randrange(3000))
        events.append(
            {
                "user_id": user,
                "event_type": rnd.choice(TYPES),
                "time": int(at.timestamp() * 1000),
                "session_id": int(start.timestamp() * 1000) if in_session else -1,
                "country": rnd.choice(COUNTRIES),
                "platform": rnd.choice(["iOS", "Web"]),
                "insert_id": f"ins-{seed}-{n}",
            }
        )
    return events


def day_of(event: dict[str, Any]) -> date:
    return datetime.fromtimestamp(event["time"] / 1000, UTC).date()


def post(client: TestClient, keys: Keys, events: list[dict[str, Any]]) -> None:
    for i in range(0, len(events), 100):
        body = orjson.dumps({"api_key": keys.api_key, "events": events[i : i + 100]})
        resp = client.post("/2/httpapi", content=body)
        assert resp.status_code == 200, resp.text


def get(client: TestClient, keys: Keys, path: str, **params: Any) -> Any:
    resp = client.get(path, params=params, auth=keys.export_auth)
    assert resp.status_code == 200, resp.text
    return resp.json()


def week_start(d: date) -> date:
    return d - timedelta(days=(d.weekday() + 1) % 7)  # weeks start on Sunday


def bucket(d: date, interval: int, first: date) -> date:
    if interval == 1:
        return d
    start = week_start(d) if interval == 7 else d.replace(day=1)
    return max(start, first)


def label(value: str | None) -> str:
    return "(none)" if value is None else value


def expected_users(
    events: list[dict[str, Any]], first: date, last: date, interval: int, new: bool, group: bool
) -> dict[str, dict[str, int]]:
    """{x value: {label: users}}; label "" when not grouped."""
    first_day: dict[str, date] = {}
    for e in events:
        d = day_of(e)
        first_day[e["user_id"]] = min(d, first_day.get(e["user_id"], d))
    users: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for e in events:
        d = day_of(e)
        if not first <= d <= last or (new and first_day[e["user_id"]] != d):
            continue
        key = bucket(d, interval, first).isoformat()
        users[key][label(e["country"]) if group else ""].add(e["user_id"])
    return {x: {g: len(u) for g, u in by.items()} for x, by in users.items()}


def as_table(data: dict[str, Any]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for i, x in enumerate(data["xValues"]):
        row = {
            ("" if lab == 0 else lab): series[i]
            for lab, series in zip(data["seriesLabels"], data["series"], strict=True)
            if series[i]
        }
        if row:
            out[x] = row
    return out


@pytest.fixture
def loaded(client: TestClient, keys: Keys) -> list[dict[str, Any]]:
    events = make_events()
    third = len(events) // 3
    for chunk in (events[:third], events[third : 2 * third], events[2 * third :]):
        post(client, keys, chunk)
        # Every query seals what is open: the next chunk's days land in new parts.
        get(
            client,
            keys,
            "/api/2/users",
            start=FIRST.strftime("%Y%m%d"),
            end=TODAY.strftime("%Y%m%d"),
        )
    return events


@pytest.mark.parametrize("interval", [1, 7, 30])
@pytest.mark.parametrize("metric", ["active", "new"])
@pytest.mark.parametrize("group", [False, True])
def test_users_match_the_events(client, keys, loaded, interval, metric, group) -> None:
    first, last = FIRST + timedelta(days=3), TODAY - timedelta(days=2)
    params: dict[str, Any] = {
        "start": first.strftime("%Y%m%d"),
        "end": last.strftime("%Y%m%d"),
        "m": metric,
        "i": interval,
    }
    if group:
        params["g"] = "country"
    data = get(client, keys, "/api/2/users", **params)["data"]
    assert as_table(data) == expected_users(loaded, first, last, interval, metric == "new", group)
    xs = sorted(
        {bucket(first + timedelta(days=n), interval, first) for n in range((last - first).days + 1)}
    )
    assert data["xValues"] == [x.isoformat() for x in xs]


def test_users_response_shape_is_pinned(client, keys, loaded) -> None:
    day = TODAY.strftime("%Y%m%d")
    body = get(client, keys, "/api/2/users", start=day, end=day)
    assert set(body) == {"data"}
    assert set(body["data"]) == {"series", "seriesLabels", "seriesMeta", "xValues"}
    assert body["data"]["seriesLabels"] == [0]
    assert body["data"]["seriesMeta"] == [{"segmentIndex": 0}]
    assert body["data"]["xValues"] == [TODAY.isoformat()]
    grouped = get(client, keys, "/api/2/users", start=day, end=day, g="country")["data"]
    assert len(grouped["series"]) == len(grouped["seriesLabels"]) == len(grouped["seriesMeta"])


def test_average_session_length_matches_the_events(client, keys, loaded) -> None:
    spans: dict[tuple[str, int], list[int]] = {}
    for e in loaded:
        if e["session_id"] == -1:
            continue
        span = spans.setdefault((e["user_id"], e["session_id"]), [e["time"], e["time"]])
        span[0], span[1] = min(span[0], e["time"]), max(span[1], e["time"])
    per_day: dict[str, list[float]] = defaultdict(list)
    for lo, hi in spans.values():
        per_day[datetime.fromtimestamp(lo / 1000, UTC).date().isoformat()].append((hi - lo) / 1000)
    body = get(
        client,
        keys,
        "/api/2/sessions/average",
        start=FIRST.strftime("%Y%m%d"),
        end=TODAY.strftime("%Y%m%d"),
    )
    data = body["data"]
    assert set(data) == {"series", "seriesLabels", "seriesMeta", "xValues"}
    assert len(data["series"]) == 1
    want = [sum(per_day[x]) / len(per_day[x]) if per_day[x] else 0 for x in data["xValues"]]
    assert data["series"][0] == pytest.approx(want)
    assert len(data["xValues"]) == 41


def test_events_list_totals_are_the_last_seven_days(client, keys, loaded) -> None:
    since = TODAY - timedelta(days=6)
    want = {t: sum(1 for e in loaded if e["event_type"] == t and day_of(e) >= since) for t in TYPES}
    rows = get(client, keys, "/api/2/events/list")["data"]
    assert {r["value"]: r["totals"] for r in rows} == want
    for r in rows:
        assert r["name"] == r["display"] == r["value"]
        assert isinstance(r["id"], int)
        assert r["hidden"] is r["deleted"] is r["non_active"] is r["flow_hidden"] is False
    assert len({r["id"] for r in rows}) == len(rows)


def test_imported_history_counts_and_moves_first_days(client, keys) -> None:
    day10, day3 = TODAY - timedelta(days=10), TODAY - timedelta(days=13)
    at = datetime(day10.year, day10.month, day10.day, 5, tzinfo=UTC)
    post(
        client,
        keys,
        [{"user_id": "alice", "event_type": "Open", "time": int(at.timestamp() * 1000)}],
    )
    rng = {"start": day3.strftime("%Y%m%d"), "end": day10.strftime("%Y%m%d")}
    new = as_table(get(client, keys, "/api/2/users", m="new", **rng)["data"])
    assert new == {day10.isoformat(): {"": 1}}
    aid = get(client, keys, "/api/2/users", **rng)  # sealed; now import older history for alice
    assert aid["data"]["series"][0][-1] == 1
    store = client.app.state.swell.store
    old = datetime(day3.year, day3.month, day3.day, 9, tzinfo=UTC)
    amplitude_id = client.portal.call(store.meta.amplitude_ids_for_user, keys.project_id, "alice")[
        0
    ]
    record = {
        "amplitude_id": amplitude_id,
        "user_id": "alice",
        "event_type": "Imported",
        "event_time": old.strftime("%Y-%m-%d %H:%M:%S.%f"),
        "server_upload_time": old.strftime("%Y-%m-%d %H:%M:%S.%f"),
        "session_id": -1,
        "uuid": "11111111-1111-4111-8111-111111111111",
    }
    client.portal.call(store.import_records, keys.project_id, [(orjson.dumps(record), record)])
    new = as_table(get(client, keys, "/api/2/users", m="new", **rng)["data"])
    assert new == {day3.isoformat(): {"": 1}}
    active = as_table(get(client, keys, "/api/2/users", **rng)["data"])
    assert active == {day3.isoformat(): {"": 1}, day10.isoformat(): {"": 1}}


def test_annotations_round_trip(client, keys) -> None:
    made = client.post(
        "/api/2/annotations",
        params={"app_id": keys.project_id, "date": "2024-09-16", "label": "v2.4"},
        auth=keys.export_auth,
    )
    assert made.status_code == 200, made.text
    body = made.json()
    assert body == {
        "annotation": {
            "id": body["annotation"]["id"],
            "date": "2024-09-16",
            "label": "v2.4",
            "details": "",
        },
        "success": True,
    }
    form = client.post(
        "/api/2/annotations",
        content=b"date=2024-09-01&label=Prep&details=Added%20props&chart_id=c4cbl1k",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        auth=keys.export_auth,
    )
    assert form.status_code == 200, form.text
    listed = get(client, keys, "/api/2/annotations")["data"]
    assert [(a["date"], a["label"], a["details"]) for a in listed] == [
        ("2024-09-01", "Prep", "Added props"),
        ("2024-09-16", "v2.4", ""),
    ]
    assert all(set(a) == {"id", "date", "label", "details"} for a in listed)


def test_cohorts_are_an_empty_list(client, keys) -> None:
    assert get(client, keys, "/api/3/cohorts") == {"cohorts": []}


@pytest.mark.parametrize(
    ("method", "path", "params"),
    [
        ("GET", "/api/2/users", {"end": "20240101"}),
        ("GET", "/api/2/users", {"start": "2024-01-01", "end": "20240101"}),
        ("GET", "/api/2/users", {"start": "20240230", "end": "20240301"}),
        ("GET", "/api/2/users", {"start": "20240102", "end": "20240101"}),
        ("GET", "/api/2/users", {"start": "19000101", "end": "20240101"}),
        ("GET", "/api/2/users", {"start": "20240101", "end": "20240101", "m": "returning"}),
        ("GET", "/api/2/users", {"start": "20240101", "end": "20240101", "i": "-3600000"}),
        ("GET", "/api/2/users", {"start": "20240101", "end": "20240101", "g": "carrier"}),
        ("GET", "/api/2/users", {"start": "20240101", "end": "20240101", "s": '[{"prop":"x"}]'}),
        ("GET", "/api/2/sessions/average", {"start": "20240101"}),
        ("POST", "/api/2/annotations", {"label": "x"}),
        ("POST", "/api/2/annotations", {"date": "2024-13-01", "label": "x"}),
        ("POST", "/api/2/annotations", {"date": "2024-01-01"}),
        ("POST", "/api/2/annotations", {"date": "2024-01-01", "label": "x" * 1001}),
        ("POST", "/api/2/annotations", {"date": "2024-01-01", "label": "x", "app_id": "999999"}),
    ],
)
def test_bad_parameters_are_400_json(client, keys, method, path, params) -> None:
    resp = client.request(method, path, params=params, auth=keys.export_auth)
    assert resp.status_code == 400, resp.text
    assert set(resp.json()) == {"error"}


@pytest.mark.parametrize(
    "path",
    [
        "/api/2/users",
        "/api/2/sessions/average",
        "/api/2/events/list",
        "/api/2/annotations",
        "/api/3/cohorts",
    ],
)
def test_every_endpoint_wants_project_credentials(client, keys, path) -> None:
    for auth in [None, keys.org_auth, (keys.api_key, "wrong")]:
        resp = client.get(path, params={"start": "20240101", "end": "20240101"}, auth=auth)
        assert resp.status_code == 401, (path, auth)
        assert "error" in resp.json()


def test_other_api_paths_are_404_json_and_openapi_lists_what_is_served(client, keys) -> None:
    for path in ["/api/2/funnels", "/api/3/cohorts/1", "/api/2/sessions/length"]:
        resp = client.get(path, auth=keys.export_auth)
        assert resp.status_code == 404
        assert "error" in resp.json()
    paths = client.get("/openapi.json").json()["paths"]
    dashboard = {
        p for p in paths if p.startswith("/api/") and "dsar" not in p and "export" not in p
    }
    assert dashboard == {
        "/api/2/users",
        "/api/2/sessions/average",
        "/api/2/events/list",
        "/api/2/annotations",
        "/api/3/cohorts",
    }
    assert set(paths["/api/2/annotations"]) == {"get", "post"}
