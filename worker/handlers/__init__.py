"""The handler registry. A TaskType names a handler; ``@handler("name")`` registers one.

A handler is ``fn(payload, ctx) -> result`` (sync: runs in a thread) or
``async fn(payload, ctx) -> result`` (runs on the worker's event loop). The result must
be JSON-serialisable. Raise ``PermanentError`` for a failure no retry can fix; any other
exception is retried with the TaskType's backoff until its attempts run out.

Handlers shipped in your own image: put ``@handler`` functions in a module and list the
module in ``CONVEYOR_HANDLER_MODULES`` (comma separated); see docs/HANDLERS.md.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from typing import Any

from worker.handlers.context import Context

Handler = Callable[[Any, Context], Any]

_HANDLERS: dict[str, Handler] = {}
_loaded = False

BUILTIN_MODULES = (
    "worker.handlers.basic",
    "worker.handlers.mail",
    "worker.handlers.image",
    "worker.handlers.export",
    "worker.handlers.webhook",
)


def handler(name: str) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        if name in _HANDLERS and _HANDLERS[name] is not fn:
            raise ValueError(f"handler {name!r} is registered twice")
        _HANDLERS[name] = fn
        return fn

    return register


def load(extra_modules: str | None = None) -> None:
    """Import the built-in handler modules and those named in CONVEYOR_HANDLER_MODULES."""
    global _loaded
    _loaded = True
    spec = os.environ.get("CONVEYOR_HANDLER_MODULES", "") if extra_modules is None else extra_modules
    for module in (*BUILTIN_MODULES, *(m.strip() for m in spec.split(",") if m.strip())):
        importlib.import_module(module)


def get(name: str) -> Handler | None:
    if not _loaded:
        load()
    return _HANDLERS.get(name)


def names() -> list[str]:
    if not _loaded:
        load()
    return sorted(_HANDLERS)


__all__ = ["Context", "Handler", "get", "handler", "load", "names"]
