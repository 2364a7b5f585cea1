"""The chart's ScaledJob mode runs real one-shot workers: with the environment the chart
renders into the Job's pod, a worker takes its share of tasks, finishes them and exits, so
the Job completes and KEDA can start the next one."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from conveyor.bootstrap import build
from conveyor.engine import Submission
from conveyor.model import Status
from tests.chart.render import env_of, render
from tests.conftest import WorkerThread

ONE_SHOT = int(
    env_of(render("scaledjob").one("ScaledJob")["spec"]["jobTargetRef"]["template"]["spec"]["containers"][0])[
        "CONVEYOR_WORKER_MAX_TASKS"
    ]
)


def _one_shot_worker(settings_factory: Callable[..., Any]) -> tuple[Any, Callable[[], WorkerThread]]:
    runtime = build(settings_factory(worker_max_tasks=ONE_SHOT))
    return runtime, lambda: WorkerThread(runtime).start()


def test_a_one_shot_worker_runs_its_task_and_exits(settings_factory: Callable[..., Any]) -> None:
    assert ONE_SHOT == 1
    runtime, start = _one_shot_worker(settings_factory)
    first, _ = runtime.engine.submit(Submission("echo", {"n": 1}))
    second, _ = runtime.engine.submit(Submission("echo", {"n": 2}))
    worker = start()
    worker.thread.join(30)
    assert not worker.thread.is_alive(), "the one-shot worker did not exit"
    assert worker.error is None
    statuses = sorted(runtime.engine.get(t.id).status.value for t in (first, second))
    assert statuses == ["queued", "succeeded"]  # its one task done, the other left for the next Job
    # The next Job's worker takes the other one.
    worker = start()
    worker.thread.join(30)
    assert not worker.thread.is_alive() and worker.error is None
    assert {runtime.engine.get(t.id).status for t in (first, second)} == {Status.SUCCEEDED}


def test_a_one_shot_worker_with_nothing_to_do_exits_after_one_poll(
    settings_factory: Callable[..., Any],
) -> None:
    _, start = _one_shot_worker(settings_factory)
    worker = start()
    worker.thread.join(15)  # test settings long-poll for 1 s
    assert not worker.thread.is_alive() and worker.error is None
