"""values.yaml documents every value, the schema types every value, and the values table in
docs/KUBERNETES.md lists every documented value with its real default."""

from __future__ import annotations

import json
import re
from typing import Any

import yaml

from tests.chart.render import CHART, ROOT

KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z_][\w.-]*):(?: |$)")


def documented_values() -> dict[str, Any]:
    """Dotted key -> default for every `# --` documented key of values.yaml; fails on a
    leaf (or a map) that has neither its own `# --` comment nor documented children."""
    lines = (CHART / "values.yaml").read_text().splitlines()
    defaults = yaml.safe_load("\n".join(lines))
    stack: list[tuple[int, str, bool]] = []  # (indent, key, documented)
    found: dict[str, Any] = {}
    undocumented: list[str] = []
    previous = ""
    for line in lines:
        match = KEY.match(line)
        if not match:
            if line.strip():
                previous = line.strip()
            continue
        indent = len(match["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        if any(documented for _, _, documented in stack):
            previous = line.strip()
            continue  # part of a value documented as a whole
        path = [k for _, k, _ in stack] + [match["key"]]
        dotted = ".".join(path)
        documented = previous.startswith("# --")
        value: Any = defaults
        for part in path:
            value = value[part]
        if documented:
            found[dotted] = value
        elif not isinstance(value, dict) or not value:
            undocumented.append(dotted)
        stack.append((indent, match["key"], documented))
        previous = line.strip()
    assert not undocumented, f"values without a `# --` comment: {undocumented}"
    return found


def test_every_value_is_documented() -> None:
    documented = documented_values()
    assert "worker.keda.queueLength" in documented and "image.repository" in documented


def _schema_paths(schema: dict[str, Any], root: dict[str, Any], prefix: str = "") -> set[str]:
    if "$ref" in schema:
        schema = root["definitions"][schema["$ref"].rsplit("/", 1)[-1]]
    out = set()
    for key, sub in schema.get("properties", {}).items():
        path = f"{prefix}{key}"
        out.add(path)
        out |= _schema_paths(sub, root, path + ".")
    return out


def _value_paths(values: Any, prefix: str = "") -> set[str]:
    out = set()
    if isinstance(values, dict):
        for key, sub in values.items():
            out.add(prefix + key)
            out |= _value_paths(sub, prefix + key + ".")
    return out


def test_schema_and_values_name_the_same_keys() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    # Maps typed as a whole (resources, probes, security contexts, label maps, HPA behavior) may hold
    # keys on one side only; everything else must be on both sides.
    opaque = re.compile(
        r"^(podSecurityContext|securityContext|\w+\.resources|api\.\w+Probe|metrics\.dashboard\.labels"
        r"|worker\.(keda|autoscaling)\.behavior)\."
    )
    differ = (_value_paths(values) ^ _schema_paths(schema, schema)) - {"global"}
    assert not {p for p in differ if not opaque.match(p)}


def _docs_table() -> dict[str, str]:
    text = (ROOT / "docs" / "KUBERNETES.md").read_text()
    text = text.split("\n## Values\n", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([^`]+)` \| (.*?) \| .* \|$", text, flags=re.M)
    return dict(rows)


def _cell(value: Any) -> str:
    return f"`{json.dumps(value)}`"


def test_the_docs_values_table_matches_values_yaml() -> None:
    documented = documented_values()
    table = _docs_table()
    assert set(table) == set(documented), (
        f"missing from docs/KUBERNETES.md: {sorted(set(documented) - set(table))}; "
        f"not in values.yaml: {sorted(set(table) - set(documented))}"
    )
    wrong = {k: (table[k], _cell(v)) for k, v in documented.items() if table[k] != _cell(v)}
    assert not wrong, f"defaults differ (docs, values.yaml): {wrong}"
