"""The embedded AWS: moto's server, with DynamoDB writes made atomic.

Real DynamoDB evaluates a condition expression and applies the write as one atomic step;
moto's threaded server does not (measured: concurrent conditional UpdateItems on one
item both succeeded in 5 of 20 trials). Conveyor's exactly-once claim rests on that
atomicity, so the local stack and the tests serialise moto's DynamoDB writes -- the
behaviour of the real service, not a shortcut around it.

Run as ``python -m conveyor.moto_server -H 127.0.0.1 -p PORT`` (moto's own flags).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any


def make_dynamodb_writes_atomic() -> None:
    from moto.dynamodb.models import DynamoDBBackend

    lock = threading.RLock()  # re-entrant: transactions call the single-item writes

    def locked(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def inner(*args: Any, **kwargs: Any) -> Any:
            with lock:
                return fn(*args, **kwargs)

        return inner

    for name in ("put_item", "update_item", "delete_item", "transact_write_items", "batch_write_item"):
        if hasattr(DynamoDBBackend, name):
            setattr(DynamoDBBackend, name, locked(getattr(DynamoDBBackend, name)))


def main() -> None:
    from moto.server import main as moto_main

    make_dynamodb_writes_atomic()
    moto_main()


if __name__ == "__main__":
    main()
