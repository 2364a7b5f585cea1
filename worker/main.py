"""``conveyor worker``: run one worker process until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import logging
import signal

from prometheus_client import REGISTRY, start_http_server

from conveyor import tracing
from conveyor.bootstrap import build, configure_logging
from conveyor.metrics import WorkerMetrics
from conveyor.settings import Settings
from worker import handlers
from worker.runtime import Worker

log = logging.getLogger("conveyor.worker")


async def serve(settings: Settings, metrics_port: int | None = None) -> None:
    runtime = build(settings, max_pool=settings.worker_concurrency + 10, metrics=REGISTRY)
    handlers.load()
    port = settings.worker_metrics_port if metrics_port is None else metrics_port
    if port:
        start_http_server(port, addr=settings.worker_metrics_host)
    worker = Worker(runtime.engine, WorkerMetrics(REGISTRY), blob_factory=runtime.blobs)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.request_stop)
    await worker.run()


def main(settings: Settings | None = None) -> None:
    settings = settings or Settings.from_env()
    configure_logging(settings.log_level, settings.log_format)
    tracing.setup("worker")  # off unless OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT is set
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
