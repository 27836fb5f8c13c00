"""The ``swell`` command line: serve, org/project creation, import, generate, demo."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import gc
import json
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import httpx
import orjson
import typer

from swell import __version__
from swell.auth import NewCredentials, new_credentials
from swell.backends import blob_url, metadata_url, open_blobs, open_metadata
from swell.backends.base import Metadata
from swell.backends.datadir import make_private
from swell.client.cli import register as register_client
from swell.errors import ConfigError, Conflict, NotFound, SwellError
from swell.logs import configure as configure_logs
from swell.rewrite import Rewritten
from swell.settings import Settings
from swell.store import Imported, Store

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
        "--data-dir",
        help="Data directory (env SWELL_DATA_DIR; default ./var)",
        show_default=False,
    ),
]
Host = Annotated[
    str | None, typer.Option(help="Interface to listen on (env SWELL_HOST; default 127.0.0.1)")
]
Port = Annotated[int | None, typer.Option(help="Port to listen on (env SWELL_PORT; default 8080)")]


def _settings(data_dir: Path | None = None, **overrides: Any) -> Settings:
    """Settings from the environment and flags (a bad value exits 2 with one line); the data
    directory is made private to its owner first."""
    try:
        settings = Settings.from_env(data_dir=data_dir, **overrides)
    except ConfigError as exc:
        _fail(exc.message)
    from swell.node import is_scale_out

    if not is_scale_out(settings):  # a scale-out node keeps nothing in a data directory
        try:
            make_private(settings.data_dir)
        except OSError as exc:
            _fail(f"cannot use data directory {settings.data_dir}: {exc.strerror}")
    return settings


def _fail(message: str) -> NoReturn:
    typer.echo(f"swell: {message}", err=True)
    raise typer.Exit(2)


def _run(coro: Awaitable[T]) -> T:
    try:
        return asyncio.run(coro)  # type: ignore[arg-type]
    except SwellError as exc:
        _fail(exc.message)


async def _with_meta(settings: Settings, fn: Callable[[Metadata], Awaitable[T]]) -> T:
    meta = open_metadata(metadata_url(settings), settings)
    try:
        return await fn(meta)
    finally:
        await meta.aclose()


def _print_json(value: dict[str, Any]) -> None:
    typer.echo(json.dumps(value))


def _version(value: bool) -> None:
    if value:
        typer.echo(__version__)
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print swell's version and exit."
        ),
    ] = False,
) -> None:
    """A self-hosted event store that speaks Amplitude's ingestion, Export and DSAR APIs."""


@app.command()
def version() -> None:
    """Print swell's version."""
    typer.echo(__version__)


Role = Annotated[
    str | None,
    typer.Option(
        "--role",
        help="On a scale-out deployment (PostgreSQL metadata): api (HTTP only), worker (project "
        "owners and DSAR jobs) or all (env SWELL_ROLE; default all)",
    ),
]


@app.command()
def serve(
    data_dir: DataDir = None, host: Host = None, port: Port = None, role: Role = None
) -> None:
    """Serve the ingestion, Export and DSAR APIs."""
    settings = _settings(data_dir, host=host, port=port, role=role)
    _check_role(settings)
    _check_can_serve(settings)
    if settings.role == "worker":
        _work(settings)
    else:
        _serve(settings)


@app.command()
def worker(data_dir: DataDir = None) -> None:
    """Run a scale-out worker: own projects (enrich, seal) and run DSAR jobs; no HTTP
    (``swell serve --role worker``). SIGTERM seals what it owns, gives the leases back, exits 0."""
    settings = _settings(data_dir, role="worker")
    _check_role(settings)
    _check_can_serve(settings)
    _work(settings)


def _check_role(settings: Settings) -> None:
    from swell.node import is_scale_out

    if settings.role != "all" and not is_scale_out(settings):
        _fail(
            f"role {settings.role} needs a scale-out deployment (SWELL_METADATA_URL="
            "postgresql://...); the embedded default runs everything in one process"
        )


def _work(settings: Settings) -> None:
    """The worker role, until SIGTERM or SIGINT."""
    configure_logs(settings.log_format)
    _run(_work_until_stopped(settings))


async def _work_until_stopped(settings: Settings) -> None:
    from swell.dsar import Dsar
    from swell.jobs import Worker
    from swell.node import open_node
    from swell.owner import worker_name

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    front = await open_node(settings)
    try:
        front.start_background()
        dsar = Dsar.from_settings(
            front.meta, front.blobs, settings, clock=_utcnow, seal=front.seal_user
        )
        jobs = Worker(front.meta, [dsar], clock=_utcnow, name=worker_name(), sole_worker=False)
        jobs.start()
        try:
            await stop.wait()
        finally:
            await jobs.aclose()
    finally:
        await front.aclose()


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _check_can_serve(settings: Settings) -> None:
    """Exit 2 with one line if the data directory is in use, the port is taken, or a store
    cannot be reached."""
    from swell.backends.datadir import DataDir as LockedDir
    from swell.node import is_scale_out

    if not is_scale_out(settings):
        try:
            LockedDir.lock(settings.data_dir).release()
        except ConfigError as exc:
            _fail(exc.message)
    if settings.role != "worker":
        _check_port(settings)
    _run(_probe_backends(settings))


def _check_port(settings: Settings) -> None:
    with socket.socket(socket.AF_INET6 if ":" in settings.host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind((settings.host, settings.port))
        except OSError as exc:
            _fail(
                f"cannot listen on {settings.host}:{settings.port}: {exc.strerror}; "
                "set SWELL_PORT or --port to use another port"
            )


async def _probe_backends(settings: Settings) -> None:
    """Open the metadata and blob stores once (and read from the metadata store), so a store that
    cannot be reached at start-up is one line, not a failed server start."""
    meta = open_metadata(metadata_url(settings), settings)
    try:
        await meta.all_orgs()
    finally:
        await meta.aclose()
    await open_blobs(blob_url(settings)).aclose()


#: Allocations between young-generation collections in every swell command (CPython's default:
#: 700). Every ingested, imported or generated event allocates a few container objects that die
#: at once; with the default the young generation is collected every few events, and the older
#: ones, which hold the identity caches, far more often than they change. Cycles are rare here.
GC_YOUNG_THRESHOLD = 50_000


def _serve(settings: Settings) -> None:
    import uvicorn

    from swell.api.app import create_app
    from swell.api.server import ConnectionLimits, fit_open_files, http_protocol

    configure_logs(settings.log_format)
    # uvicorn shuts down gracefully on SIGTERM/SIGINT (the lifespan seals every open part), then
    # re-raises the signal to the handler it found. With the default handlers the process would
    # then die by SIGTERM (exit -15) or print a KeyboardInterrupt traceback; exit 0 instead.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _exit_after_shutdown)
    # Every connection and request is bounded in time, size and number (swell.api.server).
    limits = ConnectionLimits.from_settings(settings, fit_open_files(settings.max_connections))
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        http=http_protocol(limits),
        timeout_keep_alive=settings.http_keep_alive_seconds,
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


@org_app.command("list")
def org_list(data_dir: DataDir = None) -> None:
    """Print every org, one JSON object a line: {"org_id", "name", "created_at", "projects"}."""
    orgs = _run(_with_meta(_settings(data_dir), lambda meta: meta.list_orgs()))
    for org in orgs:
        _print_json(
            {
                "org_id": org.id,
                "name": org.name,
                "created_at": org.created_at,
                "projects": org.projects,
            }
        )


@org_app.command("rotate-keys")
def org_rotate_keys(org_id: int, data_dir: DataDir = None) -> None:
    """Replace the org's key pair; prints the new {"org_id", "api_key", "secret_key"} once. The
    old pair stops working at once (within a second on a running server)."""
    creds = new_credentials()

    async def run(meta: Metadata) -> None:
        if org_id not in {org.id for org in await meta.list_orgs()}:
            raise NotFound(f"org {org_id} does not exist")
        await meta.rotate_key(org_id, None, creds.api_key, creds.secret_hash)

    _run(_with_meta(_settings(data_dir), run))
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
    _print_project_keys(project_id, org, creds)


def _print_project_keys(project_id: int, org_id: int, creds: NewCredentials) -> None:
    _print_json(
        {
            "project_id": project_id,
            "org_id": org_id,
            "api_key": creds.api_key,
            "secret_key": creds.secret_key,
        }
    )


@project_app.command("list")
def project_list(
    org: Annotated[int | None, typer.Option("--org", help="Only this org's projects")] = None,
    data_dir: DataDir = None,
) -> None:
    """Print every project, one JSON object a line: {"project_id", "org_id", "name",
    "created_at", "parts", "events"} (sealed parts and the events in them)."""
    projects = _run(_with_meta(_settings(data_dir), lambda meta: meta.list_projects(org)))
    for project in projects:
        _print_json(
            {
                "project_id": project.id,
                "org_id": project.org_id,
                "name": project.name,
                "created_at": project.created_at,
                "parts": project.parts,
                "events": project.events,
            }
        )


@project_app.command("rotate-keys")
def project_rotate_keys(project_id: int, data_dir: DataDir = None) -> None:
    """Replace the project's key pair; prints the new {"project_id", "org_id", "api_key",
    "secret_key"} once. The old pair stops working at once (ingestion with the old api_key within
    a second on a running server)."""
    creds = new_credentials()

    async def run(meta: Metadata) -> int:
        org_id = await _org_of(meta, project_id)
        await meta.rotate_key(org_id, project_id, creds.api_key, creds.secret_hash)
        return org_id

    org_id = _run(_with_meta(_settings(data_dir), run))
    _print_project_keys(project_id, org_id, creds)


@project_app.command("delete")
def project_delete(project_id: int, data_dir: DataDir = None) -> None:
    """Delete a project that holds no events (sealed or waiting in the log); needs the data
    directory to itself. Prints {"project_id", "deleted": true}."""

    async def run() -> None:
        async with _project_store(_settings(data_dir), project_id) as store:
            waiting = sum(p.events for p in store.sealer.unsealed() if p.project_id == project_id)
            if waiting:
                raise Conflict(
                    f"project {project_id} holds {waiting} event(s) not sealed yet; "
                    "only an empty project can be deleted"
                )
            await store.meta.delete_project(project_id)

    _run(run())
    _print_json({"project_id": project_id, "deleted": True})


async def _org_of(meta: Metadata, project_id: int) -> int:
    """The org of a project. Raises NotFound."""
    for project in await meta.list_projects():
        if project.id == project_id:
            return project.org_id
    raise NotFound(f"project {project_id} does not exist")


async def _import(
    settings: Settings, project: int, records: Iterator[tuple[bytes, Any]], total: int | None
) -> Imported:
    async with _project_store(settings, project) as store:
        with _progress("importing", total) as advance:
            return await store.import_records(project, records, progress=advance)


@contextlib.asynccontextmanager
async def _project_store(settings: Settings, project_id: int) -> AsyncIterator[Store]:
    """A store that may write the project's data: the embedded one (the data directory to
    itself), or, on a scale-out deployment, the project's owner for a while. Raises NotFound for
    a project that does not exist."""
    from swell.node import is_scale_out, owning

    if is_scale_out(settings):
        await _with_meta(settings, lambda meta: _org_of(meta, project_id))
        async with owning(settings, project_id) as owned:
            yield owned
        return
    store = await Store.open(settings)
    try:
        await _org_of(store.meta, project_id)
        yield store
    finally:
        await store.aclose()


@contextlib.contextmanager
def _progress(what: str, total: int | None) -> Iterator[Callable[[int], None]]:
    """A rich progress bar on a terminal (records, rate, ETA when the total is known); nothing
    otherwise, so scripts read only the JSON on stdout."""
    if not sys.stderr.isatty():
        yield lambda done: None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = [
        TextColumn(f"{what} [progress.percentage]{{task.percentage:>3.0f}}%"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("records"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    ]
    with Progress(*columns, transient=True, console=_stderr_console()) as bar:
        task = bar.add_task(what, total=total)
        yield lambda done: bar.update(task, completed=done)


def _stderr_console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


def _print_import(project: int, result: Imported, started: float) -> None:
    _print_json(
        {
            "project_id": project,
            "events": result.stored,
            "skipped": result.skipped,
            "expired": result.expired,
            "seconds": round(time.monotonic() - started, 3),
        }
    )


@app.command("import")
def import_(
    paths: Annotated[list[Path], typer.Argument(help="Export zips, .json.gz files or NDJSON")],
    project: Annotated[int, typer.Option("--project", help="Project to file the events under")],
    data_dir: DataDir = None,
) -> None:
    """Load Amplitude export data, keeping every field but app (server_upload_time decides the
    hour). Records stored by an earlier import are skipped: run it again to finish an
    interrupted import. Prints {"project_id", "events", "skipped", "expired", "seconds"}."""
    from swell.importer import read_records

    def records() -> Iterator[tuple[bytes, Any]]:
        for path in paths:
            yield from read_records(path)

    started = time.monotonic()
    result = _run(_import(_settings(data_dir), project, records(), None))
    _print_import(project, result, started)


# -- compaction ------------------------------------------------------------------------------------


@app.command()
def compact(
    project: Annotated[
        int | None, typer.Option("--project", help="Only this project's hours")
    ] = None,
    min_parts: Annotated[
        int, typer.Option("--min-parts", min=2, max=100_000, help="Merge hours with this many")
    ] = 2,
    data_dir: DataDir = None,
) -> None:
    """Merge the sealed parts of every ended hour (of one project) that holds several into as
    few as SWELL_PART_MAX_BYTES allows (export member names count from #0 again), and delete
    the blobs earlier rewrites replaced once their grace is over. Prints {"hours",
    "parts_before", "parts_after", "bytes_read", "bytes_written", "seconds"}."""
    settings = _settings(data_dir)
    started = time.monotonic()
    done = _run(_compact(settings, project, min_parts))
    _print_json(
        {
            "hours": len(done),
            "parts_before": sum(r.parts_before for r in done),
            "parts_after": sum(r.parts_after for r in done),
            "bytes_read": sum(r.bytes_read for r in done),
            "bytes_written": sum(r.bytes_written for r in done),
            "seconds": round(time.monotonic() - started, 3),
        }
    )


async def _compact(settings: Settings, project: int | None, min_parts: int) -> list[Rewritten]:
    from swell.node import is_scale_out

    if project is None and is_scale_out(settings):
        projects = [p.id for p in await _with_meta(settings, lambda meta: meta.list_projects())]
    elif project is None:
        store = await Store.open(settings)
        try:
            return await _compact_all(store, None, min_parts)
        finally:
            await store.aclose()
    else:
        projects = [project]
    done: list[Rewritten] = []
    for project_id in projects:
        async with _project_store(settings, project_id) as store:
            done += await _compact_all(store, project_id, min_parts)
    return done


async def _compact_all(store: Store, project: int | None, min_parts: int) -> list[Rewritten]:
    """Rounds of compaction until one finds nothing more to merge."""
    done: list[Rewritten] = []
    while merged := await store.compact(project, min_parts=min_parts):
        done += merged  # a merged hour is not crowded any more: the rounds end
    return done


@app.command()
def generate(
    project: Annotated[int, typer.Option("--project", help="Project to file the events under")],
    events: Annotated[int, typer.Option("--events", min=1, max=10**9)],
    days: Annotated[int, typer.Option("--days", min=1, max=3660)] = 7,
    users: Annotated[int, typer.Option("--users", min=1, max=10**8)] = 1000,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    end: Annotated[
        str | None,
        typer.Option(
            "--end",
            help="The hour (YYYYMMDDTHH, UTC) the events end before; default: this hour",
        ),
    ] = None,
    data_dir: DataDir = None,
) -> None:
    """Generate realistic synthetic events (all 55 keys) through the import path. The events
    depend only on the options (and the hour, without --end): the same command again skips what
    it stored, so it finishes an interrupted run."""
    settings = _settings(data_dir)
    until = _hour(end) if end is not None else None
    started = time.monotonic()
    records = _generated(project, events, days, users, seed, until)
    result = _run(_import(settings, project, records, events))
    _print_import(project, result, started)


def _hour(text: str) -> datetime:
    try:
        return datetime.strptime(text, "%Y%m%dT%H").replace(tzinfo=UTC)
    except ValueError:
        _fail(f"--end {text!r} is not an hour YYYYMMDDTHH")


def _generated(
    project: int, events: int, days: int, users: int, seed: int, end: datetime | None = None
) -> Iterator[tuple[bytes, Any]]:
    from swell.generate import generate_records

    for record in generate_records(
        project, events=events, days=days, users=users, seed=seed, end=end
    ):
        yield orjson.dumps(record), record


@app.command()
def demo(
    data_dir: DataDir = None,
    host: Host = None,
    port: Port = None,
    events: Annotated[int, typer.Option(help="Demo events to generate on first start")] = 200_000,
) -> None:
    """First start: create a demo org and project with generated data. Every start: issue fresh
    demo keys (secrets are never stored, so they cannot be shown again), print them, serve."""
    from swell.node import is_scale_out

    settings = _settings(data_dir, host=host, port=port)
    if is_scale_out(settings):
        _fail("swell demo runs the embedded default; on PostgreSQL, use swell serve")
    _check_can_serve(settings)  # before minutes of generating data for a server that cannot start
    info = _run(_prepare_demo(settings, events))
    base = f"http://{settings.host}:{settings.port}"
    org, project = info["org"], info["project"]
    org_auth = f"{org['api_key']}:{org['secret_key']}"
    echo = typer.echo
    echo("")
    echo(f"swell demo at {base}  (data in {settings.data_dir}; SWELL_PORT=... to change the port)")
    echo(f"  org {org['org_id']}:      api_key {org['api_key']}  secret_key {org['secret_key']}")
    echo(
        f"  project {project['project_id']}:  api_key {project['api_key']}  "
        f"secret_key {project['secret_key']}"
    )
    echo("  (fresh keys are issued on every `make run`; earlier demo keys stop working)")
    echo("")
    echo("Send an event:")
    echo(
        f"  curl -f -s {base}/2/httpapi -H 'Content-Type: application/json' -d "
        f'\'{{"api_key":"{project["api_key"]}","events":[{{"user_id":"alice@example.com",'
        f'"event_type":"Signed Up"}}]}}\''
    )
    echo("Export this hour back (a zip of gzipped NDJSON):")
    echo(
        f"  curl -f -s -u {project['api_key']}:{project['secret_key']} -o export.zip "
        f'"{base}/api/2/export?start=$(date -u +%Y%m%dT%H)&end=$(date -u +%Y%m%dT%H)"'
    )
    echo("Ask for everything about a user (DSAR), poll until done, download the first output:")
    echo(
        f"  curl -f -s -u {org_auth} {base}/api/2/dsar/requests "
        f"-H 'Content-Type: application/json' -d "
        f'\'{{"userId":"alice@example.com","startDate":"2020-01-01",'
        f'"endDate":"2030-12-31"}}\''
    )
    echo(f"  curl -f -s -u {org_auth} {base}/api/2/dsar/requests/<requestId>")
    echo(f"  curl -f -s -u {org_auth} -o alice.json.gz <one of the urls>")
    echo("")
    sys.stdout.flush()
    _serve(settings)


async def _prepare_demo(settings: Settings, events: int) -> dict[str, dict[str, Any]]:
    store = await Store.open(settings)
    data_dir = store.backends.data_dir
    assert data_dir is not None, "Store.open locks a data directory"
    try:
        marker = data_dir.marker("demo")
        if marker is None:
            org_creds, project_creds = new_credentials(), new_credentials()
            org_id = await store.meta.create_org("demo", org_creds.api_key, org_creds.secret_hash)
            project_id = await store.meta.create_project(
                "demo", org_id, project_creds.api_key, project_creds.secret_hash
            )
            # Written before generating: an interrupted first start resumes with this org.
            end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
            marker = {
                "org_id": org_id,
                "project_id": project_id,
                "end": end.isoformat(),
                "generated": False,
            }
            data_dir.set_marker("demo", marker)
        org_id, project_id = int(marker["org_id"]), int(marker["project_id"])
        if not marker.get("generated", True):
            typer.echo(f"generating {events} demo events over 7 days...", err=True)
            end = datetime.fromisoformat(str(marker["end"]))
            records = _generated(project_id, events, 7, max(100, events // 40), 0, end)
            with _progress("generating", events) as advance:
                await store.import_records(project_id, records, progress=advance)
            data_dir.set_marker("demo", {**marker, "generated": True})
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
    # The pool warns on every failed connection attempt; swell reports the outage itself (one
    # line from a command, 503s and /readyz from a server).
    logging.getLogger("psycopg.pool").setLevel(logging.ERROR)
    app()


# -- operating: status ---------------------------------------------------------------------------


@app.command()
def status(
    data_dir: DataDir = None,
    server: Annotated[
        str | None,
        typer.Option(
            "--server",
            help="Ask a running server (its /readyz, /healthz and /metrics; the token from env "
            "SWELL_METRICS_TOKEN) instead of reading the stores",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object")] = False,
) -> None:
    """Print what an operator needs first: version, backends, projects with events and parts per
    day, open parts, jobs, the last seal, disk used."""
    from swell import status as report

    if server is not None:
        if data_dir is not None:
            _fail("give --data-dir or --server, not both")
        token = Settings.from_env().metrics_token if "SWELL_METRICS_TOKEN" in os.environ else None
        try:
            result = _run(report.online(server, token))
        except httpx.HTTPError as exc:
            _fail(f"cannot reach {server}: {exc}")
    else:
        settings = _settings(data_dir)
        meta_url, blobs = metadata_url(settings), blob_url(settings)
        result = _run(
            _with_meta(settings, lambda meta: report.offline(settings, meta, meta_url, blobs))
        )
    if as_json:
        _print_json(result)
    else:
        for line in report.render(result):
            typer.echo(line)
