"""The TaskType CRD: a CustomResourceDefinition kube-apiserver accepts (its own checks, CEL
rules run on every default and example), whose defaults agree with the registry's, which
accepts the examples and rejects out-of-bounds specs."""

from __future__ import annotations

import copy
import re
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from conveyor import flowkeys
from conveyor.model import Priority
from conveyor.registry import (
    ConcurrencyLimit,
    OnDuplicate,
    RateLimit,
    TaskType,
    Uniqueness,
    UniqueWhile,
    load_manifests,
)
from tests.conftest import EXAMPLES
from tests.k8s import apiserver
from tests.k8s.conftest import CRD, SCHEDULE_CRD

crd = yaml.safe_load(CRD.read_text())
version = crd["spec"]["versions"][0]
schema = version["schema"]["openAPIV3Schema"]


def _validator() -> jsonschema.Validator:
    # OpenAPI v3 schemas are close enough to draft 4 for these keywords; x-kubernetes-* are ignored.
    return jsonschema.Draft4Validator(schema, format_checker=jsonschema.FormatChecker())


def test_the_crd_is_a_valid_customresourcedefinition():
    kubernetes_validate.validate(crd, kubernetes_validate.latest_version(), strict=True)
    assert crd["metadata"]["name"] == "tasktypes.conveyor.dev"
    assert crd["spec"]["scope"] == "Namespaced" and crd["spec"]["names"]["shortNames"] == ["tt"]
    assert version["name"] == "v1alpha1" and version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}
    columns = [c["name"] for c in version["additionalPrinterColumns"] if not c.get("priority")]
    assert columns == ["Handler", "Priority", "Limits", "Enabled", "Paused", "Ready", "Age"]
    # Each column's path is a field the schema keeps (a pruned one would always print <none>).
    for column in version["additionalPrinterColumns"]:
        path = re.sub(r"\[\?\(.*?\)\]", "[]", column["jsonPath"]).strip(".").split(".")
        if path[0] == "metadata":
            continue  # ObjectMeta's own fields, always kept
        node = schema
        for part in path:
            node = node["properties"][part.removesuffix("[]")]
            node = node["items"] if part.endswith("[]") else node
        assert node["type"] == column["type"], column


def test_the_schema_passes_the_api_servers_own_crd_checks():
    """Structural invariants, list/map types, rule fields, metadata, CEL cost bounds, and
    every default pruned, valid and passing every rule as written (tests/k8s/apiserver.py)."""
    assert apiserver.structural_problems(crd) == []


def test_every_rule_holds_for_every_default_as_written():
    """The API server evaluates each node's rules against its default without filling in the
    nested defaults; one failure refuses the whole CRD."""
    defaults = [(w, n) for w, n, _ in apiserver.nodes(schema) if "default" in n]
    assert any("x-kubernetes-validations" in n for _, n in defaults)  # the case that matters is here
    for where, node in defaults:
        assert apiserver.rule_errors(node, node["default"], where, old_is_self=True) == [], where
        assert apiserver.schema_errors(node, node["default"], where) == []
        assert apiserver.unknown_fields(node, node["default"], where) == []


def test_the_checks_catch_a_default_the_api_server_refuses():
    """The backoff default as it once was (`{}`): rejected with "no such key", like
    kube-apiserver's `no such key: initialSeconds evaluating rule`."""
    broken = copy.deepcopy(crd)
    backoff = broken["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"][
        "backoff"
    ]
    backoff["default"] = {}
    problems = apiserver.structural_problems(broken)
    assert len(problems) == 1 and "properties[backoff]: default" in problems[0]
    assert "initialSeconds" in problems[0] and "KeyError" in problems[0]
    # A default that is complete but breaks the rule is caught by the rule itself.
    backoff["default"] = {"initialSeconds": 400, "maxSeconds": 300}
    [problem] = apiserver.structural_problems(broken)
    assert "backoff.initialSeconds must not exceed backoff.maxSeconds" in problem
    # A default with a field the schema prunes.
    backoff["default"] = {"initialSeconds": 1, "maxSeconds": 300, "jitter": True}
    [problem] = apiserver.structural_problems(broken)
    assert "unknown field .jitter" in problem


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda s: s["properties"]["spec"]["properties"]["handler"].pop("type"), "type must not be empty"),
        (
            lambda s: s["properties"]["metadata"].update(properties={"labels": {"type": "object"}}),
            "name and generateName",
        ),
        (
            lambda s: s["properties"]["spec"]["properties"]["maxAttempts"].update(default=0),
            "default /: 0 is less",
        ),
        (
            lambda s: s["properties"]["status"]["properties"]["conditions"].update(
                {"x-kubernetes-list-map-keys": ["kind"]}
            ),
            "not an item property",
        ),
        (
            lambda s: s["properties"]["status"]["properties"]["conditions"]["items"]["required"].remove(
                "type"
            ),
            "must be required or have a default",
        ),
        (lambda s: s.update(nullable=True), "nullable cannot be true at the root"),
        (
            lambda s: s["properties"]["spec"].update(additionalProperties={"type": "string"}),
            "mutually exclusive",
        ),
        (lambda s: s["properties"]["spec"]["properties"]["handler"].update(uniqueItems=True), "uniqueItems"),
        (
            lambda s: s["properties"]["spec"].update(
                {"x-kubernetes-validations": [{"rule": "true", "message": "two\nlines"}]}
            ),
            "on one line",
        ),
        (
            lambda s: s["properties"]["spec"]["properties"]["backoff"].update(allOf=[{"type": "object"}]),
            "must not be set inside",
        ),
    ],
)
def test_each_api_server_check_fails_on_a_broken_crd(mutate, expected):
    broken = copy.deepcopy(crd)
    mutate(broken["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
    problems = apiserver.structural_problems(broken)
    assert any(expected in p for p in problems), problems


def _spec_rule(rule: str, **fields: dict) -> Any:
    def mutate(s: dict) -> None:
        s["properties"]["spec"]["properties"].update(fields)
        if rule:
            s["properties"]["spec"]["x-kubernetes-validations"] = [{"rule": rule, "message": "m"}]

    return mutate


STRINGS = {"type": "array", "items": {"type": "string"}}
MATCHES_ALL = [{"rule": "self.all(k, k.matches('^a'))", "message": "m"}]


# Each verdict is what a kube-apiserver 1.36 answered for the same CRD change.
@pytest.mark.parametrize(
    ("mutate", "refused"),
    [
        # One unbounded string scanned once: cheap enough.
        (_spec_rule("self.description.matches('^a')", description={"type": "string"}), None),
        # Scanning every string of an unbounded list: refused; with maxItems: accepted.
        (_spec_rule("", tags={**STRINGS, "x-kubernetes-validations": MATCHES_ALL}), "estimated rule cost"),
        (_spec_rule("", tags={**STRINGS, "maxItems": 10, "x-kubernetes-validations": MATCHES_ALL}), None),
        # A rule on each item of an unbounded list runs once per item.
        (
            _spec_rule(
                "",
                tags={
                    "type": "array",
                    "items": {
                        "type": "string",
                        "x-kubernetes-validations": [{"rule": "self.matches('^a')", "message": "m"}],
                    },
                },
            ),
            "estimated rule cost",
        ),
        # Iterating an unbounded map with an O(1) body: accepted.
        (
            _spec_rule(
                "",
                labels={
                    "type": "object",
                    "additionalProperties": {"type": "string"},
                    "x-kubernetes-validations": [{"rule": "self.all(k, self[k].size() < 5)", "message": "m"}],
                },
            ),
            None,
        ),
        # An object with no declared fields is no map: no comprehension over it, no fields.
        (_spec_rule("self.options.all(k, k.size() < 5)"), "cannot be the range of a comprehension"),
        (_spec_rule("self.nope > 1"), "self.nope: undefined field"),
        # Transition rules compile (and are skipped on create).
        (_spec_rule("self.maxAttempts >= oldSelf.maxAttempts"), None),
        # A null default is no default; defaults in metadata are refused.
        (lambda s: s["properties"]["spec"]["properties"]["maxAttempts"].update(default=None), None),
        (
            lambda s: s["properties"]["metadata"]["properties"]["name"].update(default="x"),
            "default must not be set in top-level metadata",
        ),
        (lambda s: s["properties"]["spec"]["properties"]["handler"].update(type="null"), "type 'null'"),
        (lambda s: s["properties"]["spec"]["properties"].update(tags={"type": "array"}), "items must be"),
        (
            lambda s: s["properties"]["spec"].update(
                {"x-kubernetes-validations": [{"rule": "true", "message": "m", "reason": "Bogus"}]}
            ),
            "reason must be one of",
        ),
    ],
)
def test_checks_agree_with_kube_apiserver(mutate, refused):
    changed = copy.deepcopy(crd)
    mutate(changed["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
    problems = apiserver.structural_problems(changed)
    if refused is None:
        assert problems == []
    else:
        assert any(refused in p for p in problems), problems


def test_crd_defaults_match_the_registry_defaults():
    """A TaskType with only a handler means the same in the cluster and in `make run`."""
    defaulted = apiserver.with_defaults(schema, {"spec": {"handler": "echo"}})["spec"]
    assert TaskType.from_spec("x", defaulted) == TaskType.from_spec("x", {"handler": "echo"})
    assert defaulted["backoff"] == {"initialSeconds": 1, "maxSeconds": 300}


def test_every_example_is_valid_and_passes_every_rule():
    """Each example as the API server takes it, by the CRD of its kind: defaulted, pruned
    (nothing may be dropped), validated, and every CEL rule run on it."""
    schemas = {
        c["spec"]["names"]["kind"]: c["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        for c in (crd, yaml.safe_load(SCHEDULE_CRD.read_text()))
    }
    examples = sorted(EXAMPLES.glob("*.yaml"))
    kinds = set()
    for path in examples:
        for doc in yaml.safe_load_all(path.read_text()):
            assert doc["apiVersion"] == "conveyor.dev/v1alpha1" and doc["kind"] in schemas, path.name
            kinds.add(doc["kind"])
            assert apiserver.object_problems(schemas[doc["kind"]], doc) == [], path.name
    assert kinds == set(schemas)  # an example of each


@pytest.mark.parametrize(
    ("backoff", "ok"),
    [
        ({"initialSeconds": 5, "maxSeconds": 5}, True),
        ({"initialSeconds": 500}, False),  # above the defaulted maxSeconds (300)
        ({"maxSeconds": 0.5}, False),  # below the defaulted initialSeconds (1)
        ({"maxSeconds": 0.5, "initialSeconds": 0}, True),
    ],
)
def test_the_backoff_rule_runs_after_defaulting(backoff, ok):
    doc = {"apiVersion": "conveyor.dev/v1alpha1", "kind": "TaskType", "metadata": {"name": "x"}}
    problems = apiserver.object_problems(schema, {**doc, "spec": {"handler": "echo", "backoff": backoff}})
    assert (problems == []) is ok, problems


@pytest.mark.parametrize(
    ("spec", "where"),
    [
        ({}, "handler"),
        ({"handler": ""}, "handler"),
        ({"handler": "echo", "maxAttempts": 0}, "maxAttempts"),
        ({"handler": "echo", "timeoutSeconds": 43201}, "timeoutSeconds"),
        ({"handler": "echo", "concurrency": 0}, "concurrency"),
        ({"handler": "echo", "backoff": {"initialSeconds": -1}}, "initialSeconds"),
        ({"handler": "echo", "payloadSchema": "not an object"}, "payloadSchema"),
        ({"handler": "echo", "paused": "yes"}, "paused"),
    ],
)
def test_out_of_bounds_specs_are_rejected(spec, where):
    doc = {"apiVersion": "conveyor.dev/v1alpha1", "kind": "TaskType", "metadata": {"name": "x"}, "spec": spec}
    errors = list(_validator().iter_errors(apiserver.with_defaults(schema, doc)))
    assert errors, f"{spec} was accepted"
    assert any(where in "/".join(map(str, e.absolute_path)) + e.message for e in errors)


@pytest.mark.parametrize(
    ("rule", "value", "ok"),
    [
        ("has(self.a) && self.a.size() <= 3", {"a": "abc"}, True),
        ("has(self.a) && self.a.size() <= 3", {"a": "abcd"}, False),
        ("!has(self.a) || self.a.matches('^[a-z]+$')", {"a": "Abc"}, False),
        ("!has(self.a) || self.a.matches('^[a-z]+$')", {}, True),
        (
            "self.l.all(x, x.startsWith('k-')) && self.l.exists(x, x.endsWith('1'))",
            {"l": ["k-1", "k-2"]},
            True,
        ),
        ("self.l.all(x, x.startsWith('k-'))", {"l": ["k-1", "x-2"]}, False),
        ("self.n <= 2.5", {"n": 2}, True),  # a `number` written as 2 is the double 2.0
        ("self.a.lowerAscii() == 'a'", {"a": "A"}, None),  # a Kubernetes library function
    ],
)
def test_the_harness_evaluates_cel_for_real(rule, value, ok):
    node = {
        "type": "object",
        "properties": {
            "a": {"type": "string", "maxLength": 8},
            "l": {"type": "array", "maxItems": 4, "items": {"type": "string", "maxLength": 8}},
            "n": {"type": "number"},
        },
        "x-kubernetes-validations": [{"rule": rule, "message": "broken"}],
    }
    problems = apiserver.rule_errors(node, value)
    if ok is None:  # not in cel-rust and not implemented here: reported, never passed
        assert problems and "error evaluating rule" in problems[0]
    else:
        assert (problems == []) is ok, problems


FLOW_SPECS = [
    # spec fields added to {"handler": "echo"}, and the refusal expected (None: accepted)
    ({"priority": "high"}, None),
    ({"priority": "urgent"}, "priority"),
    ({"concurrency": {"perWorker": 3}}, None),
    ({"concurrency": {"max": 5}}, None),
    ({"concurrency": {"max": 2, "key": "/tenant", "perWorker": 4}}, None),
    # Accepted here, refused by the operator (no CEL rule on concurrency: see below).
    ({"concurrency": {}}, None),
    ({"concurrency": {"perWorker": 2, "key": "/tenant"}}, None),
    ({"concurrency": {"max": 2, "key": "tenant"}}, "key"),  # not a JSON pointer
    ({"concurrency": {"max": 0}}, "max"),
    ({"rateLimit": {"limit": 1000}}, None),  # period defaults to 1 s: 1000/s
    ({"rateLimit": {"limit": 1001}}, "at most 1000 starts a second"),
    ({"rateLimit": {"limit": 10, "period": 0.01}}, None),
    ({"rateLimit": {"limit": 11, "period": 0.01}}, "at most 1000 starts a second"),
    ({"rateLimit": {"limit": 100000, "period": 86400, "burst": 1, "key": "/partner"}}, None),
    ({"rateLimit": {"limit": 5, "burst": 0}}, "burst"),
    ({"rateLimit": {"period": 1}}, "limit"),
    ({"uniqueness": {}}, None),  # the submit's unique_key only, while queued, return-existing
    ({"uniqueness": {"key": "/doc", "while": "queued-or-running", "onDuplicate": "replace"}}, None),
    ({"uniqueness": {"while": "forever"}}, "while"),
    ({"uniqueness": {"onDuplicate": "ignore"}}, "onDuplicate"),
]


# kube-apiserver's hasBlockingErr: a blocking schema error (`required`, `enum`) skips the
# rules, a non-blocking one (`minimum`) does not. A 1.36 server answered the first case and
# `uniqueness.while: forever` with "some validation rules were not checked".
@pytest.mark.parametrize(
    ("fields", "rules_checked"),
    [
        ({"rateLimit": {"period": 1}}, False),
        ({"rateLimit": {"period": 0.001, "limit": 2}, "maxAttempts": 0}, True),
        ({"uniqueness": {"while": "forever"}, "rateLimit": {"limit": 5000}}, False),
    ],
)
def test_a_blocking_schema_error_skips_the_rules(fields, rules_checked):
    doc = {"apiVersion": "conveyor.dev/v1alpha1", "kind": "TaskType", "metadata": {"name": "x"}}
    problems = apiserver.object_problems(schema, {**doc, "spec": {"handler": "echo", **fields}})
    assert problems and (apiserver.NOT_CHECKED not in problems) is rules_checked, problems
    assert any("at most 1000 starts a second" in p for p in problems) is (
        rules_checked and "limit" in str(fields)
    )


@pytest.mark.parametrize(("fields", "refused"), FLOW_SPECS)
def test_flow_control_fields_and_rules(fields, refused):
    """What the API server answers a create with these fields (schema and CEL rules, after
    defaulting); each CEL message was also seen from a real kube-apiserver."""
    doc = {"apiVersion": "conveyor.dev/v1alpha1", "kind": "TaskType", "metadata": {"name": "x"}}
    problems = apiserver.object_problems(schema, {**doc, "spec": {"handler": "echo", **fields}})
    if refused is None:
        assert problems == []
    else:
        assert any(refused in p for p in problems), problems


def test_rate_period_default_matches_the_registry():
    defaulted = apiserver.with_defaults(schema, {"spec": {"handler": "echo", "rateLimit": {"limit": 4}}})[
        "spec"
    ]
    assert defaulted["rateLimit"] == {"limit": 4, "period": 1}
    assert TaskType.from_spec("x", defaulted) == TaskType.from_spec(
        "x", {"handler": "echo", "rateLimit": {"limit": 4}}
    )


def test_the_examples_show_each_flow_control_feature():
    """One example per feature, read as `make run` reads them; each key pointer names a
    required payload field, so every valid payload has a key."""
    registry = load_manifests(EXAMPLES)
    assert registry["urgent-transform"].priority is Priority.HIGH
    assert registry["bulk-transform"].priority is Priority.LOW
    export = registry["tenant-export"]
    assert export.fleet_concurrency == ConcurrencyLimit(2, "/tenant") and export.concurrency == 4
    partner = registry["partner-webhook"]
    assert partner.rate_limit == RateLimit(10, 1.0, 20, "/partner") and partner.rate_limit.capacity == 20
    assert registry["reindex"].uniqueness == Uniqueness("/document", UniqueWhile.QUEUED, OnDuplicate.REPLACE)
    for name, pointer in [
        ("tenant-export", "/tenant"),
        ("partner-webhook", "/partner"),
        ("reindex", "/document"),
    ]:
        tasktype = registry[name]
        assert tasktype.ready and pointer.lstrip("/") in tasktype.payload_schema["required"], name
        for example in tasktype.payload_schema["examples"]:
            assert registry.validate_payload(name, example) == []
            assert flowkeys.key_of(example, pointer) != flowkeys.MISSING


def test_a_legacy_integer_concurrency_passes_every_rule():
    """A TaskType stored while `concurrency` was an integer stays writable. kube-apiserver
    1.36 lets the unchanged integer stand against `type: object` (validation ratcheting) on
    every later write, status patches included, but reports any CEL rule on that node ("invalid
    data, expected a map ... evaluating rule") and refuses the write: so no rule may sit on
    `concurrency`, nor read it from above."""
    spec = apiserver.with_defaults(schema, {"spec": {"handler": "echo", "concurrency": 3}})["spec"]
    assert spec["concurrency"] == 3
    assert apiserver.rule_errors(schema["properties"]["spec"], spec, "spec") == []
    assert TaskType.from_spec("x", spec).concurrency == 3
