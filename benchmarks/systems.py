"""The systems under test, each behind one small interface the measurements drive.

- ``conveyor`` / ``conveyor-batch``: the real API process (``python -m api.main``) and one
  real worker process (``python -m worker.main``), default settings (concurrency 8).
- ``conveyor-2w``: the same with two worker processes on one queue (two pods), for how
  throughput grows with pods on this machine.
- ``celery`` / ``celery-dynamodb``: one Celery 5 worker process on kombu's SQS transport,
  results off, or on Celery's DynamoDB backend so that, like Conveyor, it records state.
- ``floor`` / ``floor-batch``: :mod:`benchmarks.floor`, the minimum calls.

Every one reaches AWS through the proxy; the harness's own checks go straight to moto.
"""

from __future__ import annotations

import functools
import re
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx

from benchmarks import floor
from benchmarks.stack import Child, Stack, unique
from conveyor.aws.dynamodb import DynamoWorkerRegistry
from conveyor.local import free_port, wait_http

SUBMITTERS = 8  # concurrent submitting clients, the same for every system
WORKER_CONCURRENCY = 8  # Conveyor's default, given to every worker
API_BATCH = 100  # Conveyor's max_batch_size


class NotReady(RuntimeError):
    pass


def parallel(jobs: list[Callable[[], Any]], threads: int) -> list[Any]:
    with ThreadPoolExecutor(max(1, min(threads, len(jobs)))) as pool:
        return list(pool.map(lambda job: job(), jobs))


@dataclass
class System:
    stack: Stack
    key: str = ""
    label: str = ""
    batch: bool = False
    worker: Child | None = None
    api: Child | None = None
    queue_url: str = ""  # straight to moto: for depth samples
    expected: int = 0  # tasks run to success so far, for verify()
    default_poll_wait: int = 20
    _orphans_until: float = 0.0
    _ready_tag: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    # lifecycle ---------------------------------------------------------------------
    def setup(self) -> None:
        raise NotImplementedError

    @property
    def tags(self) -> list[str]:
        """The names of this system's queues and tables: the proxy counts by them."""
        raise NotImplementedError

    def start_worker(self, **options: Any) -> Child:
        raise NotImplementedError

    @property
    def poll_wait(self) -> int:
        return self.default_poll_wait if self.stack.poll_wait is None else self.stack.poll_wait

    def stop_worker(self) -> None:
        if self.worker is not None:
            self.worker.kill()
            self.worker = None
            # A killed worker's long poll lives on inside moto and would take (and hide for
            # the visibility timeout) the next message sent: nothing uses this queue until
            # it has expired.
            self._orphans_until = time.monotonic() + self.poll_wait + 1

    def quiesce(self) -> None:
        """Wait until no dead worker's long poll is pending on this system's queue."""
        left = self._orphans_until - time.monotonic()
        if left > 0:
            time.sleep(left)

    def teardown(self) -> None:
        self.stop_worker()
        if self.api is not None:
            self.api.kill()
            self.api = None

    # work ----------------------------------------------------------------------------
    def submit_one(self, run: str) -> str:
        """Submit one task; returns its id."""
        raise NotImplementedError

    def submit_many(self, run: str, n: int) -> None:
        if not self.batch:
            parallel([lambda: self.submit_one(run) for _ in range(n)], SUBMITTERS)
            return
        sizes = [min(API_BATCH, n - start) for start in range(0, n, API_BATCH)]
        parallel([functools.partial(self.submit_batch, run, size) for size in sizes], SUBMITTERS)

    def submit_batch(self, run: str, size: int) -> None:
        raise NotImplementedError

    def done(self, run: str) -> int:
        """How many of this run's tasks are terminal."""
        assert self.stack.events is not None
        return self.stack.events.count("done", run)

    def wait_done(self, run: str, n: int, timeout: float) -> float:
        """Block until n tasks of ``run`` are terminal; returns when (unix time)."""
        assert self.stack.events is not None
        if not self.stack.events.wait("done", run, n, timeout):
            raise TimeoutError(f"{self.key}: {self.done(run)} of {n} tasks terminal after {timeout:.0f}s")
        return self.stack.events.last("done", run)

    def verify(self) -> None:
        """Check, straight from moto, that ``self.expected`` tasks recorded success in total."""

    def cpu_pids(self) -> dict[str, int]:
        pids = {}
        if self.worker is not None:
            pids["worker"] = self.worker.pid
        if self.api is not None:
            pids["api"] = self.api.pid
        return pids

    def _wait_ready_event(self, child: Child, timeout: float = 60.0) -> None:
        assert self.stack.events is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.stack.events.wait("ready", self._ready_tag, 1, 0.2):
                return
            if not child.alive():
                raise NotReady(f"{self.key}: worker exited with {child.proc.returncode} (see its log)")
        raise NotReady(f"{self.key}: worker not ready within {timeout:.0f}s")


# -- Conveyor ----------------------------------------------------------------------------

_FINISHED = re.compile(r"^conveyor_tasks_finished_total\{([^}]*)\}\s+([0-9.e+]+)$", re.M)


@dataclass
class ConveyorSystem(System):
    settings: Any = None
    api_url: str = ""
    workers: int = 1  # worker processes on the one queue
    metrics_urls: list[str] = field(default_factory=list)
    more: list[Child] = field(default_factory=list)  # the worker processes after the first
    http: httpx.Client | None = None
    _baseline: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        default = "conveyor-batch" if self.batch else "conveyor"
        self.key = self.key or (f"conveyor-{self.workers}w" if self.workers > 1 else default)
        label = "Conveyor, batch submit" if self.batch else "Conveyor"
        self.label = self.label or (f"{label}, {self.workers} workers" if self.workers > 1 else label)

    def env(self, **extra: str) -> dict[str, str]:
        s = self.settings
        return self.stack.child_env(
            CONVEYOR_QUEUE=s.queue,
            CONVEYOR_DLQ=s.dlq,
            CONVEYOR_TABLE=s.table,
            CONVEYOR_BUCKET=s.bucket,
            CONVEYOR_TASKTYPES=str(self.stack.tasktypes),
            CONVEYOR_LOG_LEVEL="WARNING",
            CONVEYOR_AUTH_TOKENS_FILE=str(self.stack.tokens_file),
            # The per-token rate limit is a policy cap, not a cost: off, so it never
            # decides a throughput figure.
            CONVEYOR_RATE_LIMIT="off",
            **extra,
        )

    def setup(self) -> None:
        from conveyor.aws import AwsBackend
        from conveyor.aws.provision import provision
        from conveyor.settings import Settings

        name = unique("cv")
        self.settings = Settings.from_env(
            queue=name, dlq=name + "-dlq", table=name, bucket=name, tasktypes=str(self.stack.tasktypes)
        )
        self.queue_url = provision(AwsBackend(self.settings), bucket=False)["queue"]
        port = free_port()
        self.api = self.stack.spawn(
            f"{self.key}-api",
            ["-m", "api.main"],
            self.env(CONVEYOR_API_PORT=str(port), CONVEYOR_API_HOST="127.0.0.1"),
        )
        self.api_url = f"http://127.0.0.1:{port}"
        wait_http(self.api_url + "/healthz", timeout=60, proc=self.api.proc)
        self.http = httpx.Client(
            base_url=self.api_url,
            headers={"Authorization": f"Bearer {self.stack.token}"},
            limits=httpx.Limits(max_connections=64),
            timeout=60,
        )

    @property
    def tags(self) -> list[str]:
        return [self.settings.table]  # the queue, its DLQ and the table share the name

    def teardown(self) -> None:
        super().teardown()
        if self.http is not None:
            self.http.close()

    def start_worker(self, **options: Any) -> Child:
        self.quiesce()
        extra = {"CONVEYOR_POLL_WAIT_SECONDS": str(self.poll_wait)} if self.stack.poll_wait else {}
        started: list[Child] = []
        self.metrics_urls = []
        for i in range(self.workers):
            port = free_port()
            started.append(
                self.stack.spawn(
                    f"{self.key}-worker" + (f"-{i + 1}" if i else ""),
                    ["-m", "worker.main"],
                    self.env(
                        CONVEYOR_WORKER_METRICS_PORT=str(port),
                        CONVEYOR_HANDLER_MODULES="benchmarks.conveyor_handlers",
                        **extra,
                    ),
                )
            )
            self.metrics_urls.append(f"http://127.0.0.1:{port}/metrics")
        self.worker, self.more = started[0], started[1:]
        for child, url in zip(started, self.metrics_urls, strict=True):
            wait_http(url, timeout=60, proc=child.proc)
        # Ready once each has registered (its first heartbeat comes just before it receives).
        registry = DynamoWorkerRegistry(self.stack.direct("dynamodb"), self.settings.table)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            registered = {w.pid for w in registry.workers()}
            if all(child.pid in registered for child in started):
                self._baseline = {}
                return self.worker
            time.sleep(0.1)
        raise NotReady(f"{self.key}: worker did not register")

    def stop_worker(self) -> None:
        for child in self.more:
            child.kill()
        self.more = []
        super().stop_worker()

    def cpu_pids(self) -> dict[str, int]:
        pids = super().cpu_pids()
        pids |= {f"worker-{i + 2}": child.pid for i, child in enumerate(self.more)}
        return pids

    def submit_one(self, run: str) -> str:
        assert self.http is not None
        r = self.http.post("/v1/tasks", json={"type": "bench-noop", "payload": {"run": run}})
        if r.status_code != 202:
            raise RuntimeError(f"submit answered {r.status_code}: {r.text[:300]}")
        return str(r.json()["id"])

    def submit_batch(self, run: str, size: int) -> None:
        assert self.http is not None
        body = {"tasks": [{"type": "bench-noop", "payload": {"run": run}} for _ in range(size)]}
        r = self.http.post("/v1/tasks/batch", json=body)
        if r.status_code != 202:
            raise RuntimeError(f"batch submit answered {r.status_code}: {r.text[:300]}")

    def _succeeded(self) -> float:
        total = 0.0
        for url in self.metrics_urls:
            with urllib.request.urlopen(url, timeout=5) as resp:
                text = resp.read().decode()
            total += sum(
                float(value) for labels, value in _FINISHED.findall(text) if 'outcome="succeeded"' in labels
            )
        return total

    def mark(self, run: str) -> None:
        """Remember the worker's counter before a run (the worker lives across runs)."""
        self._baseline[run] = self._succeeded()

    def done(self, run: str) -> int:
        return int(self._succeeded() - self._baseline.get(run, 0.0))

    def wait_done(self, run: str, n: int, timeout: float) -> float:
        # The worker's own counter of recorded successes: it moves after the conditional
        # finish write succeeded, i.e. when the task is terminal in DynamoDB.
        # Scraping costs the worker CPU (it reads /proc for the process metrics), which would
        # count in its CPU per task: wait without scraping until every handler has reported
        # its start (the finish is one write later), then scrape often, so the clock stops
        # within ~20 ms of the last finish.
        assert self.stack.events is not None
        deadline = time.monotonic() + timeout
        self.stack.events.wait("start", run, n, timeout)
        while time.monotonic() < deadline:
            try:
                if self.done(run) >= n:
                    return time.time()
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.02)
        raise TimeoutError(f"{self.key}: {self.done(run)} of {n} tasks terminal after {timeout:.0f}s")

    def verify(self) -> None:
        expected = self.expected
        table = self.stack.direct("dynamodb")
        counts = {}
        for status in ("succeeded", "failed", "running"):
            args: dict[str, Any] = {
                "TableName": self.settings.table,
                "IndexName": "status-index",
                "KeyConditionExpression": "#s = :v",
                "ExpressionAttributeNames": {"#s": "status", "#t": "type"},
                "ExpressionAttributeValues": {":v": {"S": status}, ":t": {"S": "bench-noop"}},
                # Only the benchmark's tasks: the example TaskTypes' schedules run too.
                "FilterExpression": "#t = :t",
                "Select": "COUNT",
            }
            total = 0
            while True:
                out = table.query(**args)
                total += out["Count"]
                if "LastEvaluatedKey" not in out:
                    break
                args["ExclusiveStartKey"] = out["LastEvaluatedKey"]
            counts[status] = total
        # (Tasks left ``queued`` are the submit benchmark's, which runs no worker.)
        if counts["succeeded"] != expected or counts["failed"] or counts["running"]:
            raise AssertionError(
                f"{self.key}: expected {expected} succeeded tasks, found {counts}; "
                f"succeeded by type and payload: {self._succeeded_by_payload()}"
            )

    def _succeeded_by_payload(self) -> dict[str, int]:
        """Which submits the succeeded records came from (the diagnosis of a failed check)."""
        table = self.stack.direct("dynamodb")
        found: dict[str, int] = {}
        args: dict[str, Any] = {"TableName": self.settings.table}
        while True:
            out = table.scan(**args)
            for item in out["Items"]:
                if item.get("status", {}).get("S") == "succeeded":
                    key = f"{item.get('type', {}).get('S')} {item.get('payload', {}).get('S', '')[:60]}"
                    found[key] = found.get(key, 0) + 1
            if "LastEvaluatedKey" not in out:
                return found
            args["ExclusiveStartKey"] = out["LastEvaluatedKey"]


# -- Celery ------------------------------------------------------------------------------


@dataclass
class CelerySystem(System):
    backend: bool = False
    pool: str = "threads"  # "" = Celery's default (prefork, one child per core)
    queue: str = ""
    table: str = ""
    app: Any = None
    default_poll_wait: int = 11  # kombu's 10 s long poll, then its 1 s polling interval

    def __post_init__(self) -> None:
        self.key = self.key or ("celery-dynamodb" if self.backend else "celery")
        self.label = self.label or ("Celery + DynamoDB results" if self.backend else "Celery")

    @property
    def broker_url(self) -> str:
        host, port = self.stack.endpoint.removeprefix("http://").split(":")
        return f"sqs://bench:bench@{host}:{port}"

    @property
    def backend_url(self) -> str | None:
        if not self.backend:
            return None
        return f"dynamodb://bench:bench@{self.stack.endpoint.removeprefix('http://')}/{self.table}"

    def setup(self) -> None:
        from benchmarks.celery_app import make_app

        self.queue = unique("celery")
        # Created up front with kombu's attributes, so depth can be sampled from the start.
        sqs = self.stack.direct("sqs")
        self.queue_url = sqs.create_queue(QueueName=self.queue, Attributes={"VisibilityTimeout": "1800"})[
            "QueueUrl"
        ]
        if self.backend:
            self.table = unique("celery-results")
            floor.create_table(self.stack.direct("dynamodb"), self.table)
        self.app = make_app(self.broker_url, self.queue, self.backend_url, self.stack.poll_wait)

    @property
    def tags(self) -> list[str]:
        return [self.queue] + ([self.table] if self.backend else [])

    def start_worker(self, **options: Any) -> Child:
        self.quiesce()
        self._ready_tag = uuid.uuid4().hex[:8]  # fresh per start: an earlier ready event must not count
        args = ["-m", "celery", "-A", "benchmarks.celery_app", "worker", "-Q", self.queue, "-l", "WARNING"]
        pool = options.get("pool", self.pool)
        if pool:
            args += ["--pool", pool, "--concurrency", str(WORKER_CONCURRENCY)]
        env = self.stack.child_env(
            BENCH_BROKER_URL=self.broker_url,
            BENCH_QUEUE=self.queue,
            BENCH_RESULT_BACKEND=self.backend_url or "",
            BENCH_READY=self._ready_tag,
            BENCH_POLL_WAIT=str(self.stack.poll_wait or ""),
        )
        self.worker = self.stack.spawn(f"{self.key}-worker", args, env)
        self._wait_ready_event(self.worker)
        return self.worker

    def teardown(self) -> None:
        super().teardown()
        if self.app is not None:
            self.app.close()

    def submit_one(self, run: str) -> str:
        task_id = uuid.uuid4().hex
        self.app.send_task("bench.noop", args=[run], task_id=task_id)
        return task_id

    def verify(self) -> None:
        expected = self.expected
        if not self.backend:
            return  # no state to look at; the done events were counted
        out = self.stack.direct("dynamodb").scan(TableName=self.table, Select="COUNT")
        total = out["Count"]
        while "LastEvaluatedKey" in out:
            out = self.stack.direct("dynamodb").scan(
                TableName=self.table, Select="COUNT", ExclusiveStartKey=out["LastEvaluatedKey"]
            )
            total += out["Count"]
        if total != expected:
            raise AssertionError(f"{self.key}: expected {expected} results in DynamoDB, found {total}")


# -- the floor ---------------------------------------------------------------------------


@dataclass
class FloorSystem(System):
    table: str = ""
    proxied_url: str = ""
    clients: tuple[Any, Any] | None = None

    def __post_init__(self) -> None:
        self.key = self.key or ("floor-batch" if self.batch else "floor")
        self.label = self.label or ("floor, batch submit" if self.batch else "floor (boto3)")

    def setup(self) -> None:
        name = unique("floor")
        sqs = self.stack.direct("sqs")
        self.queue_url = sqs.create_queue(
            QueueName=name, Attributes={"VisibilityTimeout": "30", "ReceiveMessageWaitTimeSeconds": "20"}
        )["QueueUrl"]
        # moto names the queue by the host asked: the proxied URL keeps calls on the proxy.
        self.proxied_url = self.stack.endpoint + "/" + self.queue_url.split("/", 3)[3]
        self.table = name
        floor.create_table(self.stack.direct("dynamodb"), self.table)
        self.clients = floor.clients(self.stack.endpoint, 64)

    @property
    def tags(self) -> list[str]:
        return [self.table]

    def start_worker(self, **options: Any) -> Child:
        self.quiesce()
        self._ready_tag = uuid.uuid4().hex[:8]  # fresh per start: an earlier ready event must not count
        args = ["-m", "benchmarks.floor", "--endpoint", self.stack.endpoint, "--queue-url", self.proxied_url]
        args += [
            "--table",
            self.table,
            "--concurrency",
            str(WORKER_CONCURRENCY),
            "--wait",
            str(self.poll_wait),
        ]
        self.worker = self.stack.spawn(
            f"{self.key}-worker", args, self.stack.child_env(BENCH_READY=self._ready_tag)
        )
        self._wait_ready_event(self.worker)
        return self.worker

    def submit_one(self, run: str) -> str:
        assert self.clients is not None
        task_id = uuid.uuid4().hex
        floor.submit(*self.clients, self.proxied_url, self.table, task_id, run)
        return task_id

    def submit_batch(self, run: str, size: int) -> None:
        assert self.clients is not None
        ids = [uuid.uuid4().hex for _ in range(size)]
        floor.submit_batch(*self.clients, self.proxied_url, self.table, ids, run)

    def verify(self) -> None:
        expected = self.expected
        dynamodb = self.stack.direct("dynamodb")
        args: dict[str, Any] = {
            "TableName": self.table,
            "Select": "COUNT",
            "FilterExpression": "#s = :d",
            "ExpressionAttributeNames": {"#s": "status"},
            "ExpressionAttributeValues": {":d": {"S": "succeeded"}},
        }
        total = 0
        while True:
            out = dynamodb.scan(**args)
            total += out["Count"]
            if "LastEvaluatedKey" not in out:
                break
            args["ExclusiveStartKey"] = out["LastEvaluatedKey"]
        if total != expected:
            raise AssertionError(f"{self.key}: expected {expected} succeeded records, found {total}")


def get(stack: Stack, key: str) -> System:
    """The system ``key``, set up on first use and kept for the other parts of the run
    (its API process and resources); the stack tears it down at the end."""
    if key not in stack.systems:
        system = make(stack, key)
        stack.systems[key] = system
        system.setup()
    found: System = stack.systems[key]
    return found


def make(stack: Stack, key: str) -> System:
    factories: dict[str, Callable[[], System]] = {
        "conveyor": lambda: ConveyorSystem(stack),
        "conveyor-batch": lambda: ConveyorSystem(stack, batch=True),
        "conveyor-2w": lambda: ConveyorSystem(stack, workers=2),
        "celery": lambda: CelerySystem(stack),
        "celery-dynamodb": lambda: CelerySystem(stack, backend=True),
        "floor": lambda: FloorSystem(stack),
        "floor-batch": lambda: FloorSystem(stack, batch=True),
    }
    return factories[key]()


ALL = ["conveyor", "conveyor-batch", "conveyor-2w", "celery", "celery-dynamodb", "floor", "floor-batch"]
