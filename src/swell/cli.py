"""The ``swell`` command line: serve, org/project creation, import, generate, demo."""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import json
import logging
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, TypeVar

import orjson
import typer

from swell import __version__
from swell.auth import new_credentials
from swell.backends import metadata_url, open_metadata
from swell.backends.base import Metadata
from swell.client.cli import register as register_client
from swell.errors import ConfigError, SwellError
from swell.settings import Settings
from swell.store import Store

T = TypeVar("T")

app = typer.Typer(
    name="swell",
    help="A self-hosted event store that speaks Amplitude's ingestion, Export and DSAR APIs.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
org_app = typer.Typer(help="Organisations (their keys authenticate the DSAR API).")
project_app = typer.Typer(help="Projects (their keys authenticate ingestion and Export).")
app.add_typer(org_app, name="org")
app.add_typer(project_app, name="project")

DataDir = Annotated[
    Path | None,
    typer.Option(
        "--data-dir", help="Data directory [env: SWELL_DATA_DIR; default ./var]", show_default=False
    ),
]


def _settings(data_dir: Path | None = None, **overrides: Any) -> Settings:
    return Settings.from_env(data_dir=data_dir, **overrides)


def _run(coro: Awaitable[T]) -> T:
    try:
        return asyncio.run(coro)  # type: ignore[arg-type]
    except SwellError as exc:
        typer.echo(f"swell: {exc.message}", err=True)
        raise typer.Exit(2) from None


async def _with_meta(settings: Settings, fn: Callable[[Metadata], Awaitable[T]]) -> T:
    meta = open_metadata(metadata_url(settings))
    try:
        return await fn(meta)
    finally:
        await meta.aclose()


def _print_json(value: dict[str, Any]) -> None:
    typer.echo(json.dumps(value))


@app.command()
def version() -> None:
    """Print swell's version."""
    typer.echo(__version__)


@app.command()
def serve(
    data_dir: DataDir = None,
    host: Annotated[str | None, typer.Option(help="[env: SWELL_HOST; default 127.0.0.1]")] = None,
    port: Annotated[int | None, typer.Option(help="[env: SWELL_PORT; default 8080]")] = None,
) -> None:
    """Serve the ingestion, Export and DSAR APIs."""
    try:
        settings = _settings(data_dir, host=host, port=port)
    except ConfigError as exc:
        typer.echo(f"swell: {exc.message}", err=True)
        raise typer.Exit(2) from None
    _serve(settings)


#: Allocations between young-generation collections in every swell command (CPython's default:
#: 700). Every ingested, imported or generated event allocates a few container objects that die
#: at once; with the default the young generation is collected every few events, and the older
#: ones, which hold the identity caches, far more often than they change. Cycles are rare here.
GC_YOUNG_THRESHOLD = 50_000


def _serve(settings: Settings) -> None:
    import uvicorn

    from swell.api.app import create_app

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # uvicorn shuts down gracefully on SIGTERM/SIGINT (the lifespan seals every open part), then
    # re-raises the signal to the handler it found. With the default handlers the process would
    # then die by SIGTERM (exit -15) or print a KeyboardInterrupt traceback; exit 0 instead.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _exit_after_shutdown)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=30,
    )


def _exit_after_shutdown(signum: int, frame: object) -> None:
    raise SystemExit(0)


@org_app.command("create")
def org_create(name: str, data_dir: DataDir = None) -> None:
    """Create an org; prints {"org_id", "api_key", "secret_key"} (the secret is shown only now)."""
    creds = new_credentials()

    async def run(meta: Metadata) -> int:
        return await meta.create_org(name, creds.api_key, creds.secret_hash)

    org_id = _run(_with_meta(_settings(data_dir), run))
    _print_json({"org_id": org_id, "api_key": creds.api_key, "secret_key": creds.secret_key})


@project_app.command("create")
def project_create(
    name: str,
    org: Annotated[int, typer.Option("--org", help="The org the project belongs to")],
    data_dir: DataDir = None,
) -> None:
    """Create a project; prints {"project_id", "org_id", "api_key", "secret_key"}."""
    creds = new_credentials()

    async def run(meta: Metadata) -> int:
        return await meta.create_project(name, org, creds.api_key, creds.secret_hash)

    project_id = _run(_with_meta(_settings(data_dir), run))
    _print_json(
        {
            "project_id": project_id,
            "org_id": org,
            "api_key": creds.api_key,
            "secret_key": creds.secret_key,
        }
    )


async def _import(settings: Settings, project: int, records: Iterator[tuple[bytes, Any]]) -> int:
    store = await Store.open(settings)
    try:
        if project not in await _all_projects(store.meta):
            raise ConfigError(f"project {project} does not exist")
        return await store.import_records(project, records)
    finally:
        await store.aclose()


async def _all_projects(meta: Metadata) -> set[int]:
    return {p for org in await meta.all_orgs() for p in await meta.org_projects(org)}


@app.command("import")
def import_(
    paths: Annotated[list[Path], typer.Argument(help="Export zips, .json.gz files or NDJSON")],
    project: Annotated[int, typer.Option("--project", help="Project to file the events under")],
    data_dir: DataDir = None,
) -> None:
    """Load Amplitude export data, keeping every field (server_upload_time decides the hour)."""
    from swell.importer import read_records

    def records() -> Iterator[tuple[bytes, Any]]:
        for path in paths:
            yield from read_records(path)

    started = time.monotonic()
    count = _run(_import(_settings(data_dir), project, records()))
    elapsed = time.monotonic() - started
    _print_json({"project_id": project, "events": count, "seconds": round(elapsed, 3)})


@app.command()
def generate(
    project: Annotated[int, typer.Option("--project", help="Project to file the events under")],
    events: Annotated[int, typer.Option("--events", min=1, max=10**9)],
    days: Annotated[int, typer.Option("--days", min=1, max=3660)] = 7,
    users: Annotated[int, typer.Option("--users", min=1, max=10**8)] = 1000,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    data_dir: DataDir = None,
) -> None:
    """Generate realistic synthetic events (all 55 keys) through the import path."""
    started = time.monotonic()
    count = _run(
        _import(_settings(data_dir), project, _generated(project, events, days, users, seed))
    )
    elapsed = time.monotonic() - started
    _print_json({"project_id": project, "events": count, "seconds": round(elapsed, 3)})


def _generated(
    project: int, events: int, days: int, users: int, seed: int
) -> Iterator[tuple[bytes, Any]]:
    from swell.generate import generate_records

    for record in generate_records(project, events=events, days=days, users=users, seed=seed):
        yield orjson.dumps(record), record


@app.command()
def demo(
    data_dir: DataDir = None,
    host: Annotated[str | None, typer.Option(help="[env: SWELL_HOST]")] = None,
    port: Annotated[int | None, typer.Option(help="[env: SWELL_PORT]")] = None,
    events: Annotated[int, typer.Option(help="Demo events to generate on first start")] = 200_000,
) -> None:
    """First start: create a demo org and project with generated data. Every start: issue fresh
    demo keys (secrets are never stored, so they cannot be shown again), print them, serve."""
    settings = _settings(data_dir, host=host, port=port)
    info = _run(_prepare_demo(settings, events))
    base = f"http://{settings.host}:{settings.port}"
    org, project = info["org"], info["project"]
    echo = typer.echo
    echo("")
    echo(f"swell demo at {base}  (data in {settings.data_dir})")
    echo(f"  org {org['org_id']}:      api_key {org['api_key']}  secret_key {org['secret_key']}")
    echo(
        f"  project {project['project_id']}:  api_key {project['api_key']}  "
        f"secret_key {project['secret_key']}"
    )
    echo("  (fresh keys are issued on every `make run`; earlier demo keys stop working)")
    echo("")
    echo("Send an event:")
    echo(
        f"  curl -s {base}/2/httpapi -H 'Content-Type: application/json' -d "
        f'\'{{"api_key":"{project["api_key"]}","events":[{{"user_id":"alice@example.com",'
        f'"event_type":"Signed Up"}}]}}\''
    )
    echo("Export this hour back (a zip of gzipped NDJSON):")
    echo(
        f"  curl -s -u {project['api_key']}:{project['secret_key']} -o export.zip "
        f'"{base}/api/2/export?start=$(date -u +%Y%m%dT%H)&end=$(date -u +%Y%m%dT%H)"'
    )
    echo("Ask for everything about a user (DSAR):")
    echo(
        f"  curl -s -u {org['api_key']}:{org['secret_key']} {base}/api/2/dsar/requests "
        f"-H 'Content-Type: application/json' -d "
        f'\'{{"userId":"alice@example.com","startDate":"2020-01-01",'
        f'"endDate":"2030-12-31"}}\''
    )
    echo("")
    sys.stdout.flush()
    _serve(settings)


async def _prepare_demo(settings: Settings, events: int) -> dict[str, dict[str, Any]]:
    store = await Store.open(settings)
    data_dir = store.backends.data_dir
    try:
        ids = data_dir.marker("demo")
        if ids is not None:
            org_id, project_id = int(ids["org_id"]), int(ids["project_id"])
        else:
            org_creds, project_creds = new_credentials(), new_credentials()
            org_id = await store.meta.create_org("demo", org_creds.api_key, org_creds.secret_hash)
            project_id = await store.meta.create_project(
                "demo", org_id, project_creds.api_key, project_creds.secret_hash
            )
            typer.echo(f"generating {events} demo events over 7 days...", err=True)
            records = _generated(project_id, events, 7, max(100, events // 40), 0)
            await store.import_records(project_id, records)
            data_dir.set_marker("demo", {"org_id": org_id, "project_id": project_id})
        org_creds, project_creds = new_credentials(), new_credentials()
        await store.meta.rotate_key(org_id, None, org_creds.api_key, org_creds.secret_hash)
        await store.meta.rotate_key(
            org_id, project_id, project_creds.api_key, project_creds.secret_hash
        )
    finally:
        await store.aclose()
    return {
        "org": {"org_id": org_id, **vars_of(org_creds)},
        "project": {"project_id": project_id, **vars_of(project_creds)},
    }


def vars_of(creds: Any) -> dict[str, str]:
    return {"api_key": creds.api_key, "secret_key": creds.secret_key}


#: glibc mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def keep_freed_memory() -> bool:
    """Have glibc's malloc serve blocks up to 32 MiB from the heap and keep freed memory.

    swell allocates and frees megabyte buffers constantly (request bodies, log frames, decompressed
    blocks). By default each one over 128 KiB is a fresh mmap whose pages fault in one by one, and
    freed heap memory goes straight back to the kernel: on this kind of VM that fault cost is
    larger than the work (a DSAR scan ran about 2.7x slower). Returns False where malloc is not
    glibc's (nothing changes then).
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(
        mallopt(_M_MMAP_THRESHOLD, 32 * 1024 * 1024)
        and mallopt(_M_TRIM_THRESHOLD, 256 * 1024 * 1024)
    )


def tune_runtime() -> None:
    """The allocator and collector settings every swell command runs with."""
    keep_freed_memory()
    gc.set_threshold(GC_YOUNG_THRESHOLD, 20, 100)


register_client(app)  # swell export, swell dsar ...: the client for the Export and DSAR APIs


def main() -> None:
    tune_runtime()
    app()
