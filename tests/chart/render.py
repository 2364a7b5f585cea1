"""Render the chart through the real Helm engine and validate what comes out.

Built-in kinds are checked against the Kubernetes OpenAPI schemas (kubernetes-validate,
strict: unknown fields are errors). Custom resources are checked against the
openAPIV3Schema of the real CRDs (KEDA and Prometheus operator vendored in tests/chart/crds,
the TaskType CRD from the chart), made strict the way `kubectl apply` (fieldValidation=Strict)
treats them: an unknown field is an error, not silently pruned.
"""

from __future__ import annotations

import copy
import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import helm_python as helm
import jsonschema
import yaml
from helm_python import _native
from kubernetes_validate import utils as kv

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "conveyor"
# The render matrix: charts/conveyor/ci/<name>-values.yaml, the chart-testing convention.
VALUES_DIR = CHART / "ci"
# Upstream KEDA and Prometheus-operator CRDs, vendored (see crds/README.md for versions).
VENDORED_CRDS = Path(__file__).parent / "crds"
RELEASE = "conveyor"
NAMESPACE = "tasks"
# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and a current one.
KUBE_VERSIONS = ("1.25.0", "1.33.0")
# API groups the test cluster serves beyond the built-ins (`helm template --api-versions`):
# the chart renders Prometheus-operator objects only when the cluster has their CRDs.
CLUSTER_API_VERSIONS = ("monitoring.coreos.com/v1", "keda.sh/v1alpha1")


@dataclass
class Rendered:
    values: dict[str, Any]
    objects: list[dict[str, Any]]
    notes: str
    by_template: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def find(self, kind: str, name: str | None = None) -> list[dict[str, Any]]:
        return [
            o for o in self.objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)
        ]

    def one(self, kind: str, name: str | None = None) -> dict[str, Any]:
        found = self.find(kind, name)
        assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
        return found[0]

    def kinds(self) -> set[str]:
        return {o["kind"] for o in self.objects}


def values_files() -> list[str]:
    return sorted(p.name.removesuffix("-values.yaml") for p in VALUES_DIR.glob("*-values.yaml"))


def load_values(name: str) -> dict[str, Any]:
    if name == "default":
        return {}
    data = yaml.safe_load((VALUES_DIR / f"{name}-values.yaml").read_text())
    return data or {}


def render_manifests(
    values: dict[str, Any],
    name: str = RELEASE,
    namespace: str = NAMESPACE,
    api_versions: tuple[str, ...] = CLUSTER_API_VERSIONS,
) -> dict[str, str]:
    """Template path -> rendered text, offline like `helm template` (lookup finds nothing).
    helm-python-sdk's Chart.render does not forward api_versions, so this calls the same
    native entry point with them (helm's --api-versions)."""
    options = {"name": name, "namespace": namespace, "api_versions": list(api_versions)}
    with helm.Chart.load(CHART) as chart:
        text = _native.call_string("helm_render", chart._raw(), json.dumps(values), json.dumps(options))
    manifests: dict[str, str] = json.loads(text)
    return manifests


def render_values(
    values: dict[str, Any],
    name: str = RELEASE,
    namespace: str = NAMESPACE,
    api_versions: tuple[str, ...] = CLUSTER_API_VERSIONS,
) -> Rendered:
    manifests = render_manifests(values, name, namespace, api_versions)
    objects: list[dict[str, Any]] = []
    by_template: dict[str, list[dict[str, Any]]] = {}
    notes = ""
    for template, text in sorted(manifests.items()):
        if template.endswith("NOTES.txt"):
            notes = text
            continue
        docs = [d for d in yaml.safe_load_all(text) if d]
        by_template[template] = docs
        objects.extend(docs)
    return Rendered(values, objects, notes, by_template)


@functools.cache
def render(name: str) -> Rendered:
    """One values file (charts/conveyor/ci/<name>-values.yaml, or "default"), rendered once."""
    return render_values(load_values(name))


# -- Kubernetes built-ins --------------------------------------------------------------


def validate_builtin(obj: dict[str, Any], version: str) -> None:
    """Raises kubernetes_validate's ValidationError, or SchemaNotFoundError for CRD kinds."""
    kv.validate(obj, version, strict=True)


# -- custom resources ------------------------------------------------------------------


def _strict(schema: Any, top: bool = True) -> Any:
    """openAPIV3Schema -> JSON Schema that rejects unknown fields, like strict field
    validation on the API server. ObjectMeta is left to Kubernetes (the CRD only says
    `type: object` for it, or constrains the name)."""
    if isinstance(schema, list):
        return [_strict(s, top=False) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "properties":
            out[key] = {
                name: (sub if top and name == "metadata" else _strict(sub, top=False))
                for name, sub in value.items()
            }
        elif key in ("items", "additionalProperties", "not", "allOf", "anyOf", "oneOf"):
            out[key] = _strict(value, top=False)
        else:
            out[key] = value
    if (
        out.get("type") == "object"
        and "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    if out.get("nullable") and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    return out


def _crd_files() -> list[Path]:
    return [*sorted(VENDORED_CRDS.glob("*.yaml")), *sorted((CHART / "crds").glob("*.yaml"))]


@functools.cache
def crd_validators() -> dict[tuple[str, str], jsonschema.protocols.Validator]:
    """(apiVersion, kind) -> validator, for every served version of every CRD."""
    out: dict[tuple[str, str], Any] = {}
    for path in _crd_files():
        for crd in yaml.safe_load_all(path.read_text()):
            if not crd or crd.get("kind") != "CustomResourceDefinition":
                continue
            group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
            for version in crd["spec"]["versions"]:
                schema = _strict(copy.deepcopy(version["schema"]["openAPIV3Schema"]))
                out[(f"{group}/{version['name']}", kind)] = jsonschema.Draft7Validator(schema)
    return out


def validate_custom(obj: dict[str, Any]) -> None:
    key = (obj["apiVersion"], obj["kind"])
    validator = crd_validators().get(key)
    if validator is None:
        raise LookupError(f"no CRD for {key}")
    errors = sorted(validator.iter_errors(obj), key=lambda e: list(e.absolute_path))
    if errors:
        raise jsonschema.ValidationError(
            "; ".join(f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in errors[:5])
        )


def validate_object(obj: dict[str, Any]) -> str:
    """Validate one rendered object by whichever schema owns its kind; returns which."""
    if (obj["apiVersion"], obj["kind"]) in crd_validators():
        validate_custom(obj)
        return "crd"
    for version in KUBE_VERSIONS:
        validate_builtin(obj, version)
    return "kubernetes"


def pod_specs(rendered: Rendered) -> list[tuple[str, dict[str, Any]]]:
    """Every pod spec the chart renders: Pods, workload templates, ScaledJob templates."""
    out = []
    for obj in rendered.objects:
        name = f"{obj['kind']}/{obj['metadata']['name']}"
        kind = obj["kind"]
        if kind == "Pod":
            out.append((name, obj["spec"]))
        elif kind in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            out.append((name, obj["spec"]["template"]["spec"]))
        elif kind == "ScaledJob":
            out.append((name, obj["spec"]["jobTargetRef"]["template"]["spec"]))
    return out


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container.get("env", [])}
