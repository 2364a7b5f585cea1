"""The flow-control key of a task: the payload value a JSON pointer (RFC 6901) names.

A TaskType's ``concurrency.key``, ``rateLimit.key`` and ``uniqueness.key`` are pointers
such as ``/tenant``; tasks whose payloads hold equal values there share a limit. The key
is a string as itself and any other value as canonical JSON (so ``"7"`` and ``7`` are
one tenant), and it is hashed before it reaches a store key: payload values may be
personal data.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import jsonpointer

# What a task whose payload lacks the field shares its limit with.
MISSING = ""


class Missing(LookupError):
    """The pointer names nothing in the payload."""


def value_at(payload: Any, pointer: str) -> Any:
    """The payload's value at ``pointer``; raises Missing when there is none."""
    try:
        return jsonpointer.resolve_pointer(payload, pointer)
    except (jsonpointer.JsonPointerException, TypeError) as exc:
        raise Missing(f"payload has no value at {pointer}") from exc


def key_of(payload: Any, pointer: str | None) -> str:
    """The key a limit counts this payload under: ``MISSING`` without a pointer or a value."""
    if pointer is None:
        return MISSING
    try:
        value = value_at(payload, pointer)
    except Missing:
        return MISSING
    return canonical(value)


def canonical(value: Any) -> str:
    """A value as a key: canonical JSON (strings as themselves, for readability)."""
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def digest(key: str) -> str:
    """The key as stored: 32 hex characters of its SHA-256."""
    return hashlib.sha256(key.encode()).hexdigest()[:32]
