"""Export windows as Parquet, for warehouses and DuckDB (needs ``pip install 'swell[parquet]'``).

One file per window, one column per top-level key, in the order keys first appear. A column's
type is what its values share across the window: boolean, int64, float64 (ints and floats mixed
within 2**53) or string; times stay the API's ``YYYY-MM-DD HH:MM:SS.ffffff`` text (DuckDB casts
it with ``::TIMESTAMP``). Objects, lists and columns of mixed types are JSON text, marked
``swell.encoding=json`` in the field's metadata, so :func:`read` gives back the records as they
were (a key a record lacked reads back as null).

Converting reads the archive twice (types, then rows) so memory stays bounded by a row group.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from swell.client import archive
from swell.client.errors import CorruptArchive, MissingDependency

#: Rows per row group: large enough for column statistics to be useful, small enough to keep the
#: converter's memory to some tens of MB.
ROW_GROUP = 16_384
ENCODING_KEY = b"swell.encoding"
_INT64 = 2**63
_EXACT_FLOAT = 2**53


def require() -> None:
    """Raises MissingDependency when pyarrow is not installed."""
    try:
        import pyarrow
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        raise MissingDependency(
            "--format parquet needs pyarrow: pip install 'swell[parquet]'"
        ) from None


_KIND = {str: "string", bool: "bool", int: "int", float: "float", type(None): "null"}


class _Kinds:
    """The shared type of each column, learnt from each new combination of keys and types
    (records of one source repeat a few combinations, so most records cost one lookup)."""

    def __init__(self) -> None:
        self.kinds: dict[str, str] = {}
        self._seen: set[tuple[tuple[str, ...], tuple[type, ...]]] = set()

    def add(self, record: dict[str, Any]) -> None:
        signature = (tuple(record), tuple(map(type, record.values())))
        if signature in self._seen:
            return
        self._seen.add(signature)
        kinds = self.kinds
        for key, t in zip(*signature, strict=True):
            kind = _KIND.get(t, "json")
            seen = kinds.get(key)
            if seen is None or seen == "null":
                kinds[key] = kind
            elif kind not in (seen, "null"):
                kinds[key] = "float" if {seen, kind} == {"int", "float"} else "json"

    def lines(self, lines: list[bytes]) -> None:
        add = self.add
        for line in lines:
            add(_record(line))


class _Inexact(Exception):
    """A column cannot hold its values exactly as typed (an int beyond int64, or beyond 2**53
    among floats); it becomes JSON text."""

    def __init__(self, column: str) -> None:
        super().__init__(column)
        self.column = column


def _record(line: bytes) -> dict[str, Any]:
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise CorruptArchive(f"a line is not JSON ({exc})") from None
    if not isinstance(value, dict):
        raise CorruptArchive("a line is not a JSON object")
    return value


def convert(source: Path, target: Path) -> archive.Checked:
    """Check the archive ``source`` and write its records to ``target`` as Parquet.

    Raises:
        CorruptArchive: the archive failed a check or holds a line that is not a JSON object.
        OSError: ``target`` could not be written.
    """
    kinds = _Kinds()
    checked = archive.verify(source, line_sink=kinds.lines)
    columns = dict(kinds.kinds)
    while True:
        try:
            _write(source, target, columns)
        except _Inexact as exc:
            columns[exc.column] = "json"
            continue
        return checked


def _write(source: Path, target: Path, columns: dict[str, str]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    types = {"bool": pa.bool_(), "int": pa.int64(), "float": pa.float64()}
    schema = pa.schema(
        [
            pa.field(
                name,
                types.get(kind, pa.string()),
                metadata={ENCODING_KEY: b"json"} if kind == "json" else None,
            )
            for name, kind in columns.items()
        ]
    )
    as_json = [name for name, kind in columns.items() if kind == "json"]
    as_int = [name for name, kind in columns.items() if kind == "int"]
    as_float = [name for name, kind in columns.items() if kind == "float"]

    def table(rows: list[dict[str, Any]]) -> Any:
        dumps = orjson.dumps
        for row in rows:
            for name in as_json:
                value = row.get(name)
                if value is not None:
                    row[name] = dumps(value).decode()
        for name in as_float:
            if any(
                type(v) is int and abs(v) > _EXACT_FLOAT for v in (row.get(name) for row in rows)
            ):
                raise _Inexact(name)
        try:
            return pa.Table.from_pylist(rows, schema=schema)
        except (OverflowError, pa.ArrowInvalid):
            for name in as_int:
                if any(
                    type(v) is int and not -_INT64 <= v < _INT64
                    for v in (row.get(name) for row in rows)
                ):
                    raise _Inexact(name) from None
            raise

    with pq.ParquetWriter(target, schema, compression="zstd") as writer:
        rows: list[dict[str, Any]] = []
        for batch in archive.iter_lines(source):
            rows.extend(map(_record, batch))
            if len(rows) >= ROW_GROUP:
                writer.write_table(table(rows))
                rows = []
        if rows or not columns:
            writer.write_table(table(rows))


def read(path: Path) -> Iterator[dict[str, Any]]:
    """The records of a Parquet file written by :func:`convert`, JSON columns decoded."""
    require()
    import pyarrow.parquet as pq

    parquet = pq.ParquetFile(path)
    json_columns = [
        f.name for f in parquet.schema_arrow if (f.metadata or {}).get(ENCODING_KEY) == b"json"
    ]
    for batch in parquet.iter_batches():
        for row in batch.to_pylist():
            for name in json_columns:
                value = row.get(name)
                if value is not None:
                    row[name] = orjson.loads(value)
            yield row
