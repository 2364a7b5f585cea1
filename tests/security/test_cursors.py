"""A list cursor the API did not hand out is 400 naming the cursor, before any store sees
it: against DynamoDB (moto over HTTP) through the API, and the memory store directly."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conveyor.errors import InvalidCursor
from conveyor.memory import MemoryTaskStore
from conveyor.model import Status, Task, new_id
from tests.security.test_auth import problem


def b64(data: object) -> str:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


ULID = "01ARZ3NDEKTSV4RRFFQ69G5FAV"
FORGED = [
    "!!!",
    "a",
    b64(b"\xff\xfe"),
    b64([1, 2]),
    b64("text"),
    b64({}),
    b64({"id": ULID}),  # the index key is missing
    b64({"id": ULID, "kind": "task", "extra": "x"}),
    b64({"id": 5, "kind": "task"}),
    b64({"id": "not-a-ulid", "kind": "task"}),
    b64({"id": ULID.lower(), "kind": "task"}),
    b64({"id": ULID, "kind": "worker"}),  # another partition of the same index
    b64({"id": ULID, "status": "queued"}),  # another index
    b64({"id": "worker#w1", "kind": "task"}),
    b64({"id": ULID, "kind": {"S": "task"}}),
    b64({"id": ULID, "kind": "task" * 400}),
]


def is_cursor_problem(r) -> None:
    body = problem(r, 400)
    assert body["type"] == "/problems/invalid-cursor"
    assert body["errors"][0]["pointer"] == "/query/cursor"


def test_forged_cursors_are_400_naming_the_cursor(secured, auth_tokens):
    api = secured(rate_limit="off")
    headers = auth_tokens.headers("all")
    for _ in range(3):
        api.post("/v1/tasks", json={"type": "echo", "payload": {}}, headers=headers)
    for cursor in FORGED:
        is_cursor_problem(api.get("/v1/tasks", params={"cursor": cursor}, headers=headers))
    # A real cursor works with its own filters, and is refused with others'.
    page = api.get("/v1/tasks", params={"limit": 1}, headers=headers).json()
    cursor = page["next_cursor"]
    assert api.get("/v1/tasks", params={"limit": 1, "cursor": cursor}, headers=headers).status_code == 200
    for other in ({"status": "queued"}, {"type": "echo"}, {"status": "failed", "type": "echo"}):
        is_cursor_problem(api.get("/v1/tasks", params={**other, "cursor": cursor}, headers=headers))
    queued = api.get("/v1/tasks", params={"limit": 1, "status": "queued"}, headers=headers).json()
    r = api.get("/v1/tasks", params={"status": "failed", "cursor": queued["next_cursor"]}, headers=headers)
    is_cursor_problem(r)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.one_of(
        st.text(min_size=1, max_size=60),
        st.binary(min_size=1, max_size=60).map(b64),
        st.dictionaries(
            st.sampled_from(["id", "kind", "status", "type", "x"]),
            st.one_of(st.text(max_size=30), st.integers(), st.none(), st.just(ULID)),
            max_size=3,
        ).map(b64),
    )
)
def test_no_cursor_gets_past_the_check_unless_it_is_well_formed(cursor):
    """Fuzz the check that stands before DynamoDB: anything it lets through is exactly the
    shape the store writes (an id and the index key, the id a task id)."""
    from conveyor.aws.dynamodb import _decode_cursor

    try:
        key = _decode_cursor(cursor, "kind", "task")
    except InvalidCursor:
        return
    assert set(key) == {"id", "kind"} and key["kind"] == {"S": "task"}
    assert len(key["id"]["S"]) == 26


def test_the_memory_store_refuses_forged_cursors_too():
    store = MemoryTaskStore()
    for _ in range(3):
        store.create(Task(id=new_id(), type="echo", payload={}))
    page = store.query(limit=1)
    assert page.next_cursor and store.query(limit=1, cursor=page.next_cursor).items
    for cursor in ("!!!", b64(b"\xff"), b64(b"worker#w1"), b64(ULID.lower().encode())):
        with pytest.raises(InvalidCursor):
            store.query(Status.QUEUED, cursor=cursor)
