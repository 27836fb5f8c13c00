"""What an API node appends to the inbox for each acknowledged request, and how an owner reads it.

An entry is a request, validated but not enriched: its kind (events, identify, groupidentify),
the request context every record takes fields from (swell.enrich.RequestContext: path, library,
times, address) and the events or identifications as validated. Enrichment (identity, dedup,
user properties, the 55-key record) happens once, in the project's owner, in inbox order: the
same code as the embedded store, on the same inputs, so records do not depend on which node took
the request. Entries are compact JSON (orjson), gzip'd with isal at level 1.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import orjson
from isal import igzip

from swell.enrich import RequestContext
from swell.errors import SwellError
from swell.model import EPOCH

#: Entry kinds.
EVENTS = "events"
IDENTIFY = "identify"
GROUP_IDENTIFY = "groupidentify"
KINDS = frozenset({EVENTS, IDENTIFY, GROUP_IDENTIFY})


@dataclass(frozen=True, slots=True)
class Entry:
    kind: str
    ctx: RequestContext
    #: Events (EVENTS), or identifications (IDENTIFY, GROUP_IDENTIFY), as validated.
    items: list[dict[str, Any]]


class CorruptEntry(SwellError):
    """An inbox entry could not be read."""


_MICROSECOND = timedelta(microseconds=1)


def _us(dt: datetime) -> int:
    return (dt - EPOCH) // _MICROSECOND


def _from_us(us: int) -> datetime:
    return EPOCH + us * _MICROSECOND


def encode(kind: str, ctx: RequestContext, items: Sequence[Mapping[str, Any]]) -> bytes:
    assert kind in KINDS, kind
    body = {
        "kind": kind,
        "project_id": ctx.project_id,
        "path": ctx.path,
        "library": ctx.default_library,
        "received_us": _us(ctx.server_received),
        "upload_us": _us(ctx.server_upload),
        "client_upload_us": None if ctx.client_upload is None else _us(ctx.client_upload),
        "ip": ctx.remote_ip,
        "items": items,
    }
    compressed: bytes = igzip.compress(orjson.dumps(body), compresslevel=1, mtime=0)
    return compressed


def decode(payload: bytes) -> Entry:
    """Raises CorruptEntry."""
    try:
        body = orjson.loads(igzip.decompress(payload))  # type: ignore[no-untyped-call]
        kind = body["kind"]
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}")
        client = body["client_upload_us"]
        ctx = RequestContext(
            project_id=int(body["project_id"]),
            path=str(body["path"]),
            default_library=str(body["library"]),
            server_received=_from_us(int(body["received_us"])),
            server_upload=_from_us(int(body["upload_us"])),
            client_upload=None if client is None else _from_us(int(client)),
            remote_ip=body["ip"],
        )
        items = body["items"]
        if not isinstance(items, list):
            raise ValueError("items is not a list")
    except (OSError, EOFError, ValueError, KeyError, TypeError) as exc:
        raise CorruptEntry(f"unreadable inbox entry: {exc}") from exc
    return Entry(kind, ctx, items)
