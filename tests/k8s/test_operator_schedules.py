"""TaskSchedules through the operator: kopf's CLI running k8s/controller/tasktypes.py against
kmock. Each schedule lands in schedules.json (ready or not, with why), gets a Ready
condition, and is re-evaluated when the TaskType it names changes."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import yaml

from conveyor.registry import Registry, TaskType
from tests.conftest import EXAMPLES
from tests.k8s import apiserver
from tests.k8s.conftest import NAMESPACE, SCHEDULE_CRD, SCHEDULES_BASE, TASKSCHEDULES, Cluster, eventually
from tests.k8s.test_schedule_crd import load_operator

SCHEMA = yaml.safe_load(SCHEDULE_CRD.read_text())["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
# The schedules.json item, field for field (the contract the API reads).
ITEM_KEYS = {
    "name",
    "namespace",
    "taskType",
    "payload",
    "schedule",
    "timeZone",
    "jitterSeconds",
    "concurrencyPolicy",
    "startingDeadlineSeconds",
    "maxCatchUp",
    "suspend",
    "maxAttempts",
    "ready",
    "reason",
}
EMAIL_SCHEMA = {"type": "object", "required": ["to"], "properties": {"to": {"type": "string"}}}


def defaulted(**spec: Any) -> dict[str, Any]:
    """The spec as the API server stores it (kmock applies no schema)."""
    doc = {"apiVersion": "conveyor.dev/v1alpha1", "kind": "TaskSchedule", "metadata": {"name": "x"}}
    assert apiserver.object_problems(SCHEMA, {**doc, "spec": spec}) == []
    return dict(apiserver.with_defaults(SCHEMA, {**doc, "spec": spec})["spec"])


async def test_the_example_schedule_is_written_in_full_and_ready(cluster: Cluster):
    example = yaml.safe_load((EXAMPLES / "every-minute.yaml").read_text())
    async with cluster.operator():
        await cluster.apply("echo", {"handler": "echo"})
        await cluster.apply_schedule("every-minute", defaulted(**example["spec"]))
        item = await eventually(lambda: (cluster.schedules() or {}).get("every-minute"))
        condition = await eventually(lambda: cluster.schedule_ready("every-minute"))
        events = await eventually(lambda: cluster.events("every-minute", kind="TaskSchedule"))
    assert set(item) == ITEM_KEYS
    assert item == {
        "name": "every-minute",
        "namespace": NAMESPACE,
        "taskType": "echo",
        "payload": {"message": "scheduled hello"},
        "schedule": "* * * * *",
        "timeZone": "UTC",
        "jitterSeconds": 0,
        "concurrencyPolicy": "Forbid",
        "startingDeadlineSeconds": 120,
        "maxCatchUp": 1,
        "suspend": False,
        "maxAttempts": None,
        "ready": True,
        "reason": "",
    }
    assert condition["status"] == "True" and condition["reason"] == "Ready"
    assert condition["observedGeneration"] == 1
    assert cluster.schedule("every-minute")["status"]["observedGeneration"] == 1
    assert events[0]["type"] == "Normal" and events[0]["reason"] == "Ready"
    assert events[0]["involvedObject"]["kind"] == "TaskSchedule"
    # The TaskType registry is still there beside it.
    assert (cluster.registry() or {})["echo"]["ready"] is True


async def test_each_reason_a_schedule_cannot_fire_is_named(cluster: Cluster):
    cases = {
        "bad-cron": (defaulted(taskType="echo", schedule="61 * * * *"), "InvalidSchedule", "61 * * * *"),
        "bad-zone": (
            defaulted(taskType="echo", schedule="@daily", timeZone="Mars/Olympus"),
            "UnknownTimeZone",
            "Mars/Olympus",
        ),
        "no-type": (
            defaulted(taskType="nope", schedule="@hourly"),
            "UnknownTaskType",
            "it has: echo, email, ghost, off",
        ),
        "disabled": (defaulted(taskType="off", schedule="@hourly"), "TaskTypeDisabled", "'off'"),
        "not-ready": (defaulted(taskType="ghost", schedule="@hourly"), "TaskTypeNotReady", "HandlerNotFound"),
        "bad-payload": (
            defaulted(taskType="email", schedule="@hourly", payload={"to": 5}),
            "InvalidPayload",
            "(at /to)",
        ),
    }
    async with cluster.operator():
        await cluster.apply("echo", {"handler": "echo"})
        await cluster.apply("off", {"handler": "echo", "enabled": False})
        await cluster.apply("ghost", {"handler": "no-such-handler"})
        await cluster.apply("email", {"handler": "echo", "payloadSchema": EMAIL_SCHEMA})
        for name, (spec, _, _) in cases.items():
            await cluster.apply_schedule(name, spec)
        await eventually(lambda: all(cluster.schedule_ready(n) for n in cases))
        written = await eventually(
            lambda: len(cluster.schedules() or {}) == len(cases) and cluster.schedules()
        )
        for name, (_, reason, detail) in cases.items():
            condition = cluster.schedule_ready(name)
            assert condition["status"] == "False" and condition["reason"] == reason, (name, condition)
            assert detail in condition["message"], (name, condition["message"])
            # Written all the same, never to fire, with the reason the API shows.
            assert written[name]["ready"] is False, name
            assert written[name]["reason"].startswith(f"{reason}: ") and detail in written[name]["reason"]
            warning = await eventually(lambda n=name: cluster.events(n, kind="TaskSchedule"))
            assert warning[0]["type"] == "Warning" and warning[0]["reason"] == reason


async def test_suspended_is_ready_and_says_so(cluster: Cluster):
    async with cluster.operator():
        await cluster.apply("echo", {"handler": "echo"})
        await cluster.apply_schedule("paused", defaulted(taskType="echo", schedule="@daily", suspend=True))
        condition = await eventually(lambda: cluster.schedule_ready("paused"))
        item = await eventually(lambda: (cluster.schedules() or {}).get("paused"))
    assert condition["status"] == "True" and condition["reason"] == "Suspended"
    assert item["ready"] is True and item["suspend"] is True and item["reason"] == ""


async def test_a_tasktype_change_re_evaluates_the_schedules_that_name_it(cluster: Cluster):
    def verdict() -> tuple[str, str] | None:
        c = cluster.schedule_ready("nightly")
        return (c["status"], c["reason"]) if c else None

    async with cluster.operator():
        await cluster.apply_schedule("nightly", defaulted(taskType="report", schedule="0 2 * * *"))
        await eventually(lambda: verdict() == ("False", "UnknownTaskType"))
        assert cluster.schedules()["nightly"]["ready"] is False

        await cluster.apply("report", {"handler": "echo"})  # no schedule event: a TaskType one
        await eventually(lambda: verdict() == ("True", "Ready"))
        assert cluster.schedules()["nightly"]["ready"] is True
        became_ready = cluster.schedule_ready("nightly")["lastTransitionTime"]

        await cluster.apply("report", {"handler": "echo", "enabled": False})
        await eventually(lambda: verdict() == ("False", "TaskTypeDisabled"))
        assert cluster.schedules()["nightly"]["ready"] is False

        await cluster.apply("report", {"handler": "echo", "payloadSchema": EMAIL_SCHEMA})
        await eventually(lambda: verdict() == ("False", "InvalidPayload"))
        await cluster.apply("report", {"handler": "echo"})
        await eventually(lambda: verdict() == ("True", "Ready"))

        await cluster.delete("report")
        await eventually(lambda: verdict() == ("False", "UnknownTaskType"))
        assert cluster.schedules()["nightly"]["ready"] is False
    assert became_ready  # a time, set when the status flipped


async def test_spec_changes_are_followed_and_delete_removes_the_schedule(cluster: Cluster):
    async with cluster.operator():
        await cluster.apply("echo", {"handler": "echo"})
        await cluster.apply_schedule("s", defaulted(taskType="echo", schedule="@hourly"))
        await eventually(lambda: (cluster.schedules() or {}).get("s"))

        await cluster.apply_schedule(
            "s", defaulted(taskType="echo", schedule="*/15 * * * *", timeZone="Europe/Paris", maxCatchUp=3)
        )
        item = await eventually(
            lambda: (s := (cluster.schedules() or {}).get("s")) and s["schedule"] == "*/15 * * * *" and s
        )
        assert item["timeZone"] == "Europe/Paris" and item["maxCatchUp"] == 3
        condition = await eventually(
            lambda: (c := cluster.schedule_ready("s")) and c.get("observedGeneration") == 2 and c
        )
        assert condition["status"] == "True"

        await cluster.delete_schedule("s")
        await eventually(lambda: cluster.schedules() == {})


async def test_the_apis_status_fields_survive_the_operators_patches(cluster: Cluster):
    """The operator owns the condition; lastScheduleTime and the rest are the API's."""
    api_fields = {
        "lastScheduleTime": "2026-12-03T09:00:00Z",
        "nextScheduleTime": "2026-12-03T09:01:00Z",
        "lastTaskId": "01JF0000000000000000000000",
        "lastTaskStatus": "succeeded",
    }
    async with cluster.operator():
        await cluster.apply("echo", {"handler": "echo"})
        await cluster.apply_schedule("s", defaulted(taskType="echo", schedule="* * * * *"))
        await eventually(lambda: cluster.schedule_ready("s"))
        resp = await cluster.emulator.patch(f"{SCHEDULES_BASE}/s/status", json={"status": api_fields})
        assert resp.status < 300
        await cluster.apply_schedule("s", defaulted(taskType="echo", schedule="61 * * * *"))
        await eventually(lambda: (cluster.schedule_ready("s") or {}).get("reason") == "InvalidSchedule")
    status = cluster.schedule("s")["status"]
    assert {k: status.get(k) for k in api_fields} == api_fields


async def test_garbage_a_hand_edited_crd_lets_through_never_reaches_the_api(cluster: Cluster):
    """kmock, like a CRD edited by hand, enforces no schema: the operator writes the default in
    place of a value the API could not use, and marks the schedule not ready."""
    async with cluster.operator():
        await cluster.apply("echo", {"handler": "echo"})
        spec = {
            "taskType": "echo",
            "schedule": "@daily",
            "jitterSeconds": "lots",
            "maxCatchUp": 10_000,
            "suspend": "no",
        }
        await cluster.apply_schedule("junk", spec)
        item = await eventually(lambda: (cluster.schedules() or {}).get("junk"))
        condition = await eventually(lambda: cluster.schedule_ready("junk"))
    assert item["ready"] is False and item["reason"].startswith("InvalidSpec: ")
    assert (item["jitterSeconds"], item["maxCatchUp"], item["suspend"], item["payload"]) == (0, 1, False, {})
    assert condition["reason"] == "InvalidSpec"
    for name in ("jitterSeconds", "maxCatchUp", "suspend"):
        assert f"spec.{name}" in condition["message"]


async def test_an_unchanged_schedule_is_neither_rewritten_nor_repatched(cluster: Cluster):
    async with cluster.operator():
        await cluster.apply("echo", {"handler": "echo"})
        await cluster.apply_schedule("s", defaulted(taskType="echo", schedule="@hourly"))
        await eventually(lambda: cluster.schedule_ready("s"))
        await asyncio.sleep(0.8)  # the status patch's own watch event comes and goes

        def writes() -> tuple[int, int]:
            status = sum(
                1
                for r in list(cluster.emulator)
                if r.resource is not None
                and r.resource.plural == "taskschedules"
                and r.subresource == "status"
            )
            return cluster.configmap_requests("POST", "PATCH"), status

        before = writes()
        # A label change: an event and a pass, but nothing to write.
        resp = await cluster.emulator.patch(
            f"{SCHEDULES_BASE}/s", json={"metadata": {"labels": {"team": "x"}}}
        )
        assert resp.status == 200
        await asyncio.sleep(1.0)
        assert writes() == before


async def test_the_apis_status_writes_do_not_wake_the_operator(cluster: Cluster):
    """The API writes every schedule's status every ~30 s: those writes must not cost a full
    pass each (a list of TaskTypes, a list of schedules, a ConfigMap read)."""

    def lists() -> int:
        return sum(
            1
            for r in list(cluster.emulator)
            if r.resource is not None
            and r.resource.plural == "taskschedules"
            and r.method == "GET"
            and r.name is None
            and r.params.get("watch") != "true"
        )

    async with cluster.operator():
        await cluster.apply("echo", {"handler": "echo"})
        await cluster.apply_schedule("s", defaulted(taskType="echo", schedule="* * * * *"))
        await eventually(lambda: cluster.schedule_ready("s"))
        await asyncio.sleep(0.8)
        before = lists()
        for minute in range(5):
            fields = {"lastScheduleTime": f"2026-12-03T09:0{minute}:00Z", "lastTaskStatus": "queued"}
            resp = await cluster.emulator.patch(f"{SCHEDULES_BASE}/s/status", json={"status": fields})
            assert resp.status < 300
        await asyncio.sleep(1.0)
        assert lists() == before
        # A spec change still does (the generation moves past observedGeneration).
        await cluster.apply_schedule("s", defaulted(taskType="echo", schedule="*/5 * * * *"))
        await eventually(lambda: lists() > before)
        await eventually(lambda: cluster.schedules()["s"]["schedule"] == "*/5 * * * *")


async def test_without_the_taskschedule_crd_tasktypes_still_work(cluster: Cluster):
    """An upgrade whose `helm upgrade` did not install the new CRD (Helm installs crds/ only on
    install): the registry is written, with no schedules."""
    del cluster.emulator.resources[TASKSCHEDULES]
    async with cluster.operator():
        await cluster.apply("echo", {"handler": "echo"})
        await eventually(lambda: "echo" in (cluster.registry() or {}))
        await eventually(lambda: cluster.schedules() == {})


def test_the_written_item_reads_back_as_the_apis_schedule():
    """The contract both ways, without a cluster: what the operator writes, conveyor.schedule
    parses (skipped until that module has ScheduleSpec)."""
    import pytest

    from conveyor import schedule

    spec_class = getattr(schedule, "ScheduleSpec", None)
    if spec_class is None:
        pytest.skip("conveyor.schedule has no ScheduleSpec yet")
    operator = load_operator()
    registry = Registry({"echo": TaskType(name="echo", handler="echo")})
    entry = operator.evaluate_schedule("s", "tasks", defaulted(taskType="echo", schedule="@daily"), registry)
    parsed = spec_class.from_json(entry.item)
    assert (parsed.name, parsed.namespace, parsed.task_type, parsed.ready) == ("s", "tasks", "echo", True)
    assert parsed.to_json() == entry.item


def test_a_payload_over_the_apis_limit_is_not_ready_and_the_limit_is_exact():
    operator = load_operator()
    registry = Registry({"echo": TaskType(name="echo", handler="echo")})
    payload = {"text": "x" * 100}
    size = len(json.dumps(payload, separators=(",", ":")))
    spec = defaulted(taskType="echo", schedule="@daily", payload=payload)
    fits = operator.evaluate_schedule("s", "tasks", spec, registry, max_payload=size)
    over = operator.evaluate_schedule("s", "tasks", spec, registry, max_payload=size - 1)
    assert fits.ready and fits.reason == "Ready"
    assert not over.ready and over.reason == "InvalidPayload" and f"{size} bytes" in over.message


def test_a_deadline_no_longer_than_the_jitter_is_refused_even_without_the_crds_rule():
    operator = load_operator()
    registry = Registry({"echo": TaskType(name="echo", handler="echo")})
    spec = {"taskType": "echo", "schedule": "@daily", "jitterSeconds": 60, "startingDeadlineSeconds": 60}
    entry = operator.evaluate_schedule("s", "tasks", spec, registry)
    assert entry.reason == "InvalidSpec" and "jitterSeconds" in entry.message
    assert entry.item["ready"] is False and entry.item["reason"].startswith("InvalidSpec: ")


def test_a_long_verdict_is_truncated():
    """A payload with hundreds of schema errors must not bloat the status or the ConfigMap.
    Hundreds, not thousands: enough for twice the limit, and far inside validation's time
    budget even on a busy machine (past it, the verdict is the short budget message)."""
    operator = load_operator()
    schema = {"type": "array", "items": {"type": "string"}}
    registry = Registry({"list": TaskType(name="list", handler="echo", payload_schema=schema)})
    entry = operator.evaluate_schedule(
        "s", "tasks", defaulted(taskType="list", schedule="@daily", payload=list(range(300))), registry
    )
    assert entry.reason == "InvalidPayload"
    assert len(entry.message) == operator.MESSAGE_LIMIT and entry.message.endswith("(truncated)")
