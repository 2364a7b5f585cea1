"""Worker processes killed with SIGKILL over and over, and stopped with SIGTERM mid-run."""

from __future__ import annotations

import random
import signal
import time

import pytest

from conveyor.engine import Submission
from conveyor.model import Status
from tests.conftest import wait_for
from tests.faults.handlers import side_effects
from tests.faults.harness import CHAOS, all_tasks, processes, record, spawn_worker, unfinished, wait_terminal


def submit_direct(runtime, n: int, payload: dict) -> list[str]:
    ids: list[str] = []
    for start in range(0, n, 100):
        batch = [Submission("fault-count", payload) for _ in range(min(100, n - start))]
        ids += [t.id for t in runtime.engine.submit_batch(batch)]
    return ids


def busy_pids(effects) -> set[int]:
    """Worker pids with a handler started and not done."""
    running: dict[tuple[str, int], int] = {}
    for task_id, runs in side_effects(str(effects)).items():
        for attempt, pid in runs["start"]:
            running[(task_id, attempt)] = pid
        for attempt, _ in runs["done"]:
            running.pop((task_id, attempt), None)
    return set(running.values())


@pytest.mark.parametrize(
    ("tasks", "seconds", "kills", "every", "timeout"),
    [
        pytest.param(30, 1.0, 2, 1.0, 90, id="fast-30-tasks-2-kills"),
        # 500 x 0.6 s over 12 slots is 25 s of handler time alone, more than the ~30 s its 12
        # kills take only with the attempts they cut short: at 0.3 s the run could drain
        # before the 12th kill.
        pytest.param(500, 0.6, 12, 2.0, 480, id="chaos-500-tasks-12-kills", marks=CHAOS),
    ],
)
def test_kill_9_repeatedly_loses_nothing(
    settings, runtime, tmp_path, request, tasks, seconds, kills, every, timeout
):
    effects = tmp_path / "effects"
    logs = tmp_path / "workers.log"
    rng = random.Random(7)
    killed: set[int] = set()
    env = {"CONVEYOR_WORKER_CONCURRENCY": "4"}
    with processes() as procs:
        workers = [spawn_worker(settings, log=logs, **env) for _ in range(3)]
        procs += workers
        ids = submit_direct(runtime, tasks, {"log": str(effects), "seconds": seconds})
        start = time.monotonic()
        wait_for(lambda: busy_pids(effects), timeout=30)
        while len(killed) < kills and unfinished(runtime):
            time.sleep(every)
            # A worker in the middle of a handler, so every kill cuts an attempt short.
            busy = [n for n, w in enumerate(workers) if w.pid in busy_pids(effects)]
            victim = workers.pop(rng.choice(busy) if busy else rng.randrange(len(workers)))
            victim.send_signal(signal.SIGKILL)
            victim.wait(5)
            killed.add(victim.pid)
            workers.append(spawn_worker(settings, log=logs, **env))  # its replacement
            procs.append(workers[-1])
        wait_terminal(runtime, timeout)
    assert len(killed) == kills, "the run ended before every kill: make it longer"
    found = {t.id: t for t in all_tasks(runtime)}
    assert set(found) == set(ids)
    lost = [i for i in ids if found[i].status is not Status.SUCCEEDED]
    assert lost == [], [(i, found[i].status, found[i].error) for i in lost]
    # Side effects: a task completes its handler twice only if the first run's worker was
    # killed after the handler returned and before the outcome was recorded (at-least-once);
    # any other repeat would be the queue's fault.
    redone, unexplained = 0, []
    runs = side_effects(str(effects))
    for task_id, task in found.items():
        done = runs[task_id]["done"]
        assert task.attempts in [a for a, _ in done], (task_id, task.attempts, done)
        earlier = [(a, pid) for a, pid in done if a != task.attempts]
        if earlier:
            redone += 1
            if any(pid not in killed for _, pid in earlier):
                unexplained.append((task_id, done))
        assert len({a for a, _ in done}) == len(done), (task_id, done)  # one attempt ran once
    assert unexplained == []
    assert sum(t.attempts for t in found.values()) > tasks  # kills did cut attempts short
    record(
        request.node.name,
        {
            "tasks": tasks,
            "workers_killed_9": len(killed),
            "lost": len(lost),
            "succeeded_twice": len(unexplained),
            "handler_completed_again_after_its_worker_was_killed": redone,
            "attempts_total": sum(t.attempts for t in found.values()),
            "seconds_total": round(time.monotonic() - start, 1),
        },
    )


def test_sigterm_finishes_running_tasks_and_hands_back_the_rest_at_once(fault_settings, tmp_path, request):
    # A long visibility timeout: a message not handed back would wait 30 s.
    settings = fault_settings(visibility_timeout=30)
    from conveyor.bootstrap import build

    runtime = build(settings)
    effects = tmp_path / "effects"
    logs = tmp_path / "workers.log"
    with processes() as procs:
        # Three slots, two long tasks: the third slot sits in a 10 s long poll.
        first = spawn_worker(
            settings, log=logs, CONVEYOR_WORKER_CONCURRENCY="3", CONVEYOR_POLL_WAIT_SECONDS="10"
        )
        procs.append(first)
        running = submit_direct(runtime, 2, {"log": str(effects), "seconds": 3})
        wait_for(lambda: all(runtime.engine.get(i).status is Status.RUNNING for i in running), timeout=20)
        time.sleep(0.5)  # its next long poll is open
        first.send_signal(signal.SIGTERM)
        late = submit_direct(runtime, 1, {"log": str(effects), "seconds": 0})[0]
        assert first.wait(30) == 0
        # The late task's message reached the stopping worker's open poll (so it was
        # received), and was handed back: visible now, not in 30 s.
        sqs = runtime.backend.sqs
        url = runtime.backend.queue_url(settings.queue)
        peek = sqs.receive_message(
            QueueUrl=url, VisibilityTimeout=0, MessageSystemAttributeNames=["ApproximateReceiveCount"]
        )["Messages"]
        assert len(peek) == 1 and int(peek[0]["Attributes"]["ApproximateReceiveCount"]) >= 2
        late_task = runtime.engine.get(late)
        assert late_task.status is Status.QUEUED and late_task.attempts == 0
        for i in running:  # finished within the grace period, in one attempt
            task = runtime.engine.get(i)
            assert task.status is Status.SUCCEEDED and task.attempts == 1, task
        started = time.monotonic()
        procs.append(spawn_worker(settings, log=logs))
        wait_for(lambda: runtime.engine.get(late).status is Status.SUCCEEDED, timeout=25)
        picked_up = time.monotonic() - started
    assert picked_up < 10, picked_up  # well before the 30 s visibility timeout
    record(
        request.node.name,
        {
            "running_at_sigterm": 2,
            "finished_in_grace": 2,
            "handed_back": 1,
            "visibility_timeout_seconds": 30,
            "seconds_until_another_worker_ran_it_including_its_startup": round(picked_up, 1),
        },
    )
