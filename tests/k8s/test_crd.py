"""The TaskType CRD: a valid, structural CustomResourceDefinition whose defaults agree with the
registry's, which accepts the examples and rejects out-of-bounds specs."""

from __future__ import annotations

import copy
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from conveyor.registry import TaskType
from tests.conftest import EXAMPLES, ROOT
from tests.k8s.conftest import CRD

crd = yaml.safe_load(CRD.read_text())
version = crd["spec"]["versions"][0]
schema = version["schema"]["openAPIV3Schema"]


def _validator() -> jsonschema.Validator:
    # OpenAPI v3 schemas are close enough to draft 4 for these keywords; x-kubernetes-* are ignored.
    return jsonschema.Draft4Validator(schema, format_checker=jsonschema.FormatChecker())


def _with_defaults(node: dict[str, Any], value: Any) -> Any:
    """Apply the schema's defaults the way the API server does (structural defaulting)."""
    if not isinstance(value, dict) or node.get("type") != "object":
        return value
    out = dict(value)
    for key, sub in (node.get("properties") or {}).items():
        if key not in out and "default" in sub:
            out[key] = copy.deepcopy(sub["default"])
        if key in out:
            out[key] = _with_defaults(sub, out[key])
    return out


def test_the_crd_is_a_valid_customresourcedefinition():
    kubernetes_validate.validate(crd, kubernetes_validate.latest_version(), strict=True)
    assert crd["metadata"]["name"] == "tasktypes.conveyor.dev"
    assert crd["spec"]["scope"] == "Namespaced" and crd["spec"]["names"]["shortNames"] == ["tt"]
    assert version["name"] == "v1alpha1" and version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}
    columns = [c["name"] for c in version["additionalPrinterColumns"] if not c.get("priority")]
    assert columns == ["Handler", "Enabled", "Paused", "Ready", "Age"]


def test_the_schema_is_structural():
    """Every node has a type, except where unknown fields are explicitly preserved."""
    problems: list[str] = []

    def walk(node: dict[str, Any], where: str) -> None:
        if node.get("x-kubernetes-preserve-unknown-fields") and "properties" not in node:
            return
        if "type" not in node:
            problems.append(f"{where}: no type")
        for key, sub in (node.get("properties") or {}).items():
            walk(sub, f"{where}.{key}")
        if "items" in node:
            walk(node["items"], f"{where}[]")

    walk(schema, "")
    assert not problems


def test_crd_defaults_match_the_registry_defaults():
    """A TaskType with only a handler means the same in the cluster and in `make run`."""
    defaulted = _with_defaults(schema, {"spec": {"handler": "echo"}})["spec"]
    assert TaskType.from_spec("x", defaulted) == TaskType.from_spec("x", {"handler": "echo"})
    assert defaulted["backoff"] == {"initialSeconds": 1, "maxSeconds": 300}


def test_every_example_is_valid():
    examples = sorted(EXAMPLES.glob("*.yaml"))
    assert examples
    for path in examples:
        doc = yaml.safe_load(path.read_text())
        _validator().validate(_with_defaults(schema, doc))


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
    errors = list(_validator().iter_errors(_with_defaults(schema, doc)))
    assert errors, f"{spec} was accepted"
    assert any(where in "/".join(map(str, e.absolute_path)) + e.message for e in errors)


def test_the_chart_ships_the_same_file():
    shipped = ROOT / "charts" / "conveyor" / "crds" / CRD.name
    if not shipped.exists():
        pytest.skip("the chart's crds/ does not hold the CRD yet")
    assert shipped.read_bytes() == CRD.read_bytes()
