"""
The client's exceptions. Each carries the exit code the ``swell`` commands end with, and its
message is one line a person can act on (the CLI prints it as it is, never a traceback).

* ClientError                      1  unexpected (a bug); the base of everything below
  x UsageError                     2  bad input: flags, dates, ranges, the users CSV
  x Refused                        2  the server refused a request as invalid (a 400 or 404)
    + TooLarge                        one hour is over the server's export size limit
  x Unreachable                    3  no connection to the server after every retry
  x CredentialsRefused             4  401/403: wrong keys, a project key for DSAR, wrong region
  x ServerFailed                   5  5xx/429 after every retry, an unexpected answer
    + CorruptArchive                  a download failed its CRC or size checks after re-downloads
  x LocalError                     6  the local side: disk full, permissions, the state file
    + MissingDependency               an optional package (pyarrow) is not installed
  x Incomplete                     7  some DSAR requests failed or did not finish in time

``Incomplete`` is raised only after everything that could be done was done: the other users'
outputs are written.
"""

from __future__ import annotations

from typing import ClassVar


class ClientError(Exception):
    """An unexpected client failure."""

    exit_code: ClassVar[int] = 1

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""


class UsageError(ClientError):
    """Invalid input."""

    exit_code = 2


class Refused(ClientError):
    """The server refused the request."""

    exit_code = 2


class TooLarge(Refused):
    """One hour of data is over the server's export size limit."""


class Unreachable(ClientError):
    """The server could not be reached."""

    exit_code = 3


class CredentialsRefused(ClientError):
    """The server refused the credentials."""

    exit_code = 4


class ServerFailed(ClientError):
    """The server kept failing."""

    exit_code = 5


class CorruptArchive(ServerFailed):
    """A download failed its integrity checks."""


class LocalError(ClientError):
    """A local file could not be read or written."""

    exit_code = 6


class MissingDependency(LocalError):
    """An optional dependency is not installed."""


class Incomplete(ClientError):
    """Some requests did not complete."""

    exit_code = 7


def describe_os_error(exc: OSError, action: str) -> LocalError:
    """One line for a failed file operation, naming the disk-full case plainly."""
    import errno

    where = f" {exc.filename}" if exc.filename else ""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return LocalError(f"disk full: could not {action}{where}")
    reason = exc.strerror or str(exc)
    return LocalError(f"could not {action}{where}: {reason}")
