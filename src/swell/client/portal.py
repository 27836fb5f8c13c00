"""An event loop in a background thread, for the blocking clients.

The blocking clients (``ExportClient``, ``DsarClient``) run the async ones here: their calls block
the caller, while the loop goes on downloading between them (the next windows keep arriving while
a script handles the records of the last).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, Generic, ParamSpec, Protocol, Self, TypeVar

T = TypeVar("T")
P = ParamSpec("P")


class _Closes(Protocol):
    async def aclose(self) -> None: ...


C = TypeVar("C", bound=_Closes)


class Portal:
    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="swell-client", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_forever()

    def call(self, fn: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run ``fn(*args, **kwargs)`` on the loop and wait for its result (or exception)."""

        async def run() -> T:
            return await fn(*args, **kwargs)

        future = asyncio.run_coroutine_threadsafe(run(), self._loop)
        try:
            return future.result()
        except BaseException:
            # KeyboardInterrupt while waiting: stop the work too, then let the interrupt go on.
            future.cancel()
            raise

    def iterate(self, agen: AsyncIterator[T]) -> Iterator[T]:
        """Iterate an async iterator from the caller's thread."""
        try:
            while True:
                try:
                    yield self.call(_anext, agen)
                except StopAsyncIteration:
                    return
        finally:
            aclose = getattr(agen, "aclose", None)
            if aclose is not None:
                self.call(aclose)

    def close(self) -> None:
        if self._loop.is_closed():
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)
        if not self._thread.is_alive():
            self._loop.close()


class BlockingClient(Generic[C]):
    """The blocking face of an async client: the async client lives on a Portal's loop, built
    there by ``make(*args, **options)``; a context manager, or call :meth:`close`."""

    def __init__(self, make: Callable[..., C], *args: Any, **options: Any) -> None:
        self._portal = Portal()
        try:
            self._client: C = self._portal.call(_build, make, args, options)
        except BaseException:
            self._portal.close()
            raise

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._portal.call(self._client.aclose)
        self._portal.close()


async def _build(make: Callable[..., C], args: tuple[Any, ...], options: dict[str, Any]) -> C:
    return make(*args, **options)  # on the portal's loop: the client binds to it


async def _anext(agen: AsyncIterator[T]) -> T:
    return await agen.__anext__()
