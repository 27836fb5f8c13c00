"""Keys and credentials: Amplitude-shaped keys, secrets kept only as hashes, constant-time checks.

Keys are 32 lowercase hex characters (128 random bits), like Amplitude's. Because secrets are
random and long, a single SHA-256 is enough to keep them useless if the database leaks (a slow
password hash protects guessable secrets; these are not guessable).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from swell.errors import Unauthorized
from swell.model import Principal

if TYPE_CHECKING:
    from swell.backends.base import KeyStore

MAX_KEY_LENGTH = 128
#: How long a looked-up key is trusted before it is looked up again: a rotated or removed key stops
#: working within this time, in every process that shares the metadata store.
KEY_CACHE_SECONDS = 1.0
#: Keys remembered at most (a flood of distinct keys cannot grow the cache without bound).
KEY_CACHE_ENTRIES = 10_000


def new_key() -> str:
    return secrets.token_hex(16)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class NewCredentials:
    api_key: str
    secret_key: str

    @property
    def secret_hash(self) -> str:
        return hash_secret(self.secret_key)


def new_credentials() -> NewCredentials:
    return NewCredentials(new_key(), new_key())


def parse_basic(header: str | None) -> tuple[str, str]:
    """(username, password) of an ``Authorization: Basic`` header. Raises Unauthorized."""
    if not header:
        raise Unauthorized("Missing credentials: use HTTP Basic auth with api_key:secret_key")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or not value or len(value) > 4 * MAX_KEY_LENGTH:
        raise Unauthorized("Invalid credentials: use HTTP Basic auth with api_key:secret_key")
    try:
        # ValueError covers binascii.Error (not base64), UnicodeDecodeError (not UTF-8) and a
        # header value with non-ASCII characters (Starlette decodes header bytes as latin-1).
        decoded = base64.b64decode(value.strip(), validate=True).decode()
    except ValueError:
        raise Unauthorized("Invalid credentials: malformed Basic auth header") from None
    user, sep, password = decoded.partition(":")
    if not sep:
        raise Unauthorized("Invalid credentials: malformed Basic auth header")
    return user, password


class Authenticator:
    """Checks keys. Ingestion (an api_key alone, on the hot path) uses keys remembered for
    KEY_CACHE_SECONDS, so a hot key costs one metadata read per second and a rotated api_key is
    refused within that second; Basic credentials (Export, DSAR) are checked against the metadata
    store on every request, so a rotated pair is refused at once."""

    def __init__(self, keys: KeyStore, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._keys = keys
        self._clock = clock
        self._cache: dict[str, tuple[float, Principal]] = {}

    async def principal(self, api_key: str, *, fresh: bool = False) -> Principal | None:
        """Who owns ``api_key``; ``fresh`` skips the cache (a read of the metadata store)."""
        if not api_key or len(api_key) > MAX_KEY_LENGTH:
            return None
        now = self._clock()
        cached = self._cache.get(api_key)
        if not fresh and cached is not None and now - cached[0] < KEY_CACHE_SECONDS:
            return cached[1]
        found = await self._keys.find_key(api_key)
        if found is None:  # unknown keys are not cached: they may be created later
            self._cache.pop(api_key, None)
            return None
        if len(self._cache) >= KEY_CACHE_ENTRIES:
            self._cache.clear()
        self._cache[api_key] = (now, found)
        return found

    async def project_for_ingest(self, api_key: str) -> int | None:
        """The project an ingestion api_key belongs to (ingestion sends no secret)."""
        found = await self.principal(api_key)
        return None if found is None else found.project_id

    async def check_basic(self, header: str | None, *, org: bool) -> Principal:
        """Verify Basic credentials for a project (org=False) or an org (org=True).

        Raises Unauthorized for missing, malformed or wrong credentials, and for a key of the
        other kind (a project key is not an org key, and vice versa).
        """
        api_key, secret = parse_basic(header)
        found = await self.principal(api_key, fresh=True)
        expected = found.secret_hash if found is not None else hash_secret("\x00")
        ok = hmac.compare_digest(hash_secret(secret), expected)
        if found is None or not ok or (found.project_id is None) != org:
            raise Unauthorized("Invalid API key or secret key")
        return found
