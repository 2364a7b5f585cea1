"""The Celery side: Celery 5 on its SQS broker (kombu), on the same moto server.

Configured by the environment the harness sets:
``BENCH_BROKER_URL`` (``sqs://key:secret@127.0.0.1:PORT``), ``BENCH_QUEUE``,
``BENCH_RESULT_BACKEND`` (empty: results off; else ``dynamodb://key:secret@127.0.0.1:PORT/TABLE``,
Celery's own DynamoDB backend), ``BENCH_EVENTS`` (the harness's event collector).

Everything else is Celery's default: prefork unless the command line says otherwise,
prefetch multiplier 4, acks *before* the task runs (``acks_late=False``), SQS long polls
of 10 s. The task is a no-op; ``task_prerun``/``task_postrun`` report to the harness
(postrun fires after the result backend has stored the result).
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery
from celery.signals import task_postrun, task_prerun, worker_ready

from benchmarks.events import emit


def make_app(broker_url: str, queue: str, backend: str | None, wait: int | None = None) -> Celery:
    """A Celery app on the SQS broker at ``broker_url``; the harness's producer builds
    its own with the same settings as the worker's."""
    celery = Celery("conveyor-bench")
    celery.conf.update(
        broker_url=broker_url,
        # is_secure False: moto speaks plain HTTP on loopback.
        broker_transport_options={"region": "us-east-1", "is_secure": False}
        | ({"wait_time_seconds": wait} if wait is not None else {}),
        broker_connection_retry_on_startup=True,
        task_default_queue=queue,
        result_backend=backend,
        task_ignore_result=backend is None,
        worker_hijack_root_logger=False,
    )
    celery.task(name="bench.noop")(noop)
    return celery


def noop(run: str) -> None:
    return None


app = make_app(
    os.environ.get("BENCH_BROKER_URL", "sqs://bench:bench@127.0.0.1:5055"),
    os.environ.get("BENCH_QUEUE", "celery"),
    os.environ.get("BENCH_RESULT_BACKEND") or None,
    int(os.environ["BENCH_POLL_WAIT"]) if os.environ.get("BENCH_POLL_WAIT") else None,
)


def _run_of(args: Any) -> str:
    return str(args[0]) if args else "-"


@task_prerun.connect
def _started(task_id: str = "", args: Any = None, **_: Any) -> None:
    emit("start", _run_of(args), task_id)


@task_postrun.connect
def _done(task_id: str = "", args: Any = None, **_: Any) -> None:
    emit("done", _run_of(args), task_id)


@worker_ready.connect
def _ready(**_: Any) -> None:
    emit("ready", os.environ.get("BENCH_READY", "-"), str(os.getpid()))
