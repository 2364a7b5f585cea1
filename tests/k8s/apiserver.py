"""What kube-apiserver checks when a CustomResourceDefinition is created, offline.

jsonschema and kubernetes-validate check a CRD's shape, not the rules the API server adds on
top; one broken rule and the whole CRD is refused. This module re-states those rules from
the apiextensions-apiserver source (k8s.io/apiextensions-apiserver):

- pkg/apiserver/schema/validation.go: the structural-schema invariants
  (validateStructuralInvariants, validateStructuralMetadataInvariants,
  validateNestedValueValidation).
- pkg/apis/apiextensions/validation/validation.go: ValidateCustomResourceDefinitionOpenAPISchema,
  specStandardValidatorV3.validate, validateMapListKeysMaybeDefault, allowedFieldsAtRootSchema,
  the x-kubernetes-validations field checks and the CEL cost limits.
- pkg/apiserver/schema/defaulting/validation.go: every ``default`` is pruned, valid against
  its own node, and passes every x-kubernetes-validations rule *as written* (nested defaults
  are not filled in first; transition rules see oldSelf == self).
- pkg/apiserver/schema/cel/validation.go: rules run on every node present in the value, with
  ``self`` that node's value (``number`` fields are doubles).

The CEL rules run on a real CEL implementation (cel-rust, PyPI ``common-expression-language``).
Kubernetes' own CEL libraries (k8s.io/apiserver/pkg/cel/library) are not part of it: a rule
that calls one fails here until the function is implemented below, faithfully.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from typing import Any

import cel
import jsonschema

TYPES = {"array", "boolean", "integer", "number", "object", "string"}
# pkg/apis/apiextensions/validation/validation.go: allowedFieldsAtRootSchema, as JSON keys.
ROOT_KEYS_WITH_STATUS = {
    "description",
    "type",
    "format",
    "title",
    "maximum",
    "exclusiveMaximum",
    "minimum",
    "exclusiveMinimum",
    "maxLength",
    "minLength",
    "pattern",
    "maxItems",
    "minItems",
    "uniqueItems",
    "multipleOf",
    "required",
    "items",
    "properties",
    "externalDocs",
    "example",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-validations",
}
JUNCTORS = ("allOf", "anyOf", "oneOf", "not")
# validateNestedValueValidation: what may not appear under allOf/anyOf/oneOf/not.
NOT_IN_JUNCTORS = (
    "type",
    "additionalProperties",
    "default",
    "title",
    "description",
    "nullable",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-embedded-resource",
    "x-kubernetes-int-or-string",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-list-type",
    "x-kubernetes-map-type",
    "x-kubernetes-validations",
)
UNSUPPORTED = ("id", "additionalItems", "patternProperties", "definitions", "dependencies", "$ref")
RULE_REASONS = {"FieldValueInvalid", "FieldValueForbidden", "FieldValueRequired", "FieldValueDuplicate"}
# CEL cost estimation (pkg/apiserver/schema/cel/compilation.go, k8s.io/apiserver/pkg/cel):
# a string, list or map without maxLength / maxItems / maxProperties is assumed as large as
# a request allows; a rule's estimated cost, times how many times it can run (the sizes of
# the lists and maps around it), must stay under the per-rule limit, and all rules together
# under the per-CRD limit. What follows is a coarse estimate of that; the figures are
# Kubernetes' (apiextensions validation.go, apiserver/pkg/apis/cel/config.go).
MAX_REQUEST_BYTES = 3 * 1024 * 1024
UNBOUNDED_COUNT = MAX_REQUEST_BYTES // 2  # the smallest element, e.g. `0,`
STRING_TRAVERSAL_COST = 0.1  # per byte of a scanned string
PER_RULE_LIMIT = 10_000_000  # StaticEstimatedCostLimit
PER_CRD_LIMIT = 100_000_000  # StaticEstimatedCRDCostLimit
ITERATING = re.compile(r"\.(all|exists|exists_one|map|filter)\(")
SCANNING = re.compile(
    r"\.(matches|contains|startsWith|endsWith|split|indexOf|lastIndexOf|replace|find|findAll|"
    r"lowerAscii|upperAscii|trim)\("
)


# -- walking a schema ------------------------------------------------------------------------


def nodes(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any], str]]:
    """Every schema node with its path and level ("root", "field", "item", "map", "junctor")."""

    def walk(node: dict[str, Any], where: str, level: str) -> Iterator[tuple[str, dict[str, Any], str]]:
        yield where, node, level
        for key, sub in (node.get("properties") or {}).items():
            yield from walk(sub, f"{where}.properties[{key}]", "field" if level != "junctor" else level)
        if isinstance(node.get("items"), dict):
            yield from walk(node["items"], f"{where}.items", "item" if level != "junctor" else level)
        if isinstance(node.get("additionalProperties"), dict):
            yield from walk(node["additionalProperties"], f"{where}.additionalProperties", "map")
        for junctor in JUNCTORS:
            subs = node.get(junctor)
            for i, sub in enumerate(subs if isinstance(subs, list) else [subs] if subs else []):
                yield from walk(sub, f"{where}.{junctor}[{i}]", "junctor")

    yield from walk(schema, path or "openAPIV3Schema", "root")


def _preserves(node: dict[str, Any]) -> bool:
    return bool(node.get("x-kubernetes-preserve-unknown-fields"))


# -- structural schema and the CRD's own validation ------------------------------------------


def structural_problems(crd: dict[str, Any]) -> list[str]:
    """What the API server would refuse in each served version's schema."""
    problems: list[str] = []
    for version in crd["spec"]["versions"]:
        schema = version["schema"]["openAPIV3Schema"]
        has_status = "status" in (version.get("subresources") or {})
        problems += [f"{version['name']}: {p}" for p in schema_problems(schema, has_status)]
    return problems


def schema_problems(schema: dict[str, Any], has_status: bool = False) -> list[str]:
    out: list[str] = []
    if has_status:
        extra = set(schema) - ROOT_KEYS_WITH_STATUS
        if extra:
            out.append(f"root: {sorted(extra)} not allowed at the root with the status subresource")
    if schema.get("nullable"):
        out.append("root: nullable cannot be true at the root")
    for where, node, level in nodes(schema):
        out += [f"{where}: {p}" for p in _node_problems(node, level)]
    out += _metadata_problems(schema)
    out += _cost_problems(schema)
    return out


def _node_problems(node: dict[str, Any], level: str) -> list[str]:
    out: list[str] = []
    kind = node.get("type")
    if level == "junctor":
        out += [
            f"{key} must not be set inside {'/'.join(JUNCTORS)}" for key in NOT_IN_JUNCTORS if key in node
        ]
    elif not kind and not node.get("x-kubernetes-int-or-string") and not _preserves(node):
        out.append("type must not be empty")
    if kind is not None and kind not in TYPES:
        out.append(f"type {kind!r} is not one of {sorted(TYPES)}")
    if level == "root" and kind != "object":
        out.append("type must be object at the root")
    if kind == "array" and not isinstance(node.get("items"), dict):
        out.append("items must be one schema object for an array")
    out += [f"{key} is not supported" for key in UNSUPPORTED if key in node]
    if node.get("uniqueItems"):
        out.append("uniqueItems cannot be true")
    if "additionalProperties" in node:
        if level == "root":
            out.append("additionalProperties must not be used at the root")
        if node.get("properties") and node["additionalProperties"] is not True:
            out.append("additionalProperties and properties are mutually exclusive")
    if (
        "x-kubernetes-preserve-unknown-fields" in node
        and node["x-kubernetes-preserve-unknown-fields"] is not True
    ):
        out.append("x-kubernetes-preserve-unknown-fields must be true or undefined")
    if node.get("x-kubernetes-int-or-string") and (
        _preserves(node) or node.get("x-kubernetes-embedded-resource")
    ):
        out.append("x-kubernetes-int-or-string excludes preserve-unknown-fields and embedded-resource")
    if node.get("x-kubernetes-embedded-resource") and kind != "object":
        out.append("x-kubernetes-embedded-resource needs type object")
    if "x-kubernetes-map-type" in node:
        if kind != "object":
            out.append("x-kubernetes-map-type needs type object")
        if node["x-kubernetes-map-type"] not in ("atomic", "granular"):
            out.append("x-kubernetes-map-type must be atomic or granular")
    out += _list_type_problems(node)
    out += _rule_field_problems(node)
    if node.get("default") is not None:  # `default: null` is no default at all
        out += _default_problems(node)
    return out


def _list_type_problems(node: dict[str, Any]) -> list[str]:
    out: list[str] = []
    list_type = node.get("x-kubernetes-list-type")
    keys = node.get("x-kubernetes-list-map-keys") or []
    items: dict[str, Any] = node["items"] if isinstance(node.get("items"), dict) else {}
    if keys and list_type != "map":
        out.append("x-kubernetes-list-map-keys needs x-kubernetes-list-type: map")
    if list_type is None:
        return out
    if node.get("type") != "array":
        out.append("x-kubernetes-list-type needs type array")
    if list_type not in ("atomic", "set", "map"):
        out.append("x-kubernetes-list-type must be atomic, set or map")
    if list_type in ("set", "map") and items.get("nullable"):
        out.append(f"items cannot be nullable in a list of type {list_type}")
    if list_type == "set" and (
        items.get("type") in ("object", "array") or items.get("x-kubernetes-map-type") == "granular"
    ):
        out.append("items of a set must be atomic (scalars)")
    if list_type == "map":
        props = items.get("properties") or {}
        if not keys:
            out.append("x-kubernetes-list-map-keys must not be empty for a map list")
        if items.get("type") != "object":
            out.append("items must be objects in a map list")
        if len(set(keys)) != len(keys):
            out.append("x-kubernetes-list-map-keys has duplicates")
        for key in keys:
            prop = props.get(key)
            if prop is None:
                out.append(f"map key {key!r} is not an item property")
                continue
            if prop.get("type") not in ("string", "integer", "number", "boolean"):
                out.append(f"map key {key!r} must be a scalar")
            if key not in (items.get("required") or []) and "default" not in prop:
                out.append(f"map key {key!r} must be required or have a default")
            if prop.get("nullable"):
                out.append(f"map key {key!r} cannot be nullable")
    return out


def _rule_field_problems(node: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for i, rule in enumerate(node.get("x-kubernetes-validations") or []):
        text = rule.get("rule") or ""
        if not text.strip():
            out.append(f"x-kubernetes-validations[{i}].rule is not specified")
        if "message" in rule and (not str(rule["message"]).strip() or "\n" in str(rule["message"])):
            out.append(f"x-kubernetes-validations[{i}].message must be non-empty, on one line")
        if "\n" in text and "message" not in rule and "messageExpression" not in rule:
            out.append(f"x-kubernetes-validations[{i}]: a multi-line rule needs a message")
        if "reason" in rule and rule["reason"] not in RULE_REASONS:
            out.append(f"x-kubernetes-validations[{i}].reason must be one of {sorted(RULE_REASONS)}")
        if "fieldPath" in rule and (not rule["fieldPath"] or "\n" in rule["fieldPath"]):
            out.append(f"x-kubernetes-validations[{i}].fieldPath must be a non-empty path")
    return out


def _metadata_problems(schema: dict[str, Any]) -> list[str]:
    """validateStructuralMetadataInvariants: at the root, metadata may only say `type: object`
    and constrain name and generateName; apiVersion and kind must be strings; no defaults in
    any of the three (validation.go: withForbiddenDefaults "in top-level ...")."""
    out: list[str] = []
    props = schema.get("properties") or {}
    for key in ("apiVersion", "kind"):
        if key in props and props[key].get("type") != "string":
            out.append(f"properties[{key}]: type must be string")
    meta = props.get("metadata")
    if meta is not None:
        if meta.get("type") != "object":
            out.append("properties[metadata]: type must be object")
        extra = set(meta) - {"type", "properties"}
        names = set(meta.get("properties") or {})
        if extra or not names <= {"name", "generateName"}:
            out.append("properties[metadata]: must not specify anything other than name and generateName")
    for key in ("apiVersion", "kind", "metadata"):
        for where, node, _ in nodes(props.get(key) or {}, f"properties[{key}]"):
            if "default" in node:
                out.append(f"{where}: default must not be set in top-level {key}")
    return out


# -- CEL: cost bounds --------------------------------------------------------------------------


def _length(node: dict[str, Any]) -> int:
    if "maxLength" in node:
        return int(node["maxLength"])
    if "enum" in node:
        return max(len(str(v)) for v in node["enum"])
    return MAX_REQUEST_BYTES


def _count(node: dict[str, Any]) -> int:
    bound = node.get("maxItems") if node.get("type") == "array" else node.get("maxProperties")
    return UNBOUNDED_COUNT if bound is None else int(bound)


def _element(node: dict[str, Any]) -> dict[str, Any] | None:
    """What a comprehension ranges over: list items, or (for maps) the string keys."""
    if node.get("type") == "array" and isinstance(node.get("items"), dict):
        return dict(node["items"])
    if node.get("type") == "object" and isinstance(node.get("additionalProperties"), dict):
        return {"type": "string"}  # map keys: unbounded strings
    return None


def _paths(node: dict[str, Any], rule: str) -> list[tuple[str, dict[str, Any] | None, bool]]:
    """(name, schema node or None when undefined, followed by a call?) of every `self...`."""
    out: list[tuple[str, dict[str, Any] | None, bool]] = []
    for match in re.finditer(r"\bself((?:\.[A-Za-z_][A-Za-z0-9_]*)*)(\()?", rule):
        parts = [p for p in match.group(1).split(".") if p]
        called = match.group(2) is not None and bool(parts)
        if called:
            parts = parts[:-1]  # self.a.matches(...): the last name is the call
        here: dict[str, Any] | None = node
        for part in parts:
            if here is None:
                break
            if "properties" in here:
                here = here["properties"].get(part)
            elif isinstance(here.get("additionalProperties"), dict):
                here = here["additionalProperties"]  # m.key on a map
            else:
                here = None  # a scalar, list, or an object without declared fields
        out.append(("self" + "".join(f".{p}" for p in parts), here, called))
    return out


def _type_problems(node: dict[str, Any], rule: str) -> list[str]:
    """What CEL's type check refuses at compile time: fields the schema does not declare, and
    comprehensions over something that is not a list or map."""
    out: list[str] = []
    for name, target, called in _paths(node, rule):
        if target is None:
            out.append(f"{name}: undefined field")
        elif called and re.search(re.escape(name) + ITERATING.pattern, rule) and _element(target) is None:
            out.append(f"{name} cannot be the range of a comprehension (not a list or map)")
    return out


def _rule_cost(node: dict[str, Any], rule: str) -> float:
    """A coarse estimate of one evaluation of ``rule`` at ``node``."""
    cost = 1.0
    for name, target, _ in _paths(node, rule):
        if target is None:
            continue
        scanned = target.get("type") == "string" and re.search(re.escape(name) + SCANNING.pattern, rule)
        if scanned:
            cost += STRING_TRAVERSAL_COST * _length(target)
        if re.search(re.escape(name) + ITERATING.pattern, rule):
            element = _element(target) or {}
            per = 1.0
            if element.get("type") == "string" and SCANNING.search(rule):
                per += STRING_TRAVERSAL_COST * _length(element)
            cost += _count(target) * per
    return cost


def _cost_problems(schema: dict[str, Any]) -> list[str]:
    out: list[str] = []
    total = 0.0

    def walk(node: dict[str, Any], where: str, runs: int) -> None:
        nonlocal total
        for i, rule in enumerate(node.get("x-kubernetes-validations") or []):
            text = rule.get("rule") or ""
            here = f"{where}.x-kubernetes-validations[{i}]"
            types = _type_problems(node, text)
            out.extend(f"{here}: compilation failed: {p}" for p in types)
            if types:
                continue
            cost = runs * _rule_cost(node, text)
            total += cost
            if cost > PER_RULE_LIMIT:
                out.append(
                    f"{here}: estimated rule cost {cost:.3g} exceeds the limit {PER_RULE_LIMIT:.0e} "
                    "(add maxItems, maxProperties, maxLength where lists, maps and strings are declared)"
                )
        for key, sub in (node.get("properties") or {}).items():
            walk(sub, f"{where}.properties[{key}]", runs)
        if isinstance(node.get("items"), dict):
            walk(node["items"], f"{where}.items", runs * _count(node))
        if isinstance(node.get("additionalProperties"), dict):
            walk(node["additionalProperties"], f"{where}.additionalProperties", runs * _count(node))

    walk(schema, "openAPIV3Schema", 1)
    if total > PER_CRD_LIMIT:
        out.append(f"openAPIV3Schema: estimated cost of all rules {total:.3g} exceeds {PER_CRD_LIMIT:.0e}")
    return out


# -- values: pruning, defaulting, schema validation, CEL ---------------------------------------


def unknown_fields(node: dict[str, Any], value: Any, where: str = "") -> list[str]:
    """Fields pruning would drop (pkg/apiserver/schema/pruning)."""
    out: list[str] = []
    if isinstance(value, dict) and node.get("type") == "object":
        props = node.get("properties")
        extra = node.get("additionalProperties")
        for key, sub in value.items():
            if not where and key == "metadata":
                continue  # ObjectMeta: the API server's, not the schema's
            if props is not None and key in props:
                out += unknown_fields(props[key], sub, f"{where}.{key}")
            elif isinstance(extra, dict):
                out += unknown_fields(extra, sub, f"{where}.{key}")
            elif not _preserves(node) and extra is not True:
                out.append(f"{where}.{key}")
    elif isinstance(value, list) and isinstance(node.get("items"), dict):
        for i, sub in enumerate(value):
            out += unknown_fields(node["items"], sub, f"{where}[{i}]")
    return out


def with_defaults(node: dict[str, Any], value: Any) -> Any:
    """Structural defaulting (pkg/apiserver/schema/defaulting/algorithm.go): missing (or null,
    when not nullable) properties get their default, then defaulting goes on inside it, in
    objects, list items and map values."""
    if isinstance(value, dict) and node.get("type") == "object":
        out = dict(value)
        for key, sub in (node.get("properties") or {}).items():
            has_default = sub.get("default") is not None
            if has_default and (key not in out or (out[key] is None and not sub.get("nullable"))):
                out[key] = copy.deepcopy(sub["default"])
            if key in out:
                out[key] = with_defaults(sub, out[key])
        extra = node.get("additionalProperties")
        if isinstance(extra, dict):
            for key in set(out) - set(node.get("properties") or {}):
                out[key] = with_defaults(extra, out[key])
        return out
    if isinstance(value, list) and isinstance(node.get("items"), dict):
        return [with_defaults(node["items"], item) for item in value]
    return value


def schema_errors(node: dict[str, Any], value: Any, where: str = "") -> list[str]:
    """OpenAPI v3 value validation of ``value`` against ``node`` (the keywords a structural
    schema may use are draft 4's; x-kubernetes-* are not validation keywords)."""
    validator = jsonschema.Draft4Validator(_nullable(node), format_checker=jsonschema.FormatChecker())
    return [
        f"{where}/{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in sorted(validator.iter_errors(value), key=lambda e: list(map(str, e.absolute_path)))
    ]


def _nullable(node: Any) -> Any:
    if isinstance(node, list):
        return [_nullable(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {
        k: _nullable(v) if k in ("items", "additionalProperties", *JUNCTORS) else v for k, v in node.items()
    }
    if "properties" in node:
        out["properties"] = {k: _nullable(v) for k, v in node["properties"].items()}
    if node.get("nullable") and isinstance(node.get("type"), str):
        out["type"] = [node["type"], "null"]
    return out


def _typed(node: dict[str, Any], value: Any) -> Any:
    """The value as CEL sees it: ``number`` is a double even when written as 1."""
    kind = node.get("type")
    if kind == "number" and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, dict) and kind == "object":
        props = node.get("properties") or {}
        extra = node.get("additionalProperties")
        return {
            k: _typed(props[k] if k in props else (extra if isinstance(extra, dict) else {}), v)
            for k, v in value.items()
        }
    if isinstance(value, list) and isinstance(node.get("items"), dict):
        return [_typed(node["items"], v) for v in value]
    return value


def rule_errors(node: dict[str, Any], value: Any, where: str = "", old_is_self: bool = False) -> list[str]:
    """Every x-kubernetes-validations rule of ``node`` and of the nodes below it that
    ``value`` reaches, run on a real CEL engine. Transition rules (oldSelf) run only when
    there is an old value: for defaults the API server passes the default as old too."""
    out: list[str] = []
    typed = _typed(node, value)
    for rule in node.get("x-kubernetes-validations") or []:
        text = rule["rule"]
        uses_old = re.search(r"\boldSelf\b", text) is not None
        if uses_old and not old_is_self:
            continue
        variables = {"self": typed, **({"oldSelf": typed} if uses_old else {})}
        try:
            result = cel.evaluate(text, cel.Context(variables=variables, functions=KUBERNETES_FUNCTIONS))
        except Exception as exc:  # any evaluation error is a rejection on the API server
            out.append(f"{where or '<root>'}: error evaluating rule {text!r}: {type(exc).__name__}: {exc}")
            continue
        if result is not True:
            message = rule.get("message") or f"failed rule: {text}"
            out.append(f"{where or '<root>'}: {message}" + ("" if result is False else f" (got {result!r})"))
    if isinstance(value, dict) and node.get("type") == "object":
        props = node.get("properties") or {}
        extra = node.get("additionalProperties")
        for key, sub in value.items():
            child = props.get(key) or (extra if isinstance(extra, dict) else None)
            if child is not None and sub is not None:
                out += rule_errors(child, sub, f"{where}.{key}", old_is_self)
    elif isinstance(value, list) and isinstance(node.get("items"), dict):
        for i, sub in enumerate(value):
            out += rule_errors(node["items"], sub, f"{where}[{i}]", old_is_self)
    return out


# Kubernetes CEL library functions cel-rust lacks, implemented as Kubernetes defines them
# (k8s.io/apiserver/pkg/cel/library). None of the CRD's rules needs one yet: a rule calling
# one fails in rule_errors until it is added here.
KUBERNETES_FUNCTIONS: dict[str, Any] = {}


def _default_problems(node: dict[str, Any]) -> list[str]:
    """pkg/apiserver/schema/defaulting/validation.go for one node's default, as written."""
    default = node["default"]
    out = [f"default has unknown field {f}" for f in unknown_fields(node, default)]
    out += [f"default {e}" for e in schema_errors(node, default)]
    if not out:
        out += [f"default {e}" for e in rule_errors(node, default, old_is_self=True)]
    return out


# pkg/registry/customresource/strategy.go: hasBlockingErr. These OpenAPI failures (as field
# error types NotSupported, Required, TooLong, TooMany, TypeInvalid) skip every CEL rule of
# the object; others (minimum, pattern...) do not.
BLOCKING_KEYWORDS = {"enum", "required", "maxLength", "maxItems", "maxProperties", "type"}
NOT_CHECKED = "some validation rules were not checked because the object was invalid"


def _blocking(node: dict[str, Any], value: Any) -> bool:
    validator = jsonschema.Draft4Validator(_nullable(node), format_checker=jsonschema.FormatChecker())
    return any(e.validator in BLOCKING_KEYWORDS for e in validator.iter_errors(value))


def object_problems(schema: dict[str, Any], obj: dict[str, Any]) -> list[str]:
    """What a create of ``obj`` meets: defaulting, pruning, then schema and CEL validation
    (the rules only when no schema error blocks them, as kube-apiserver does)."""
    defaulted = with_defaults(schema, obj)
    problems = [f"unknown field {f}" for f in unknown_fields(schema, defaulted)]
    problems += schema_errors(schema, defaulted)
    if _blocking(schema, defaulted):
        return [*problems, NOT_CHECKED]
    return problems + rule_errors(schema, defaulted)
