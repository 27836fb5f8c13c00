"""
swell's exceptions, one tree for every layer. Each class's docstring is its default message.

* SwellError                       500  unexpected; logged with traceback, never shown to a client
  x ClientError                    4xx  the caller can fix it
    + BadRequest                   400  carries Amplitude's extra wire fields (missing_field, ...)
    + Unauthorized                 401
    + Forbidden                    403
    + NotFound                     404
      - NoData                     404  "Raw data files were not found."
    + Conflict                     409  e.g. deleting a project that still holds data
    + PayloadTooLarge              413
    + ClientDisconnected           400  the client hung up before its request was read (no one
                                        sees the reply; logged once at info, not as an error)
    + RateLimited                  429  carries retry_after (seconds)
  x ServiceUnavailable             503  too many requests in progress; carries retry_after
  x StorageError                   503  a dependency failed; the body names its ``cause``
    + BlobStoreUnavailable              cause blob_store: the blob store failed (raised by backends)
      - BlobNotFound                    a blob key does not exist
    + MetadataUnavailable               cause metadata_store: the metadata store failed (backends)
      - AlreadyExists                   a row that must be unique already exists
    + LogFailed                         cause log: the durable log could not fsync; fail-stop
    + SealBacklogFull                   cause seal_backlog: too much acknowledged data is unsealed
    + LeaseLost                         cause lease: another worker owns the project now
    + OwnerUnavailable                  cause owner: no worker sealed the project in time
  x InvalidBlobKey                 500  a blob key that could escape the store (a bug, not input)
  x DsarFailed                          a DSAR request cannot be served; becomes its failReason
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


class Conflict(ClientError):
    """Conflict."""

    status = 409


class PayloadTooLarge(ClientError):
    """Payload too large"""

    status = 413


class ClientDisconnected(ClientError):
    """The client disconnected before its request body was read."""

    status = 400


class RateLimited(ClientError):
    """Too many requests."""

    status = 429

    def __init__(
        self, message: str | None = None, *, retry_after: int = 1, **extra: object
    ) -> None:
        super().__init__(message, **extra)
        self.retry_after = retry_after


class ServiceUnavailable(SwellError):
    """Too many requests in progress; retry shortly."""

    status = 503
    retry_after = 1


class StorageError(SwellError):
    """The storage backend is unavailable."""

    status = 503
    #: What failed, as the 503 body's ``cause`` names it (docs/compatibility.md#unavailable).
    cause: ClassVar[str] = "storage"
    #: The Retry-After a 503 carries, in seconds.
    retry_after: ClassVar[int] = 5


class BlobStoreUnavailable(StorageError):
    """The blob store is unavailable."""

    cause = "blob_store"


class BlobNotFound(BlobStoreUnavailable):
    """Blob not found."""


class MetadataUnavailable(StorageError):
    """The metadata store is unavailable."""

    cause = "metadata_store"


class AlreadyExists(MetadataUnavailable):
    """Already exists."""


class LogFailed(StorageError):
    """The durable log failed; swell is not accepting writes until it is restarted."""

    cause = "log"


class SealBacklogFull(StorageError):
    """Too much acknowledged data is waiting to be sealed; writes resume once sealing catches up."""

    cause = "seal_backlog"


class LeaseLost(StorageError):
    """Another worker owns this project now; this one's writes are refused."""

    cause = "lease"


class OwnerUnavailable(StorageError):
    """No worker sealed the project's acknowledged events in time."""

    cause = "owner"


class InvalidBlobKey(SwellError):
    """Invalid blob key."""


class DsarFailed(SwellError):
    """The DSAR request cannot be served."""


class ConfigError(SwellError):
    """Invalid configuration."""
