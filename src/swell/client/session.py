"""One HTTP session per client: httpx with Basic auth, timeouts, and the retry loop.

:meth:`Session.send` retries what :mod:`swell.client.retry` says is worth retrying and returns
the first answer that is not, whatever its status: what a 400 or a 404 means depends on the API,
so the callers decide. Connection failures that outlast every attempt raise ``Unreachable``;
retryable statuses that do raise ``ServerFailed``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx

from swell import __version__
from swell.client.clock import Clock, SystemClock
from swell.client.errors import CredentialsRefused, ServerFailed, Unreachable
from swell.client.retry import RetryPolicy, describe_transport_error, retry_after, should_retry

#: Seconds to wait for a connection; reads wait longer (``timeout``): Amplitude may take minutes
#: before the first byte of a large export.
CONNECT_TIMEOUT = 15.0
DEFAULT_TIMEOUT = 600.0

#: Called before each retry with (reason, seconds to wait).
RetryHook = Callable[[str, float], None]


class Session:
    def __init__(
        self,
        base_url: str,
        auth: tuple[str, str],
        *,
        retry: RetryPolicy | None = None,
        clock: Clock | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
        connections: int = 8,
        on_retry: RetryHook | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.auth = httpx.BasicAuth(*auth)
        self.retry = retry or RetryPolicy()
        self.clock = clock or SystemClock()
        self.on_retry = on_retry
        self.http = httpx.AsyncClient(
            transport=transport,
            timeout=httpx.Timeout(timeout, connect=min(CONNECT_TIMEOUT, timeout)),
            limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
            headers={"User-Agent": f"swell/{__version__}"},
            follow_redirects=False,
        )

    async def aclose(self) -> None:
        await self.http.aclose()

    def url(self, path: str) -> str:
        return self.base_url + path

    @contextlib.asynccontextmanager
    async def stream(
        self,
        method: str,
        url: str,
        *,
        before: Callable[[], Awaitable[None]] | None = None,
        on_rate_limited: Callable[[float | None], None] | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[httpx.Response]:
        """The first final answer to a request, with its body not yet read.

        ``before`` runs before every attempt (to charge a budget, say); ``on_rate_limited`` is
        told of each 429 with its ``Retry-After``. Keyword arguments go to ``httpx.build_request``
        (``params``, ``headers``, ``json``, ``data``); ``auth=False`` sends no credentials,
        ``follow_redirects=True`` follows redirects (credentials never follow to another host).

        Raises:
            Unreachable: every attempt failed to connect or to get an answer.
            ServerFailed: every attempt got a retryable status.
        """
        auth = self.auth if kwargs.pop("auth", True) else None
        follow = bool(kwargs.pop("follow_redirects", False))
        last = ""
        refused = True  # every failure so far was connection-level
        for attempt in range(1, self.retry.attempts + 1):
            if before is not None:
                await before()
            request = self.http.build_request(method, url, **kwargs)
            try:
                response = await self.http.send(
                    request, auth=auth, stream=True, follow_redirects=follow
                )
            except httpx.TransportError as exc:
                last = describe_transport_error(exc)
                wait_for: float | None = None
            else:
                if not should_retry(response.status_code):
                    try:
                        yield response
                    finally:
                        await response.aclose()
                    return
                wait_for = retry_after(response)
                refused = False
                last = f"HTTP {response.status_code}"
                if response.status_code == 429:
                    last += f" (Retry-After: {response.headers.get('retry-after', 'none')})"
                    if on_rate_limited is not None:
                        on_rate_limited(wait_for)
                await response.aclose()
            if attempt == self.retry.attempts:
                break
            if wait_for is not None and wait_for > self.retry.max_retry_after:
                raise ServerFailed(
                    f"{_where(url)} asks to wait {wait_for:.0f} s ({last}), longer than "
                    f"{self.retry.max_retry_after:.0f} s"
                )
            delay = self.retry.wait(attempt, wait_for)
            if self.on_retry is not None:
                self.on_retry(f"{_where(url)}: {last}", delay)
            await self.clock.sleep(delay)
        attempts = f"after {self.retry.attempts} attempt{'s' * (self.retry.attempts > 1)}"
        if refused:
            raise Unreachable(f"server unreachable: {_where(url)}: {last} ({attempts})")
        raise ServerFailed(f"{_where(url)} kept failing: {last} ({attempts})")

    async def send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """Like :meth:`stream`, with the body read (for small answers)."""
        async with self.stream(method, url, **kwargs) as response:
            await response.aread()
            return response


def raise_for_credentials(response: httpx.Response, what: str) -> None:
    """401/403 mean the keys (or the region) are wrong, for every API.

    Raises:
        CredentialsRefused: naming ``what`` should be checked.
    """
    if response.status_code in (401, 403):
        raise CredentialsRefused(
            f"{_where(str(response.request.url))} refused the credentials "
            f"(HTTP {response.status_code}): check {what}"
        )


def body_text(response: httpx.Response, limit: int = 300) -> str:
    """The start of a (read) response body as one line, for error messages."""
    text = response.content[: limit * 4].decode("utf-8", "replace")
    text = " ".join(text.split())
    return text[:limit] or "(empty body)"


def _where(url: str) -> str:
    parsed = httpx.URL(url)
    port = f":{parsed.port}" if parsed.port else ""
    return f"{parsed.host}{port}{parsed.path}"
