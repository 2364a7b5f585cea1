"""The sizing model for real AWS: worker pods, vCPU, AWS requests and the monthly bill at a
given task rate and AWS round-trip time, from figures measured by ``make bench``.

A pure function of its inputs (:func:`size`), so it is tested on its own and the report
prints what it computes, never a hand-typed figure.

The model, per worker pod (one worker process: one Python interpreter, so at most one
core of CPU whatever the pod's limit):

- a slot is held for the round trips of a task's claim and finish (``slot_calls``) plus
  the worker's own CPU per task: ``slot_time = slot_calls * rtt + cpu``; with ``slots``
  slots a pod runs at most ``slots / slot_time`` tasks/s;
- its CPU lets it run at most ``cpu_target / cpu`` tasks/s (planned below a full core);
- its one receive loop brings at most ``min(10, slots)`` messages per ReceiveMessage round
  trip: at most ``min(10, slots) / rtt`` tasks/s.

Pods = rate / the least of the three, rounded up. vCPU is what the processes burn at that
rate, over the utilisation target (the CPU to request). The API's CPU per submit sizes its
pods the same way. SQS and DynamoDB requests per second are the measured requests per task
times the rate; the bill is those, at list prices, over a month, plus the vCPU at an EC2
price.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from benchmarks.costs import DYNAMODB_PER_MILLION_RRU, DYNAMODB_PER_MILLION_WRU, SQS_PER_MILLION_REQUESTS

HOURS_PER_MONTH = 730  # AWS's billing month
SECONDS_PER_MONTH = HOURS_PER_MONTH * 3600
# On-demand Linux, us-east-1: c6i.large, 2 vCPU at $0.085 an hour. Check before quoting.
VCPU_HOUR_USD = 0.085 / 2
COMPUTE_NOTE = "EC2 c6i.large on demand in us-east-1 ($0.085 an hour for 2 vCPU)"

# Service quotas (AWS defaults, us-east-1), and where they bite.
DYNAMODB_TABLE_WRU = 40_000  # per table, on-demand (adjustable): write request units/s
# Status shards are sized to load each status-index key to at most this share of a partition.
HOT_KEY_HEADROOM = 0.8
DYNAMODB_TABLE_RRU = 40_000
DYNAMODB_PARTITION_WRU = 1_000  # per partition (table or GSI), not adjustable
SQS_IN_FLIGHT = 120_000  # standard queue: received, not yet deleted
SQS_BATCH = 10  # messages per SendMessageBatch / ReceiveMessage / DeleteMessageBatch


@dataclass(frozen=True)
class Inputs:
    """The measured inputs, per task unless named otherwise."""

    worker_cpu: float  # seconds of worker CPU per task
    api_cpu: float  # seconds of API CPU per submit
    sqs_requests: float
    dynamodb_requests: float
    wru: float  # DynamoDB write request units
    rru: float
    # Write units per task landing on the busiest single partition-key value of an index
    # (Conveyor's status-index is keyed by status: every task puts and deletes an entry under
    # "queued" and under "running"). A key value is one partition's worth of writes.
    hot_key_wru: float
    slot_calls: float = 2.0  # round trips a slot waits on: the claim and the finish
    slots: int = 8  # the worker's concurrency setting
    cpu_target: float = 0.7  # plan processes to this share of a core
    delete_gather: float = 1.0  # seconds a finished message may wait for its delete batch


@dataclass(frozen=True)
class Size:
    rate: float  # tasks/s
    rtt: float  # seconds per AWS call
    per_pod: float  # tasks/s one worker pod sustains
    bound: str  # what sets per_pod: "slots", "CPU" or "receive"
    worker_pods: int
    slots_for_cpu: int  # the concurrency at which a pod would be CPU-bound instead
    worker_pods_at_cpu: int  # pods with that concurrency
    worker_vcpu: float
    api_pods: int
    api_vcpu: float
    sqs_per_s: float
    dynamodb_per_s: float
    wru_per_s: float
    rru_per_s: float
    hot_key_wru_per_s: float
    in_flight: float  # SQS messages received and not yet deleted
    sqs_usd: float  # per month
    dynamodb_usd: float
    compute_usd: float

    @property
    def usd(self) -> float:
        return self.sqs_usd + self.dynamodb_usd + self.compute_usd

    @property
    def limits(self) -> list[str]:
        """The quotas this rate meets or passes."""
        out = []
        if self.wru_per_s > DYNAMODB_TABLE_WRU:
            out.append(f"table WRU/s over the {DYNAMODB_TABLE_WRU:,} default quota (ask for more)")
        if self.rru_per_s > DYNAMODB_TABLE_RRU:
            out.append(f"table RRU/s over the {DYNAMODB_TABLE_RRU:,} default quota (ask for more)")
        if self.hot_key_wru_per_s > DYNAMODB_PARTITION_WRU:
            shards = math.ceil(self.hot_key_wru_per_s / (DYNAMODB_PARTITION_WRU * HOT_KEY_HEADROOM))
            out.append(
                f"one index key would take {self.hot_key_wru_per_s:,.0f} WRU/s, over a partition's "
                f"{DYNAMODB_PARTITION_WRU:,}: `CONVEYOR_STATUS_SHARDS` {shards} or more"
            )
        if self.in_flight > SQS_IN_FLIGHT:
            out.append(f"{self.in_flight:,.0f} SQS messages in flight, over {SQS_IN_FLIGHT:,}")
        return out


def size(inputs: Inputs, rate: float, rtt: float) -> Size:
    """The fleet and the bill for ``rate`` tasks/s when every AWS call takes ``rtt`` seconds."""
    i = inputs
    slot_time = i.slot_calls * rtt + i.worker_cpu
    by_slots = i.slots / slot_time
    by_cpu = i.cpu_target / i.worker_cpu
    by_receive = min(SQS_BATCH, i.slots) / rtt if rtt > 0 else math.inf
    per_pod, bound = min((by_slots, "slots"), (by_cpu, "CPU"), (by_receive, "receive"))
    slots_for_cpu = math.ceil(by_cpu * slot_time)
    at_cpu = min(by_cpu, SQS_BATCH / rtt if rtt > 0 else math.inf)
    worker_vcpu = rate * i.worker_cpu / i.cpu_target
    api_vcpu = rate * i.api_cpu / i.cpu_target
    sqs = rate * i.sqs_requests
    wru = rate * i.wru
    rru = rate * i.rru
    tasks_per_month = rate * SECONDS_PER_MONTH
    return Size(
        rate=rate,
        rtt=rtt,
        per_pod=per_pod,
        bound=bound,
        worker_pods=math.ceil(rate / per_pod),
        slots_for_cpu=slots_for_cpu,
        worker_pods_at_cpu=math.ceil(rate / at_cpu),
        worker_vcpu=worker_vcpu,
        api_pods=max(1, math.ceil(api_vcpu)),
        api_vcpu=api_vcpu,
        sqs_per_s=sqs,
        dynamodb_per_s=rate * i.dynamodb_requests,
        wru_per_s=wru,
        rru_per_s=rru,
        hot_key_wru_per_s=rate * i.hot_key_wru,
        # A message is in flight from its receive until its batched delete.
        in_flight=rate * (slot_time + rtt + i.delete_gather),
        sqs_usd=tasks_per_month * i.sqs_requests * SQS_PER_MILLION_REQUESTS / 1e6,
        dynamodb_usd=tasks_per_month
        * (i.wru * DYNAMODB_PER_MILLION_WRU + i.rru * DYNAMODB_PER_MILLION_RRU)
        / 1e6,
        compute_usd=(worker_vcpu + api_vcpu) * HOURS_PER_MONTH * VCPU_HOUR_USD,
    )
