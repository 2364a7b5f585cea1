"""Payload schemas evaluated in bounded time and without the network.

A payloadSchema comes from a cluster admin, the value it checks from any client. So:

- ``pattern``, ``patternProperties``, ``additionalProperties`` (which consults
  patternProperties) and ``format: regex`` use RE2, whose matching is linear in the input.
  Python's ``re`` backtracks (``^[^@]+@[^@]+$`` against 30,000 "@" takes seconds) and holds
  the GIL meanwhile, stalling every request. A pattern RE2 cannot compile (back-references,
  look-around) makes the TaskType invalid when it loads; nothing falls back to ``re``.
- ``format: uri``/``uri-reference`` use RFC 3986's grammar (``rfc3986-validator``'s
  expression) compiled by RE2, for the same reason.
- ``$ref`` resolves inside the schema (and the JSON Schema meta-schemas) only: a remote
  reference is refused when the TaskType loads and would never be fetched.
- Every keyword checks a deadline, so one validation never runs longer than its budget.
"""

from __future__ import annotations

import functools
import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from urllib.parse import urljoin

import re2
import rfc3986_validator
from jsonschema import Draft202012Validator, FormatChecker, validators
from jsonschema.exceptions import SchemaError, ValidationError
from jsonschema.protocols import Validator
from jsonschema_specifications import REGISTRY as SPECIFICATIONS
from referencing import Registry, Resource
from referencing.exceptions import Unresolvable
from referencing.jsonschema import DRAFT202012

BUDGET_SECONDS = 0.5  # one payload validation, all keywords together

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # a bad pattern is reported once, by schema_errors()


class BudgetExceeded(Exception):
    """Validation ran past ``BUDGET_SECONDS``."""


@functools.lru_cache(maxsize=4096)
def compile_pattern(pattern: str) -> Any:
    """An RE2 program for an ECMA-262 style ``pattern``; ``re2.error`` if RE2 can't run it."""
    return re2.compile(pattern, _OPTIONS)


def _pattern(validator: Validator, patrn: str, instance: Any, schema: Any) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and not compile_pattern(patrn).search(instance):
        yield ValidationError(f"{instance!r} does not match {patrn!r}")


def _pattern_properties(
    validator: Validator, patterns: dict[str, Any], instance: Any, schema: Any
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in patterns.items():
        program = compile_pattern(pattern)
        for key, value in instance.items():
            if program.search(key):
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


def _additional(instance: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    properties = schema.get("properties", {})
    programs = [compile_pattern(p) for p in schema.get("patternProperties", {})]
    return [k for k in instance if k not in properties and not any(p.search(k) for p in programs)]


def _additional_properties(
    validator: Validator, allowed: Any, instance: Any, schema: dict[str, Any]
) -> Iterator[ValidationError]:
    # jsonschema's own keyword, with its property matching done by RE2.
    if not validator.is_type(instance, "object"):
        return
    extras = _additional(instance, schema)
    if validator.is_type(allowed, "object"):
        for extra in extras:
            yield from validator.descend(instance[extra], allowed, path=extra)
    elif not allowed and extras:
        if "patternProperties" in schema:
            verb = "does" if len(extras) == 1 else "do"
            joined = ", ".join(repr(each) for each in sorted(extras))
            patterns = ", ".join(repr(each) for each in sorted(schema["patternProperties"]))
            yield ValidationError(f"{joined} {verb} not match any of the regexes: {patterns}")
        else:
            listed = ", ".join(repr(each) for each in sorted(extras))
            verb = "was" if len(extras) == 1 else "were"
            yield ValidationError(f"Additional properties are not allowed ({listed} {verb} unexpected)")


def _verbose_to_re2(expression: str) -> str:
    """rfc3986-validator writes its grammar for ``re.VERBOSE``: drop the layout and
    comments, and spell ``{,n}`` as ``{0,n}`` (RE2 reads the former literally)."""
    lines = []
    for line in expression.splitlines():
        cut = next((i for i, c in enumerate(line) if c == "#" and (i == 0 or line[i - 1] != "\\")), None)
        lines.append(line if cut is None else line[:cut])
    return "".join("".join(lines).split()).replace("{,", "{0,")


_URI = re2.compile(f"^{_verbose_to_re2(rfc3986_validator.URI_RE)}$", _OPTIONS)
_URI_REFERENCE = re2.compile(
    f"^(?:{_verbose_to_re2(rfc3986_validator.URI_RE)}|{_verbose_to_re2(rfc3986_validator.RELATIVE_REF_RE)})$",
    _OPTIONS,
)


def _format_checker() -> FormatChecker:
    checker = FormatChecker()

    @checker.checks("regex", raises=re2.error)
    def is_regex(instance: object) -> bool:
        return not isinstance(instance, str) or bool(compile_pattern(instance))

    @checker.checks("uri")
    def is_uri(instance: object) -> bool:
        return not isinstance(instance, str) or _URI.search(instance) is not None

    @checker.checks("uri-reference")
    def is_uri_reference(instance: object) -> bool:
        return not isinstance(instance, str) or _URI_REFERENCE.search(instance) is not None

    return checker


FORMAT_CHECKER = _format_checker()

_deadline = threading.local()  # validations run on many threads at once


def _timed(keyword: Callable[..., Any]) -> Callable[..., Any]:
    def timed(validator: Validator, value: Any, instance: Any, schema: Any) -> Any:
        if time.monotonic() > getattr(_deadline, "at", math.inf):
            raise BudgetExceeded
        return keyword(validator, value, instance, schema)

    return timed


_KEYWORDS: dict[str, Callable[..., Any]] = {
    **Draft202012Validator.VALIDATORS,
    "pattern": _pattern,
    "patternProperties": _pattern_properties,
    "additionalProperties": _additional_properties,
}
SafeValidator = validators.extend(
    Draft202012Validator,
    validators={name: _timed(fn) for name, fn in _KEYWORDS.items()},
)

# Refs resolve against the schema itself and the bundled meta-schemas; anything else is
# Unresolvable (this registry has no ``retrieve``), never fetched.
_OFFLINE: Registry[Any] = SPECIFICATIONS


def validator(schema: dict[str, Any]) -> Validator:
    """A validator for ``schema`` (already checked by ``schema_errors``)."""
    return SafeValidator(schema, registry=_OFFLINE, format_checker=FORMAT_CHECKER)


def iter_errors(compiled: Validator, instance: Any, budget: float | None = None) -> Iterable[ValidationError]:
    """Every error, in a list; ``BudgetExceeded`` when they took longer than ``budget``."""
    _deadline.at = time.monotonic() + (BUDGET_SECONDS if budget is None else budget)
    try:
        return list(compiled.iter_errors(instance))
    finally:
        _deadline.at = math.inf


def _walk(node: Any, base: str, found: list[tuple[str, str, Any]], path: str) -> None:
    """Collect (kind, where, value) for every ``$ref``/``$dynamicRef`` (value: its base
    URI and the reference), ``pattern`` and ``patternProperties`` key, and every
    ``unevaluatedProperties``."""
    if isinstance(node, list):
        for i, child in enumerate(node):
            _walk(child, base, found, f"{path}/{i}")
        return
    if not isinstance(node, dict):
        return
    if isinstance(node.get("$id"), str):
        base = urljoin(base, node["$id"])
    for key, value in node.items():
        where = f"{path}/{key}"
        if key in ("$ref", "$dynamicRef") and isinstance(value, str):
            found.append(("ref", where, (base, value)))
        elif key == "pattern" and isinstance(value, str):
            found.append(("pattern", where, value))
        elif key == "patternProperties" and isinstance(value, dict):
            found.extend(("pattern", f"{where}/{p}", p) for p in value)
        elif key == "unevaluatedProperties":
            found.append(("unevaluated", where, value))
        if key not in ("enum", "const", "examples", "default"):  # data, not schemas
            _walk(value, base, found, where)


def schema_errors(schema: Any) -> list[str]:
    """Why ``schema`` cannot be a payloadSchema (empty when it can): not a valid JSON
    Schema, a pattern RE2 cannot run, a ``$ref`` outside the schema."""
    if not isinstance(schema, dict):
        return ["payloadSchema must be an object"]
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        where = "/".join(str(p) for p in exc.absolute_path)
        return [f"{exc.message} (at /{where})"]
    root = str(schema.get("$id") or "")
    registry = _OFFLINE.with_resource(root, Resource.from_contents(schema, default_specification=DRAFT202012))
    resolver = registry.crawl().resolver(base_uri=root)
    found: list[tuple[str, str, Any]] = []
    _walk(schema, root, found, "")
    problems = []
    pattern_properties = any(kind == "pattern" and "/patternProperties/" in w for kind, w, _ in found)
    for kind, where, value in found:
        if kind == "pattern":
            try:
                compile_pattern(value)
            except re2.error as exc:
                why = exc.args[0].decode() if exc.args and isinstance(exc.args[0], bytes) else str(exc)
                problems.append(f"pattern {value!r} is not supported (RE2: {why}) (at {where})")
        elif kind == "ref":
            base, ref = value
            try:
                resolver.lookup(urljoin(base, ref))
            except Unresolvable:
                problems.append(
                    f"$ref {ref!r} does not resolve inside the schema; remote references are "
                    f"not fetched (at {where})"
                )
        elif kind == "unevaluated" and pattern_properties:
            # jsonschema matches patternProperties for this keyword with ``re``.
            problems.append(f"unevaluatedProperties cannot be combined with patternProperties (at {where})")
    return problems
