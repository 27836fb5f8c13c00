"""Every knob swell has: one declaration drives the environment (SWELL_<NAME>) and the docs."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from swell.errors import ConfigError

#: What a scale-out node runs (SWELL_ROLE).
ROLES = frozenset({"all", "api", "worker"})
#: How log lines are written (SWELL_LOG_FORMAT).
LOG_FORMATS = frozenset({"text", "json"})


def setting(default: Any, help: str, *, min: float | None = None, max: float | None = None) -> Any:
    """A field with its help text and, for numbers, the range it must lie in (inclusive)."""
    return field(default=default, metadata={"help": help, "min": min, "max": max})


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Every knob swell has. Read from SWELL_* environment variables, then defaults."""

    data_dir: Path = setting(Path("./var"), "Where the embedded backends keep their files")  # noqa: RUF009
    metadata_url: str = setting(
        "",
        "Metadata store: sqlite:///path/meta.db, postgresql://user@host/db or memory:// "
        "(default: meta.db in data_dir)",
    )
    metadata_pool_min_size: int = setting(
        1, "PostgreSQL connections each process keeps open even when idle", min=0, max=1000
    )
    metadata_pool_max_size: int = setting(
        10, "Most PostgreSQL connections each process opens", min=1, max=1000
    )
    metadata_pool_timeout_seconds: float = setting(
        5.0,
        "How long a metadata call waits for a PostgreSQL connection before answering 503",
        min=0.1,
        max=3600,
    )
    metadata_connect_timeout_seconds: int = setting(
        5,
        "How long connecting to PostgreSQL may take (unless the URL sets connect_timeout)",
        min=1,
        max=3600,
    )
    metadata_statement_timeout_seconds: float = setting(
        30.0,
        "Longest a PostgreSQL statement may run before it is cancelled (503)",
        min=0.1,
        max=86400,
    )
    blob_url: str = setting(
        "",
        "Blob store: file:///path, s3://bucket/prefix?endpoint=... or memory:// "
        "(default: blobs/ in data_dir)",
    )
    role: str = setting(
        "all",
        "What swell serve runs on a scale-out node (PostgreSQL metadata): api (HTTP only), "
        "worker (project owners and DSAR jobs, no HTTP) or all",
    )
    lease_seconds: float = setting(
        15.0,
        "Scale-out: how long a worker's lease on a project lasts unless renewed; a dead worker's "
        "projects are taken over after it",
        min=3,
        max=3600,
    )
    seal_wait_seconds: float = setting(
        10.0,
        "Scale-out: how long an export or DSAR waits for the project's owner to seal what was "
        "acknowledged before it answers 503",
        min=0.1,
        max=600,
    )
    host: str = setting("127.0.0.1", "Interface to listen on")
    port: int = setting(8080, "Port to listen on", min=1, max=65535)
    trust_forwarded_for: bool = setting(
        False, "Take the client address for ip=$remote from X-Forwarded-For (behind a proxy only)"
    )
    public_url: str = setting(
        "", "Base URL clients reach swell at, for DSAR output urls (default: the listen address)"
    )
    trust_forwarded_host: bool = setting(
        False,
        "Build DSAR output urls from X-Forwarded-Host/-Proto (behind a proxy that sets them only)",
    )
    max_connections: int = setting(
        1000,
        "Open connections at most; one more closes the longest-idle one (503 if none is)",
        min=1,
        max=1_000_000,
    )
    max_concurrent_requests: int = setting(
        256, "Requests in progress at most; beyond, 503 with Retry-After: 1", min=1
    )
    http_keep_alive_seconds: int = setting(
        5, "How long a connection may idle between requests before it is closed", min=1, max=3600
    )
    http_header_timeout_seconds: float = setting(
        10.0,
        "Time for a request's headers, from the connection (or its first byte) on",
        min=0.1,
        max=3600,
    )
    http_request_timeout_seconds: float = setting(
        60.0,
        "Time to read a whole request, headers and body, from its first byte on",
        min=0.1,
        max=86400,
    )
    http_max_header_bytes: int = setting(
        65536, "Largest request head accepted (431 above)", min=1024, max=1024 * 1024
    )
    part_max_bytes: int = setting(
        128 * 1024 * 1024,
        "Uncompressed size at which an open hourly part is sealed early",
        min=4096,
        max=4 * 1024**3,
    )
    block_bytes: int = setting(
        256 * 1024,
        "Uncompressed bytes of whole lines per gzip member inside a part",
        min=1024,
        max=64 * 1024 * 1024,
    )
    seal_check_seconds: float = setting(
        5.0, "How often the sealer looks for hours that have ended", min=0.05, max=86400
    )
    max_unsealed_bytes: int = setting(
        1024**3,
        "Acknowledged data held unsealed in memory (compressed) above which ingestion answers 503 "
        "while seals are failing",
        min=1,
    )
    log_segment_bytes: int = setting(
        64 * 1024 * 1024,
        "Size at which the durable log starts a new segment file",
        min=1024,
        max=1024**3,
    )
    identity_cache_entries: int = setting(
        1_000_000,
        "Users, devices, property states and groups each kept in memory once saved",
        min=1,
    )
    retention_days: int = setting(
        0,
        "Sealed parts filed (by server_upload_time) more than this many days ago are dropped; "
        "0 keeps everything",
        min=0,
        max=100_000,
    )
    dedup_max_keys: int = setting(
        50_000_000,
        "Most insert_ids the 7-day dedup window holds (about 10.5 bytes each); beyond it the "
        "oldest hours are forgotten early",
        min=1000,
    )
    export_max_bytes: int = setting(
        4 * 1024**3, "Largest export archive served; larger ranges answer 400", min=1
    )
    dsar_result_ttl_seconds: int = setting(
        2 * 24 * 3600,
        "How long DSAR outputs stay downloadable after the job is done",
        min=1,
        max=366 * 24 * 3600,
    )
    dsar_max_events_per_month: int = setting(
        100_000, "A DSAR fails when the user has more events than this in one month", min=1
    )
    dsar_cost_per_hour: int = setting(
        14_400, "DSAR budget per org per rolling hour (POST costs 8, GET costs 1)", min=8
    )

    # -- part rewriting (compaction) -------------------------------------------------------------
    replaced_blob_grace_seconds: float = setting(
        3600.0,
        "How long the blobs of parts that compaction replaced stay readable, so an export already "
        "streaming (or resumed with Range + If-Range) finishes from them",
        min=0,
        max=7 * 24 * 3600,
    )
    compact_min_parts: int = setting(
        4,
        "An ended hour with at least this many sealed parts is merged into as few parts as "
        "SWELL_PART_MAX_BYTES allows; 0 turns background compaction off",
        min=0,
        max=100_000,
    )
    compact_check_seconds: float = setting(
        60.0, "How often the background looks for hours to compact", min=0.1, max=86_400
    )
    # -- operating: metrics and logs -------------------------------------------------------------
    metrics_token: str = setting(
        "",
        "Bearer token /metrics requires (Authorization: Bearer ...); empty: /metrics is open",
    )
    metrics_enabled: bool = setting(
        True, "Count requests, ingestion, seals and jobs for /metrics (off: /metrics answers 404)"
    )
    log_format: str = setting("text", "Log lines as text or json (one object per line)")
    access_log: bool = setting(True, "Log one line per HTTP request (logger swell.access)")

    # -- the web console -----------------------------------------------------------------------
    console_secret: str = setting(
        "",
        "Key that signs console session cookies; empty: a random one per process (a restart "
        "signs everyone out; set it when several API nodes serve the console)",
    )
    console_session_seconds: int = setting(
        8 * 3600, "How long a console sign-in lasts", min=60, max=30 * 24 * 3600
    )

    def __post_init__(self) -> None:
        if self.metadata_pool_min_size > self.metadata_pool_max_size:
            raise ConfigError(
                f"SWELL_METADATA_POOL_MIN_SIZE has value {self.metadata_pool_min_size}: it must "
                f"not be above SWELL_METADATA_POOL_MAX_SIZE ({self.metadata_pool_max_size})."
            )
        for f in fields(self):
            low, high = f.metadata["min"], f.metadata["max"]
            value = getattr(self, f.name)
            if low is None and high is None:
                continue
            if (low is not None and value < low) or (high is not None and value > high):
                if low is not None and high is not None:
                    bounds = f"between {_number(low)} and {_number(high)}"
                else:
                    bounds = (
                        f"at least {_number(low)}" if high is None else f"at most {_number(high)}"
                    )
                raise ConfigError(
                    f"SWELL_{f.name.upper()} has value {value!r}: it must be {bounds}."
                )
        if self.role not in ROLES:
            raise ConfigError(
                f"SWELL_ROLE has value {self.role!r}. Expected one of {', '.join(sorted(ROLES))}."
            )
        if self.log_format not in LOG_FORMATS:
            raise ConfigError(
                f"SWELL_LOG_FORMAT has value {self.log_format!r}. Expected text or json."
            )
        if self.public_url:
            parsed = urlsplit(self.public_url)
            if (
                parsed.scheme not in ("http", "https")
                or not parsed.netloc
                or parsed.query
                or parsed.fragment
                or not self.public_url.isascii()
            ):
                raise ConfigError(
                    f"SWELL_PUBLIC_URL has value {self.public_url!r}. Expected an absolute "
                    "http:// or https:// URL without query or fragment, e.g. https://swell.example"
                )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ, **overrides: Any) -> Settings:
        """Build settings from SWELL_* variables; explicit overrides (e.g. CLI flags) win."""
        values: dict[str, Any] = {}
        for f in fields(cls):
            name = f"SWELL_{f.name.upper()}"
            if f.name in overrides and overrides[f.name] is not None:
                values[f.name] = overrides[f.name]
            elif name in environ:
                values[f.name] = _convert(name, environ[name], f.default)
        return cls(**values)

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


def _convert(name: str, raw: str, default: Any) -> Any:
    try:
        if isinstance(default, int | float) and not raw.isascii():
            raise ValueError(raw)  # int() and float() would read other scripts' digits
        if isinstance(default, bool):
            if raw.lower() in {"1", "true", "yes", "on"}:
                return True
            if raw.lower() in {"0", "false", "no", "off", ""}:
                return False
            raise ValueError(raw)
        if isinstance(default, int):
            return int(raw.strip())
        if isinstance(default, float):
            value = float(raw)
            if value != value or value in (float("inf"), float("-inf")):  # NaN or infinite
                raise ValueError(raw)
            return value
        if isinstance(default, Path):
            return Path(raw)
        return raw
    except ValueError:
        kind = type(default).__name__
        raise ConfigError(f"{name} has value {raw!r}. Not a valid {kind}.") from None


def _number(value: float | None) -> str:
    return str(int(value)) if value is not None and value == int(value) else str(value)


def describe() -> list[tuple[str, str, str]]:
    """(environment variable, default, help) of every setting, for the docs."""
    return [
        (f"SWELL_{f.name.upper()}", str(f.default), str(f.metadata["help"]))
        for f in fields(Settings)
    ]
