"""The TaskSchedule CRD: a CustomResourceDefinition kube-apiserver accepts (its own checks,
CEL rules run on every default and every example), whose bounds the operator restates, which
refuses out-of-bounds specs and never refuses a real time zone."""

from __future__ import annotations

import copy
import functools
import importlib.util
import re
import sys
import zoneinfo
from types import ModuleType
from typing import Any

import kopf
import kubernetes_validate
import pytest
import yaml

from tests.conftest import EXAMPLES
from tests.k8s import apiserver
from tests.k8s.conftest import OPERATOR, SCHEDULE_CRD

crd = yaml.safe_load(SCHEDULE_CRD.read_text())
version = crd["spec"]["versions"][0]
schema = version["schema"]["openAPIV3Schema"]
spec_schema = schema["properties"]["spec"]
DOC = {"apiVersion": "conveyor.dev/v1alpha1", "kind": "TaskSchedule", "metadata": {"name": "nightly"}}


@functools.cache
def load_operator() -> ModuleType:
    """The operator file as a module, its kopf handlers kept out of the default registry."""
    spec = importlib.util.spec_from_file_location("conveyor_operator_under_test", OPERATOR)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being defined
    previous = kopf.get_default_registry()
    kopf.set_default_registry(kopf.OperatorRegistry())
    try:
        spec.loader.exec_module(module)
    finally:
        kopf.set_default_registry(previous)
    return module


def _problems(spec: dict[str, Any]) -> list[str]:
    return apiserver.object_problems(schema, {**DOC, "spec": spec})


def test_the_crd_is_a_valid_customresourcedefinition_with_the_columns_kubectl_shows():
    kubernetes_validate.validate(crd, kubernetes_validate.latest_version(), strict=True)
    assert crd["metadata"]["name"] == "taskschedules.conveyor.dev"
    assert crd["spec"]["group"] == "conveyor.dev" and crd["spec"]["names"]["kind"] == "TaskSchedule"
    assert crd["spec"]["scope"] == "Namespaced" and crd["spec"]["names"]["shortNames"] == ["ts"]
    assert version["name"] == "v1alpha1" and version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}
    columns = [c["name"].upper() for c in version["additionalPrinterColumns"] if not c.get("priority")]
    assert columns == ["SCHEDULE", "TIMEZONE", "TYPE", "SUSPEND", "LAST", "NEXT", "READY", "AGE"]


def test_every_printer_column_reads_a_field_the_schema_declares():
    """A jsonPath to a field that does not exist shows an empty column forever."""
    for column in version["additionalPrinterColumns"]:
        path = re.sub(r"\[\?\(@\.type==\"Ready\"\)\]", "", column["jsonPath"]).strip(".").split(".")
        if path[0] == "metadata":
            continue
        node = schema
        for part in path:
            node = node["properties"][part] if "properties" in node else node["items"]["properties"][part]
        assert node.get("type") in ("string", "boolean", "integer"), column


def test_the_schema_passes_the_api_servers_own_crd_checks():
    assert apiserver.structural_problems(crd) == []


def test_every_rule_holds_for_every_default_as_written():
    defaults = [(w, n) for w, n, _ in apiserver.nodes(schema) if "default" in n]
    assert {w.rsplit("[", 1)[-1].rstrip("]") for w, _ in defaults} >= {"timeZone", "payload", "maxCatchUp"}
    for where, node in defaults:
        assert apiserver.rule_errors(node, node["default"], where, old_is_self=True) == [], where
        assert apiserver.schema_errors(node, node["default"], where) == []
        assert apiserver.unknown_fields(node, node["default"], where) == []
    # The spec's own rule runs on the spec as defaulted from the fewest fields a user writes.
    minimal = apiserver.with_defaults(schema, {**DOC, "spec": {"taskType": "echo", "schedule": "@daily"}})
    assert apiserver.rule_errors(spec_schema, minimal["spec"]) == []


def test_every_example_schedule_passes_and_at_least_one_runs_every_minute():
    found = []
    for path in sorted(EXAMPLES.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and doc.get("kind") == "TaskSchedule":
                assert apiserver.object_problems(schema, doc) == [], path.name
                found.append((path.name, doc["spec"]["schedule"], doc["spec"]["taskType"]))
    assert ("every-minute.yaml", "* * * * *", "echo") in found


def test_defaults_are_the_contracts():
    """What the operator writes into schedules.json for fields left out (the API reads the
    same defaults: docs/SCHEDULES.md)."""
    spec = apiserver.with_defaults(schema, {**DOC, "spec": {"taskType": "echo", "schedule": "@hourly"}})[
        "spec"
    ]
    assert spec == {
        "taskType": "echo",
        "schedule": "@hourly",
        "payload": {},
        "timeZone": "UTC",
        "jitterSeconds": 0,
        "concurrencyPolicy": "Allow",
        "maxCatchUp": 1,
        "suspend": False,
    }


@pytest.mark.parametrize(
    ("spec", "where"),
    [
        ({"schedule": "* * * * *"}, "taskType"),
        ({"taskType": "echo"}, "schedule"),
        ({"taskType": "Echo", "schedule": "* * * * *"}, "taskType"),
        ({"taskType": "echo", "schedule": "* * * *"}, "schedule"),
        ({"taskType": "echo", "schedule": "* * * * * *"}, "schedule"),  # seconds: not standard cron
        ({"taskType": "echo", "schedule": "CRON_TZ=UTC 0 * * *"}, "schedule"),  # that is timeZone
        ({"taskType": "echo", "schedule": " * * * * *"}, "schedule"),
        ({"taskType": "echo", "schedule": "* * * * *", "timeZone": "../etc/passwd"}, "timeZone"),
        ({"taskType": "echo", "schedule": "* * * * *", "timeZone": "/etc/localtime"}, "timeZone"),
        ({"taskType": "echo", "schedule": "* * * * *", "timeZone": ""}, "timeZone"),
        ({"taskType": "echo", "schedule": "* * * * *", "jitterSeconds": 3600}, "jitterSeconds"),
        ({"taskType": "echo", "schedule": "* * * * *", "jitterSeconds": -1}, "jitterSeconds"),
        ({"taskType": "echo", "schedule": "* * * * *", "concurrencyPolicy": "Never"}, "concurrencyPolicy"),
        ({"taskType": "echo", "schedule": "* * * * *", "startingDeadlineSeconds": 0}, "startingDeadline"),
        ({"taskType": "echo", "schedule": "* * * * *", "maxCatchUp": 101}, "maxCatchUp"),
        ({"taskType": "echo", "schedule": "* * * * *", "maxCatchUp": -1}, "maxCatchUp"),
        ({"taskType": "echo", "schedule": "* * * * *", "maxAttempts": 0}, "maxAttempts"),
        ({"taskType": "echo", "schedule": "* * * * *", "suspend": "yes"}, "suspend"),
        ({"taskType": "echo", "schedule": "* * * * *", "extra": 1}, "extra"),
        # The CEL rules: a nickname cron(8) knows (not @reboot: it has no slot), and a
        # jitter shorter than the deadline (else slots would be skipped).
        ({"taskType": "echo", "schedule": "@reboot"}, "a nickname must be one of"),
        ({"taskType": "echo", "schedule": "@fortnightly"}, "a nickname must be one of"),
        (
            {"taskType": "echo", "schedule": "* * * * *", "jitterSeconds": 60, "startingDeadlineSeconds": 60},
            "jitter",
        ),
    ],
)
def test_out_of_bounds_specs_are_refused(spec: dict[str, Any], where: str):
    problems = _problems(spec)
    assert any(where in p for p in problems), problems


@pytest.mark.parametrize(
    "spec",
    [
        {"taskType": "echo", "schedule": "@daily", "timeZone": "America/New_York"},
        *(
            {"taskType": "echo", "schedule": m}
            for m in ("@yearly", "@annually", "@monthly", "@weekly", "@midnight", "@hourly")
        ),
        {"taskType": "echo", "schedule": "*/5 0-6 1,15 JAN ?"},
        {"taskType": "echo", "schedule": "0 2 * * MON-FRI", "timeZone": "Etc/GMT+5"},
        {"taskType": "echo", "schedule": "0 9 * * 1", "timeZone": "America/Port-au-Prince"},
        {"taskType": "echo", "schedule": "* * * * *", "jitterSeconds": 59, "startingDeadlineSeconds": 60},
        {"taskType": "echo", "schedule": "* * * * *", "jitterSeconds": 3599},  # no deadline: any jitter
        {"taskType": "echo", "schedule": "* * * * *", "payload": ["any", "json", 1]},
        {"taskType": "echo", "schedule": "* * * * *", "payload": "a string"},
        {"taskType": "echo", "schedule": "* * * * *", "payload": None},  # defaulted to {}
        {"taskType": "echo", "schedule": "* * * * *", "maxCatchUp": 0, "maxAttempts": 100, "suspend": True},
    ],
)
def test_in_bounds_specs_are_accepted(spec: dict[str, Any]):
    assert _problems(spec) == []


def test_the_time_zone_pattern_accepts_every_iana_zone():
    """The pattern only keeps paths out; which zones exist is the operator's check."""
    pattern = re.compile(spec_schema["properties"]["timeZone"]["pattern"])
    zones = zoneinfo.available_timezones()
    assert len(zones) > 300
    refused = sorted(z for z in zones if not pattern.fullmatch(z))
    assert refused == []
    assert all(len(z) <= spec_schema["properties"]["timeZone"]["maxLength"] for z in zones)


def test_the_operator_restates_the_crds_bounds_and_defaults():
    """kmock and a hand-edited CRD enforce nothing: the operator keeps the API from ever
    reading a value outside the CRD's bounds, and the two must agree."""
    operator = load_operator()
    props = spec_schema["properties"]
    for name, (low, high) in operator.BOUNDS.items():
        assert (props[name]["minimum"], props[name]["maximum"]) == (low, high), name
    assert list(operator.POLICIES) == props["concurrencyPolicy"]["enum"]
    for name, (default, _) in operator.SCHEDULE_FIELDS.items():
        if name not in spec_schema["required"]:  # a required field's stand-in is never read
            assert props[name].get("default") == default, name
    assert set(operator.SCHEDULE_FIELDS) | {"payload"} == set(props)


def test_the_checks_catch_a_broken_schedule_crd():
    broken = copy.deepcopy(crd)
    spec = broken["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    spec["properties"]["jitterSeconds"]["default"] = 4000
    spec["x-kubernetes-validations"][0]["rule"] = "self.jitter < 1"
    problems = apiserver.structural_problems(broken)
    assert any("jitterSeconds]: default" in p for p in problems), problems
    assert any("self.jitter: undefined field" in p for p in problems), problems


def test_the_crds_nicknames_are_the_planners():
    """A nickname the CRD admits but the planner does not know would be admitted and never
    fire; one the planner knows but the CRD refuses could not be used."""
    from conveyor import schedule

    [rule] = [r for r in spec_schema["x-kubernetes-validations"] if "startsWith('@')" in r["rule"]]
    admitted = set(re.findall(r"'(@[a-z]+)'", rule["rule"]))
    assert admitted == set(schedule.MACROS)
    for nickname in admitted:
        assert schedule.spec_problems(nickname, "UTC") == [], nickname
