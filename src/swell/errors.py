"""
swell's exceptions, one tree for every layer. Each class's docstring is its default message.

* SwellError                       500  unexpected; logged with traceback, never shown to a client
  x ClientError                    4xx  the caller can fix it
    + BadRequest                   400  carries Amplitude's extra wire fields (missing_field, ...)
    + Unauthorized                 401
    + Forbidden                    403
    + NotFound                     404
      - NoData                     404  "Raw data files were not found."
    + PayloadTooLarge              413
    + RateLimited                  429  carries retry_after (seconds)
  x StorageError                   503  a backend failed; raised by backends/* only
    + BlobNotFound                      a blob key does not exist
    + AlreadyExists                     create-only put of an existing key
    + LogFailed                         the durable log could not fsync; the store stops accepting
  x ConfigError                         bad settings or CLI input; the CLI exits 2 with one line

The HTTP surfaces render these differently (Amplitude ingestion JSON, Export plain text, DSAR JSON):
see swell.api.render. Nothing above swell.backends catches a driver exception.
"""

from __future__ import annotations

from typing import ClassVar


class SwellError(Exception):
    """Internal server error."""

    status: ClassVar[int] = 500

    def __init__(self, message: str | None = None, **extra: object) -> None:
        super().__init__(message or (self.__doc__ or "").strip())
        self.extra: dict[str, object] = extra

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""


class ClientError(SwellError):
    """Bad request."""

    status = 400


class BadRequest(ClientError):
    """Bad request."""

    status = 400


class Unauthorized(ClientError):
    """Invalid or missing credentials."""

    status = 401


class Forbidden(ClientError):
    """Forbidden."""

    status = 403


class NotFound(ClientError):
    """Not found."""

    status = 404


class NoData(NotFound):
    """Raw data files were not found."""


class PayloadTooLarge(ClientError):
    """Payload too large"""

    status = 413


class RateLimited(ClientError):
    """Too many requests."""

    status = 429

    def __init__(
        self, message: str | None = None, *, retry_after: int = 1, **extra: object
    ) -> None:
        super().__init__(message, **extra)
        self.retry_after = retry_after


class StorageError(SwellError):
    """The storage backend is unavailable."""

    status = 503


class BlobNotFound(StorageError):
    """Blob not found."""


class AlreadyExists(StorageError):
    """Blob already exists."""


class LogFailed(StorageError):
    """The durable log failed; swell is not accepting writes until it is restarted."""


class ConfigError(SwellError):
    """Invalid configuration."""
