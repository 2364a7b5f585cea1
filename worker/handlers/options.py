"""TaskType options shared by the built-in handlers: lists of strings, host-name patterns."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from conveyor.errors import PermanentError


def string_list(options: dict[str, Any], name: str, *, non_empty: bool = True) -> list[str] | None:
    """``options.<name>`` as a list of strings (None when unset); with ``non_empty``, a blank
    entry is refused too."""
    value = options.get(name)
    if value is None:
        return None
    if not isinstance(value, list) or not all(
        isinstance(v, str) and (v.strip() or not non_empty) for v in value
    ):
        raise PermanentError(f"options.{name}: must be a list of {'non-empty ' if non_empty else ''}strings")
    return list(value)


def domain_listed(name: str, patterns: Iterable[str]) -> bool:
    """Whether the host or mail domain ``name`` is one of ``patterns`` or under one written
    ``*.domain``. Both lower-case, without a trailing dot."""
    return any(name == p or (p.startswith("*.") and name.endswith(p[1:])) for p in patterns)
