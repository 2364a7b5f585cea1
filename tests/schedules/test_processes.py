"""Three firing loops in three processes against the moto server: exactly one task per
slot, also when one of them is killed with SIGKILL between submitting a slot's task and
recording it. Their clocks run 60 times faster (fire_loop.py), so 3 minutes take 3 s."""

from __future__ import annotations

import hashlib
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from conveyor.aws import AwsBackend
from conveyor.model import to_rfc3339
from conveyor.settings import Settings
from tests.conftest import EXAMPLES, ROOT, service_env

SCALE = 60.0
FAKE_START = datetime(2026, 5, 1, 12, 0, 30, tzinfo=UTC)  # just after the 12:00 slot
SLOTS = [FAKE_START.replace(second=0) + timedelta(minutes=n) for n in (1, 2, 3)]
SCHEDULE = """\
apiVersion: conveyor.dev/v1alpha1
kind: TaskSchedule
metadata: {name: fast}
spec: {taskType: echo, schedule: "* * * * *", payload: {from: schedule}}
"""


def slot_task(settings: Settings, slot: datetime) -> str | None:
    """The task the slot's idempotency item points at (None: the slot never fired)."""
    key = f"#scheduler:schedule:default/fast:{slot.strftime('%Y-%m-%dT%H:%M:%SZ')}"
    digest = hashlib.sha256(key.encode()).hexdigest()
    item = (
        AwsBackend(settings)
        .dynamodb.get_item(TableName=settings.table, Key={"id": {"S": "idem#" + digest}}, ConsistentRead=True)
        .get("Item")
    )
    return item["task_id"]["S"] if item else None


@pytest.mark.parametrize("kill", [False, True], ids=["three-loops", "one-killed-mid-fire"])
def test_three_processes_fire_each_slot_exactly_once(
    settings_factory: Callable[..., Settings], tmp_path: Path, kill: bool
) -> None:
    shutil.copy(EXAMPLES / "echo.yaml", tmp_path / "echo.yaml")
    (tmp_path / "fast.yaml").write_text(SCHEDULE)
    settings = settings_factory(tasktypes=str(tmp_path))
    procs = []
    for n in range(3):
        extra = {
            # 12:00:30 + 3.25 fake minutes: past the 12:03 slot, before 12:04.
            "FIRE_LOOP_REAL_SECONDS": repr(3.25 * 60 / SCALE),
            "FIRE_LOOP_FAKE_START": to_rfc3339(FAKE_START) or "",
            "FIRE_LOOP_SCALE": str(SCALE),
            # The victim looks most often, so it is the one firing when it dies.
            "FIRE_LOOP_INTERVAL": "0.02" if kill and n == 0 else "0.1",
        }
        if kill and n == 0:
            extra["FIRE_LOOP_DIE_AT"] = to_rfc3339(SLOTS[1]) or ""
        env = service_env(settings, "", **extra)
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "tests.schedules.fire_loop"],
                cwd=ROOT,
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    # The shared origin, once all three have imported and built their clients, however long
    # that took on a busy machine: every process is looking before the first slot.
    for p in procs:
        assert p.stdout is not None and p.stdout.readline() == "ready\n", p.communicate(timeout=30)
    real_start = repr(time.time() + 0.3)
    for p in procs:
        assert p.stdin is not None
        p.stdin.write(real_start + "\n")
        p.stdin.flush()
    outputs = [p.communicate(timeout=30) for p in procs]
    codes = [p.returncode for p in procs]
    if kill:
        assert codes[0] == -signal.SIGKILL, outputs[0][1][-2000:]
        assert codes[1:] == [0, 0], [o[1][-2000:] for o in outputs[1:]]
    else:
        assert codes == [0, 0, 0], [o[1][-2000:] for o in outputs]
        assert all("ticks=" in o[0] for o in outputs)

    store = AwsBackend(settings).store()
    tasks = store.query(limit=50).items
    by_slot = {slot: slot_task(settings, slot) for slot in SLOTS}
    assert all(by_slot.values()), by_slot
    assert sorted(t.id for t in tasks) == sorted(by_slot.values())  # 3 tasks, one per slot
    assert all(t.type == "echo" and t.payload == {"from": "schedule"} for t in tasks)
    state = store.schedule_state("default/fast")
    assert state is not None and state.last_slot == SLOTS[-1] and state.last_task_id == by_slot[SLOTS[-1]]
