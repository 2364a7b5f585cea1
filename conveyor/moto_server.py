"""The embedded AWS: moto's application, served over HTTP with keep-alive.

Three changes to how ``moto_server`` runs moto, none to what it answers:

- **Atomic DynamoDB items.** Real DynamoDB evaluates a condition expression and applies
  the write as one atomic step, and a read never sees half of an update; moto's threaded
  server does neither (measured: concurrent conditional UpdateItems on one item both
  succeeded in 5 of 20 trials, and a GetItem during an UpdateItem of two attributes saw
  one changed and not the other). Conveyor's exactly-once claim rests on that atomicity,
  so each DynamoDB item request, answer included, runs alone here -- the behaviour of the
  real service, not a shortcut around it.
- **A server that keeps connections open.** moto's own (werkzeug's development server)
  closes every connection after one response and starts a thread for each, and logs
  every request: a new TCP connection per AWS call, on both sides. moto's WSGI
  application is served by waitress instead, with HTTP/1.1 keep-alive, as clients of
  real AWS get.
- **Time and retention looked up cheaply.** moto's SQS reads the clock through a
  datetime round trip several times per message and, for every message it returns,
  recomputes all queue attributes (walking every message) to read the retention
  period: a receive costs O(queue depth) per message. Both are replaced with the same
  values computed directly (``time.time()``; the queue's own retention setting).

Measured with ``python -m benchmarks --only calls`` before and after: see
docs/BENCHMARKS.md. Run as ``python -m conveyor.moto_server -H 127.0.0.1 -p PORT``.
"""

from __future__ import annotations

import argparse
import functools
import os
import threading
import time
from collections.abc import Callable
from typing import Any

# Long polls hold a thread for up to 20 s each: enough for every worker of a test run.
THREADS = int(os.environ.get("CONVEYOR_MOTO_THREADS", "64"))


def make_dynamodb_items_atomic() -> None:
    from moto.dynamodb.responses import DynamoHandler

    lock = threading.RLock()

    def locked(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def inner(*args: Any, **kwargs: Any) -> Any:
            with lock:
                return fn(*args, **kwargs)

        return inner

    # The request handlers, not the backend: moto's backend hands back the live item, and
    # the handler serialises it after the backend call returns.
    for name in (
        "put_item",
        "update_item",
        "delete_item",
        "transact_write_items",
        "batch_write_item",
        "get_item",
        "batch_get_item",
        "transact_get_items",
        "query",
        "scan",
    ):
        if hasattr(DynamoHandler, name):
            setattr(DynamoHandler, name, locked(getattr(DynamoHandler, name)))


def make_sqs_bookkeeping_cheap() -> None:
    import moto.backends
    import moto.sqs.models as sqs
    from moto.core import utils

    slow_unix_time = utils.unix_time

    def unix_time(dt: Any = None) -> float:
        # moto's: (utcnow() - utcfromtimestamp(0)) in seconds, which is time.time().
        return time.time() if dt is None else slow_unix_time(dt)

    def unix_time_millis(dt: Any = None) -> float:
        return unix_time(dt) * 1000.0

    sqs.unix_time, sqs.unix_time_millis = unix_time, unix_time_millis

    def is_message_valid_based_on_retention_period(self: Any, queue_name: str, message: Any) -> bool:
        retention = int(self.get_queue(queue_name).message_retention_period)
        return bool(retention + message.sent_timestamp / 1000 > time.time())

    sqs.SQSBackend.is_message_valid_based_on_retention_period = (  # type: ignore[method-assign]
        is_message_valid_based_on_retention_period
    )
    # Read from disk (a directory listing) on every request to route it; it never changes.
    modules = tuple(moto.backends.list_of_moto_modules())
    moto.backends.list_of_moto_modules = lambda: modules


def app() -> Any:
    """moto's WSGI application (every service, routed by host, target and signature)."""
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

    make_dynamodb_items_atomic()
    make_sqs_bookkeeping_cheap()
    application = DomainDispatcherApplication(create_backend_app)
    application.debug = True  # type: ignore[attr-defined]  # as moto_server sets it
    return application


def main(argv: list[str] | None = None) -> None:
    import waitress

    parser = argparse.ArgumentParser(prog="python -m conveyor.moto_server")
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, default=int(os.environ.get("MOTO_PORT", "5000")))
    args = parser.parse_args(argv)
    os.environ.setdefault("MOTO_PORT", str(args.port))  # moto builds queue URLs from it
    waitress.serve(
        app(),
        host=args.host,
        port=args.port,
        threads=THREADS,
        connection_limit=1000,
        channel_timeout=120,  # idle keep-alive connections; above the 20 s long poll
        ident="moto",
        _quiet=True,
    )


if __name__ == "__main__":
    main()
