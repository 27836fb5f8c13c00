"""SQL kept in files, one folder per dialect: named queries and ordered migrations.

``sql/<dialect>/queries.sql`` holds every statement a backend runs, each under a name line::

    -- name: claim_job
    -- Comment lines right after the name say what the query does (they are not sent).
    UPDATE jobs SET ...

Backends of different dialects use the same name where their statements do the same thing, so the
files can be read side by side. Parameters use the driver's own style (``?`` for sqlite3,
``%(name)s`` for psycopg). A ``{placeholder}`` is filled by the backend with a name it generated
itself (a month's partition, a list of ``?`` marks), never with input.

``sql/<dialect>/NNNN_description.sql`` are the schema migrations, numbered 1..n without gaps;
each backend records which ones it applied (SQLite in ``PRAGMA user_version``, PostgreSQL in
``swell_schema``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources

_NAME = re.compile(r"^--\s*name:\s*(?P<name>[a-z_][a-z0-9_]*)\s*$", re.MULTILINE)
_MIGRATION = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.sql$")


class QueryFileError(Exception):
    """A packaged SQL file is malformed (a bug in swell, caught by its tests)."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


class Queries(Mapping[str, str]):
    """The named queries of one dialect."""

    def __init__(self, dialect: str, queries: dict[str, str]) -> None:
        self.dialect = dialect
        self._queries = queries

    def __getitem__(self, name: str) -> str:
        try:
            return self._queries[name]
        except KeyError:
            raise KeyError(f"no query named {name!r} in sql/{self.dialect}/queries.sql") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._queries)

    def __len__(self) -> int:
        return len(self._queries)


def parse_queries(text: str, dialect: str = "?") -> Queries:
    """The queries of a ``queries.sql`` text.

    Raises:
        QueryFileError: text before the first name, a repeated name, or a name without SQL.
    """
    marks = list(_NAME.finditer(text))
    if not marks:
        raise QueryFileError(f"sql/{dialect}/queries.sql names no query")
    if _strip_comments(text[: marks[0].start()]):
        raise QueryFileError(f"sql/{dialect}/queries.sql has SQL before its first name line")
    queries: dict[str, str] = {}
    for i, mark in enumerate(marks):
        name = mark["name"]
        end = marks[i + 1].start() if i + 1 < len(marks) else len(text)
        body = _strip_comments(text[mark.end() : end])
        if name in queries:
            raise QueryFileError(f"sql/{dialect}/queries.sql names {name!r} twice")
        if not body:
            raise QueryFileError(f"sql/{dialect}/queries.sql: {name!r} has no SQL")
        queries[name] = body
    return Queries(dialect, queries)


def _strip_comments(text: str) -> str:
    """The SQL of a query's text: comment and blank lines before and after it removed."""
    lines = text.strip().splitlines()

    def blank(line: str) -> bool:
        return not line.strip() or line.lstrip().startswith("--")

    while lines and blank(lines[0]):
        lines.pop(0)
    while lines and blank(lines[-1]):
        lines.pop()
    return "\n".join(lines).strip()


@cache
def load_queries(dialect: str) -> Queries:
    """The named queries of ``sql/<dialect>/queries.sql`` (read once per process)."""
    folder = resources.files("swell.backends") / "sql" / dialect
    return parse_queries((folder / "queries.sql").read_text(encoding="utf-8"), dialect)


@cache
def load_migrations(dialect: str) -> tuple[Migration, ...]:
    """Every migration of ``sql/<dialect>``, in order.

    Raises:
        QueryFileError: the numbers are not 1..n, or a file name is not ``NNNN_name.sql``.
    """
    folder = resources.files("swell.backends") / "sql" / dialect
    found: list[Migration] = []
    for item in folder.iterdir():
        if not item.name.endswith(".sql") or item.name == "queries.sql":
            continue
        match = _MIGRATION.match(item.name)
        if match is None:
            raise QueryFileError(f"sql/{dialect}/{item.name}: not a NNNN_name.sql migration")
        found.append(
            Migration(int(match["version"]), match["name"], item.read_text(encoding="utf-8"))
        )
    found.sort(key=lambda m: m.version)
    if [m.version for m in found] != list(range(1, len(found) + 1)):
        raise QueryFileError(f"sql/{dialect}: migrations must be numbered 1..n without gaps")
    return tuple(found)
