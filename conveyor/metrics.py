"""Prometheus metrics: one prefix, base units, ``_total`` counters, no ids in labels.

API and worker each build their set into a registry of their own (the default one in
the service processes), so tests can run several in one process.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

PREFIX = "conveyor"

# Task durations run from milliseconds to hours.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


class ApiMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.submitted = Counter(
            f"{PREFIX}_tasks_submitted_total", "Tasks accepted by the API.", ["type"], registry=registry
        )
        self.requests = Counter(
            f"{PREFIX}_http_requests_total",
            "HTTP requests answered, by route template, method and status code.",
            ["route", "method", "code"],
            registry=registry,
        )
        self.latency = Histogram(
            f"{PREFIX}_http_request_duration_seconds",
            "Time to answer an HTTP request.",
            ["route", "method"],
            buckets=HTTP_BUCKETS,
            registry=registry,
        )


# How late a schedule's task is submitted after its slot (plus jitter) came due.
LAG_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)


class SchedulerMetrics:
    """The API's firing loop (conveyor/scheduler.py). ``schedule`` is namespace/name: one
    series per TaskSchedule, which cluster admins create, never per task."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.fires = Counter(
            f"{PREFIX}_schedule_fires_total",
            "Schedule slots handled, by outcome (submitted, catch_up, skipped_overlap, "
            "skipped_deadline, failed).",
            ["schedule", "outcome"],
            registry=registry,
        )
        self.lag = Histogram(
            f"{PREFIX}_schedule_lag_seconds",
            "Time from when a slot came due (after its jitter) to when its task was submitted.",
            buckets=LAG_BUCKETS,
            registry=registry,
        )


class WorkerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.started = Counter(
            f"{PREFIX}_tasks_started_total", "Task attempts started.", ["type"], registry=registry
        )
        self.finished = Counter(
            f"{PREFIX}_tasks_finished_total",
            "Task attempts finished, by outcome (succeeded, failed, retried, cancelled).",
            ["type", "outcome"],
            registry=registry,
        )
        self.duration = Histogram(
            f"{PREFIX}_task_duration_seconds",
            "Time a handler ran, per attempt.",
            ["type"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.queue_wait = Histogram(
            f"{PREFIX}_task_queue_wait_seconds",
            "Time from when a task could run (created, or its run_at) to when it started.",
            ["type"],
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.in_progress = Gauge(
            f"{PREFIX}_tasks_in_progress", "Handlers running now.", ["type"], registry=registry
        )
        self.concurrency = Gauge(
            f"{PREFIX}_worker_concurrency", "Task slots of this worker.", registry=registry
        )
        self.busy = Gauge(
            f"{PREFIX}_worker_busy_slots", "Slots of this worker holding a task.", registry=registry
        )
        # Fleet-wide flow control (docs/TASKTYPES.md).
        self.throttled = Counter(
            f"{PREFIX}_throttled_total",
            "Task starts held back by a fleet-wide limit of their type, by reason (concurrency: "
            "each look that found the slots full; rate: each reservation of a later turn).",
            ["type", "reason"],
            registry=registry,
        )
        self.slots_in_use = Gauge(
            f"{PREFIX}_concurrency_slots_in_use",
            "Fleet-wide concurrency slots this worker's tasks hold (sum over workers: the fleet's).",
            ["type"],
            registry=registry,
        )
        self.concurrency_limit = Gauge(
            f"{PREFIX}_concurrency_limit",
            "The type's fleet-wide concurrency limit (per key when it has one).",
            ["type"],
            registry=registry,
        )


class AwsMetrics:
    """The AWS calls of a process (API or worker), as botocore sees each attempt."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.throttled = Counter(
            f"{PREFIX}_aws_throttled_total",
            "AWS answers that refused a call for capacity, each attempt (botocore retries "
            "them), by service, operation and reason: DynamoDB's throttling reason when it "
            "gives one (IndexWriteKeyRangeThroughputExceeded: one index key past its write "
            "rate), else the error code.",
            ["service", "operation", "reason"],
            registry=registry,
        )

    def count_throttle(self, service: str, operation: str, reason: str) -> None:
        self.throttled.labels(service, operation, reason).inc()


class QueueCollector(Collector):
    """Queue and table gauges, read at scrape time from SQS/DynamoDB through a cache so a
    busy Prometheus cannot turn into an AWS bill."""

    def __init__(self, read: Callable[[], dict[str, float]], ttl: float = 10.0) -> None:
        self.read = read
        self.ttl = ttl
        self._cached: tuple[float, dict[str, float]] | None = None

    def _values(self) -> dict[str, float]:
        if self._cached is None or time.monotonic() - self._cached[0] > self.ttl:
            try:
                self._cached = (time.monotonic(), self.read())
            except Exception:
                return self._cached[1] if self._cached else {}
        return self._cached[1]

    def collect(self) -> Iterable[GaugeMetricFamily]:
        v = self._values()
        if not v:
            return
        messages = GaugeMetricFamily(
            f"{PREFIX}_queue_messages",
            "Messages in the SQS queues (ApproximateNumberOf*), by queue and state.",
            labels=["queue", "state"],
        )
        for queue in ("main", "dlq"):
            for state in ("visible", "in_flight", "delayed"):
                key = f"{queue}_{state}"
                if key in v:
                    messages.add_metric([queue, state], v[key])
        yield messages
        by_priority = GaugeMetricFamily(
            f"{PREFIX}_queue_priority_messages",
            "Messages in each priority level's SQS queue, by state (queue=main is their sum).",
            labels=["priority", "state"],
        )
        for priority in ("high", "normal", "low"):
            for state in ("visible", "in_flight", "delayed"):
                key = f"priority_{priority}_{state}"
                if key in v:
                    by_priority.add_metric([priority, state], v[key])
        yield by_priority
        tasks = GaugeMetricFamily(f"{PREFIX}_tasks", "Task records by state (DynamoDB).", labels=["status"])
        for key, value in v.items():
            if key.startswith("tasks_"):
                tasks.add_metric([key.removeprefix("tasks_")], value)
        yield tasks
        yield GaugeMetricFamily(
            f"{PREFIX}_workers", "Workers with a recent heartbeat.", value=v.get("workers", 0)
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_oldest_queued_task_age_seconds",
            "Age of the oldest task still queued and due (0 when none).",
            value=v.get("oldest_queued_age_seconds", 0),
        )
