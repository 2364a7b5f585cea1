"""Keeping secrets out of logs: payload redaction by key, and a filter for bearer tokens.

Conveyor logs no payload above DEBUG and never a token. These are the second line of
defence: a payload logged at DEBUG has the values of sensitive-looking keys replaced, and
the log handlers' filter rewrites anything shaped like a credential before it is written,
whoever logged it (a library, an exception message, a traceback).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Any

REDACTED = "[redacted]"

_CREDENTIALS = re.compile(
    r"(?P<head>\b(?:bearer|basic)\s+)[\x21-\x7e]+"
    r"|(?P<kv>\b(?:authorization|token|api[_-]?key|password|secret)\b[\"']?\s*[:=]\s*[\"']?)"
    r"(?:(?:bearer|basic)\s+)?[^\s\"',;&]+",
    re.IGNORECASE,
)


def redact_keys(spec: str) -> tuple[str, ...]:
    return tuple(k.strip().lower() for k in spec.split(",") if k.strip())


def redact(value: Any, keys: Iterable[str]) -> Any:
    """A copy of ``value`` with the values of keys containing any of ``keys`` (case-
    insensitive) replaced, at any depth."""
    keys = tuple(keys)
    if isinstance(value, dict):
        return {
            k: REDACTED if any(s in str(k).lower() for s in keys) else redact(v, keys)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [redact(v, keys) for v in value]
    return value


def scrub(text: str) -> str:
    """``text`` with credential-shaped substrings (``Bearer x``, ``token=x``) redacted."""
    return _CREDENTIALS.sub(lambda m: (m.group("head") or m.group("kv")) + REDACTED, text)


class SecretFilter(logging.Filter):
    """Install on a handler: rewrites each record's message and traceback text."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = scrub(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = scrub(record.exc_text)
        return True


def install(logger: logging.Logger | None = None) -> None:
    """Add the filter to every handler of ``logger`` (the root logger by default)."""
    for handler in (logger or logging.getLogger()).handlers:
        if not any(isinstance(f, SecretFilter) for f in handler.filters):
            handler.addFilter(SecretFilter())
