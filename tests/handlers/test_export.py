"""data-export: rows and task records written to moto S3 as CSV/JSON, read back."""

from __future__ import annotations

import csv
import io
import itertools
import json
import random
import tracemalloc

import pytest

from conveyor import tokens
from conveyor.aws.dynamodb import item_to_task, task_to_item
from conveyor.errors import Conflict, PermanentError, TaskCancelled
from conveyor.model import Status, Task, TaskError, new_id
from worker.handlers import export
from worker.handlers.export import data_export

EVERY_SCOPE = frozenset(tokens.SCOPES)


@pytest.fixture
def export_ctx(make_ctx, storage):
    """A Context whose own task record exists, submitted by a token with ``scopes``."""

    def build(options=None, scopes=EVERY_SCOPE):
        ctx = make_ctx(options)
        store = storage.runtime.engine.store
        store.create(Task(id=ctx.task_id, type="data-export", payload={}, submitter_scopes=scopes))
        return ctx

    return build


ROWS = [
    {"name": "Ada", "role": "engineer", "tags": ["math", "engines"]},
    {"name": "Grace", "rank": "admiral", "note": 'says "hi", twice\nand again'},
]


def read_csv(data: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(data.decode())))


def test_rows_to_csv(export_ctx, storage):
    ctx = export_ctx()
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


def test_rows_to_json_with_chosen_columns(export_ctx, storage):
    result = data_export(
        {"rows": ROWS, "format": "json", "key": "out/people.json", "columns": ["role", "name"]}, export_ctx()
    )
    assert result["key"] == "out/people.json" and result["rows"] == 2
    assert json.loads(storage.blobs().get("out/people.json")) == [
        {"role": "engineer", "name": "Ada"},
        {"role": None, "name": "Grace"},
    ]


def test_empty_rows_give_an_empty_file(export_ctx, storage):
    result = data_export({"rows": [], "format": "json", "key": "e.json"}, export_ctx())
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


def test_task_records_of_a_type_and_state(export_ctx, storage):
    store = storage.runtime.engine.store
    kind = f"export-{new_id().lower()}"  # a type of its own: the table is shared
    tasks = make_tasks(store, kind, [Status.FAILED, Status.SUCCEEDED, Status.FAILED, Status.QUEUED])
    make_tasks(store, f"{kind}-other", [Status.FAILED])

    result = data_export({"tasks": {"type": kind, "status": "failed"}}, export_ctx())
    assert (result["rows"], result["source"]) == (2, "tasks")
    rows = read_csv(storage.blobs().get(result["key"]))
    assert [r["id"] for r in rows] == sorted([tasks[0].id, tasks[2].id], reverse=True)  # newest first
    assert list(rows[0]) == export.TASK_COLUMNS
    assert {r["status"] for r in rows} == {"failed"} and {r["type"] for r in rows} == {kind}
    assert json.loads(rows[-1]["error"]) == {"type": "Boom", "message": "failure 0"}
    assert json.loads(rows[-1]["payload"]) == {"i": 0}

    result = data_export({"tasks": {"type": kind}, "format": "json"}, export_ctx())
    records = json.loads(storage.blobs().get(result["key"]))
    assert len(records) == 4 and {r["status"] for r in records} == {"failed", "succeeded", "queued"}
    assert next(r for r in records if r["status"] == "succeeded")["result"] == {"n": 1}


def test_task_records_are_read_page_by_page_up_to_the_limit(export_ctx, storage, monkeypatch):
    monkeypatch.setattr(export, "PAGE_SIZE", 2)
    kind = f"export-{new_id().lower()}"
    tasks = make_tasks(storage.runtime.engine.store, kind, [Status.SUCCEEDED] * 5)
    result = data_export({"tasks": {"type": kind, "limit": 3}, "format": "json"}, export_ctx())
    ids = [r["id"] for r in json.loads(storage.blobs().get(result["key"]))]
    assert result["rows"] == 3 and ids == sorted((t.id for t in tasks), reverse=True)[:3]

    result = data_export({"tasks": {"type": kind}, "format": "json"}, export_ctx())
    assert result["rows"] == 5  # three pages of two


def test_a_cancelled_export_stops_between_pages(export_ctx):
    ctx = export_ctx()
    ctx.cancel_event.set()
    with pytest.raises(TaskCancelled):
        data_export({"tasks": {"type": "anything"}}, ctx)


def test_writes_to_an_allowed_bucket(export_ctx, storage):
    other = storage.new_bucket()
    result = data_export({"rows": ROWS, "bucket": other, "key": "r.csv"}, export_ctx({"buckets": [other]}))
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
        ({"rows": ROWS, "bucket": "no-such-bucket-here"}, {"buckets": ["no-such-bucket-here"]}, "no bucket"),
        ({"rows": ROWS, "bucket": "no-such-bucket-here"}, {}, "not allowed"),
        ({"rows": ROWS}, {"maxBytes": 0}, "options.maxBytes"),
        ({"rows": ROWS}, {"maxBytes": "1e9"}, "options.maxBytes"),
        ({"rows": ROWS, "key": "tmp/x.csv"}, {"writePrefixes": ["reports/"]}, "options.writePrefixes"),
        ({"rows": ROWS}, {"writePrefixes": "reports/"}, "options.writePrefixes"),
    ],
)
def test_bad_input_fails_permanently(export_ctx, payload, options, message):
    with pytest.raises(PermanentError, match=message):
        data_export(payload, export_ctx(options))


def test_only_the_configured_bucket_unless_the_tasktype_lists_more(export_ctx, storage):
    other = storage.new_bucket()  # exists, and the worker's credentials reach it
    with pytest.raises(PermanentError, match="not allowed"):
        data_export({"rows": ROWS, "bucket": other, "key": "r.csv"}, export_ctx())
    assert not storage.blobs(other).exists("r.csv")


def test_write_prefixes_bound_the_keys(export_ctx, storage):
    ctx = export_ctx({"writePrefixes": ["reports/", "exports/"]})
    assert data_export({"rows": ROWS, "key": "reports/a.csv"}, ctx)["key"] == "reports/a.csv"
    assert data_export({"rows": ROWS}, export_ctx({"writePrefixes": ["exports/"]}))["key"].startswith(
        "exports/"
    )
    with pytest.raises(PermanentError, match="writePrefixes"):
        data_export({"rows": ROWS, "key": "private/a.csv"}, export_ctx({"writePrefixes": ["reports/"]}))
    assert not storage.blobs().exists("private/a.csv")


def test_an_existing_object_is_not_replaced_unless_the_tasktype_allows(export_ctx, storage):
    storage.blobs().put("reports/q3.csv", b"the real numbers", "text/csv")
    with pytest.raises(PermanentError, match=r"exists.*options\.overwrite"):
        data_export({"rows": ROWS, "key": "reports/q3.csv"}, export_ctx())
    assert storage.blobs().get("reports/q3.csv") == b"the real numbers"
    with pytest.raises(PermanentError, match="exists"):  # a string is not a yes
        data_export({"rows": ROWS, "key": "reports/q3.csv"}, export_ctx({"overwrite": "true"}))

    data_export({"rows": ROWS, "key": "reports/q3.csv"}, export_ctx({"overwrite": True}))
    assert storage.blobs().get("reports/q3.csv").startswith(b"name,role")


def test_a_retry_may_replace_what_its_own_earlier_attempt_wrote(export_ctx, storage):
    ctx = export_ctx()
    first = data_export({"rows": ROWS, "key": "reports/mine.csv"}, ctx)
    again = data_export({"rows": ROWS[:1], "key": "reports/mine.csv"}, ctx)  # same task id
    assert (first["rows"], again["rows"]) == (2, 1)
    with pytest.raises(PermanentError, match="exists"):  # another task may not
        data_export({"rows": ROWS, "key": "reports/mine.csv"}, export_ctx())


def test_the_store_refuses_an_existing_key_itself(storage):
    """The conditional write (If-None-Match: *) closes the gap a HEAD-then-PUT leaves:
    checked on S3 (moto), for a single PUT and for a multipart upload."""
    blobs = storage.blobs()
    blobs.put("k", b"first")
    with pytest.raises(Conflict):
        blobs.put("k", b"second", overwrite=False)
    big = [b"x" * (1024 * 1024)] * 11  # 11 MiB: three parts of 5 MiB
    with pytest.raises(Conflict):
        blobs.upload("k", iter(big), overwrite=False, part_size=5 * 1024 * 1024)
    assert blobs.get("k") == b"first"
    uploads = storage.runtime.backend.s3.list_multipart_uploads(Bucket=storage.bucket)
    assert uploads.get("Uploads", []) == []  # the refused upload was aborted

    written = blobs.upload("m", iter(big), overwrite=False, part_size=5 * 1024 * 1024)
    assert written == 11 * 1024 * 1024 and blobs.stat("m").size == written
    assert blobs.get("m", max_bytes=10) == b"x" * 11  # a ranged read: the limit plus one


CSV_ATTACKS = [
    '=HYPERLINK("http://evil.example")',
    "+1+1",
    "-2+3",
    "@SUM(A1)",
    "\tx",
    "\rx",
    "=cmd|' /C calc'!A0",
]


def test_csv_cells_that_a_spreadsheet_would_run_are_escaped(export_ctx, storage):
    rows = [{"v": attack, "n": -5} for attack in CSV_ATTACKS] + [{"v": "plain", "=evil": "ok"}]
    result = data_export({"rows": rows, "key": "e.csv"}, export_ctx())
    parsed = read_csv(storage.blobs().get(result["key"]))
    assert [r["v"] for r in parsed] == ["'" + a for a in CSV_ATTACKS] + ["plain"]
    assert parsed[0]["n"] == "-5"  # a number is a number, not a formula
    assert list(parsed[0]) == ["v", "n", "'=evil"]  # column names come from payloads too
    # JSON output is data, not a sheet: values are kept as they are.
    result = data_export({"rows": rows, "format": "json", "key": "e.json"}, export_ctx())
    assert [r["v"] for r in json.loads(storage.blobs().get("e.json"))][:2] == CSV_ATTACKS[:2]


def test_the_byte_cap_stops_the_export_and_stores_nothing(export_ctx, storage):
    rows = [{"text": "y" * 1000} for _ in range(200)]
    with pytest.raises(PermanentError, match=r"larger than 50000 bytes \(options\.maxBytes\)"):
        data_export({"rows": rows, "key": "big.csv"}, export_ctx({"maxBytes": 50_000}))
    assert not storage.blobs().exists("big.csv")
    assert data_export({"rows": rows, "key": "ok.csv"}, export_ctx({"maxBytes": 300_000}))["rows"] == 200


@pytest.mark.parametrize(
    ("scopes", "allowed"),
    [
        (frozenset({tokens.SUBMIT}), False),
        (None, False),  # not recorded: refused, not assumed
        (frozenset({tokens.SUBMIT, tokens.READ}), True),
    ],
)
def test_exporting_task_records_needs_a_submitter_who_may_read_them(export_ctx, storage, scopes, allowed):
    kind = f"export-{new_id().lower()}"
    make_tasks(storage.runtime.engine.store, kind, [Status.SUCCEEDED])
    ctx = export_ctx(scopes=scopes)
    if allowed:
        assert data_export({"tasks": {"type": kind}}, ctx)["rows"] == 1
    else:
        with pytest.raises(PermanentError, match="tasks:read"):
            data_export({"tasks": {"type": kind}}, ctx)
        assert not storage.blobs().exists(f"exports/{ctx.task_id}.csv")
    # rows from the payload need nothing more than the submit itself
    assert data_export({"rows": ROWS, "key": f"r-{ctx.task_id}.csv"}, ctx)["rows"] == 2


def test_submitter_scopes_survive_the_dynamodb_record():
    task = Task(id=new_id(), type="t", payload={}, submitter_scopes=frozenset({tokens.SUBMIT, tokens.READ}))
    assert item_to_task(task_to_item(task)).submitter_scopes == task.submitter_scopes
    assert item_to_task(task_to_item(Task(id=new_id(), type="t", payload={}))).submitter_scopes is None


def _peak_export(ctx, storage, kind: str) -> int:
    tracemalloc.start()
    try:
        data_export({"tasks": {"type": kind}, "format": "json"}, ctx)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_export_memory_does_not_grow_with_the_data(export_ctx, storage):
    """Task records of 250 KB each, both exports larger than a part (multipart): nearly three
    times the records must not cost more memory. Building the whole file in memory, as
    before, costs ~3x the data: +46 MB here."""
    store = storage.runtime.engine.store
    small, large = f"mem-{new_id().lower()}", f"mem-{new_id().lower()}"
    blob = "z" * (250 * 1024)
    for kind, n in ((small, 36), (large, 96)):
        for _ in range(n):
            store.create(Task(id=new_id(), type=kind, payload={"blob": blob}))
    peak_small = _peak_export(export_ctx(), storage, small)
    peak_large = _peak_export(export_ctx(), storage, large)
    assert peak_large - peak_small < 4 * 1024 * 1024, (peak_small, peak_large)
    assert peak_large < 40 * 1024 * 1024, peak_large  # the data is 24 MB


class CountsHeads:
    """A store that counts its HEADs (stat and exists)."""

    def __init__(self, inner):
        self.inner = inner
        self.heads = 0

    def stat(self, key):
        self.heads += 1
        return self.inner.stat(key)

    def exists(self, key):
        self.heads += 1
        return self.inner.exists(key)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_the_overwrite_rule_costs_one_head(export_ctx, storage):
    ctx = export_ctx()
    data_export({"rows": ROWS, "key": "reports/once.csv"}, ctx)  # exists now, written by this task
    factory = ctx.blob_factory
    counting = CountsHeads(factory(storage.bucket))
    ctx.blob_factory = lambda name: counting
    assert data_export({"rows": ROWS, "key": "reports/once.csv"}, ctx)["rows"] == 2  # its retry
    assert counting.heads == 1


def test_a_multipart_upload_keeps_every_byte_in_order(storage):
    """Chunks of any size, smaller and larger than a part, reach S3 (moto) byte for byte;
    a total of exactly two parts leaves a full last part, not an empty third."""
    mib = 1024 * 1024
    data = random.Random(7).randbytes(10 * mib)
    cuts = [0, 3 * mib, 9 * mib + 7, 10 * mib]
    chunks = [data[a:b] for a, b in itertools.pairwise(cuts)]
    blobs = storage.blobs()
    assert blobs.upload("order", iter(chunks), part_size=5 * mib) == len(data)
    assert blobs.get("order") == data
    head = storage.runtime.backend.s3.head_object(Bucket=storage.bucket, Key="order", PartNumber=1)
    assert head["PartsCount"] == 2
