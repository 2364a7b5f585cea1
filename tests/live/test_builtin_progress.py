"""The built-in handlers report progress, through a real worker on moto."""

from __future__ import annotations

import io

from PIL import Image

from conveyor.engine import Submission
from conveyor.model import Status
from tests.conftest import wait_for


def _recording(runtime, monkeypatch) -> list:
    store = runtime.engine.store
    written: list = []
    original = store.record_progress

    def record(task, progress, events):
        written.append(progress)
        return original(task, progress, events)

    monkeypatch.setattr(store, "record_progress", record)
    return written


def _run(runtime, task_type: str, payload: dict):
    task, _ = runtime.engine.submit(Submission(task_type, payload))
    return wait_for(lambda: (t := runtime.engine.get(task.id)).status.terminal and t, timeout=30)


def test_image_resize_and_data_export_report_progress(runtime, start_worker, monkeypatch):
    written = _recording(runtime, monkeypatch)
    image = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 10, 10)).save(image, format="PNG")
    runtime.blobs().put("uploads/red.png", image.getvalue(), "image/png")
    start_worker()
    done = _run(runtime, "image-resize", {"key": "uploads/red.png", "width": 32, "height": 32})
    assert done.status is Status.SUCCEEDED, done.error
    # Its stages, in order, the last one written when the handler returns.
    fractions = [w.fraction for w in written]
    assert fractions == sorted(fractions) and set(fractions) <= {0.0, 0.3, 0.8, 1.0}
    assert done.progress.fraction == 1.0 and done.progress.message == "written"

    written.clear()
    rows = [{"n": n} for n in range(250)]
    done = _run(runtime, "data-export", {"rows": rows, "format": "csv"})
    assert done.status is Status.SUCCEEDED, done.error
    # Every 100 rows (a write carries the latest report when it runs), then the total.
    messages, fractions = [w.message for w in written], [w.fraction for w in written]
    assert set(messages[:-1]) <= {"100 rows", "200 rows"} and fractions == sorted(fractions)
    assert done.progress.fraction == 1.0 and done.progress.message.startswith("250 rows")
