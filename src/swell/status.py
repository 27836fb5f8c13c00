"""``swell status``: what an operator needs first, from the data directory or a running server.

Offline (``--data-dir``, or the configured metadata store): version, backends, projects with
their events and parts per day over the last days, jobs by status, the newest sealed part, the
disk the data directory uses, and the log bytes not yet released (events acknowledged but not
all sealed). Online (``--server URL``): the server's readiness and what its /metrics says
(open parts and bytes, parts sealed, seal failures, events ingested, jobs), so also what only a
running process knows.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from prometheus_client.parser import text_string_to_metric_families

from swell import __version__
from swell.backends.base import Metadata
from swell.model import hour_of
from swell.settings import Settings

#: Days ``swell status`` shows per project.
DAYS = 7


def redact(url: str) -> str:
    """A backend URL without its password, query (S3 credentials may be there) or fragment."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    if parts.username:
        host = f"{parts.username}@{host}"
    return f"{parts.scheme}://{host}{parts.path}"


def disk_used(path: Path) -> dict[str, int]:
    """Bytes under each top-level entry of ``path`` (files counted once, links not followed)."""
    out: dict[str, int] = {}
    if not path.is_dir():
        return out
    for entry in sorted(path.iterdir()):
        total = 0
        if entry.is_file():
            total = entry.stat().st_size
        elif entry.is_dir():
            for root, _, files in os.walk(entry):
                for name in files:
                    try:
                        total += (Path(root) / name).lstat().st_size
                    except OSError:
                        continue
        out[entry.name] = total
    return out


async def offline(
    settings: Settings, meta: Metadata, meta_url: str, blobs_url: str
) -> dict[str, Any]:
    now_hour = hour_of(datetime.now(UTC))
    first_hour = (now_hour // 24 - DAYS + 1) * 24
    projects: list[dict[str, Any]] = []
    newest: tuple[int, str, int] | None = None  # (hour, max_time, project)
    for info in await meta.list_projects():
        days: dict[str, dict[str, int]] = {}
        for part in await meta.parts(info.id, first_hour, now_hour):
            day = datetime.fromtimestamp(part.hour * 3600, UTC).strftime("%Y-%m-%d")
            slot = days.setdefault(day, {"events": 0, "parts": 0, "bytes": 0})
            slot["events"] += part.events
            slot["parts"] += 1
            slot["bytes"] += part.size
            if newest is None or (part.hour, part.max_time) > newest[:2]:
                newest = (part.hour, part.max_time, info.id)
        projects.append(
            {
                "project_id": info.id,
                "org_id": info.org_id,
                "name": info.name,
                "parts": info.parts,
                "events": info.events,
                "days": dict(sorted(days.items())),
            }
        )
    jobs = {
        f"{kind}:{status}": n for (kind, status), n in sorted((await meta.job_counts()).items())
    }
    disk = disk_used(settings.data_dir)
    return {
        "version": __version__,
        "metadata": redact(meta_url),
        "blobs": redact(blobs_url),
        "data_dir": str(settings.data_dir.resolve()),
        "projects": projects,
        "jobs": jobs,
        "last_sealed": None
        if newest is None
        else {"project_id": newest[2], "hour_start": _hour(newest[0]), "latest_event": newest[1]},
        "disk_bytes": disk,
        # The log holds what is acknowledged and not yet released (sealed and saved).
        "unreleased_log_bytes": disk.get("log", 0),
    }


def _hour(hour: int) -> str:
    return datetime.fromtimestamp(hour * 3600, UTC).strftime("%Y-%m-%dT%H:00Z")


def _samples(text: str) -> Iterable[tuple[str, dict[str, str], float]]:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            yield sample.name, sample.labels, sample.value


async def online(url: str, token: str | None, wait_seconds: float = 10.0) -> dict[str, Any]:
    base = url.rstrip("/")
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(timeout=wait_seconds) as client:
        ready = await client.get(f"{base}/readyz")
        health = await client.get(f"{base}/healthz")
        scraped = await client.get(f"{base}/metrics", headers=headers)
    out: dict[str, Any] = {
        "server": base,
        "ready": ready.status_code == 200,
        "checks": ready.json().get("checks", {}),
        "uptime_seconds": health.json().get("uptime_seconds"),
    }
    if scraped.status_code != 200:
        out["metrics"] = f"unavailable: HTTP {scraped.status_code} (SWELL_METRICS_TOKEN?)"
        return out
    ingested: dict[str, float] = {}
    open_parts: dict[str, float] = {}
    open_bytes: dict[str, float] = {}
    jobs: dict[str, float] = {}
    for name, labels, value in _samples(scraped.text):
        if name == "swell_build_info":
            out["version"] = labels.get("version")
        elif name == "swell_events_ingested_total":
            ingested[labels["project"]] = value
        elif name == "swell_open_parts":
            open_parts[labels["state"]] = value
        elif name == "swell_open_part_bytes":
            open_bytes[labels["state"]] = value
        elif name == "swell_parts_sealed_total":
            out["parts_sealed"] = int(value)
        elif name == "swell_seal_failures_total":
            out["seal_failures"] = int(value)
        elif name == "swell_jobs":
            jobs[f"{labels['kind']}:{labels['status']}"] = value
    out["events_ingested"] = {k: int(v) for k, v in sorted(ingested.items())}
    if open_parts:
        out["open_parts"] = {k: int(v) for k, v in open_parts.items()}
        out["open_part_bytes"] = {k: int(v) for k, v in open_bytes.items()}
    out["jobs"] = {k: int(v) for k, v in sorted(jobs.items())}
    return out


def render(status: dict[str, Any]) -> list[str]:
    """The report as lines for a person (``--json`` prints ``status`` itself)."""
    lines: list[str] = []
    for key, value in status.items():
        if key == "projects":
            lines.append(f"projects: {len(value)}")
            for p in value:
                lines.append(
                    f"  {p['project_id']} {p['name']!r} (org {p['org_id']}): "
                    f"{p['events']} events in {p['parts']} parts"
                )
                for day, slot in p["days"].items():
                    lines.append(
                        f"    {day}: {slot['events']} events, {slot['parts']} parts, "
                        f"{slot['bytes']} bytes"
                    )
        elif isinstance(value, dict):
            lines.append(f"{key}:" + ("" if value else " none"))
            lines.extend(f"  {k}: {v}" for k, v in value.items())
        else:
            lines.append(f"{key}: {value}")
    return lines
