"""
Parse and validate ingestion requests exactly as Amplitude's HTTP V2, Batch and Identify APIs do.

Pure functions: bytes or form fields in, a validated `Batch` (or identifications) out, or one
`BadRequest` / `PayloadTooLarge` carrying Amplitude's wire fields. SDKs act on those fields: a
body with ``missing_field`` drops the whole batch, while the indexes listed in
``events_with_missing_fields``, ``events_with_invalid_fields`` and
``events_with_invalid_id_lengths`` drop only those events and the rest are retried
(amplitude-analytics ``processor.py``). So per-event problems never set ``missing_field``.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import orjson

from swell.errors import BadRequest, PayloadTooLarge
from swell.model import EPOCH, ms_to_datetime

HTTPAPI_MAX_BYTES: Final = 1_000_000
BATCH_MAX_BYTES: Final = 20_000_000
MAX_EVENTS: Final = 2000
DEFAULT_MIN_ID_LENGTH: Final = 5
#: Property objects may nest this many levels (the object itself is level 1).
MAX_DEPTH: Final = 40
#: Longest accepted user_id / device_id; longer strings would be truncated on export, which would
#: silently change the identity, so they are rejected instead.
MAX_ID_LENGTH: Final = 1024
#: Accepted epoch-ms range for an event's ``time`` and a client upload time: 1970-01-01 up to
#: 2100-01-01. Anything else is a unit mistake (seconds, microseconds) or garbage.
MAX_TIME_MS: Final = 4_102_444_800_000

_INT64_MIN: Final = -(2**63)
_INT64_LIMIT: Final = 2**63

#: IDs Amplitude refuses with a 400 (compared case-insensitively). The all-zero UUID is the
#: IDFA that iOS reports when ad tracking is limited.
INVALID_IDS: Final = frozenset(
    {
        "anonymous",
        "nil",
        "none",
        "null",
        "n/a",
        "na",
        "undefined",
        "unknown",
        "",
        "00000000-0000-0000-0000-000000000000",
        "{}",
        "lmy47d",
        "0",
        "-1",
    }
)
_LONGEST_INVALID_ID: Final = max(len(i) for i in INVALID_IDS)

#: The ``missing_field`` name used when an event has neither user_id nor device_id. Amplitude's
#: exact name is undocumented; SDKs only read the indexes.
MISSING_ID_FIELD: Final = "user_id_or_device_id"

MISSING_FIELD_ERROR: Final = "Request missing required field"
INVALID_FIELDS_ERROR: Final = "Invalid field values on some events"
# Observed verbatim in a real 400 (rudder-transformer fixture, Amplitude-TypeScript PR #81).
INVALID_ID_LENGTH_ERROR: Final = "Invalid id length for user_id or device_id"

# Per-key validation kinds, dispatched in one pass over an event's items.
_STR, _OBJ, _INT, _NUM, _TIME, _INSERT_ID = range(6)
_FIELD_KINDS: Final[dict[str, int]] = {
    **dict.fromkeys(
        (
            "platform",
            "os_name",
            "os_version",
            "device_brand",
            "device_manufacturer",
            "device_model",
            "device_type",
            "carrier",
            "country",
            "region",
            "city",
            "dma",
            "language",
            "app_version",
            "version_name",
            "start_version",
            "partner_id",
            "user_agent",
            "library",
            "ip",
            "idfa",
            "idfv",
            "adid",
            "android_id",
            "android_app_set_id",
            "productId",
            "revenueType",
            "currency",
        ),
        _STR,
    ),
    **dict.fromkeys(
        ("event_properties", "user_properties", "groups", "group_properties", "plan"), _OBJ
    ),
    "session_id": _INT,
    "event_id": _INT,
    "time": _TIME,
    **dict.fromkeys(("location_lat", "location_lng", "price", "revenue", "quantity"), _NUM),
    "insert_id": _INSERT_ID,
}


_ANY_JSON: Final[frozenset[type]] = frozenset({str, int, float, bool, type(None), dict, list})
#: Value types that are valid for a field with no further check (the rest go through the kinds).
_ALWAYS_VALID: Final[dict[str, frozenset[type]]] = {
    key: frozenset(
        {str, int, float, bool, type(None)}
        if kind == _STR
        else {str, type(None)}
        if kind == _INSERT_ID
        else {type(None)}
    )
    for key, kind in _FIELD_KINDS.items()
}


@dataclass(frozen=True, slots=True)
class Batch:
    """A validated HTTP V2 or Batch request."""

    api_key: str
    #: Validated events, as sent (plain dicts, not copied).
    events: list[dict[str, Any]]
    #: ``options.min_id_length``, default 5.
    min_id_length: int
    #: Top-level ``client_upload_time`` (ISO string or epoch ms) or legacy ``upload_time`` (ms).
    client_upload_time: datetime | None


def decode_body(raw: bytes, content_encoding: str | None, max_bytes: int) -> bytes:
    """Return the request body, gunzipped if it is gzip (by header or by its 1f8b magic).

    Decompression is bounded: at most ``max_bytes + 1`` bytes are ever inflated, so a gzip bomb
    costs no more memory than an honest body.

    Raises:
        BadRequest: the gzip stream is corrupt or truncated, or the encoding is unsupported.
        PayloadTooLarge: the (decompressed) body is longer than ``max_bytes``.
    """
    codings = [c.strip().lower() for c in (content_encoding or "").split(",")]
    gzipped = raw[:2] == b"\x1f\x8b"
    for coding in codings:
        if coding in ("gzip", "x-gzip"):
            gzipped = True
        elif coding not in ("", "identity"):
            raise BadRequest(f"Unsupported Content-Encoding: {coding}")
    if not gzipped or not raw:
        if len(raw) > max_bytes:
            raise PayloadTooLarge()
        return raw
    return _gunzip(raw, max_bytes)


def _gunzip(data: bytes, max_bytes: int) -> bytes:
    out: list[bytes] = []
    total = 0
    try:
        while True:  # one iteration per gzip member (concatenated members are legal gzip)
            inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            pending = data
            while not inflater.eof:
                chunk = inflater.decompress(pending, max_bytes - total + 1)
                total += len(chunk)
                if total > max_bytes:
                    raise PayloadTooLarge()
                out.append(chunk)
                pending = inflater.unconsumed_tail
                # A member may inflate to nothing (gzip of b""), so only input running out
                # before the member's end means the body was cut short.
                if not chunk and not pending and not inflater.eof:
                    raise BadRequest("Invalid gzip request body: truncated")
            data = inflater.unused_data
            if not data.strip(b"\x00"):  # trailing zero padding is tolerated, as gzip(1) does
                break
    except zlib.error as exc:
        raise BadRequest("Invalid gzip request body") from exc
    return b"".join(out)


def parse_events_body(body: bytes, *, max_bytes: int) -> Batch:
    """Parse an HTTP V2 or Batch body (JSON object; the content type is ignored for sendBeacon).

    Raises:
        PayloadTooLarge: the body exceeds ``max_bytes`` or holds more than 2000 events.
        BadRequest: with Amplitude's ``error`` string and wire fields; see compatibility.md.
    """
    if len(body) > max_bytes:
        raise PayloadTooLarge()
    if not body.strip():
        raise BadRequest("Missing request body")
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest("Invalid JSON request body") from exc
    if not isinstance(doc, dict):
        raise BadRequest("Invalid JSON request body")
    api_key = doc.get("api_key")
    if not isinstance(api_key, str) or not api_key:
        raise BadRequest(MISSING_FIELD_ERROR, missing_field="api_key")
    events = doc.get("events")
    # Amplitude answers an empty list exactly like a missing one.
    if not isinstance(events, list) or not events:
        raise BadRequest(MISSING_FIELD_ERROR, missing_field="events")
    if len(events) > MAX_EVENTS:
        raise PayloadTooLarge()
    min_id_length = _min_id_length(doc.get("options"))
    _raise_for_events(events, min_id_length, require_event_type=True)
    return Batch(
        api_key=api_key,
        events=events,
        min_id_length=min_id_length,
        client_upload_time=_client_upload_time(doc),
    )


def _min_id_length(options: object) -> int:
    # Amplitude documents no error for bad options; a request-level "Invalid JSON request body"
    # names the offending field instead of guessing (no missing_field: SDKs would drop the batch).
    if options is None:
        return DEFAULT_MIN_ID_LENGTH
    if not isinstance(options, dict):
        raise BadRequest("Invalid JSON request body", invalid_field="options")
    value = options.get("min_id_length")
    if value is None:
        return DEFAULT_MIN_ID_LENGTH
    if type(value) is not int or value < 1:
        raise BadRequest("Invalid JSON request body", invalid_field="options.min_id_length")
    return value


def _client_upload_time(doc: Mapping[str, Any]) -> datetime | None:
    """The client's upload time, or None when absent or unusable (optional, so never a 400)."""
    value = doc.get("client_upload_time")
    if value is None:
        value = doc.get("upload_time")
    if isinstance(value, str):
        text = value.strip()
        if text.isascii() and text.isdigit():
            return _ms_datetime(int(text)) if len(text) < 20 else None
        try:
            dt = datetime.fromisoformat(text)
            dt = dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)
        except (ValueError, OverflowError):
            return None
        return dt if EPOCH <= dt < _MAX_TIME else None
    if isinstance(value, (int, float)) and _is_number(value):
        return _ms_datetime(value)
    return None


_MAX_TIME: Final = ms_to_datetime(MAX_TIME_MS)


def _ms_datetime(ms: float) -> datetime | None:
    if not math.isfinite(ms) or not 0 <= ms < MAX_TIME_MS:
        return None
    return ms_to_datetime(int(ms))


def _is_number(value: object) -> bool:
    return (type(value) is int) or (type(value) is float and math.isfinite(value))


def _raise_for_events(
    events: list[Any], min_id_length: int, *, require_event_type: bool, group: bool = False
) -> None:
    """Validate every event; raise one BadRequest naming every bad index, or return."""
    missing: dict[str, list[int]] = {}
    invalid: dict[str, list[int]] = {}
    lengths: dict[str, list[int]] = {}
    for index, event in enumerate(events):
        if not isinstance(event, dict):
            invalid.setdefault("event", []).append(index)
            continue
        if group:
            _check_group(event, index, missing, invalid)
            continue
        if require_event_type:
            event_type = event.get("event_type")
            if event_type is None:
                missing.setdefault("event_type", []).append(index)
            elif not isinstance(event_type, str) or not event_type:
                invalid.setdefault("event_type", []).append(index)
        _check_ids(event, index, min_id_length, missing, invalid, lengths)
        _check_fields(event, index, invalid)
    if not (missing or invalid or lengths):
        return
    if not (invalid or lengths):
        error = MISSING_FIELD_ERROR
    elif not (missing or invalid):
        error = INVALID_ID_LENGTH_ERROR
    else:
        error = INVALID_FIELDS_ERROR
    extra: dict[str, object] = {}
    if missing:
        extra["events_with_missing_fields"] = missing
    if invalid:
        extra["events_with_invalid_fields"] = invalid
    if lengths:
        extra["events_with_invalid_id_lengths"] = lengths
    raise BadRequest(error, **extra)


def _check_ids(
    event: Mapping[str, Any],
    index: int,
    min_id_length: int,
    missing: dict[str, list[int]],
    invalid: dict[str, list[int]],
    lengths: dict[str, list[int]],
) -> None:
    user_id = event.get("user_id")
    device_id = event.get("device_id")
    if user_id is None and device_id is None:
        missing.setdefault(MISSING_ID_FIELD, []).append(index)
        return
    for field, value in (("user_id", user_id), ("device_id", device_id)):
        if value is None:
            continue
        # Numbers are refused rather than stringified: Amplitude's handling of numeric IDs is
        # inconsistent (accepted with 200, then never shown), so fail loudly.
        if (
            not isinstance(value, str)
            or len(value) > MAX_ID_LENGTH
            or (len(value) <= _LONGEST_INVALID_ID and value.lower() in INVALID_IDS)
        ):
            invalid.setdefault(field, []).append(index)
        elif len(value) < min_id_length:
            lengths.setdefault(field, []).append(index)


def _check_fields(event: Mapping[str, Any], index: int, invalid: dict[str, list[int]]) -> None:
    fast = _ALWAYS_VALID
    for key, value in event.items():
        # Most values are plain strings or null in a field that allows them: one set lookup.
        if type(value) in fast.get(key, _ANY_JSON):  # a key not listed here is not checked
            continue
        kind = _FIELD_KINDS[key]
        if kind == _OBJ:
            ok = isinstance(value, dict) and not _too_deep(value, MAX_DEPTH)
        elif kind == _INT:  # exported as JSON integers, so they must fit int64
            ok = _is_number(value) and _INT64_MIN <= value < _INT64_LIMIT
        elif kind == _TIME:
            ok = _is_number(value) and 0 <= value < MAX_TIME_MS
        elif kind == _NUM:
            ok = _is_number(value)
        else:  # _STR (a list or object) or _INSERT_ID (not a string)
            ok = False
        if not ok:
            invalid.setdefault(key, []).append(index)


def _too_deep(value: dict[str, Any] | list[Any], levels: int) -> bool:
    """True if ``value`` (itself one level) nests more than ``levels`` levels of objects/arrays."""
    if levels <= 0:
        return True
    children = value.values() if isinstance(value, dict) else value
    for child in children:
        if isinstance(child, (dict, list)) and _too_deep(child, levels - 1):
            return True
    return False


def _check_group(
    item: Mapping[str, Any],
    index: int,
    missing: dict[str, list[int]],
    invalid: dict[str, list[int]],
) -> None:
    for field in ("group_type", "group_value"):
        value = item.get(field)
        if value is None:
            missing.setdefault(field, []).append(index)
        elif not isinstance(value, str) or not value:
            invalid.setdefault(field, []).append(index)
    props = item.get("group_properties")
    if props is None:
        missing.setdefault("group_properties", []).append(index)
    elif not isinstance(props, dict) or _too_deep(props, MAX_DEPTH):
        invalid.setdefault("group_properties", []).append(index)


def parse_identify_form(
    form: Mapping[str, str], *, group: bool
) -> tuple[str, list[dict[str, Any]]]:
    """Parse an /identify or /groupidentify form: ``api_key`` plus ``identification`` (JSON).

    Identify entries follow the event ID rules (min length 5); group entries need ``group_type``,
    ``group_value`` and a ``group_properties`` object.

    Raises:
        BadRequest: ``missing_field="api_key"``; ``missing_event`` when identification is absent or
            is not a JSON object or a non-empty array of objects; per-entry index maps otherwise.
        PayloadTooLarge: more than 2000 identifications.
    """
    api_key = form.get("api_key")
    if not isinstance(api_key, str) or not api_key:
        raise BadRequest(MISSING_FIELD_ERROR, missing_field="api_key")
    raw = form.get("identification")
    if not isinstance(raw, str) or not raw.strip():
        raise BadRequest("missing_event")
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest("missing_event") from exc
    items: list[Any] = [doc] if isinstance(doc, dict) else doc if isinstance(doc, list) else []
    if not items or not all(isinstance(item, dict) for item in items):
        raise BadRequest("missing_event")
    if len(items) > MAX_EVENTS:
        raise PayloadTooLarge()
    _raise_for_events(items, DEFAULT_MIN_ID_LENGTH, require_event_type=False, group=group)
    return api_key, items
