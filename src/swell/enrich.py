"""
Turn one validated ingest event into Amplitude's 55-key export record.

Pure and on the ingest hot path: identity (amplitude_id, event_id, uuid) and the merged property
state come in as arguments; per-request timestamps are formatted once in `RequestContext`, per-event
ones through a per-second cache; user agents and language tags are parsed once per distinct string.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any, Final

import langcodes
from ua_parser import parse

from swell.model import EPOCH, EXPORT_KEYS

#: Amplitude caps string values at 1024 characters; longer ones are truncated, not refused.
MAX_STRING: Final = 1024
#: Event time is shifted by the client clock's skew only when the skew is at least this large.
SKEW_THRESHOLD_US: Final = 60_000_000

_ONE_US: Final = timedelta(microseconds=1)

#: Ingest revenue fields, which are not export columns, and their event_properties names.
_REVENUE_KEYS: Final = (
    ("price", "$price"),
    ("quantity", "$quantity"),
    ("revenue", "$revenue"),
    ("productId", "$productId"),
    ("revenueType", "$revenueType"),
    ("currency", "$currency"),
)
# uap-core names macOS "Mac OS X"; Amplitude's export says "Mac OS".
_OS_NAMES: Final = {"Mac OS X": "Mac OS", "macOS": "Mac OS"}


def _epoch_us(dt: datetime) -> int:
    return (dt - EPOCH) // _ONE_US


@dataclass(frozen=True, slots=True)
class RequestContext:
    """What one ingestion request contributes to every record it produces."""

    project_id: int
    #: "/2/httpapi", "/batch", "/identify": becomes ``data.path``.
    path: str
    #: "http/2.0" for /2/httpapi, "batch/1.0" for /batch: ``library`` when the event sends none.
    default_library: str
    #: Aware UTC.
    server_received: datetime
    #: Aware UTC, >= server_received: the hour this record is filed (and exported) under.
    server_upload: datetime
    client_upload: datetime | None
    #: The request's address, used when an event sends ``ip: "$remote"``.
    remote_ip: str | None
    # Derived once per request in __post_init__.
    server_received_ts: str = field(init=False, repr=False, compare=False)
    server_upload_ts: str = field(init=False, repr=False, compare=False)
    client_upload_ts: str = field(init=False, repr=False, compare=False)
    client_upload_us: int = field(init=False, repr=False, compare=False)
    #: ``server_received - client_upload`` in µs, or 0 when under the 60 s threshold.
    skew_us: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        received_us = _epoch_us(self.server_received)
        upload_us = received_us if self.client_upload is None else _epoch_us(self.client_upload)
        skew = received_us - upload_us
        setattr_ = object.__setattr__
        setattr_(self, "server_received_ts", format_us(received_us))
        setattr_(self, "server_upload_ts", format_us(_epoch_us(self.server_upload)))
        setattr_(self, "client_upload_ts", format_us(upload_us))
        setattr_(self, "client_upload_us", upload_us)
        setattr_(self, "skew_us", skew if abs(skew) >= SKEW_THRESHOLD_US else 0)


@lru_cache(maxsize=4096)
def _second_prefix(seconds: int) -> str:
    return (EPOCH + timedelta(seconds=seconds)).strftime("%Y-%m-%d %H:%M:%S")


def format_us(us: int) -> str:
    """Export time format (``2025-07-01 17:14:33.145000``) of epoch µs; cached per second."""
    seconds, micros = divmod(us, 1_000_000)
    return f"{_second_prefix(seconds)}.{micros:06d}"


@lru_cache(maxsize=256)
def _format_dt(dt: datetime) -> str:
    return format_us(_epoch_us(dt))


def new_uuids(count: int) -> list[str]:
    """``count`` random (version 4) UUIDs in canonical 8-4-4-4-12 form, from one urandom call."""
    h = os.urandom(16 * count).hex()
    variant = _VARIANT
    return [
        f"{h[i : i + 8]}-{h[i + 8 : i + 12]}-4{h[i + 13 : i + 16]}-"
        f"{variant[h[i + 16]]}{h[i + 17 : i + 20]}-{h[i + 20 : i + 32]}"
        for i in range(0, 32 * count, 32)
    ]


#: The RFC 4122 variant: the top two bits of the 17th hex digit are ``10``.
_VARIANT: Final = {f"{n:x}": f"{8 | (n & 3):x}" for n in range(16)}


def new_uuid() -> str:
    """A random (version 4) UUID in its canonical 8-4-4-4-12 form."""
    return new_uuids(1)[0]


@lru_cache(maxsize=4096)
def parse_user_agent(ua: str) -> dict[str, str | None]:
    """Device columns Amplitude derives from a user agent.

    Mirrors observed export rows: on the web ``os_name``/``os_version`` are the *browser* and its
    major version ("Chrome", "86"); ``device_family`` is the OS ("Mac OS", "Windows") or, for a
    phone or tablet, the device ("Apple iPhone"); ``device_model`` repeats the OS on desktops;
    ``device_type`` names the device ("Apple iPhone", "Windows") and is null for a Mac.
    Callers must not mutate the (cached) result.
    """
    result = parse(ua)
    agent, os_, device = result.user_agent, result.os, result.device
    os_family = _OS_NAMES.get(os_.family, os_.family) if os_ and os_.family != "Other" else None
    family_col: str | None = os_family
    model_col: str | None = os_family
    type_col: str | None = os_family if os_family and os_family.startswith("Windows") else None
    if device and device.brand and device.family not in ("Other", "Mac", "Spider"):
        family = device.family
        name = family if family.startswith(device.brand) else f"{device.brand} {family}"
        family_col, model_col, type_col = name, device.model, name
    return {
        "os_name": agent.family if agent and agent.family != "Other" else None,
        "os_version": agent.major if agent else None,
        "device_family": family_col,
        "device_model": model_col,
        "device_type": type_col,
    }


_NO_AGENT: Final[dict[str, str | None]] = dict.fromkeys(
    ("os_name", "os_version", "device_family", "device_model", "device_type")
)


@lru_cache(maxsize=1024)
def language_name(tag: str) -> str:
    """A language tag's English name (``en-US`` -> ``English``); anything else is kept as sent."""
    try:
        language = langcodes.Language.get(tag)
        name = language.language_name()
    except (ValueError, LookupError):  # LanguageTagError is a ValueError
        return tag
    if not language.is_valid() or not isinstance(name, str) or name.startswith("Unknown"):
        return tag
    return name


def _str(value: object) -> str | None:
    """A string column: capped at 1024 chars; other scalars as their JSON text."""
    if type(value) is str:
        return value if len(value) <= MAX_STRING else value[:MAX_STRING]
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _cap(value: Any) -> Any:
    """``value`` with every string (at any depth) capped at 1024 chars; copies only if needed."""
    if type(value) is str:
        return value if len(value) <= MAX_STRING else value[:MAX_STRING]
    if isinstance(value, dict):
        for item in value.values():
            kind = type(item)
            if kind is str:
                if len(item) > MAX_STRING:
                    break
            elif (kind is dict or kind is list) and _cap(item) is not item:
                break
        else:
            return value
        return {k: _cap(v) for k, v in value.items()}
    if isinstance(value, list):
        capped = [_cap(item) for item in value]
        return value if all(map(_is, capped, value)) else capped
    return value


def _is(a: object, b: object) -> bool:
    return a is b


def _props(value: Mapping[str, Any] | None) -> dict[str, Any]:
    """A property object for export: a dict, strings capped, ``{}`` when empty or absent."""
    if not value:
        return {}
    return _cap(value if isinstance(value, dict) else dict(value))  # type: ignore[no-any-return]


def _groups(groups: Mapping[str, Any] | None) -> dict[str, Any]:
    """Export groups hold arrays: a scalar group value becomes ``[value]``."""
    if not groups:
        return {}
    return {k: _cap(v) if isinstance(v, list) else [_cap(v)] for k, v in groups.items()}


#: Ingest keys copied verbatim (as capped strings) into the export column of the same meaning.
_STRING_COLUMNS: Final = {
    **{
        key: key
        for key in (
            "adid",
            "city",
            "country",
            "device_brand",
            "device_id",
            "device_manufacturer",
            "device_model",
            "device_type",
            "dma",
            "event_type",
            "idfa",
            "os_name",
            "os_version",
            "partner_id",
            "platform",
            "region",
            "start_version",
            "user_id",
        )
    },
    "carrier": "device_carrier",
    "insert_id": "$insert_id",
}
_NUMBER_COLUMNS: Final = ("location_lat", "location_lng")
_UA_COLUMNS: Final = tuple(_NO_AGENT)
_REVENUE_SET: Final = frozenset(key for key, _ in _REVENUE_KEYS)

#: Constant columns; every other column starts as null and is filled per event.
_TEMPLATE: Final[dict[str, Any]] = dict.fromkeys(EXPORT_KEYS) | {
    "data_type": "event",
    "session_id": -1,
}


def build_record(
    event: Mapping[str, Any],
    ctx: RequestContext,
    *,
    amplitude_id: int,
    user_properties: Mapping[str, Any],
    group_properties: Mapping[str, Any],
    event_id: int,
    uuid: str,
    processed: datetime,
    user_properties_updated: bool,
) -> dict[str, Any]:
    """The export record of one validated event: exactly `EXPORT_KEYS`, in that (sorted) order.

    ``event`` is not mutated; property objects are shared with it unless a string needed capping.
    """
    record = _TEMPLATE.copy()  # insertion order = EXPORT_KEYS order, kept by later assignments
    columns = _STRING_COLUMNS
    for key, value in event.items():
        column = columns.get(key)
        if column is not None and value is not None:
            record[column] = (
                value if type(value) is str and len(value) <= MAX_STRING else _str(value)
            )
    get = event.get

    time = get("time")
    if time is None:
        client_event_us = ctx.client_upload_us
        client_event_ts = ctx.client_upload_ts
    else:
        client_event_us = int(time) * 1000
        client_event_ts = format_us(client_event_us)
    skew = ctx.skew_us
    record["client_event_time"] = client_event_ts
    record["event_time"] = client_event_ts if skew == 0 else format_us(client_event_us + skew)
    record["client_upload_time"] = ctx.client_upload_ts
    record["server_received_time"] = ctx.server_received_ts
    record["server_upload_time"] = ctx.server_upload_ts
    record["processed_time"] = _format_dt(processed)

    ua = get("user_agent")
    if type(ua) is str and ua:
        agent = parse_user_agent(ua)
        for column in _UA_COLUMNS:
            if record[column] is None:
                record[column] = agent[column]

    event_properties = _props(get("event_properties"))
    if not _REVENUE_SET.isdisjoint(event):
        revenue = {name: _cap(get(key)) for key, name in _REVENUE_KEYS if get(key) is not None}
        if revenue:
            event_properties = {**event_properties, **revenue}
    record["event_properties"] = event_properties
    record["user_properties"] = _props(user_properties)
    record["group_properties"] = _props(group_properties)
    record["groups"] = _groups(get("groups"))
    record["plan"] = _props(get("plan"))

    data: dict[str, Any] = {"path": ctx.path}
    if user_properties_updated:
        data["user_properties_updated"] = True
    data["group_first_event"] = {}
    data["group_ids"] = {}
    record["data"] = data

    record["amplitude_id"] = amplitude_id
    record["app"] = ctx.project_id
    record["event_id"] = event_id
    record["uuid"] = uuid
    ip = get("ip")
    if ip is not None:
        record["ip_address"] = ctx.remote_ip if ip == "$remote" else _str(ip)
    language = get("language")
    if language is not None:
        record["language"] = language_name(language) if type(language) is str else _str(language)
    library = get("library")
    record["library"] = _str(library) if library else ctx.default_library
    version = get("app_version")
    if version is None:
        version = get("version_name")
    if version is not None:
        record["version_name"] = _str(version)
    session_id = get("session_id")
    if session_id is not None:
        record["session_id"] = int(session_id)
    for column in _NUMBER_COLUMNS:
        value = get(column)
        if value is not None:
            record[column] = value
    paying = get("paying")
    if paying is not None:
        record["paying"] = paying
    return record
