"""Status shards: how a task's status is stored so that ``status-index`` takes more writes.

DynamoDB serves about 1,000 write units a second on one partition-key value of an index,
and ``status-index`` is keyed on ``status``: with one partition per status, a table takes
about 500 tasks a second (each task puts and moves an entry in ``queued``, then in
``running``). With ``CONVEYOR_STATUS_SHARDS`` = n above 1, a task's status is stored as
``<status>#<shard>``, its shard a hash of its id, so each status spreads over n partitions:

- every write that sets a status sets the task's sharded value (no extra attribute, so no
  extra clause or write unit);
- every condition on a status is ``begins_with(status, <status>)``, which holds for the
  plain value and for any shard, so tasks written under another shard count (or before
  sharding) are claimed, finished and cancelled as before;
- every list and count reads the plain partition and the n shards, merged by id.

Raising n is safe. Lowering it hides from lists and counts, never from the workers, the
tasks still recorded under the higher shards, until their next status change or expiry.
"""

from __future__ import annotations

import zlib

from conveyor.model import Status

SEPARATOR = "#"


def stored(status: Status, task_id: str, shards: int) -> str:
    """The value a task's ``status`` attribute holds."""
    if shards <= 1:
        return status.value
    return f"{status.value}{SEPARATOR}{shard_of(task_id, shards)}"


def shard_of(task_id: str, shards: int) -> int:
    # crc32, not hash(): the same in every process, whatever PYTHONHASHSEED is.
    return zlib.crc32(task_id.encode()) % shards


def read(value: str) -> Status:
    """The status a stored value names (plain or sharded); ValueError when none."""
    return Status(value.partition(SEPARATOR)[0])


def partitions(status: Status, shards: int) -> list[str]:
    """Every ``status-index`` key a task of ``status`` may be stored under: the plain value
    (tasks written before sharding, or with one shard) and each shard's."""
    if shards <= 1:
        return [status.value]
    return [status.value] + [f"{status.value}{SEPARATOR}{i}" for i in range(shards)]
