"""``swell export`` and ``swell dsar request|batch|status``: the client as commands.

stdout carries the result as JSON (one object per line); stderr carries progress (a live
display on a terminal, plain lines otherwise) and errors. Every failure is one line,
``swell: <what went wrong>``, and the exit code says which kind (docs/pulling-data.md):

    0 done · 1 internal error · 2 bad input, or the server refused a request · 3 server
    unreachable · 4 credentials refused · 5 the server kept failing, or sent corrupt data ·
    6 local failure (disk full, permissions, state file) · 7 some DSAR requests not done ·
    130 interrupted (run the same command again to resume)
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, TypeVar

import orjson
import typer
from rich.console import Console
from typer.core import TyperCommand, TyperGroup

from swell.client.errors import ClientError, Incomplete, UsageError
from swell.client.retry import RetryPolicy

T = TypeVar("T")

INTERRUPTED = 130


def _one_line(exc: typer.TyperException) -> typer.Exit:
    typer.echo(f"swell: {exc.format_message()}", err=True)
    return typer.Exit(2)


class Command(TyperCommand):
    """Usage errors (a missing option, a value of the wrong type) as one ``swell:`` line."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except typer.TyperException as exc:
            raise _one_line(exc) from None


class Group(TyperGroup):
    """As :class:`Command`, for the ``dsar`` group (an unknown subcommand, say)."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except typer.TyperException as exc:
            raise _one_line(exc) from None

    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        try:
            return super().resolve_command(ctx, args)
        except typer.TyperException as exc:
            raise _one_line(exc) from None


dsar_app = typer.Typer(
    cls=Group,
    help="Data subject access requests: everything about a user, within the API's budget.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

Server = Annotated[
    str | None,
    typer.Option("--server", help="API base URL, e.g. http://127.0.0.1:8080 (a swell server)"),
]
Region = Annotated[
    str | None,
    typer.Option("--region", help="Amplitude's hosts: us (amplitude.com) or eu", metavar="us|eu"),
]
Quiet = Annotated[bool, typer.Option("--quiet", help="No progress on stderr")]
Timeout = Annotated[
    float, typer.Option("--timeout", min=1, help="Seconds to wait for a byte of an answer")
]
Retries = Annotated[
    int,
    typer.Option(
        "--retries",
        min=1,
        max=100,
        help="Attempts per request (connection errors, 429, 5xx) before giving up",
    ),
]


def _keys(
    key: str | None, secret: str | None, key_flag: str, secret_flag: str, env: str
) -> tuple[str, str]:
    key = key or os.environ.get(f"AMPLITUDE_{env}API_KEY") or None
    secret = secret or os.environ.get(f"AMPLITUDE_{env}SECRET_KEY") or None
    if not key:
        raise UsageError(f"missing {key_flag} (or set AMPLITUDE_{env}API_KEY)")
    if not secret:
        raise UsageError(f"missing {secret_flag} (or set AMPLITUDE_{env}SECRET_KEY)")
    return key, secret


def _base(server: str | None, region: str | None) -> str:
    from swell.client.regions import base_url

    return base_url(server, region)


def _terminal() -> bool:
    return Console(stderr=True).is_terminal


def _print(value: dict[str, Any]) -> None:
    sys.stdout.write(orjson.dumps(value).decode() + "\n")
    sys.stdout.flush()


def _fail(message: str, code: int) -> typer.Exit:
    typer.echo(f"swell: {message}", err=True)
    return typer.Exit(code)


def _run(make: Callable[[], Awaitable[T]]) -> T:
    """Run a client coroutine, turning every failure into one line and an exit code."""
    try:
        return asyncio.run(make())  # type: ignore[arg-type]
    except ClientError as exc:
        raise _fail(exc.message, exc.exit_code) from None
    except KeyboardInterrupt:
        raise _fail("interrupted; run the same command again to resume", INTERRUPTED) from None
    except Exception as exc:  # a bug: still one line, never a traceback
        raise _fail(f"internal error: {type(exc).__name__}: {exc}", 1) from None


@contextlib.contextmanager
def _shown(observer: Any) -> Iterator[Any]:
    enter = getattr(observer, "__enter__", None)
    if enter is None:
        yield observer
        return
    with observer:
        yield observer


_DURATION = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([smhd]?)\s*$")


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``30m``, ``6h``, ``3d`` → seconds."""
    match = _DURATION.match(text)
    if match is None:
        raise UsageError(f"invalid duration {text[:40]!r}: use e.g. 90s, 30m, 6h or 3d")
    value, unit = float(match.group(1)), match.group(2) or "s"
    seconds = value * {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit]
    if seconds <= 0:
        raise UsageError("the deadline must be positive")
    return seconds


# -- export ----------------------------------------------------------------------------------------


def export(
    start: Annotated[
        str, typer.Option("--start", help="First hour, YYYYMMDDTHH (UTC, server_upload_time)")
    ],
    end: Annotated[str, typer.Option("--end", help="Last hour, YYYYMMDDTHH (included)")],
    out: Annotated[Path, typer.Option("--out", help="Directory for the files and the state")],
    server: Server = None,
    region: Region = None,
    api_key: Annotated[
        str | None, typer.Option("--api-key", help="Project API key (env AMPLITUDE_API_KEY)")
    ] = None,
    secret_key: Annotated[
        str | None,
        typer.Option("--secret-key", help="Project secret key (env AMPLITUDE_SECRET_KEY)"),
    ] = None,
    window_hours: Annotated[
        int, typer.Option("--window-hours", min=1, max=8760, help="Hours per request")
    ] = 24,
    parallel: Annotated[
        int, typer.Option("--parallel", min=1, max=64, help="Windows downloaded at once")
    ] = 4,
    extract: Annotated[
        bool, typer.Option("--extract", help="Write each window's records as one .json.gz")
    ] = False,
    format: Annotated[
        str,
        typer.Option(
            "--format",
            help="ndjson, or parquet (one Parquet file per window; implies --extract)",
            metavar="ndjson|parquet",
        ),
    ] = "ndjson",
    settle_hours: Annotated[
        int,
        typer.Option(
            "--settle-hours",
            min=0,
            max=8760,
            help="Hours after a window ends before it counts as done (until then a re-run "
            "fetches it again: Amplitude takes up to 2 hours to make an hour exportable)",
        ),
    ] = 3,
    timeout: Timeout = 600.0,
    retries: Retries = 8,
    quiet: Quiet = False,
) -> None:
    """Export a range of hours into DIR, window by window; a re-run fetches only what is missing.

    Each window is one archive (or, with --extract, one .json.gz of its records; with --format
    parquet, one Parquet file), checked before it counts. A cut download resumes where the server
    allows it. The result is one JSON object on stdout."""
    from swell.client.export import AsyncExportClient, Output
    from swell.client.progress import NullExport, PlainExport, RichExport

    async def run() -> dict[str, Any]:
        if format not in ("ndjson", "parquet"):
            raise UsageError(f"--format must be ndjson or parquet, not {format!r}")
        output: Output = "parquet" if format == "parquet" else "ndjson" if extract else "zip"
        base = _base(server, region)
        key, secret = _keys(api_key, secret_key, "--api-key", "--secret-key", "")
        observer = NullExport() if quiet else RichExport() if _terminal() else PlainExport()
        with _shown(observer):
            async with AsyncExportClient(
                base,
                key,
                secret,
                window_hours=window_hours,
                parallel=parallel,
                settle_hours=settle_hours,
                retry=RetryPolicy(attempts=retries),
                timeout=timeout,
                observer=observer,
            ) as client:
                summary = await client.export_to(out, start, end, output=output)
        result = summary.as_dict()
        result["out"] = str(out)
        _print(result)
        if summary.failed:
            first = summary.failed[0].error
            raise type(first)(
                f"{len(summary.failed)} window(s) failed and will be retried by the next run; "
                f"first: {first.message}"
            )
        return result

    _run(run)


# -- dsar ------------------------------------------------------------------------------------------

OrgKey = Annotated[
    str | None,
    typer.Option("--org-api-key", help="Org API key (env AMPLITUDE_ORG_API_KEY)"),
]
OrgSecret = Annotated[
    str | None,
    typer.Option("--org-secret-key", help="Org secret key (env AMPLITUDE_ORG_SECRET_KEY)"),
]
StartDate = Annotated[str, typer.Option("--start-date", help="First day, YYYY-MM-DD")]
EndDate = Annotated[str, typer.Option("--end-date", help="Last day, YYYY-MM-DD (included)")]
Out = Annotated[Path, typer.Option("--out", help="Directory for the outputs and the state")]
Deadline = Annotated[
    str,
    typer.Option(
        "--deadline", help="How long to wait for a request before reporting it (90s, 30m, 6h, 3d)"
    ),
]
BudgetOpt = Annotated[
    int,
    typer.Option(
        "--budget", min=9, help="DSAR cost to spend per hour (Amplitude's budget is 14,400)"
    ),
]
Trust = Annotated[
    list[str] | None,
    typer.Option(
        "--trust-host", help="Also send the credentials to output URLs on this host (repeatable)"
    ),
]


def _dsar_client(
    server: str | None,
    region: str | None,
    org_api_key: str | None,
    org_secret_key: str | None,
    *,
    quiet: bool,
    **options: Any,
) -> Any:
    from swell.client.dsar import AsyncDsarClient
    from swell.client.progress import NullDsar, PlainDsar, RichDsar

    base = _base(server, region)
    key, secret = _keys(org_api_key, org_secret_key, "--org-api-key", "--org-secret-key", "ORG_")
    observer = NullDsar() if quiet else RichDsar() if _terminal() else PlainDsar()
    return AsyncDsarClient(base, key, secret, observer=observer, **options), observer


def _report(results: list[Any]) -> None:
    for result in results:
        _print(result.as_dict())
    missing = [r for r in results if not r.ok]
    if missing:
        first = missing[0]
        who = first.subject.label
        raise Incomplete(
            f"{len(missing)} of {len(results)} request(s) not done; first: {who}: "
            f"{first.status}: {first.reason}"
        )


@dsar_app.command("request", cls=Command)
def dsar_request(
    start_date: StartDate,
    end_date: EndDate,
    out: Out,
    user_id: Annotated[str | None, typer.Option("--user-id", help="The user's user_id")] = None,
    amplitude_id: Annotated[
        int | None, typer.Option("--amplitude-id", min=1, help="The user's Amplitude id")
    ] = None,
    server: Server = None,
    region: Region = None,
    org_api_key: OrgKey = None,
    org_secret_key: OrgSecret = None,
    deadline: Deadline = "24h",
    budget: BudgetOpt = 14_400,
    trust_host: Trust = None,
    timeout: Timeout = 600.0,
    retries: Retries = 8,
    quiet: Quiet = False,
) -> None:
    """Request everything about one user and download every output file into DIR."""

    async def run() -> None:
        if (user_id is None) == (amplitude_id is None):
            raise UsageError("give exactly one of --user-id or --amplitude-id")
        client, observer = _dsar_client(
            server,
            region,
            org_api_key,
            org_secret_key,
            quiet=quiet,
            deadline=parse_duration(deadline),
            budget_per_hour=budget,
            trusted_hosts=trust_host or (),
            retry=RetryPolicy(attempts=retries),
            timeout=timeout,
        )
        with _shown(observer):
            async with client:
                result = await client.request(
                    out,
                    user_id=user_id,
                    amplitude_id=amplitude_id,
                    start_date=start_date,
                    end_date=end_date,
                )
        _report([result])

    _run(run)


@dsar_app.command("batch", cls=Command)
def dsar_batch(
    input: Annotated[
        Path, typer.Option("--input", help="CSV with a user_id and/or amplitude_id column")
    ],
    start_date: StartDate,
    end_date: EndDate,
    out: Out,
    server: Server = None,
    region: Region = None,
    org_api_key: OrgKey = None,
    org_secret_key: OrgSecret = None,
    deadline: Deadline = "24h",
    budget: BudgetOpt = 14_400,
    max_outstanding: Annotated[
        int, typer.Option("--max-outstanding", min=1, max=10_000, help="Requests open at once")
    ] = 100,
    trust_host: Trust = None,
    timeout: Timeout = 600.0,
    retries: Retries = 8,
    quiet: Quiet = False,
) -> None:
    """Request everything about every user of a CSV file, within the hourly budget."""
    from swell.client.dsar import read_subjects

    async def run() -> None:
        subjects = read_subjects(input)
        client, observer = _dsar_client(
            server,
            region,
            org_api_key,
            org_secret_key,
            quiet=quiet,
            deadline=parse_duration(deadline),
            budget_per_hour=budget,
            max_outstanding=max_outstanding,
            trusted_hosts=trust_host or (),
            retry=RetryPolicy(attempts=retries),
            timeout=timeout,
        )
        with _shown(observer):
            async with client:
                results = await client.batch(out, subjects, start_date, end_date)
        _report(results)

    _run(run)


@dsar_app.command("status", cls=Command)
def dsar_status(
    request_id: Annotated[int, typer.Argument(help="The requestId a POST returned", min=1)],
    server: Server = None,
    region: Region = None,
    org_api_key: OrgKey = None,
    org_secret_key: OrgSecret = None,
    timeout: Timeout = 60.0,
    retries: Retries = 8,
) -> None:
    """Print a request's status as the server reports it (one JSON object)."""

    async def run() -> None:
        client, _ = _dsar_client(
            server,
            region,
            org_api_key,
            org_secret_key,
            quiet=True,
            retry=RetryPolicy(attempts=retries),
            timeout=timeout,
        )
        async with client:
            _print(await client.status(request_id))

    _run(run)


def register(app: typer.Typer) -> None:
    """Add ``export`` and ``dsar`` to the ``swell`` command."""
    app.command("export", cls=Command)(export)
    app.add_typer(dsar_app, name="dsar")
