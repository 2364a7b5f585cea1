"""The report: docs/BENCHMARKS.md and its chart, from one run's results.

Every line carries its ratio to Celery and to the floor. A ratio is "n/a" when the
reference was not measured in this run (``--only``, or a smoke run).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import sizing
from benchmarks.costs import PRICE_NOTE, Cost, Layout, cost_per_task
from benchmarks.latency import LatencyRun
from benchmarks.live import LABELS as LIVE_LABELS
from benchmarks.live import STREAMS, LiveRun
from benchmarks.stats import Spread, ratio
from benchmarks.submit import SubmitRun
from benchmarks.throughput import Run

LABELS = {
    "conveyor": "Conveyor",
    "conveyor-batch": "Conveyor, batch submit",
    "conveyor-2w": "Conveyor, 2 workers",
    "celery": "Celery (results off)",
    "celery-dynamodb": "Celery + DynamoDB results",
    "floor": "floor (boto3)",
    "floor-batch": "floor, batch submit",
}
SHORT = {
    "conveyor": "Conveyor",
    "conveyor-batch": "Conveyor\nbatch submit",
    "conveyor-2w": "Conveyor\n2 workers",
    "celery": "Celery",
    "celery-dynamodb": "Celery +\nDynamoDB",
    "floor": "floor",
    "floor-batch": "floor\nbatch submit",
}
# The floor a system is held against: batch submitters against the batching floor.
FLOOR_OF = {"conveyor-batch": "floor-batch", "floor-batch": "floor-batch"}
SECTIONS = [
    "## Targets",
    "## 1. End-to-end throughput",
    "## 2. End-to-end throughput with 15 ms per AWS call",
    "## 3. AWS requests and cost per task",
    "## 4. Latency from submit to handler start",
    "## 5. API submit throughput and latency",
    "## 6. Peak RSS of a worker process",
    "## 7. Live streams: from a change to the client, and store reads",
    "## 8. One worker process against two",
    "## 9. Sizing for real AWS",
    "## 10. The cost of fleet-wide limits",
    "## What bounds it",
]


METHOD = [
    "- **One AWS for all**: one moto server process (`conveyor.local.MotoServer`) for the whole "
    "run; every system reaches it through one reverse proxy (`benchmarks/proxy.py`) that counts "
    "requests by API action and, in section 2, holds each one 15 ms. The harness's own checks "
    "(queue depth twice a second, the final record counts) go straight to moto, uncounted.",
    "- **Conveyor**: the real API process (`python -m api.main`, bearer-token auth on) and one "
    "real worker process (`python -m worker.main`), default settings (8 slots, 20 s long polls). "
    "The handler `bench-noop` is a sync no-op that sends one UDP datagram to the harness. "
    "*Conveyor, 2 workers* is the same with two worker processes on one queue (section 8).",
    "- **Celery 5** on kombu's SQS transport (`benchmarks/celery_app.py`): one worker process, "
    "thread pool with 8 slots for the end-to-end runs, its default prefork pool for the latency "
    "runs; results off, or on Celery's own DynamoDB backend. Celery acknowledges (deletes) a "
    "message when it starts the task (`acks_late=False`, its default): a worker killed mid-task "
    "loses it, which Conveyor's guarantees exclude.",
    "- **The floor** (`benchmarks/floor.py`): plain boto3 making only the calls Conveyor's "
    "guarantees need: PutItem + SendMessage to submit, then ReceiveMessage (only for free "
    "slots), a conditional UpdateItem claim, the handler, a conditional UpdateItem finish, and "
    "a DeleteMessageBatch; no indexes, heartbeats, metrics, retries or validation.",
    "- **Runs**: every system's processes start once and stay up; the systems take turns, run "
    "by run (run 1 of each, then run 2 of each, ...), so a drift in the machine's speed falls "
    "on all alike. Each run submits N tasks from 8 concurrent clients while the worker "
    "consumes, and waits for the queue to be empty before the next. The other systems' "
    "workers sit idle meanwhile (long polls, heartbeats); the proxy counts each request under "
    "the queue or table it names, so each system's counts are its own. The same N, the same "
    "one worker process and the same 8 slots for every system.",
    "- **Reproduce**: `make bench` (this report), `make bench-quick` (a smoke run), "
    "`python -m benchmarks --help` (subsets, N, runs), "
    "`python -m benchmarks --from-results benchmarks/results/latest.json` (re-render).",
]


@dataclass
class Results:
    meta: dict[str, Any]
    throughput: list[Run] = field(default_factory=list)
    latency: list[LatencyRun] = field(default_factory=list)
    submit: list[SubmitRun] = field(default_factory=list)
    calls: dict[str, dict[str, float]] = field(default_factory=dict)  # moto CPU ms per call
    profile: list[str] = field(default_factory=list)  # lines of the worker profile's summary
    live: list[LiveRun] = field(default_factory=list)
    flow: list[dict[str, Any]] = field(default_factory=list)  # benchmarks.flow.Figures.to_json()

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Results:
        def keep(row: dict[str, Any], *names: str) -> dict[str, Any]:
            return {k: row[k] for k in names}

        run_fields = [f for f in Run.__dataclass_fields__]
        return cls(
            meta=data["meta"],
            throughput=[Run(**keep(r, *run_fields)) for r in data["throughput"]],
            latency=[
                LatencyRun(r["system"], r["samples"], r.get("submit_samples", [])) for r in data["latency"]
            ],
            submit=[
                SubmitRun(**keep(r, "system", "clients", "seconds", "samples"), cpu=r.get("cpu", {}))
                for r in data["submit"]
            ],
            calls=data.get("calls", {}),
            profile=data.get("profile", []),
            live=[
                LiveRun(**keep(r, "stream", "clients", "seconds", "reads", "samples"))
                for r in data.get("live", [])
            ],
            flow=data.get("flow", []),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "meta": self.meta,
            "throughput": [r.to_json() for r in self.throughput],
            "latency": [r.to_json() for r in self.latency],
            "submit": [r.to_json() for r in self.submit],
            "calls": self.calls,
            "profile": self.profile,
            "live": [r.to_json() for r in self.live],
            "flow": self.flow,
        }


# -- formatting ------------------------------------------------------------------------


def x(value: float) -> str:
    """A ratio."""
    return "n/a" if value != value or math.isinf(value) else f"{value:.2f}x"


def ms(value: float) -> str:
    return "n/a" if value != value else f"{value * 1000:.0f}"


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(row) + " |" for row in rows]
    return out


def median_of(values: Iterable[float]) -> float:
    values = [v for v in values if v == v]
    return statistics.median(values) if values else float("nan")


# -- the measurements, summarised -------------------------------------------------------


@dataclass
class Summary:
    results: Results

    def runs(self, system: str, latency: float) -> list[Run]:
        return [r for r in self.results.throughput if r.system == system and r.latency_ms == latency]

    def throughput(self, system: str, latency: float) -> Spread:
        return Spread.of([r.throughput for r in self.runs(system, latency)])

    def cost(self, system: str, latency: float) -> Cost | None:
        runs = self.runs(system, latency)
        if not runs:
            return None
        costs = [cost_per_task(system, r.requests, r.items, r.n) for r in runs]
        return Cost(
            median_of(c.sqs_requests for c in costs),
            median_of(c.dynamodb_requests for c in costs),
            median_of(c.wru for c in costs),
            median_of(c.rru for c in costs),
        )

    def per_action(self, system: str, latency: float) -> dict[str, float]:
        runs = self.runs(system, latency)
        actions = sorted({a for r in runs for a in r.requests})
        return {a: median_of(r.requests.get(a, 0) / r.n for r in runs) for a in actions}

    def per_receive(self, system: str, latency: float) -> float:
        return median_of(
            r.items.get("sqs.ReceiveMessage.messages", 0) / r.requests["sqs.ReceiveMessage"]
            for r in self.runs(system, latency)
            if r.requests.get("sqs.ReceiveMessage")
        )

    def latency(self, system: str) -> tuple[Spread, Spread]:
        runs = [r for r in self.results.latency if r.system == system]
        return Spread.of([r.p50 for r in runs]), Spread.of([r.p99 for r in runs])

    def submit(self, system: str, clients: int) -> tuple[Spread, Spread, Spread]:
        runs = [r for r in self.results.submit if r.system == system and r.clients == clients]
        return (
            Spread.of([r.throughput for r in runs]),
            Spread.of([r.p50 for r in runs]),
            Spread.of([r.p99 for r in runs]),
        )

    def rss(self, system: str) -> float:
        # One worker process serves every run of its system: its peak after the last one.
        return max((r.rss_mb for r in self.runs_of(system)), default=float("nan"))

    def runs_of(self, system: str) -> list[Run]:
        return [r for r in self.results.throughput if r.system == system]

    def cpu_per_task(self, system: str, latency: float, process: str) -> float:
        return median_of(r.cpu.get(process, float("nan")) / r.n for r in self.runs(system, latency))

    def cpu_spread(self, system: str, latency: float, process: str) -> Spread:
        """CPU seconds per task of one process, median (min-max) over the runs; no runs if the
        system has no such process."""
        return Spread.of([r.cpu[process] / r.n for r in self.runs(system, latency) if process in r.cpu])

    def submit_cpu(self, system: str, clients: int, process: str) -> Spread:
        """CPU seconds per submit of ``process`` ("api", or "client": the harness's threads)."""
        runs = [r for r in self.results.submit if r.system == system and r.clients == clients]
        return Spread.of([r.cpu_per_submit(process) for r in runs if process in r.cpu])

    def own_cpu(self, system: str, latency: float) -> tuple[float, float, str]:
        """CPU seconds per task of the system's own code, split (submit side, worker side),
        and where the submit side was read. Conveyor: its API process in the same end-to-end
        runs. The floor submits from the harness's threads, so its submit side is the
        harness's CPU per submit in the submit runs (section 5) at the client count nearest
        the end-to-end runs' submitters."""
        worker = self.cpu_per_task(system, latency, "worker")
        api = self.cpu_per_task(system, latency, "api")
        if api == api:
            return api, worker, "API process"
        counts = sorted({r.clients for r in self.results.submit if r.system == system})
        if not counts:
            return float("nan"), worker, "not measured"
        nearest = min(counts, key=lambda c: abs(c - self.results.meta.get("submitters", 8)))
        return self.submit_cpu(system, nearest, "client").median, worker, f"client, {nearest} clients"

    def busy(self, system: str, latency: float, process: str = "moto") -> float:
        return median_of(r.cpu.get(process, 0.0) / r.cpu["wall"] for r in self.runs(system, latency))

    def depth(self, system: str, latency: float) -> int:
        return max((r.max_depth for r in self.runs(system, latency)), default=0)

    @property
    def systems(self) -> list[str]:
        seen = [r.system for r in self.results.throughput]
        return [s for s in LABELS if s in seen]


# -- sections ----------------------------------------------------------------------------


def _throughput_section(s: Summary, latency: float) -> list[str]:
    rows = []
    for system in s.systems:
        t = s.throughput(system, latency)
        if not t.runs:
            continue
        floor = s.throughput(FLOOR_OF.get(system, "floor"), latency).median
        rows.append(
            [
                LABELS[system],
                t.fmt(1),
                x(ratio(t.median, s.throughput("celery", latency).median)),
                x(ratio(t.median, s.throughput("celery-dynamodb", latency).median)),
                x(ratio(t.median, floor)) + f" of {LABELS[FLOOR_OF.get(system, 'floor')]}",
                str(s.depth(system, latency)),
                f"{s.busy(system, latency):.0%}",
                f"{s.cpu_per_task(system, latency, 'moto') * 1000:.1f}",
                s.cpu_spread(system, latency, "api").fmt(1, 1000),
                s.cpu_spread(system, latency, "worker").fmt(1, 1000),
            ]
        )
    return table(
        [
            "system",
            "tasks/s, median (min-max)",
            "vs Celery",
            "vs Celery + DynamoDB",
            "vs floor",
            "max queue depth",
            "moto busy",
            "moto CPU ms/task",
            "API CPU ms/task",
            "worker CPU ms/task",
        ],
        rows,
    )


def _cost_section(s: Summary, latencies: list[float]) -> list[str]:
    out: list[str] = []
    base = latencies[0]
    celery = s.cost("celery", base)
    rows = []
    for system in s.systems:
        c = s.cost(system, base)
        if c is None:
            continue
        floor = s.cost(FLOOR_OF.get(system, "floor"), base)
        per_latency = " / ".join(
            f"{cc.requests:.2f}" for cc in (s.cost(system, lat) for lat in latencies) if cc is not None
        )
        rows.append(
            [
                LABELS[system],
                per_latency,
                x(ratio(c.requests, celery.requests if celery else float("nan"))),
                x(ratio(c.requests, floor.requests if floor else float("nan"))),
                f"{c.wru:.1f}",
                f"${c.sqs_usd:.2f} + ${c.dynamodb_usd:.2f} = **${c.usd:.2f}**",
                x(ratio(c.usd, celery.usd if celery else float("nan"))),
                x(ratio(c.usd, floor.usd if floor else float("nan"))),
            ]
        )
    lat_names = " / ".join(f"+{lat:g} ms" for lat in latencies)
    out += table(
        [
            "system",
            f"AWS requests/task ({lat_names})",
            "vs Celery",
            "vs floor",
            "DynamoDB write units/task",
            "$ per million tasks (SQS + DynamoDB)",
            "cost vs Celery",
            "cost vs floor",
        ],
        rows,
    )
    out += ["", f"By API action, requests per task (+{base:g} ms runs, medians):", ""]
    actions = sorted({a for system in s.systems for a in s.per_action(system, base)})
    out += table(
        ["action", *(LABELS[system] for system in s.systems)],
        [[a, *(f"{s.per_action(system, base).get(a, 0.0):.3f}" for system in s.systems)] for a in actions]
        + [["messages per ReceiveMessage", *(f"{s.per_receive(system, base):.1f}" for system in s.systems)]],
    )
    conveyor = Layout.conveyor()
    out += [
        "",
        f"Prices: {PRICE_NOTE}",
        "",
        f"Write units: a Conveyor task record costs {conveyor.insert:g} units to create and "
        f"{conveyor.update:g} per status change, measured from the store's own writes (the "
        "table and its two task indexes at create; a status change moves the status index's "
        "entry and leaves the keys-only type index alone), "
        "against 1 for an unindexed table: see "
        "`benchmarks/costs.py`. Counts include every call the processes made during the run "
        "(idle long polls, heartbeats, queue-URL look-ups), not only the per-task ones.",
    ]
    return out


def _latency_section(s: Summary) -> list[str]:
    rows = []
    celery50, _ = s.latency("celery")
    floor50, _ = s.latency("floor")
    for system in ("conveyor", "celery", "floor"):
        p50, p99 = s.latency(system)
        if not p50.runs:
            continue
        submit50 = Spread.of([r.submit_p50 for r in s.results.latency if r.system == system])
        rows.append(
            [
                LABELS[system],
                p50.fmt(0, 1000),
                p99.fmt(0, 1000),
                submit50.fmt(0, 1000),
                x(ratio(p50.median, celery50.median)),
                x(ratio(p50.median, floor50.median)),
            ]
        )
    count = max((len(r.samples) for r in s.results.latency), default=0)
    return [
        f"{count} tasks per run, one at a time on an idle system; the clock starts before the "
        "submit call and stops when the handler reports its start. Default settings: Conveyor's "
        "worker as shipped (8 slots, 20 s long polls, submit through the API), Celery's default "
        "prefork pool (`send_task`), the floor's worker.",
        "",
        *table(
            [
                "system",
                "p50 ms, median (min-max)",
                "p99 ms",
                "of which the submit call, p50 ms",
                "p50 vs Celery",
                "p50 vs floor",
            ],
            rows,
        ),
    ]


def _submit_section(s: Summary) -> list[str]:
    rows = []
    for clients in sorted({r.clients for r in s.results.submit}):
        celery = s.submit("celery", clients)[0].median
        floor = s.submit("floor", clients)[0].median
        for system in ("conveyor", "celery", "floor"):
            rate, p50, p99 = s.submit(system, clients)
            if not rate.runs:
                continue
            api = s.submit_cpu(system, clients, "api")
            rows.append(
                [
                    str(clients),
                    LABELS[system],
                    rate.fmt(1),
                    p50.fmt(0, 1000),
                    p99.fmt(0, 1000),
                    api.fmt(2, 1000) if api.runs else "-",
                    s.submit_cpu(system, clients, "client").fmt(2, 1000),
                    x(ratio(rate.median, celery)),
                    x(ratio(rate.median, floor)),
                ]
            )
    count = max((len(r.samples) for r in s.results.submit), default=0)
    return [
        f"{count} submits per run, no worker running, the queue purged between runs. Conveyor: "
        "`POST /v1/tasks` to the API process (bearer-token auth on, the per-token rate limit "
        "off); Celery: `send_task` (one SendMessage, nothing recorded); floor: boto3 "
        "`PutItem` + `SendMessage`. Clients are threads in the harness process. The systems "
        "take turns run by run. CPU per submit from /proc: the API process's (Conveyor only), "
        "and the harness process's, where the clients run (for Celery and the floor, all of a "
        "submit's own work: the boto3 or kombu calls; for Conveyor, its HTTP client).",
        "",
        *table(
            [
                "clients",
                "system",
                "submits/s",
                "p50 ms",
                "p99 ms",
                "API CPU ms/submit",
                "client CPU ms/submit",
                "vs Celery",
                "vs floor",
            ],
            rows,
        ),
    ]


def _rss_section(s: Summary) -> list[str]:
    celery, floor = s.rss("celery"), s.rss("floor")
    rows = []
    for system in s.systems:
        rss = s.rss(system)
        runs = len(s.runs_of(system))
        rows.append([LABELS[system], f"{rss:.0f}", str(runs), x(ratio(rss, celery)), x(ratio(rss, floor))])
    return [
        "VmHWM (peak resident set) of each system's one worker process, with its pool children "
        "if any, read after the last of its end-to-end runs.",
        "",
        *table(["system", "peak RSS MiB", "after runs", "vs Celery", "vs floor"], rows),
    ]


def _live_section(results: Results) -> list[str]:
    from benchmarks.live import FEED_INTERVAL, WATCH_INTERVAL

    runs = results.live
    if not runs:
        return ["Not run (`--only` left it out)."]
    m = results.meta
    counts = sorted({r.clients for r in runs})
    rows = []
    for stream in STREAMS:
        ones = Spread.of([r.reads_per_second for r in runs if r.stream == stream and r.clients == 1])
        for clients in sorted({r.clients for r in runs if r.stream == stream}):
            mine = [r for r in runs if r.stream == stream and r.clients == clients]
            reads = Spread.of([r.reads_per_second for r in mine])
            rows.append(
                [
                    LIVE_LABELS[stream],
                    str(clients),
                    Spread.of([r.p50 for r in mine]).fmt(0, 1000),
                    Spread.of([r.p95 for r in mine]).fmt(0, 1000),
                    str(max(len(r.samples) for r in mine)),
                    reads.fmt(2),
                    x(ratio(reads.median, ones.median)),
                ]
            )
    return [
        "The API in-process under a real uvicorn server, one per stream (as two API processes), "
        "both over one memory task store: memory isolates the API's own cost (the watcher, the "
        "change feed, the SSE fan-out) from AWS round trips, and the store calls counted are the "
        "ones the streams make, the same a DynamoDB store would get. Each server sees the store "
        "through its own counting view, so each stream's reads are its own. A run connects "
        f"{' then '.join(map(str, counts))} clients to each stream "
        "(async httpx clients in the harness process, auth on), and, once the "
        "clients are connected and the change feed lists the task, writes "
        f"{m.get('live_changes', '?')} progress changes to a running task at random phases of "
        "the polls. Latency: from the store write returning to each client reading the change "
        "off its stream (every client, every change). Reads per second: store calls made by "
        "that stream's API process over the same window, whatever the clients.",
        "",
        f"The shipped poll intervals set the latency: the task watcher reads the followed tasks "
        f"every {WATCH_INTERVAL:g} s (one `get_many` for all of them), the change feed every "
        f"{FEED_INTERVAL:g} s (one page of the queued and one of the running listing, plus one "
        "`get_many` when followed tasks leave both). A change waits on average half an interval "
        "for the next poll. "
        f"Runs: {m.get('live_runs', '?')}; p50 and p95 are each run's, then median (min-max) of "
        "the runs.",
        "",
        *table(
            [
                "stream",
                "clients",
                "change to client p50 ms",
                "p95 ms",
                "samples per run",
                "store reads/s",
                "reads vs 1 client",
            ],
            rows,
        ),
    ]


def _flow_section(results: Results) -> list[str]:
    from benchmarks.flow import TYPES

    rows = results.flow
    if not rows:
        return ["Not run (`--only` left it out)."]
    free = next((r["requests_per_task"] for r in rows if r["type"] == "bench-free"), float("nan"))
    table_rows = []
    for r in rows:
        ops = ", ".join(f"{op} {v:.2f}" for op, v in r["by_operation"].items() if v >= 0.01)
        table_rows.append(
            [
                f"`{r['type']}`",
                f"`{TYPES.get(r['type']) or 'none'}`",
                str(r["tasks"]),
                f"{r['seconds']:.1f}",
                f"{r['requests_per_task']:.2f}",
                x(ratio(r["requests_per_task"], free)),
                ops,
            ]
        )
    return [
        "What a TaskType's fleet-wide limits cost in AWS requests (`benchmarks/flow.py`): one "
        "worker, in-process, on a moto server of its own (not the stack's, nor through its "
        "proxy), runs the same tasks of each type, submitted before it "
        "starts; every request its boto3 clients send, from the first receive to the "
        "last task finished, is counted by operation. Long polls are 1 s. A type with no limit "
        "pays nothing for the feature; a limited one reads its task before the claim and takes "
        "(and gives back) its slot or its rate-limit turn. `bench-roomy` never waits (50 slots "
        "for 8 at once): its cost is the limit's own. `bench-concurrency` has a deep backlog on "
        "2 slots, so tasks over the limit are received, read and re-sent, often more than "
        "once; empty long polls while re-sent tasks wait count too. "
        f"{results.meta.get('flow_tasks', '?')} tasks per type, one run.",
        "",
        *table(
            ["type", "limit", "tasks", "seconds", "requests/task", "vs no limit", "by operation, per task"],
            table_rows,
        ),
    ]


# The like-for-like pairing for the targets against Celery: it records each outcome.
CELERY_PAIR = "celery-dynamodb"
# (added ms per AWS call, Conveyor's throughput at least this many times Celery's)
CELERY_GOALS = ((0.0, 1.0), (15.0, 2.0))


def _workers_section(s: Summary, latencies: list[float]) -> list[str]:
    rows = []
    for latency in latencies:
        one, two = s.throughput("conveyor", latency), s.throughput("conveyor-2w", latency)
        if not one.runs or not two.runs:
            continue
        for system, t in (("conveyor", one), ("conveyor-2w", two)):
            rows.append(
                [
                    f"+{latency:g} ms",
                    LABELS[system],
                    t.fmt(1),
                    x(ratio(t.median, one.median)),
                    f"{s.busy(system, latency):.0%}",
                    f"{s.cpu_per_task(system, latency, 'moto') * 1000:.1f}",
                    s.cpu_spread(system, latency, "worker").fmt(1, 1000),
                    f"{s.busy(system, latency, 'worker'):.0%}",
                ]
            )
    if not rows:
        return ["Not run (`--systems` left out `conveyor` or `conveyor-2w`)."]
    return [
        "Conveyor with one worker process and with two on the same queue (two pods), the two "
        "taking turns with the other systems run by run in the end-to-end runs above (same N, "
        "same submitters). *worker busy*: CPU of all its worker processes over the wall time "
        "(1 = one core). Where moto is near 100% busy, a second worker adds nothing here: it "
        "is moto's one interpreter, not the worker, that sets the rate on this machine; on AWS "
        "the calls are served elsewhere and pods add up to the quotas of section 9.",
        "",
        *table(
            [
                "added latency",
                "system",
                "tasks/s, median (min-max)",
                "vs 1 worker",
                "moto busy",
                "moto CPU ms/task",
                "worker CPU ms/task (all)",
                "worker busy",
            ],
            rows,
        ),
    ]


SIZING_RATES = (100.0, 1_000.0, 10_000.0)
SIZING_RTTS = (0.010, 0.030)


def sizing_inputs(s: Summary, base: float) -> sizing.Inputs | None:
    """The sizing model's inputs from this run: Conveyor, single submit, at +0 ms."""
    c = s.cost("conveyor", base)
    worker = s.cpu_per_task("conveyor", base, "worker")
    api = s.cpu_per_task("conveyor", base, "api")
    if c is None or not worker > 0 or not api > 0:
        return None
    return sizing.Inputs(
        worker_cpu=worker,
        api_cpu=api,
        sqs_requests=c.sqs_requests,
        dynamodb_requests=c.dynamodb_requests,
        wru=c.wru,
        rru=c.rru,
        hot_key_wru=Layout.conveyor().hot_key,
        slots=int(s.results.meta.get("worker_concurrency", 8)),
    )


def _sizing_section(s: Summary, latencies: list[float]) -> list[str]:
    i = sizing_inputs(s, latencies[0])
    if i is None:
        return ["Not computed: needs Conveyor's +0 ms end-to-end runs (worker and API CPU)."]
    sizes = [sizing.size(i, rate, rtt) for rtt in SIZING_RTTS for rate in SIZING_RATES]
    fleet = [
        [
            f"{z.rate:,.0f}",
            f"{z.rtt * 1000:.0f}",
            f"{z.per_pod:.0f} ({z.bound})",
            str(z.worker_pods),
            f"{z.worker_pods_at_cpu} at {z.slots_for_cpu} slots",
            f"{z.worker_vcpu:.1f}",
            f"{z.api_pods} ({z.api_vcpu:.1f})",
        ]
        for z in sizes
    ]
    aws = [
        [
            f"{z.rate:,.0f}",
            f"{z.sqs_per_s:,.0f}",
            f"{z.dynamodb_per_s:,.0f}",
            f"{z.wru_per_s:,.0f}",
            f"{z.hot_key_wru_per_s:,.0f}",
            f"{z.in_flight:,.0f}",
            "; ".join(z.limits) or "within the defaults",
        ]
        for z in sizes
        if z.rtt == SIZING_RTTS[-1]
    ]
    bill = [
        [
            f"{z.rate:,.0f}",
            f"{z.rtt * 1000:.0f}",
            f"${z.sqs_usd:,.0f}",
            f"${z.dynamodb_usd:,.0f}",
            f"${z.compute_usd:,.0f}",
            f"**${z.usd:,.0f}**",
        ]
        for z in sizes
    ]
    return [
        "Computed by `benchmarks/sizing.py` from this run's Conveyor figures (single submit, "
        f"+{latencies[0]:g} ms): worker CPU {i.worker_cpu * 1000:.2f} ms per task, API CPU "
        f"{i.api_cpu * 1000:.2f} ms per submit, {i.sqs_requests:.2f} SQS and "
        f"{i.dynamodb_requests:.2f} DynamoDB requests, {i.wru:.1f} write and {i.rru:.1f} read "
        f"units per task; {i.slots} slots per worker, {i.slot_calls:g} round trips holding a "
        f"slot per task (claim, finish), processes planned at {i.cpu_target:.0%} of a core.",
        "",
        "- per worker pod: `min(slots / (round trips x rtt + cpu), target / cpu, "
        "min(10, slots) / rtt)` tasks/s (slots, CPU, the receive loop); pods = rate / that, "
        "rounded up;",
        "- vCPU = rate x CPU per task / target, for the workers and the API alike;",
        "- requests/s = rate x requests per task; the bill = requests and units x list prices "
        f"x {sizing.HOURS_PER_MONTH} h, plus vCPU at {sizing.COMPUTE_NOTE}.",
        "",
        "CPU here is measured against moto over plain HTTP on this machine: real AWS adds TLS "
        "and larger responses to botocore's share, so treat the vCPU as a lower bound. A pod "
        "at the default 8 slots waits on round trips, not CPU, from 10 ms up: raising "
        "`concurrency` to the slots shown lets each pod fill its core.",
        "",
        *table(
            [
                "tasks/s",
                "ms per AWS call",
                "tasks/s per worker pod (bound)",
                "worker pods, 8 slots",
                "worker pods, CPU-bound",
                "worker vCPU",
                "API pods (vCPU)",
            ],
            fleet,
        ),
        "",
        f"AWS requests per second at {SIZING_RTTS[-1] * 1000:.0f} ms per call (the rates do "
        "not depend on the round trip), against the default quotas: DynamoDB on-demand "
        f"{sizing.DYNAMODB_TABLE_WRU:,} write and {sizing.DYNAMODB_TABLE_RRU:,} read units/s "
        f"per table (adjustable), {sizing.DYNAMODB_PARTITION_WRU:,} write units/s per "
        "partition (a partition-key value of an index is one partition's worth"
        + (
            f": {i.hot_key_wru:g} write units per task land on one status value of `status-index`"
            if i.hot_key_wru
            else ": no index key is shared by every task"
        )
        + "); SQS standard queues have no request-rate quota, "
        f"{sizing.SQS_IN_FLIGHT:,} messages in flight per queue, {sizing.SQS_BATCH} per batch.",
        "",
        *table(
            [
                "tasks/s",
                "SQS requests/s",
                "DynamoDB requests/s",
                "write units/s",
                "busiest index key, write units/s",
                "SQS in flight",
                "quotas",
            ],
            aws,
        ),
        "",
        "The monthly bill, on-demand DynamoDB and list prices (section 3):",
        "",
        *table(
            ["tasks/s", "ms per AWS call", "SQS", "DynamoDB", "compute (workers + API)", "total"],
            bill,
        ),
    ]


def _targets(s: Summary, latencies: list[float]) -> list[str]:
    base = latencies[0]
    rows: list[list[str]] = []

    def check(name: str, value: float, goal: float, text: str, higher: bool = True) -> None:
        met = (
            "n/a" if value != value else ("yes" if (value >= goal if higher else value <= goal) else "**no**")
        )
        rows.append([name, text, met])

    def cpu_text(system: str) -> tuple[float, str]:
        submit, worker, where = s.own_cpu(system, base)
        total = submit + worker
        if total != total:
            return total, f"{worker * 1000:.2f} ms (worker) + submit side {where}"
        return total, f"{submit * 1000:.2f} ({where}) + {worker * 1000:.2f} (worker) = {total * 1000:.2f} ms"

    ours, ours_text = cpu_text("conveyor")
    floors, floor_text = cpu_text("floor")
    check(
        f"own CPU per task ≤ the floor's (+{base:g} ms)",
        ratio(ours, floors),
        1.0,
        f"Conveyor {ours_text}; floor {floor_text}: {x(ratio(ours, floors))}",
        higher=False,
    )
    api = s.cpu_per_task("conveyor", base, "api")
    worker = s.cpu_per_task("conveyor", base, "worker")
    floor_worker = s.cpu_per_task("floor", base, "worker")
    check(
        "  worker CPU per task ≤ the floor's",
        ratio(worker, floor_worker),
        1.0,
        f"{worker * 1000:.2f} ms against {floor_worker * 1000:.2f} ms: {x(ratio(worker, floor_worker))}",
        higher=False,
    )
    rows.append(["  API CPU per submit (no floor process to compare)", f"{api * 1000:.2f} ms", "-"])
    c = s.cost("conveyor", base)
    wru = c.wru if c else float("nan")
    usd = c.dynamodb_usd if c else float("nan")
    check(
        "DynamoDB write units per task ≤ 6",
        wru,
        6.0,
        f"{wru:.1f} (${usd:.2f} per million tasks)",
        higher=False,
    )
    for system, label in (("conveyor", "single submit"), ("conveyor-batch", "batch submit")):
        floor = FLOOR_OF.get(system, "floor")
        r = ratio(s.throughput(system, base).median, s.throughput(floor, base).median)
        check(
            f"end-to-end ≥ 90% of the floor, {label}",
            r,
            0.9,
            f"{r:.0%} ({s.throughput(system, base).median:.1f}/s against "
            f"{s.throughput(floor, base).median:.1f}/s)",
        )
    p50, _ = s.latency("conveyor")
    floor50, _ = s.latency("floor")
    r = ratio(p50.median, floor50.median)
    check(
        "p50 submit-to-start ≤ 1.1x the floor's",
        r,
        1.1,
        f"{x(r)} ({ms(p50.median)} ms against {ms(floor50.median)} ms)",
        higher=False,
    )
    for latency, goal in CELERY_GOALS:
        if latency not in latencies:
            continue
        ours_rate = s.throughput("conveyor", latency).median
        theirs = s.throughput(CELERY_PAIR, latency).median
        r = ratio(ours_rate, theirs)
        # What the least implementation of the guarantees reaches on the same bar here.
        bound = ratio(s.throughput("floor", latency).median, theirs)
        check(
            f"≥ {goal:g}x Celery + DynamoDB results at +{latency:g} ms",
            r,
            goal,
            f"{x(r)} (Conveyor {ours_rate:.1f}/s, Celery {theirs:.1f}/s; the floor {x(bound)})",
        )
    cb = s.cost("conveyor-batch", base)
    value = cb.requests if cb else float("nan")
    check("≤ 2.5 AWS requests per task with batching", value, 2.5, f"{value:.2f}", higher=False)
    return table(["target", "measured", "met"], rows)


def _stack_cpu(s: Summary, system: str, latency: float) -> float:
    """CPU seconds per task of every process a system runs (moto, proxy and its own)."""
    parts = [s.cpu_per_task(system, latency, p) for p in ("moto", "worker", "api", "proxy")]
    return sum(v for v in parts if v == v)


def _ceilings(s: Summary, results: Results, latencies: list[float]) -> list[str]:
    """What the targets against Celery would need, against what this machine can give:
    moto serves every call on one core, and the whole stack shares the machine's cores."""
    cores = results.meta.get("cores")
    out: list[str] = []
    for latency, goal in CELERY_GOALS:
        if latency not in latencies:
            continue
        runs = s.runs("conveyor", latency)
        celery = s.throughput(CELERY_PAIR, latency).median
        moto = s.cpu_per_task("conveyor", latency, "moto")
        stack = _stack_cpu(s, "conveyor", latency)
        # CPU is read in 10 ms ticks: a smoke run's few tasks may show none.
        if not runs or not cores or celery != celery or not moto > 0 or not stack > 0:
            continue
        need = goal * celery
        out.append(
            f"- **{goal:g}x Celery + DynamoDB at +{latency:g} ms** needs Conveyor at {need:.0f} tasks/s. "
            "Measured, "
            f"a Conveyor task costs moto {moto * 1000:.1f} ms of CPU (one core: at most "
            f"{1 / moto:.0f} tasks/s) and the stack {stack * 1000:.1f} ms (on {cores} cores: at most "
            f"{cores / stack:.0f} tasks/s had the stack every core to itself). "
            f"Celery ran at {celery:.0f}/s with {_stack_cpu(s, CELERY_PAIR, latency) * 1000:.1f} ms of "
            "stack CPU per task."
        )
    return ["", *out] if out else []


def _bounds(s: Summary, results: Results, latencies: list[float]) -> list[str]:
    base = latencies[0]
    out: list[str] = [
        "Measured in this run (the +0 ms end-to-end runs, medians; CPU from /proc, so it "
        "counts only the named process):",
        "",
    ]
    for system in ("conveyor", "floor", "celery"):
        if not s.runs(system, base):
            continue
        reqs = median_of(sum(r.requests.values()) / r.n for r in s.runs(system, base))
        ms_per = {p: s.cpu_per_task(system, base, p) * 1000 for p in ("moto", "worker", "api", "proxy")}
        stack_cpu = _stack_cpu(s, system, base) * 1000
        wall = median_of(r.cpu["wall"] / r.n for r in s.runs(system, base)) * 1000
        api = f", API {ms_per['api']:.1f} ms" if ms_per["api"] == ms_per["api"] else ""
        out.append(
            f"- **{LABELS[system]}**: moto busy {s.busy(system, base):.0%} of the wall time, "
            f"{ms_per['moto']:.1f} ms of moto CPU per task over {reqs:.2f} requests; worker "
            f"{ms_per['worker']:.1f} ms{api}, proxy {ms_per['proxy']:.1f} ms: {stack_cpu:.0f} ms of "
            f"CPU per task across the stack (the harness's clients not counted), against {wall:.0f} ms "
            "of wall time per task."
        )
    out += _ceilings(s, results, latencies)
    calls = results.calls
    pairs = [
        ("Conveyor UpdateItem (claim)", "floor UpdateItem (claim)"),
        ("Conveyor UpdateItem (finish)", "floor UpdateItem (finish)"),
    ]
    if all(a in calls and b in calls for a, b in pairs):
        ours = sum(calls[a]["cpu_ms"] for a, _ in pairs)
        theirs = sum(calls[b]["cpu_ms"] for _, b in pairs)
        out += [
            "",
            f"- A task's two state writes (claim and finish) cost moto {ours:.0f} ms of CPU for Conveyor "
            f"against {theirs:.0f} ms for the floor ({x(ratio(ours, theirs))}): same number of calls, "
            "longer expressions (table below).",
        ]
    for system in ("conveyor-batch", "floor-batch"):
        runs = s.runs(system, base)
        if runs:
            deletes = median_of(
                r.items.get("sqs.DeleteMessageBatch", 0) / r.requests["sqs.DeleteMessageBatch"]
                for r in runs
                if r.requests.get("sqs.DeleteMessageBatch")
            )
            out.append(
                f"- {LABELS[system]}: {s.per_receive(system, base):.1f} messages per ReceiveMessage, "
                f"{deletes:.1f} per DeleteMessageBatch."
            )
    if calls:
        out += [
            "",
            f"moto's CPU per call, measured in this run ({results.meta.get('calls_count', '?')} calls "
            "each, one at a time, straight to moto; CPU time is counted in 10 ms ticks):",
            "",
            *table(
                ["call", "moto CPU ms", "wall ms"],
                [[name, f"{v['cpu_ms']:.1f}", f"{v['wall_ms']:.1f}"] for name, v in results.calls.items()],
            ),
        ]
    if results.profile:
        out += [
            "",
            f"The Conveyor worker under py-spy during one extra run of {results.meta.get('profile_n', '?')} "
            "tasks (not part of any figure; raw stacks in `benchmarks/results/conveyor-worker-py-spy.txt`):",
            "",
            "```",
        ]
        out += results.profile
        out += ["```"]
    return out


def render(results: Results, chart: str | None) -> str:
    s = Summary(results)
    m = results.meta
    latencies = m["latencies_ms"]
    lines = [
        "# Benchmarks: Conveyor against Celery and against the floor",
        "",
        f"Generated by `make bench` (`python -m benchmarks`) on {m['date']}. Do not edit by hand: "
        "re-run it. Every figure is the median of the runs with (min-max) beside it, all taken "
        "on this machine in this one run; ratios are between medians.",
        "",
    ]
    if m.get("quick"):
        lines += [
            "> **Smoke run (`--quick`)**: tiny N and one run each. It proves the harness works; "
            "its numbers are not measurements.",
            "",
        ]
    lines += table(
        ["", ""],
        [
            ["machine", m["machine"]],
            [
                "load average (1 min): start / highest / end",
                f"{m['load_start']:.2f} / {m.get('load_max', float('nan')):.2f} / "
                f"{m.get('load_end', float('nan')):.2f}",
            ],
            ["versions", m["versions"]],
            [
                "end-to-end runs",
                f"N = {m['n']} no-op tasks per run, {m['runs']} runs per figure, "
                f"{m['submitters']} concurrent submitting clients, 1 worker process per system "
                f"({m['worker_concurrency']} slots; two for Conveyor, 2 workers), added latency "
                + ", ".join(f"{v:g}" for v in latencies)
                + " ms",
            ],
            ["latency runs", f"{m['latency_count']} tasks per run, {m['runs']} runs"],
            ["submit runs", f"{m['submit_count']} submits per run, {m['runs']} runs per client count"],
            ["AWS", "one moto server process for the whole run, every call through one counting proxy"],
            [
                "live-stream runs",
                f"{m.get('live_runs', '?')} runs, {m.get('live_changes', '?')} timed changes per run "
                "and client count; the API in-process over the memory adapters (section 7)"
                if results.live
                else "not run",
            ],
            [
                "long polls",
                "each system's default (Conveyor 20 s, Celery 10 s, floor 20 s)"
                if m.get("poll_wait") is None
                else f"{m['poll_wait']} s for every worker (smoke run)",
            ],
            ["took", f"{m.get('seconds', 0):.0f} s"],
        ],
    )
    if chart:
        lines += ["", f"![throughput and latency]({chart})"]
    notes = m.get("notes", [])
    if notes:
        lines += ["", *[f"> {n}" for n in notes]]
    lines += ["", "## How it is measured", "", *METHOD]
    lines += ["", SECTIONS[0], "", *_targets(s, latencies)]
    lines += [
        "",
        SECTIONS[1],
        "",
        "Submit N no-op tasks while one worker process consumes them; the clock runs from the "
        "first submit until the N-th task is terminal (Conveyor and the floor: the success is "
        "recorded in DynamoDB; Celery: its `task_postrun`, after the result is stored when a "
        "backend is on). Celery runs its thread pool with the same 8 slots in one process; it "
        "acknowledges (deletes) a message *before* running it, Conveyor and the floor after "
        "recording the outcome.",
        "",
        *_throughput_section(s, latencies[0]),
    ]
    lines += ["", SECTIONS[2], ""]
    if len(latencies) > 1:
        lines += [
            f"The proxy holds every AWS request {latencies[-1]:g} ms before forwarding it, closer to "
            "real SQS and DynamoDB round trips. Here the concurrency inside one worker matters.",
            "",
            *_throughput_section(s, latencies[-1]),
        ]
    else:
        lines += ["Not run (`--latencies` had one value)."]
    lines += ["", SECTIONS[3], "", *_cost_section(s, latencies)]
    lines += ["", SECTIONS[4], "", *_latency_section(s)]
    lines += ["", SECTIONS[5], "", *_submit_section(s)]
    lines += ["", SECTIONS[6], "", *_rss_section(s)]
    lines += ["", SECTIONS[7], "", *_live_section(results)]
    lines += ["", SECTIONS[8], "", *_workers_section(s, latencies)]
    lines += ["", SECTIONS[9], "", *_sizing_section(s, latencies)]
    lines += ["", SECTIONS[10], "", *_flow_section(results)]
    lines += ["", SECTIONS[11], "", *_bounds(s, results, latencies), *m.get("analysis", [])]
    return "\n".join(lines) + "\n"


# -- the chart ---------------------------------------------------------------------------


def chart(results: Results, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = Summary(results)
    latencies = results.meta["latencies_ms"]
    fig, axes = plt.subplots(1, 3, figsize=(16, 5))

    ax = axes[0]
    systems = s.systems
    width = 0.8 / max(1, len(latencies))
    for i, lat in enumerate(latencies):
        spreads = [s.throughput(system, lat) for system in systems]
        med = [sp.median for sp in spreads]
        err = [[sp.median - sp.low for sp in spreads], [sp.high - sp.median for sp in spreads]]
        pos = [j + i * width for j in range(len(systems))]
        ax.bar(pos, med, width, yerr=err, capsize=3, label=f"+{lat:g} ms per AWS call")
    ax.set_xticks([j + width * (len(latencies) - 1) / 2 for j in range(len(systems))])
    ax.set_xticklabels([SHORT[k] for k in systems], fontsize=8)
    ax.set_ylabel("tasks/s (median, min-max)")
    ax.set_title("End-to-end throughput, 1 worker process")
    ax.legend(fontsize=8)

    ax = axes[1]
    names = [k for k in ("conveyor", "celery", "floor") if s.latency(k)[0].runs]
    for i, (label, pick) in enumerate((("p50", 0), ("p99", 1))):
        spreads = [s.latency(k)[pick] for k in names]
        ax.bar(
            [j + i * 0.4 for j in range(len(names))],
            [sp.median * 1000 for sp in spreads],
            0.4,
            yerr=[
                [(sp.median - sp.low) * 1000 for sp in spreads],
                [(sp.high - sp.median) * 1000 for sp in spreads],
            ],
            capsize=3,
            label=label,
        )
    ax.set_xticks([j + 0.2 for j in range(len(names))])
    ax.set_xticklabels([SHORT[k] for k in names], fontsize=8)
    ax.set_ylabel("ms")
    ax.set_title("Submit to handler start, idle system")
    ax.legend(fontsize=8)

    ax = axes[2]
    client_counts = sorted({r.clients for r in results.submit})
    for k in ("conveyor", "celery", "floor"):
        meds = [s.submit(k, c)[0].median for c in client_counts]
        if any(v == v for v in meds):
            ax.plot(client_counts, meds, marker="o", label=LABELS[k])
    ax.set_xscale("log")
    ax.set_xticks(client_counts)
    ax.set_xticklabels([str(c) for c in client_counts])
    ax.set_xlabel("concurrent clients")
    ax.set_ylabel("submits/s")
    ax.set_title("Submit throughput")
    ax.legend(fontsize=8)

    fig.suptitle(
        f"Conveyor benchmarks, {results.meta['date']}" + (" (smoke run)" if results.meta.get("quick") else "")
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def check_sections(text: str) -> list[str]:
    """The section headings missing from a report (the smoke test's check)."""
    return [h for h in SECTIONS if h not in text]
