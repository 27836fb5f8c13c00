"""Fault injection: wrappers around any blob store or metadata store that make chosen calls fail.

A :class:`Faults` schedule says which operations fail (``"blobs.put"``, ``"meta.add_part"``,
``"meta.save_state"``, ...; every method of the wrapped store is an operation), how (``ENOSPC``,
``EIO``, or ``timeout`` after a delay), how often, after how many good calls, and whether the call
fails *before* it runs or only *after* it took effect (the reply was lost: the caller sees an
error for work that was done). The errors are the ones the real backends raise
(BlobStoreUnavailable, MetadataUnavailable), so the code above cannot tell them from real faults.
The tests use these to make every dependency fail; nothing in ``swell serve`` does.
"""

from __future__ import annotations

import asyncio
import errno
import os
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, cast

from swell.errors import BlobStoreUnavailable, MetadataUnavailable, StorageError
from swell.model import BlobInfo

if TYPE_CHECKING:
    from swell.backends.base import BlobStore, Metadata

T = TypeVar("T")

ERRORS = {"ENOSPC": errno.ENOSPC, "EIO": errno.EIO}


@dataclass
class Fault:
    op: str
    error: str = "ENOSPC"
    #: Failures left; None fails until healed.
    times: int | None = None
    #: Good calls to let through before the first failure.
    skip: int = 0
    #: Run the call, then fail (its effect stays).
    after: bool = False
    #: Seconds a ``timeout`` waits before failing.
    delay: float = 0.0


class Faults:
    """The schedule shared by the wrappers of one test; counts what it injected."""

    def __init__(self) -> None:
        self._faults: list[Fault] = []
        #: Calls seen and failures injected, by operation.
        self.calls: Counter[str] = Counter()
        self.injected: Counter[str] = Counter()

    def fail(
        self,
        op: str,
        error: str = "ENOSPC",
        *,
        times: int | None = None,
        skip: int = 0,
        after: bool = False,
        delay: float = 0.0,
    ) -> Fault:
        if error not in ERRORS and error != "timeout":
            raise ValueError(f"unknown error {error!r}")
        fault = Fault(op, error, times, skip, after, delay)
        self._faults.append(fault)
        return fault

    def heal(self, op: str | None = None) -> None:
        """Stop failing ``op`` (every operation when None)."""
        self._faults = [f for f in self._faults if op is not None and f.op != op]

    def _due(self, op: str) -> Fault | None:
        self.calls[op] += 1
        for fault in self._faults:
            if fault.op != op:
                continue
            if fault.skip > 0:
                fault.skip -= 1
                return None
            if fault.times is not None:
                fault.times -= 1
                if fault.times <= 0:
                    self._faults.remove(fault)
            self.injected[op] += 1
            return fault
        return None

    async def _raise(self, fault: Fault, op: str, kind: type[StorageError], what: str) -> None:
        if fault.error == "timeout":
            await asyncio.sleep(fault.delay)
            raise kind(f"{what} unavailable: {op} timed out (injected)")
        code = ERRORS[fault.error]
        raise kind(f"{what} unavailable: {op}: {os.strerror(code)} (injected)")

    async def call(
        self,
        op: str,
        kind: type[StorageError],
        what: str,
        fn: Callable[..., Awaitable[T]],
        *args: Any,
        **kwargs: Any,
    ) -> T:
        fault = self._due(op)
        if fault is not None and not fault.after:
            await self._raise(fault, op, kind, what)
        result = await fn(*args, **kwargs)
        if fault is not None:
            await self._raise(fault, op, kind, what)
        return result


class FaultyBlobStore:
    """A blob store whose calls fail as ``faults`` says (operations ``blobs.<method>``)."""

    def __init__(self, inner: BlobStore, faults: Faults) -> None:
        self.inner = inner
        self.faults = faults

    async def _call(self, name: str, *args: Any) -> Any:
        return await self.faults.call(
            f"blobs.{name}", BlobStoreUnavailable, "blob store", getattr(self.inner, name), *args
        )

    async def put(self, key: str, data: bytes) -> BlobInfo:
        info: BlobInfo = await self._call("put", key, data)
        return info

    async def read(self, key: str, start: int = 0, end: int | None = None) -> bytes:
        data: bytes = await self._call("read", key, start, end)
        return data

    async def stream(
        self, key: str, start: int = 0, end: int | None = None, chunk: int = 1 << 20
    ) -> AsyncIterator[bytes]:
        async def nothing() -> None:
            return None

        await self.faults.call("blobs.stream", BlobStoreUnavailable, "blob store", nothing)
        async for piece in self.inner.stream(key, start, end, chunk):
            yield piece

    async def head(self, key: str) -> BlobInfo:
        info: BlobInfo = await self._call("head", key)
        return info

    async def delete(self, keys: Sequence[str]) -> None:
        await self._call("delete", keys)

    async def aclose(self) -> None:
        await self.inner.aclose()


class _FaultyMetadata:
    def __init__(self, inner: Metadata, faults: Faults) -> None:
        self.inner = inner
        self.faults = faults

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.inner, name)
        if name == "aclose" or not asyncio.iscoroutinefunction(method):
            return method

        async def call(*args: Any, **kwargs: Any) -> Any:
            return await self.faults.call(
                f"meta.{name}", MetadataUnavailable, "metadata store", method, *args, **kwargs
            )

        return call


def faulty_metadata(inner: Metadata, faults: Faults) -> Metadata:
    """A metadata store whose calls fail as ``faults`` says (operations ``meta.<method>``)."""
    return cast("Metadata", _FaultyMetadata(inner, faults))


if TYPE_CHECKING:
    _: type[BlobStore] = FaultyBlobStore
