"""
User-property operations ($set, $add, $append, ...) applied to a user's property state.

An update is an event's or an identify's ``user_properties``. Operations apply in one fixed order,
whatever the order of keys in the update: $clearAll, $unset, $setOnce, $set (plain keys too),
$add, $append, $prepend, $preInsert, $postInsert, $remove.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any, Final

OPERATIONS: Final = (
    "$set",
    "$setOnce",
    "$add",
    "$append",
    "$prepend",
    "$unset",
    "$preInsert",
    "$postInsert",
    "$remove",
    "$clearAll",
)
_OPERATIONS: Final = frozenset(OPERATIONS)

_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1
# JSON-number syntax only, in ASCII digits: Python's int()/float() also accept "1_000", " nan",
# "infinity" and other scripts' digits ("١٢").
_NUMERIC: Final = re.compile(r"-?(?:0|[1-9][0-9]{0,30})(?:\.[0-9]+)?(?:[eE][+-]?[0-9]{1,3})?")


def apply_user_properties(state: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """Return the property state after ``update``; ``state`` and ``update`` are never mutated.

    Keys that are not operations act as ``$set`` (Amplitude forbids mixing them with operations;
    swell applies them just before ``$set``). An operation whose value is not an object is ignored,
    except ``$clearAll``, whose presence alone clears (SDKs send ``{"$clearAll": "-"}``).
    """
    result = dict(state)
    if not any(key in _OPERATIONS for key in update):
        result.update(update)
        return result
    if "$clearAll" in update:
        result.clear()
    for key in _operand(update, "$unset"):
        result.pop(key, None)
    for key, value in _operand(update, "$setOnce").items():
        if key not in result:
            result[key] = value
    result.update({key: value for key, value in update.items() if key not in _OPERATIONS})
    result.update(_operand(update, "$set"))
    for key, value in _operand(update, "$add").items():
        total = _add(result.get(key, 0), value)
        if total is not None:
            result[key] = total
    for key, value in _operand(update, "$append").items():
        result[key] = _as_list(result.get(key)) + _values(value)
    for key, value in _operand(update, "$prepend").items():
        result[key] = _values(value) + _as_list(result.get(key))
    for key, value in _operand(update, "$preInsert").items():
        current = _as_list(result.get(key))
        result[key] = _new_values(value, current) + current
    for key, value in _operand(update, "$postInsert").items():
        current = _as_list(result.get(key))
        result[key] = current + _new_values(value, current)
    for key, value in _operand(update, "$remove").items():
        existing = result.get(key)
        # Only lists lose values; a scalar property is left alone.
        if isinstance(existing, list):
            drop = _values(value)
            result[key] = [item for item in existing if not _contains(drop, item)]
    return result


def _operand(update: Mapping[str, Any], operation: str) -> Mapping[str, Any]:
    value = update.get(operation)
    return value if isinstance(value, dict) else {}


def _number(value: object) -> int | float | None:
    """A JSON number, or a string holding one (Amplitude's $add accepts numeric strings)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str) and _NUMERIC.fullmatch(value):
        if "." in value or "e" in value or "E" in value:
            number = float(value)
            return number if math.isfinite(number) else None
        return int(value)
    return None


def _add(current: object, operand: object) -> int | float | None:
    """``current + operand``, or None (ignore) when either is not numeric."""
    left = _number(current)
    right = _number(operand)
    if left is None or right is None:
        return None
    total = left + right
    # Exported as JSON: an integer beyond int64 would not serialise, so it degrades to a float.
    if isinstance(total, int) and not _INT64_MIN <= total <= _INT64_MAX:
        return float(total)
    return total


def _as_list(value: object) -> list[Any]:
    """The property as a new list: absent or null -> [], scalar -> [scalar], list -> a copy."""
    if value is None:
        return []
    if isinstance(value, list):
        return list(value)
    return [value]


def _values(operand: object) -> list[Any]:
    """An operand's values: a list contributes each element, anything else itself."""
    return list(operand) if isinstance(operand, list) else [operand]


def _new_values(operand: object, current: list[Any]) -> list[Any]:
    """Operand values not already in ``current`` (nor repeated in the operand), in order."""
    fresh: list[Any] = []
    for value in _values(operand):
        if not _contains(current, value) and not _contains(fresh, value):
            fresh.append(value)
    return fresh


def _contains(items: list[Any], value: object) -> bool:
    return any(_same(item, value) for item in items)


def _same(a: object, b: object) -> bool:
    """JSON equality: ``true`` is not ``1`` (Python says it is), ``1`` is ``1.0``."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, dict):
        return (
            isinstance(b, dict)
            and a.keys() == b.keys()
            and all(_same(value, b[key]) for key, value in a.items())
        )
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(map(_same, a, b))
    if isinstance(b, (dict, list)):
        return False
    return a == b
