"""The operator and flow control: the TaskType status and registry entry carry the type's
priority and limits, the CRD's flow-control CEL rules are restated for clusters that do not
run them, and a TaskType stored before `concurrency` became an object keeps working."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from conveyor.registry import TaskType, flow_problems, load_manifests
from tests.conftest import EXAMPLES
from tests.k8s import apiserver
from tests.k8s.conftest import CRD, Cluster, eventually
from tests.k8s.test_crd import FLOW_SPECS
from tests.k8s.test_schedule_crd import load_operator

operator = load_operator()
schema = yaml.safe_load(CRD.read_text())["spec"]["versions"][0]["schema"]["openAPIV3Schema"]

EXTRA_SPECS: list[dict[str, Any]] = [
    {"concurrency": {"key": "/tenant"}},  # both concurrency rules at once
    {"concurrency": {"max": 3, "key": "/t"}, "rateLimit": {"limit": 2000, "period": 2}},  # exactly 1000/s
    {"rateLimit": {"limit": 2001, "period": 2}},
    {"rateLimit": {"limit": 1, "period": 0.001}},  # 1000/s
]


def _defaulted(fields: dict[str, Any]) -> dict[str, Any]:
    return dict(apiserver.with_defaults(schema, {"spec": {"handler": "echo", **fields}})["spec"])


# Specs the schema itself accepts: the rules are what decides them.
SCHEMA_VALID = [
    f
    for f in [f for f, _ in FLOW_SPECS] + EXTRA_SPECS
    if not apiserver.schema_errors(schema["properties"]["spec"], _defaulted(f))
]


# Refused by the operator alone: the CRD has no rule on concurrency (a stored integer
# would fail it on every write; tests/k8s/test_crd.py).
OPERATOR_ONLY = {
    "concurrency needs max (fleet-wide), perWorker, or both",
    "concurrency.key needs spec.concurrency.max",
}


@pytest.mark.parametrize("fields", SCHEMA_VALID)
def test_the_operator_refuses_what_the_crds_rules_refuse(fields):
    """Every refusal of a CEL rule (run for real on the defaulted spec) is the operator's
    too, with the same words, and the operator refuses nothing else but the concurrency
    checks: a cluster whose CRD lacks the rules gets a not-ready type instead."""
    spec = _defaulted(fields)
    rules = apiserver.rule_errors(schema["properties"]["spec"], spec, "spec")
    problems = flow_problems(spec)
    for rule in rules:
        message = rule.split(": ", 1)[1]
        assert any(message in p.replace("spec.", "") for p in problems), (rule, problems)
    extra = [p for p in problems if not any(r.split(": ", 1)[1] in p.replace("spec.", "") for r in rules)]
    assert all(any(o in p for o in OPERATOR_ONLY) for p in extra), extra
    entry = operator.evaluate("x", spec, ["echo"])
    assert entry.ready is not problems
    if problems:
        assert entry.reason == "InvalidSpec" and problems[0] in entry.message


def test_the_cases_include_refusals_by_each_check():
    refused = [flow_problems(_defaulted(f)) for f in SCHEMA_VALID]
    messages = {p.split(" (")[0].split(" allows")[0] for problems in refused for p in problems}
    assert messages == {
        "spec.concurrency needs max",
        "spec.concurrency.key needs spec.concurrency.max",
        "spec.rateLimit",
    }, messages


@pytest.mark.parametrize(
    ("name", "summary"),
    [
        ("echo", ""),
        ("urgent-transform", ""),
        ("tenant-export", "max 2 per /tenant; 4/worker"),
        ("partner-webhook", "10/1s burst 20 per /partner"),
        ("reindex", "unique /document queued: replace"),
    ],
)
def test_the_limits_line_of_each_example(name, summary):
    assert operator.limits_summary(load_manifests(EXAMPLES)[name]) == summary


def test_the_limits_line_without_keys_or_burst():
    entry = TaskType.from_spec(
        "x",
        {
            "handler": "echo",
            "concurrency": {"max": 5},
            "rateLimit": {"limit": 3, "period": 60},
            "uniqueness": {"while": "queued-or-running", "onDuplicate": "reject"},
        },
    )
    assert operator.limits_summary(entry) == "max 5; 3/60s; unique queued-or-running: reject"
    assert (
        operator.limits_summary(TaskType.from_spec("x", {"handler": "echo", "concurrency": 3})) == "3/worker"
    )


async def test_status_and_registry_show_priority_and_limits(cluster: Cluster):
    spec = {
        "handler": "echo",
        "priority": "high",
        "concurrency": {"max": 2, "key": "/tenant", "perWorker": 4},
        "rateLimit": {"limit": 10, "period": 1, "burst": 20, "key": "/partner"},
        "uniqueness": {"key": "/doc", "while": "queued", "onDuplicate": "replace"},
    }
    async with cluster.operator():
        await cluster.apply("flow", spec)
        await cluster.apply("plain", {"handler": "echo"})
        entry = await eventually(lambda: (cluster.registry() or {}).get("flow"))
        assert entry["ready"] is True and entry["priority"] == "high"
        assert entry["concurrency"] == {"perWorker": 4, "max": 2, "key": "/tenant"}
        assert entry["rateLimit"] == {"limit": 10, "period": 1.0, "burst": 20, "key": "/partner"}
        assert entry["uniqueness"] == {"key": "/doc", "while": "queued", "onDuplicate": "replace"}
        status = await eventually(
            lambda: (
                (cluster.get("flow") or {}).get("status", {}).get("limits") and cluster.get("flow")["status"]
            )
        )
        assert status["priority"] == "high"
        assert (
            status["limits"]
            == "max 2 per /tenant; 4/worker; 10/1s burst 20 per /partner; unique /doc queued: replace"
        )
        plain = await eventually(
            lambda: (
                (cluster.get("plain") or {}).get("status", {}).get("priority")
                and cluster.get("plain")["status"]
            )
        )
        assert plain["priority"] == "normal" and plain["limits"] == ""

        # An edit is followed: the status says what is enforced now (the emulator merges
        # nested objects, so fields dropped from rateLimit are nulled).
        await cluster.apply(
            "flow",
            {
                "handler": "echo",
                "priority": "low",
                "rateLimit": {"limit": 1, "period": 60, "burst": None, "key": None},
            },
        )
        status = await eventually(
            lambda: (s := (cluster.get("flow") or {}).get("status", {})).get("priority") == "low" and s
        )
        assert status["limits"] == "1/60s"
        await eventually(lambda: cluster.registry()["flow"]["concurrency"]["max"] is None)


async def test_a_legacy_integer_concurrency_keeps_working(cluster: Cluster):
    """A TaskType stored while `concurrency` was an integer (the API server keeps serving it
    as stored): read as perWorker, ready, shown as such."""
    async with cluster.operator():
        await cluster.apply("legacy", {"handler": "echo", "concurrency": 3})
        entry = await eventually(lambda: (cluster.registry() or {}).get("legacy"))
        assert entry["ready"] is True and entry["concurrency"] == {"perWorker": 3, "max": None, "key": None}
        condition = await eventually(lambda: cluster.ready("legacy"))
        assert condition["status"] == "True"
        assert cluster.get("legacy")["status"]["limits"] == "3/worker"


async def test_a_flow_spec_the_rules_refuse_is_not_ready(cluster: Cluster):
    """Where the CRD's rules did not run (an older CRD left by `helm upgrade`), a key without
    a max is not silently ignored: the type is not ready and says why."""
    async with cluster.operator():
        await cluster.apply("keyed", {"handler": "echo", "concurrency": {"perWorker": 2, "key": "/tenant"}})
        condition = await eventually(lambda: cluster.ready("keyed"))
        assert condition["status"] == "False" and condition["reason"] == "InvalidSpec"
        assert "spec.concurrency.key needs spec.concurrency.max" in condition["message"]
        entry = await eventually(lambda: (cluster.registry() or {}).get("keyed"))
        assert entry["ready"] is False and entry["reason"] == "InvalidSpec"
