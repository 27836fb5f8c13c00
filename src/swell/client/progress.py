"""What the clients report while they work, and two ways to show it.

The clients call an observer (``ExportObserver``, ``DsarObserver``) from their event loop; the
default observers do nothing. The CLI shows a rich progress display when stderr is a terminal
(:class:`RichExport`, :class:`RichDsar`) and plain lines otherwise (:class:`PlainExport`,
:class:`PlainDsar`), so logs of scheduled runs stay readable.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

if TYPE_CHECKING:
    from swell.client.windows import Window


@dataclass(frozen=True, slots=True)
class WindowDone:
    """One finished window: ``files`` written (none when the window had no data)."""

    window: Window
    files: tuple[str, ...]
    events: int
    #: Archive bytes received over the network for this window in this run.
    received: int
    #: The window's archive size (0 when it had no data).
    size: int
    #: False when the window's hours had not settled: the next run fetches it again.
    final: bool = True

    @property
    def empty(self) -> bool:
        return self.size == 0


class ExportObserver(Protocol):
    def planned(self, windows: list[Window], skipped: int) -> None:
        """``windows`` will be fetched; ``skipped`` windows were already done."""

    def received(self, window: Window, nbytes: int, total: int | None) -> None:
        """``nbytes`` more of ``window``'s archive arrived (of ``total``, when known)."""

    def split(self, window: Window, halves: tuple[Window, Window], reason: str) -> None:
        """``window`` is fetched as two halves instead."""

    def finished(self, done: WindowDone) -> None:
        """A window is verified and written."""

    def failed(self, window: Window, message: str) -> None:
        """A window could not be fetched; the others go on."""

    def retrying(self, reason: str, delay: float) -> None:
        """A request failed and is retried after ``delay`` seconds."""


class DsarObserver(Protocol):
    def event(self, message: str) -> None:
        """Something happened (a request was posted, finished, failed...)."""

    def counts(self, *, total: int, outstanding: int, finished: int, budget_left: int) -> None:
        """Where the batch stands; ``budget_left`` is this client's budget left in the hour."""

    def retrying(self, reason: str, delay: float) -> None:
        """A request failed and is retried after ``delay`` seconds."""


class NullExport:
    def planned(self, windows: list[Window], skipped: int) -> None:
        pass

    def received(self, window: Window, nbytes: int, total: int | None) -> None:
        pass

    def split(self, window: Window, halves: tuple[Window, Window], reason: str) -> None:
        pass

    def finished(self, done: WindowDone) -> None:
        pass

    def failed(self, window: Window, message: str) -> None:
        pass

    def retrying(self, reason: str, delay: float) -> None:
        pass


class NullDsar:
    def event(self, message: str) -> None:
        pass

    def counts(self, *, total: int, outstanding: int, finished: int, budget_left: int) -> None:
        pass

    def retrying(self, reason: str, delay: float) -> None:
        pass


def _mb(nbytes: int) -> str:
    return f"{nbytes / 1e6:,.1f} MB"


class PlainExport(NullExport):
    """One line per finished window (and per split, retry or failure) on ``stream``."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.total = 0
        self.count = 0

    def _say(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def planned(self, windows: list[Window], skipped: int) -> None:
        self.total = len(windows)
        done = f"; {skipped} already done" if skipped else ""
        self._say(f"export: {len(windows)} window{'s' * (len(windows) != 1)} to fetch{done}")

    def split(self, window: Window, halves: tuple[Window, Window], reason: str) -> None:
        self.total += 1
        self._say(f"export: {window.label}: {reason}; fetching it as two halves")

    def finished(self, done: WindowDone) -> None:
        self.count += 1
        what = (
            "no data"
            if done.empty
            else f"{done.events:,} events, {_mb(done.size)} -> {', '.join(done.files)}"
        )
        if not done.final:
            what += " (hours not settled yet: fetched again next run)"
        self._say(f"export: [{self.count}/{self.total}] {done.window.label}: {what}")

    def failed(self, window: Window, message: str) -> None:
        self.count += 1
        self._say(f"export: [{self.count}/{self.total}] {window.label} FAILED: {message}")

    def retrying(self, reason: str, delay: float) -> None:
        self._say(f"export: {reason}; retrying in {delay:.1f} s")


class RichExport(NullExport):
    """A live display: windows done of all, bytes received and their rate, events, ETA."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.progress = Progress(
            TextColumn("[bold]export"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn(
                "windows · {task.fields[size]} · {task.fields[rate]} · "
                "{task.fields[events]:,} events"
            ),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self.console,
        )
        self.task: TaskID | None = None
        self.started = time.monotonic()
        self.received_bytes = 0
        self.events = 0
        self.total = 0

    def __enter__(self) -> RichExport:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._update()
        self.progress.stop()

    def _update(self, advance: int = 0) -> None:
        if self.task is None:
            return
        elapsed = max(time.monotonic() - self.started, 1e-6)
        self.progress.update(
            self.task,
            total=self.total,
            advance=advance,
            size=_mb(self.received_bytes),
            rate=f"{self.received_bytes / elapsed / 1e6:,.1f} MB/s",
            events=self.events,
        )

    def planned(self, windows: list[Window], skipped: int) -> None:
        self.total = len(windows)
        if skipped:
            self.console.print(f"{skipped} window{'s' * (skipped != 1)} already done")
        self.task = self.progress.add_task(
            "export", total=self.total, size=_mb(0), rate="", events=0
        )
        self.started = time.monotonic()

    def received(self, window: Window, nbytes: int, total: int | None) -> None:
        self.received_bytes += nbytes
        self._update()

    def split(self, window: Window, halves: tuple[Window, Window], reason: str) -> None:
        self.console.print(f"{window.label}: {reason}; fetching it as two halves", markup=False)
        self.total += 1
        self._update()

    def finished(self, done: WindowDone) -> None:
        self.events += done.events
        self._update(advance=1)

    def failed(self, window: Window, message: str) -> None:
        self.console.print(f"{window.label} failed: {message}", markup=False)
        self._update(advance=1)

    def retrying(self, reason: str, delay: float) -> None:
        self.console.print(f"{reason}; retrying in {delay:.1f} s", markup=False)


class PlainDsar(NullDsar):
    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr

    def event(self, message: str) -> None:
        print(f"dsar: {message}", file=self.stream, flush=True)

    def retrying(self, reason: str, delay: float) -> None:
        self.event(f"{reason}; retrying in {delay:.1f} s")


class RichDsar(NullDsar):
    """A live display: requests finished of all, outstanding, and the budget left."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.progress = Progress(
            TextColumn("[bold]dsar"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn(
                "done · {task.fields[outstanding]} outstanding · budget left "
                "{task.fields[budget]:,}"
            ),
            TimeElapsedColumn(),
            console=self.console,
        )
        self.task: TaskID | None = None
        self._last = 0.0

    def __enter__(self) -> RichDsar:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def event(self, message: str) -> None:
        self.console.print(message, markup=False, highlight=False)

    def counts(self, *, total: int, outstanding: int, finished: int, budget_left: int) -> None:
        fields: dict[str, Any] = {"outstanding": outstanding, "budget": budget_left}
        if self.task is None:
            self.task = self.progress.add_task("dsar", total=total, **fields)
        self.progress.update(self.task, total=total, completed=finished, **fields)
        self._last = time.monotonic()

    def retrying(self, reason: str, delay: float) -> None:
        self.event(f"{reason}; retrying in {delay:.1f} s")
