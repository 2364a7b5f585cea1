"""data-export: rows and task records written to moto S3 as CSV/JSON, read back."""

from __future__ import annotations

import csv
import io
import json

import pytest

from conveyor.errors import PermanentError, TaskCancelled
from conveyor.model import Status, Task, TaskError, new_id
from worker.handlers import export
from worker.handlers.export import data_export

ROWS = [
    {"name": "Ada", "role": "engineer", "tags": ["math", "engines"]},
    {"name": "Grace", "rank": "admiral", "note": 'says "hi", twice\nand again'},
]


def read_csv(data: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(data.decode())))


def test_rows_to_csv(make_ctx, storage):
    ctx = make_ctx()
    result = data_export({"rows": ROWS}, ctx)
    assert result == {
        "bucket": storage.bucket,
        "key": f"exports/{ctx.task_id}.csv",
        "rows": 2,
        "bytes": result["bytes"],
        "format": "csv",
        "source": "payload",
    }
    data = storage.blobs().get(result["key"])
    assert len(data) == result["bytes"]
    assert data.splitlines()[0] == b"name,role,tags,rank,note"  # every key, first-seen order
    assert read_csv(data) == [
        {"name": "Ada", "role": "engineer", "tags": '["math","engines"]', "rank": "", "note": ""},
        {"name": "Grace", "role": "", "tags": "", "rank": "admiral", "note": 'says "hi", twice\nand again'},
    ]


def test_rows_to_json_with_chosen_columns(make_ctx, storage):
    result = data_export(
        {"rows": ROWS, "format": "json", "key": "out/people.json", "columns": ["role", "name"]}, make_ctx()
    )
    assert result["key"] == "out/people.json" and result["rows"] == 2
    assert json.loads(storage.blobs().get("out/people.json")) == [
        {"role": "engineer", "name": "Ada"},
        {"role": None, "name": "Grace"},
    ]


def test_empty_rows_give_an_empty_file(make_ctx, storage):
    result = data_export({"rows": [], "format": "json", "key": "e.json"}, make_ctx())
    assert result["rows"] == 0 and storage.blobs().get("e.json") == b"[]"


def make_tasks(store, task_type: str, statuses: list[Status]) -> list[Task]:
    tasks = []
    for i, status in enumerate(statuses):
        error = TaskError("Boom", f"failure {i}") if status is Status.FAILED else None
        result = {"n": i} if status is Status.SUCCEEDED else None
        task = Task(id=new_id(), type=task_type, payload={"i": i}, status=status, error=error, result=result)
        store.create(task)
        tasks.append(task)
    return tasks


def test_task_records_of_a_type_and_state(make_ctx, storage):
    store = storage.runtime.engine.store
    kind = f"export-{new_id().lower()}"  # a type of its own: the table is shared
    tasks = make_tasks(store, kind, [Status.FAILED, Status.SUCCEEDED, Status.FAILED, Status.QUEUED])
    make_tasks(store, f"{kind}-other", [Status.FAILED])

    result = data_export({"tasks": {"type": kind, "status": "failed"}}, make_ctx())
    assert (result["rows"], result["source"]) == (2, "tasks")
    rows = read_csv(storage.blobs().get(result["key"]))
    assert [r["id"] for r in rows] == sorted([tasks[0].id, tasks[2].id], reverse=True)  # newest first
    assert list(rows[0]) == export.TASK_COLUMNS
    assert {r["status"] for r in rows} == {"failed"} and {r["type"] for r in rows} == {kind}
    assert json.loads(rows[-1]["error"]) == {"type": "Boom", "message": "failure 0"}
    assert json.loads(rows[-1]["payload"]) == {"i": 0}

    result = data_export({"tasks": {"type": kind}, "format": "json"}, make_ctx())
    records = json.loads(storage.blobs().get(result["key"]))
    assert len(records) == 4 and {r["status"] for r in records} == {"failed", "succeeded", "queued"}
    assert next(r for r in records if r["status"] == "succeeded")["result"] == {"n": 1}


def test_task_records_are_read_page_by_page_up_to_the_limit(make_ctx, storage, monkeypatch):
    monkeypatch.setattr(export, "PAGE_SIZE", 2)
    kind = f"export-{new_id().lower()}"
    tasks = make_tasks(storage.runtime.engine.store, kind, [Status.SUCCEEDED] * 5)
    result = data_export({"tasks": {"type": kind, "limit": 3}, "format": "json"}, make_ctx())
    ids = [r["id"] for r in json.loads(storage.blobs().get(result["key"]))]
    assert result["rows"] == 3 and ids == sorted((t.id for t in tasks), reverse=True)[:3]

    result = data_export({"tasks": {"type": kind}, "format": "json"}, make_ctx())
    assert result["rows"] == 5  # three pages of two


def test_a_cancelled_export_stops_between_pages(make_ctx):
    ctx = make_ctx()
    ctx.cancel_event.set()
    with pytest.raises(TaskCancelled):
        data_export({"tasks": {"type": "anything"}}, ctx)


def test_writes_to_an_allowed_bucket(make_ctx, storage):
    other = storage.new_bucket()
    result = data_export({"rows": ROWS, "bucket": other, "key": "r.csv"}, make_ctx({"buckets": [other]}))
    assert result["bucket"] == other and storage.blobs(other).exists("r.csv")


@pytest.mark.parametrize(
    ("payload", "options", "message"),
    [
        ({"rows": ROWS, "tasks": {}}, {}, "exactly one source"),
        ({"format": "csv"}, {}, "exactly one source"),
        ({"rows": ROWS, "format": "xml"}, {}, "format"),
        ({"rows": [1, 2]}, {}, "array of objects"),
        ({"tasks": {"status": "lost"}}, {}, "tasks.status"),
        ({"tasks": {"limit": 0}}, {}, "tasks.limit"),
        ({"rows": ROWS, "bucket": "elsewhere"}, {"buckets": ["mine"]}, "options.buckets"),
        ({"rows": ROWS, "bucket": "no-such-bucket-here"}, {}, "no bucket"),
    ],
)
def test_bad_input_fails_permanently(make_ctx, payload, options, message):
    with pytest.raises(PermanentError, match=message):
        data_export(payload, make_ctx(options))
