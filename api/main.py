"""``conveyor api``: serve the API with uvicorn."""

from __future__ import annotations

import sys
from typing import Any

import uvicorn
from prometheus_client import REGISTRY

from api.app import create_app
from api.protocol import BoundedHttpToolsProtocol
from conveyor import redact, tracing
from conveyor.bootstrap import build, configure_logging
from conveyor.settings import Settings


def server_options(settings: Settings) -> dict[str, Any]:
    """uvicorn's settings for the API process."""
    return {
        "host": settings.api_host,
        "port": settings.api_port,
        "log_level": settings.log_level.lower(),
        "access_log": False,  # request metrics cover it; access logs would carry task ids
        "log_config": None,  # uvicorn's records go through our handler and its SecretFilter
        "proxy_headers": True,
        # uvloop's event loop costs about a tenth of a submit's CPU less than asyncio's
        # (docs/BENCHMARKS.md); named, not "auto", so a missing uvloop fails at start.
        "loop": "asyncio" if sys.platform == "win32" else "uvloop",
        # httptools (C) parses for less CPU than h11; ours bounds a request's head as h11 did.
        "http": BoundedHttpToolsProtocol,
    }


def main(settings: Settings | None = None) -> None:
    settings = settings or Settings.from_env()
    configure_logging(settings.log_level, settings.log_format)
    redact.install()  # no credential reaches a log line, whoever logs it
    tracing.setup("api")  # off unless OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT is set
    runtime = build(settings, max_pool=64, metrics=REGISTRY)
    app = create_app(runtime.engine)
    uvicorn.run(app, **server_options(settings))


if __name__ == "__main__":
    main()
