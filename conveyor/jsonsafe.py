"""JSON values that every part of Conveyor can store, serve and read back.

Python's ``json`` accepts NaN, Infinity, 1e999 (as inf), lone surrogates ("\\ud800"),
integers of any length and nesting up to the interpreter's recursion limit. None of them
survives the way out: a JSON response refuses non-finite numbers, UTF-8 refuses lone
surrogates, ``int`` refuses to print more than 4300 digits and deep values overflow the
stack. So one parser (``loads``) and one encoder (``dumps``) keep them out at every
entrance: request bodies and handler results.
"""

from __future__ import annotations

import json
import math
from typing import Any

MAX_DEPTH = 64  # levels of arrays/objects in one document (a request body, a result)
MAX_INT_DIGITS = 20  # every 64-bit integer fits; longer ones lose precision in most clients
_INT_CEILING = 10**MAX_INT_DIGITS


class UnsafeJSON(ValueError):
    """A value outside what Conveyor stores; ``pointer`` names it (RFC 6901)."""

    def __init__(self, pointer: str, message: str) -> None:
        super().__init__(f"{pointer or '/'}: {message}")
        self.pointer = pointer or "/"
        self.message = message


class _Refused:
    """What the parse hooks put in place of a refused number, so that the walk that
    follows can name where it was."""

    __slots__ = ("why",)

    def __init__(self, why: str) -> None:
        self.why = why


def _parse_int(text: str) -> Any:
    digits = len(text) - text.startswith("-")
    if digits > MAX_INT_DIGITS:  # checked before int(): long conversions are quadratic
        return _Refused(f"an integer of {digits} digits (at most {MAX_INT_DIGITS})")
    return int(text)


def _parse_float(text: str) -> Any:
    value = float(text)
    return value if math.isfinite(value) else _Refused(f"{text[:24]} is out of range of a double")


def _parse_constant(text: str) -> Any:
    return _Refused(f"{text} is not a JSON number")


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def _lone_surrogate(text: str) -> bool:
    if text.isascii():
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def find_problem(value: Any, max_depth: int = MAX_DEPTH) -> tuple[str, str] | None:
    """The first (pointer, reason) that keeps ``value`` from being stored and served as
    JSON, or None. Iterative, so a deep value cannot overflow the stack here."""
    stack: list[tuple[Any, str, int]] = [(value, "", 0)]
    while stack:
        item, pointer, depth = stack.pop()
        if item is None or isinstance(item, bool):
            continue
        if isinstance(item, str):
            if _lone_surrogate(item):
                return pointer, "a string with a lone surrogate is not valid Unicode"
        elif isinstance(item, int):
            if not -_INT_CEILING < item < _INT_CEILING:
                return pointer, f"integers have at most {MAX_INT_DIGITS} digits"
        elif isinstance(item, float):
            if not math.isfinite(item):
                return pointer, f"{item} is not a JSON number"
        elif isinstance(item, _Refused):
            return pointer, item.why
        elif isinstance(item, dict | list):
            if depth >= max_depth:
                return pointer, f"nested deeper than {max_depth} levels"
            if isinstance(item, dict):
                for key, child in item.items():
                    if not isinstance(key, str):
                        return pointer, f"object keys must be strings (got {type(key).__name__})"
                    if _lone_surrogate(key):
                        return pointer, "a key with a lone surrogate is not valid Unicode"
                    stack.append((child, f"{pointer}/{_escape(key)}", depth + 1))
            else:
                stack.extend((child, f"{pointer}/{i}", depth + 1) for i, child in enumerate(item))
        else:
            return pointer, f"{type(item).__name__} is not a JSON value"
    return None


def check(value: Any, max_depth: int = MAX_DEPTH) -> None:
    """Raise ``UnsafeJSON`` naming the first value Conveyor cannot store and serve."""
    problem = find_problem(value, max_depth)
    if problem is not None:
        raise UnsafeJSON(*problem)


def loads(raw: str | bytes, max_depth: int = MAX_DEPTH) -> Any:
    """Parse strictly: ``json.JSONDecodeError``/``UnicodeDecodeError`` for what is not JSON
    text, ``UnsafeJSON`` (with a pointer) for JSON that Conveyor would not store."""
    try:
        value = json.loads(
            raw, parse_int=_parse_int, parse_float=_parse_float, parse_constant=_parse_constant
        )
    except RecursionError as exc:
        raise UnsafeJSON("/", f"nested deeper than {max_depth} levels") from exc
    check(value, max_depth)
    return value


def dumps(value: Any) -> str:
    """Compact JSON as stored: UTF-8 rather than \\u escapes (a sixth of the size for
    non-ASCII text); ``ValueError`` for non-finite numbers."""
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def normalised(value: Any, max_depth: int = MAX_DEPTH) -> tuple[Any, str]:
    """A Python value (a handler's result) as the JSON value it will be read back as, and
    its encoding. Raises ``UnsafeJSON`` for anything ``loads`` would refuse, and for
    values JSON cannot hold at all (sets, objects, cycles)."""
    try:
        encoded = dumps(value)
    except RecursionError as exc:
        raise UnsafeJSON("/", f"nested deeper than {max_depth} levels (or a cycle)") from exc
    except (TypeError, ValueError) as exc:
        problem = find_problem(value, max_depth)
        if problem is not None:
            raise UnsafeJSON(*problem) from exc
        raise UnsafeJSON("/", str(exc)) from exc
    return loads(encoded, max_depth), encoded
