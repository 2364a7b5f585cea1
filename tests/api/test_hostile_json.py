"""Values Python's json accepts but nothing downstream can serve: refused on the way in
with a problem naming the field, and never fatal to a read when a stored record holds one
anyway. In-process on the memory adapters, plus one run against DynamoDB (moto)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry
from starlette.testclient import TestClient

from conveyor import jsonsafe
from conveyor.engine import Engine
from conveyor.model import Status, Task, new_id, now
from tests.conftest import AUTH_HEADERS, EXAMPLES, make_settings
from tests.support import engines

DEEP = 970
# (raw JSON text of the payload or field, the pointer the problem must name)
HOSTILE_PAYLOADS = [
    ('{"x": NaN}', "/payload/x"),
    ('{"x": Infinity}', "/payload/x"),
    ('{"x": [1, -Infinity]}', "/payload/x/1"),
    ('{"x": 1e999}', "/payload/x"),
    ('{"x": -1e999}', "/payload/x"),
    ('{"x": "\\ud800"}', "/payload/x"),
    ('{"\\udfff": 1}', "/payload"),
    ('{"x": ' + "9" * 5000 + "}", "/payload/x"),
    ('{"x": -' + "1" * 21 + "}", "/payload/x"),
    ('{"a/b": {"c~d": NaN}}', "/payload/a~1b/c~0d"),
    ("[" * DEEP + "]" * DEEP, None),  # parsed or not, refused
    ('{"x": ' + "[" * 100 + "]" * 100 + "}", None),  # deeper than MAX_DEPTH, parsed
]


def memory_engine(**overrides) -> Engine:
    settings = make_settings(tasktypes=str(EXAMPLES), rate_limit="off", **overrides)
    return engines.memory_engine(settings)


@pytest.fixture
def engine() -> Engine:
    return memory_engine()


@pytest.fixture
def client(engine: Engine) -> Iterator[TestClient]:
    from api.app import create_app

    with TestClient(
        create_app(engine, CollectorRegistry()), raise_server_exceptions=False, headers=AUTH_HEADERS
    ) as c:
        yield c


def post_raw(client: TestClient, path: str, text: str):
    return client.post(path, content=text.encode("utf-8"), headers={"content-type": "application/json"})


def assert_reads(client: TestClient) -> None:
    for params in ({}, {"type": "echo"}, {"status": "queued"}, {"status": "failed", "type": "echo"}):
        r = client.get("/v1/tasks", params=params)
        assert r.status_code == 200, (params, r.text[:300])


@pytest.mark.parametrize(("payload", "pointer"), HOSTILE_PAYLOADS)
def test_hostile_values_are_refused_naming_the_field(client, engine, payload, pointer):
    r = post_raw(client, "/v1/tasks", '{"type": "echo", "payload": ' + payload + "}")
    assert r.status_code == 422, r.text[:300]
    assert r.headers["content-type"] == "application/problem+json"
    body = r.json()
    assert body["errors"][0]["pointer"] == (pointer or body["errors"][0]["pointer"])
    assert body["errors"][0]["pointer"].startswith(("/payload", "/")) and body["errors"][0]["message"]
    batch = post_raw(
        client,
        "/v1/tasks/batch",
        '{"tasks": [{"type": "echo"}, {"type": "echo", "payload": ' + payload + "}]}",
    )
    assert batch.status_code == 422
    if pointer and pointer != "/":
        assert batch.json()["errors"][0]["pointer"] == "/tasks/1" + pointer
    assert engine.store.count_by_status()[Status.QUEUED] == 0  # nothing was stored
    assert_reads(client)


@pytest.mark.parametrize(
    ("field", "value", "status"),
    [
        ("delay_seconds", "NaN", 422),
        ("delay_seconds", "Infinity", 422),
        ("delay_seconds", "1e999", 422),
        ("max_attempts", "1" + "0" * 5000, 422),
        ("run_at", '"0001-01-01T00:00:00+23:59"', 422),
        ("run_at", '"0001-01-01T00:00:00Z"', 202),  # in the past: runs now
        ("run_at", '"9999-12-31T23:59:59-23:59"', 422),
        ("run_at", '"9999-12-31T23:59:59+23:59"', 422),
    ],
)
def test_hostile_submit_fields_never_give_a_500(client, field, value, status):
    r = post_raw(client, "/v1/tasks", f'{{"type": "echo", "payload": {{}}, "{field}": {value}}}')
    assert r.status_code == status, r.text[:300]
    if status == 422:
        assert r.json()["errors"][0]["pointer"] == f"/{field}"
    assert_reads(client)


def test_the_depth_limit_is_the_stated_one(client):
    inside = jsonsafe.MAX_DEPTH - 2  # the body and its payload object are two levels
    ok = '{"type": "echo", "payload": {"x": ' + "[" * inside + "]" * inside + "}}"
    assert post_raw(client, "/v1/tasks", ok).status_code == 202
    deep = '{"type": "echo", "payload": {"x": ' + "[" * (inside + 1) + "]" * (inside + 1) + "}}"
    body = post_raw(client, "/v1/tasks", deep).json()
    assert body["status"] == 422 and f"{jsonsafe.MAX_DEPTH} levels" in body["errors"][0]["message"]


def test_jsonsafe_loads_and_normalised():
    assert jsonsafe.loads(b'{"a": [1, 2.5, "\\u00e9", null, true]}') == {"a": [1, 2.5, "é", None, True]}
    assert jsonsafe.loads(str(10**19)) == 10**19
    with pytest.raises(jsonsafe.UnsafeJSON) as exc:
        jsonsafe.loads('{"a": [0, {"b": NaN}]}')
    assert exc.value.pointer == "/a/1/b"
    value, encoded = jsonsafe.normalised({"t": (1, 2), 3: "x"})
    assert value == {"t": [1, 2], "3": "x"} and encoded == '{"t":[1,2],"3":"x"}'
    for bad in (math.nan, {"s": "\ud800"}, {1, 2}, object(), 10**25, _deep(jsonsafe.MAX_DEPTH)):
        with pytest.raises(jsonsafe.UnsafeJSON):
            jsonsafe.normalised(bad)
    assert jsonsafe.normalised(_deep(jsonsafe.MAX_DEPTH - 1))[0] == _deep(jsonsafe.MAX_DEPTH - 1)
    cycle: list = []
    cycle.append(cycle)
    with pytest.raises(jsonsafe.UnsafeJSON):
        jsonsafe.normalised(cycle)


def _deep(n: int) -> list:
    value: list = []
    for _ in range(n):
        value = [value]
    return value


def stored_directly(engine: Engine, **fields) -> Task:
    """A record put straight into the store, as another writer or an older version could."""
    at = now()
    task = Task(id=new_id(), type="echo", **({"payload": {}} | fields), created_at=at, updated_at=at)
    engine.store.create(task)
    return task


def test_a_stored_record_that_cannot_be_served_never_breaks_a_read(client, engine):
    good = stored_directly(engine, payload={"ok": 1})
    bad = [
        stored_directly(engine, payload={"x": math.nan}),
        stored_directly(engine, payload={"x": "\ud800"}, status=Status.SUCCEEDED),
        stored_directly(engine, payload={}, result={"y": math.inf}, status=Status.SUCCEEDED),
        stored_directly(engine, payload=_deep(3000)),
    ]
    later = stored_directly(engine, payload={"ok": 2})
    for params in ({}, {"type": "echo"}, {"status": "queued"}, {"status": "succeeded"}):
        r = client.get("/v1/tasks", params=params)
        assert r.status_code == 200, params
    items = {t["id"]: t for t in client.get("/v1/tasks").json()["items"]}
    assert items[good.id]["payload"] == {"ok": 1} and items[later.id]["payload"] == {"ok": 2}
    for task in bad:
        shown = items[task.id]
        assert shown["payload"] is None and shown["error"]["type"] == "UnreadableRecord"
        one = client.get(f"/v1/tasks/{task.id}")
        assert one.status_code == 200 and one.json()["error"]["type"] == "UnreadableRecord"
    assert client.post(f"/v1/tasks/{bad[0].id}/cancel").status_code == 200


def test_dynamodb_items_that_do_not_decode_are_withheld_or_left_out(api, runtime):
    """Against the real store: items put with PutItem, bypassing the API."""
    store = runtime.engine.store
    good = api.post("/v1/tasks", json={"type": "echo", "payload": {"ok": True}}).json()["id"]
    at = "2026-01-01T00:00:00.000Z"

    def put(payload_text: str, **extra) -> str:
        task_id = new_id()
        item = {
            "id": {"S": task_id},
            "kind": {"S": "task"},
            "type": {"S": "echo"},
            "status": {"S": "queued"},
            "payload": {"S": payload_text},
            "attempts": {"N": "0"},
            "max_attempts": {"N": "3"},
            "created_at": {"S": at},
            "updated_at": {"S": at},
            **extra,
        }
        store.client.put_item(TableName=store.table, Item=item)
        return task_id

    withheld = [
        put('{"x": NaN}'),
        put('{"x": "\\ud800"}'),
        put("{not json"),
        put("[" * 5000 + "]" * 5000),
        put('{"x": ' + "9" * 5000 + "}"),
        put("{}", result={"S": '{"r": Infinity}'}),
    ]
    broken = put("{}", status={"S": "exploded"})
    for params in ({}, {"type": "echo"}, {"status": "queued"}, {"status": "queued", "type": "echo"}):
        r = api.get("/v1/tasks", params=params)
        assert r.status_code == 200, (params, r.text[:300])
    items = {t["id"]: t for t in api.get("/v1/tasks").json()["items"]}
    assert items[good]["payload"] == {"ok": True}
    for task_id in withheld:
        assert items[task_id]["payload"] is None and items[task_id]["error"]["type"] == "UnreadableRecord"
        assert api.get(f"/v1/tasks/{task_id}").status_code == 200
    assert broken not in items  # not a task record this version can read: left out, logged
    assert api.get(f"/v1/tasks/{broken}").status_code == 404
    assert json.loads(api.get(f"/v1/tasks/{good}").text)["payload"] == {"ok": True}
