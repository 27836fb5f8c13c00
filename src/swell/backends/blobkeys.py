"""What a blob key may be, in every blob store: ``/``-separated segments, none empty, ``.`` or
``..``, and no NUL. Keys are made by swell (part names, DSAR outputs); anything else is a bug, and
refusing it keeps a key from escaping a store's root."""

from __future__ import annotations

from swell.errors import InvalidBlobKey

_BAD_SEGMENTS = frozenset({"", ".", ".."})


def check_key(key: str) -> list[str]:
    """The key's segments. Raises InvalidBlobKey."""
    segments = key.split("/")
    if not key or "\x00" in key or not _BAD_SEGMENTS.isdisjoint(segments):
        raise InvalidBlobKey(f"invalid blob key {key!r}")
    return segments
