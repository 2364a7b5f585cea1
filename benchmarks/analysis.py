"""The prose of "What bounds it": the mechanisms behind the figures.

Each paragraph names a mechanism and points at the measured numbers printed above it in
the report, so it stays true when the numbers move; the per-call table and the worker
profile are re-measured by every full run.
"""

from __future__ import annotations

PARAGRAPHS = [
    """**moto is the ceiling of every local figure.** It is one Python process: every call of
    every system is served under one interpreter lock, at several ms of CPU each, on a machine
    whose other core runs the worker, the API, the proxy and the harness. Where the *moto busy*
    column nears 100% a system is moto-bound, and its throughput is about 1 / (moto CPU per
    task). The absolute rates are therefore far below real AWS; the ratios compare how much AWS
    work each system needs per task.""",
    """**Conveyor against the floor.** Both make the same calls per task (the by-action table):
    the exactly-once guarantee costs two conditional UpdateItems per task whoever implements
    it. The gap is the price moto puts on Conveyor's richer writes: a claim sets seven
    attributes (status, the type#status index key, attempts, started and updated times, the
    worker, the cancel flag) under a five-part condition and returns the new item; the floor's
    sets two under a one-part condition and returns nothing. A cProfile of moto's update_item
    shows parsing and validating the expressions, then serialising the returned item, dominate
    its cost (the per-call table). Real DynamoDB bills a write by item size and index updates,
    not by expression length. The worker profile shows no hot spot in Conveyor's own code: its
    CPU is boto3 (signing, serialising, HTTP) and the event loop, in proportion to the calls
    made. So the 70%-of-the-floor target is bounded here by moto's CPU per Conveyor write.""",
    """**Conveyor against Celery.** Celery without results makes fewer calls per task than any
    system that records state (SendMessage, a share of a ReceiveMessage, one DeleteMessage):
    against it Conveyor pays, in moto CPU, for a record Celery does not keep; Celery with
    DynamoDB results is the like-for-like pairing.
    kombu deletes every message with its own synchronous DeleteMessage inside the worker's event
    loop (no batching), and after an empty receive it waits its 1 s polling interval. With
    results on, each task adds a PutItem and a GetItem (Celery reads the stored state before
    writing it). With 15 ms per call Celery's serial deletes slow it, but Conveyor's rate stays
    capped by moto's CPU as at +0 ms: 15 ms of latency does not slow a worker that overlaps
    eight tasks, moto's CPU does. On this stack a 5x lead over Celery cannot show.""",
    """**Requests per task with batching.** Two UpdateItems are the fixed part (2.0 of the 2.5
    target); BatchWriteItem (1/25) and SendMessageBatch (1/10) add 0.14; receives and deletes
    must fit in what is left. The worker receives only for free slots (its guarantee that
    prefetch never exceeds capacity), so under a backlog slots free up one or two at a time and
    each receive carries few messages; deletes are gathered for 20 ms and carry few too. The
    floor, with the same rule, lands in the same place. Reaching 2.5 needs fuller batches:
    gathering deletes for longer (a terminal task's message may wait up to its visibility
    timeout; a late delete only saves requests) and, when the last receive came back full,
    waiting a few ms for more free slots before the next. Both are changes to
    `worker/runtime.py`, left to its owner.""",
    """**Cost.** The SQS part is similar for every system. Conveyor's DynamoDB part is several
    times the floor's because its four global secondary indexes project every attribute and two
    are keyed on the status: a task costs 5 write units to create and 7 per status change,
    against 1 each for an unindexed table. Projecting keys only (lists then fetch the items) or
    fewer indexes would cut most of it: a trade against list and filter speed, for the table's
    owner to make.""",
    """**Submit-to-start latency** is a chain of sequential calls: Conveyor's API writes the
    record and sends the message (two calls), the worker's long poll returns, and the claim (a
    third write) precedes the handler. Celery's chain is one SendMessage and the receive. At
    moto's 10-20 ms per call, the chain sets the p50.""",
]

ANALYSIS: list[str] = ["", "### Reading the figures", ""] + ["- " + " ".join(p.split()) for p in PARAGRAPHS]
