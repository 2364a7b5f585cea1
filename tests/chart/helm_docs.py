"""charts/conveyor/README.md, generated the way helm-docs generates it.

helm-docs (github.com/norwoodj/helm-docs) is a Go binary; this is the part of it the chart
uses, kept faithful to its output so the README can be regenerated with helm-docs itself:

- rows come from values.yaml: a key whose comment block holds `# --` is documented (the
  last `# --` group, continuation lines `# ...` appended with a space); a documented map or
  list is one row and its children only appear if documented themselves; an undocumented
  map is walked; any other leaf is a row with an empty description;
- Type is bool, int, float, string, list or object (null: string); Default is the value
  as compact JSON with sorted keys in backticks (null: `nil`); Key is the dotted path,
  list items as `[i]`, keys holding `.` or a space in double quotes; rows sort by key;
- README.md.gotmpl may use `{{ template "chart.<name>" . }}` lines of helm-docs' own
  templates (header, badges, description, homepage, maintainers, sources, requirements,
  values); then ` \\n` becomes `\\n` and three or more newlines become two.

Regenerate: `python -m tests.chart.helm_docs` (from the repository root).
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.chart.render import CHART

BADGE_STYLE = "flat-square"
TEMPLATE_LINE = re.compile(r'\{\{-? *template "(?P<name>[\w.-]+)" \. *-?\}\}')
DESCRIPTION = re.compile(r"^# --\s*(.*)$")
CONTINUATION = re.compile(r"^#\s+(.*)$")


@dataclass(frozen=True)
class Row:
    key: str
    type: str
    default: str
    description: str


def _description(comment: str) -> str | None:
    """The description of a head comment, helm-docs' ParseComment: the last `# --` group."""
    lines = [line.strip() for line in comment.splitlines()]
    starts = [i for i, line in enumerate(lines) if line.startswith("# --")]
    if not starts:
        return None
    group = lines[starts[-1] :]
    match = DESCRIPTION.match(group[0])
    text = match.group(1) if match else ""
    for line in group[1:]:
        more = CONTINUATION.match(line)
        if more:
            text += " " + more.group(1)
    return text


def _type(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "object"
    return "string"


def _default(value: Any) -> str:
    if value is None:
        return "`nil`"
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # Go encodes float64 1.0 as 1
    # Go's encoding/json: map keys sorted, no spaces, no HTML escaping.
    return "`" + json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False) + "`"


def _child_key(prefix: str, key: str) -> str:
    escaped = f'"{key}"' if "." in key or " " in key else key
    return f"{prefix}.{escaped}" if prefix else escaped


def _head_comments(text: str) -> dict[int, str]:
    """Line number (0-based) of a key -> the comment lines directly above it (PyYAML drops
    comments; yaml.v3, which helm-docs reads with, keeps such a block as HeadComment)."""
    lines = text.splitlines()
    out: dict[int, str] = {}
    for number, line in enumerate(lines):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        block: list[str] = []
        above = number - 1
        while above >= 0 and lines[above].lstrip().startswith("#"):
            block.insert(0, lines[above].strip())
            above -= 1
        if block:
            out[number] = "\n".join(block)
    return out


def value_rows(values_yaml: str) -> list[Row]:
    comments = _head_comments(values_yaml)
    root = yaml.compose(values_yaml, Loader=yaml.SafeLoader)
    rows: list[Row] = []

    def description_of(key_node: yaml.Node | None) -> str | None:
        if key_node is None:
            return None
        return _description(comments.get(key_node.start_mark.line, ""))

    def visit(prefix: str, key_node: yaml.Node | None, node: yaml.Node, document_leaves: bool) -> None:
        description = description_of(key_node)
        if isinstance(node, (yaml.MappingNode, yaml.SequenceNode)):
            empty = not node.value
            if empty:
                if prefix and (document_leaves or description is not None):
                    value = yaml.safe_load(yaml.serialize(node))
                    rows.append(Row(prefix, _type(value), _default(value), description or ""))
                return
            if description is not None and prefix:
                value = yaml.safe_load(yaml.serialize(node))
                rows.append(Row(prefix, _type(value), _default(value), description))
                document_leaves = False
            if isinstance(node, yaml.MappingNode):
                for key, child in node.value:
                    visit(_child_key(prefix, key.value), key, child, document_leaves)
            else:
                for index, child in enumerate(node.value):
                    visit(f"{prefix}[{index}]", child, child, document_leaves)
            return
        if not (document_leaves or description is not None):
            return
        value = yaml.safe_load(yaml.serialize(node))
        rows.append(Row(prefix, _type(value), _default(value), description or ""))

    if root is not None:
        visit("", None, root, True)
    return sorted(rows, key=lambda r: r.key)


def _templates(chart: dict[str, Any], rows: list[Row]) -> dict[str, str]:
    """helm-docs' built-in templates (pkg/document/template.go), for this chart."""
    version, kind, app = chart["version"], chart.get("type", ""), chart.get("appVersion", "")

    def badge(label: str, value: str) -> str:
        shield = f"https://img.shields.io/badge/{label}-{value.replace('-', '--')}-informational"
        return f"![{label}: {value}]({shield}?style={BADGE_STYLE}) "

    # Type is not escaped by helm-docs (chart types hold no hyphen).
    badges = (
        badge("Version", version)
        + (badge("Type", kind) if kind else "")
        + (badge("AppVersion", app) if app else "")
    )
    maintainers = ""
    if chart.get("maintainers"):
        maintainers = "## Maintainers\n\n| Name | Email | Url |\n| ---- | ------ | --- |"
        for m in chart["maintainers"]:
            email = f"<{m['email']}>" if m.get("email") else ""
            url = f"<{m['url']}>" if m.get("url") else ""
            maintainers += f"\n| {m['name']} | {email} | {url} |"
    sources = ""
    if chart.get("sources"):
        sources = "## Source Code\n" + "".join(f"\n* <{s}>" for s in chart["sources"])
    requirements = ""
    if chart.get("kubeVersion") or chart.get("dependencies"):
        requirements = "## Requirements\n\n"
        if chart.get("kubeVersion"):
            requirements += f"Kubernetes: `{chart['kubeVersion']}`\n\n"
        if chart.get("dependencies"):
            requirements += "| Repository | Name | Version |\n|------------|------|---------|"
            for d in chart["dependencies"]:
                name = f"{d['alias']}({d['name']})" if d.get("alias") else d["name"]
                requirements += f"\n| {d.get('repository', '')} | {name} | {d.get('version', '')} |"
    table = "| Key | Type | Default | Description |\n|-----|------|---------|-------------|"
    for row in rows:
        table += f"\n| {row.key} | {row.type} | {row.default} | {row.description} |"
    return {
        "chart.header": f"# {chart['name']}\n",
        "chart.deprecationWarning": "> **:exclamation: This Helm Chart is deprecated!**"
        if chart.get("deprecated")
        else "",
        "chart.badgesSection": badges,
        "chart.description": chart.get("description", ""),
        "chart.homepageLine": f"**Homepage:** <{chart['home']}>" if chart.get("home") else "",
        "chart.maintainersSection": maintainers,
        "chart.sourcesSection": sources,
        "chart.requirementsSection": requirements,
        "chart.valuesSection": f"## Values\n\n{table}" if rows else "",
        "chart.valuesTable": table,
    }


def _markdown_format(text: str) -> str:
    """helm-docs' applyMarkDownFormat."""
    return re.sub(r"\n{3,}", "\n\n", text.replace(" \n", "\n"))


def generate(chart_dir: Path = CHART) -> str:
    chart = yaml.safe_load((chart_dir / "Chart.yaml").read_text())
    rows = value_rows((chart_dir / "values.yaml").read_text())
    templates = _templates(chart, rows)
    source = (chart_dir / "README.md.gotmpl").read_text()

    def substitute(match: re.Match[str]) -> str:
        name = match.group("name")
        if name not in templates:
            raise KeyError(f"README.md.gotmpl uses a template this generator lacks: {name}")
        return templates[name]

    return _markdown_format(TEMPLATE_LINE.sub(substitute, source))


def main() -> None:
    (CHART / "README.md").write_text(generate())
    sys.stdout.write(f"wrote {CHART / 'README.md'}\n")


if __name__ == "__main__":
    main()
