"""The packaged chart as its users see it: the README generated from values.yaml, Artifact
Hub metadata that matches the chart, the ci/ render matrix, and NOTES without paths of
this repository."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml

from tests.chart import helm_docs
from tests.chart.render import CHART, ROOT, VALUES_DIR, render, validate_custom, values_files


def _chart() -> dict[str, Any]:
    return yaml.safe_load((CHART / "Chart.yaml").read_text())


def test_the_readme_is_generated_from_values_yaml() -> None:
    expected = helm_docs.generate()
    actual = (CHART / "README.md").read_text()
    assert actual == expected, "charts/conveyor/README.md is stale: run `python -m tests.chart.helm_docs`"
    # Every value of values.yaml appears in the table with its type and default.
    from tests.chart.test_values_docs import documented_values

    table = {r.key: r for r in helm_docs.value_rows((CHART / "values.yaml").read_text())}
    assert set(table) == set(documented_values())
    assert table["worker.concurrency"].type == "int" and table["worker.concurrency"].default == "`8`"
    assert table["metrics.prometheusRule.failureRatio"].type == "float"
    assert table["auth.tokenScopes"].default == '`["tasks:submit","tasks:read","tasks:admin"]`'


def test_the_generator_follows_helm_docs() -> None:
    """The rules of helm-docs' values table (pkg/document/values.go and template.go)."""
    values = """\
# file header, not a description

# -- Documented object: one row, children hidden
resources:
  limits:
    cpu: "1"
    memory: 1Gi
config:
  # -- documented list item
  databases:
    - postgres
  undocumented: 3
  # -- a float
  ratio: 1.0
  # first line
  # -- last group wins
  #   continued here
  name: null
  labels:
    app.kubernetes.io/name: x
"""
    rows = {r.key: r for r in helm_docs.value_rows(values)}
    assert list(rows) == sorted(rows)  # sorted by key, byte order
    assert rows["resources"] == helm_docs.Row(
        "resources",
        "object",
        '`{"limits":{"cpu":"1","memory":"1Gi"}}`',
        "Documented object: one row, children hidden",
    )
    assert "resources.limits.cpu" not in rows
    assert rows["config.databases"].default == '`["postgres"]`' and rows["config.databases"].type == "list"
    # Leaves are documented even without a comment (an empty description).
    assert rows["config.undocumented"] == helm_docs.Row("config.undocumented", "int", "`3`", "")
    assert rows["config.ratio"] == helm_docs.Row("config.ratio", "float", "`1`", "a float")
    assert rows["config.name"] == helm_docs.Row(
        "config.name", "string", "`nil`", "last group wins continued here"
    )
    assert 'config.labels."app.kubernetes.io/name"' in rows


def test_chart_yaml_has_what_artifact_hub_and_helm_users_expect() -> None:
    chart = _chart()
    home = chart["home"]
    assert home.startswith("https://") and chart["sources"] and chart["icon"].startswith("https://")
    # The icon is this repository's file, at the path its URL names.
    icon_path = chart["icon"].split("/main/", 1)[1]
    assert (ROOT / icon_path).is_file()
    notes = chart["annotations"]
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert notes["artifacthub.io/license"] == project["license"]["text"]
    assert notes["artifacthub.io/operator"] == "true"
    for link in yaml.safe_load(notes["artifacthub.io/links"]):
        assert link["url"].startswith(home + "/blob/main/")
        assert (ROOT / link["url"].split("/blob/main/", 1)[1]).is_file(), link
    # The default image is what the chart renders with default values.
    images = yaml.safe_load(notes["artifacthub.io/images"])
    rendered = {c["image"] for _, spec in _pod_specs() for c in spec["containers"]}
    assert {i["image"] for i in images} <= rendered
    # The CRD list names each of the chart's CRDs, and the examples are valid resources.
    crds = [yaml.safe_load(p.read_text()) for p in sorted((CHART / "crds").glob("*.yaml"))]
    listed = yaml.safe_load(notes["artifacthub.io/crds"])
    assert sorted((c["kind"], c["name"]) for c in listed) == sorted(
        (crd["spec"]["names"]["kind"], crd["metadata"]["name"]) for crd in crds
    )
    for entry in listed:
        crd = next(c for c in crds if c["metadata"]["name"] == entry["name"])
        assert entry["version"] in {v["name"] for v in crd["spec"]["versions"]}
    examples = yaml.safe_load(notes["artifacthub.io/crdsExamples"])
    assert {e["kind"] for e in examples} == {c["kind"] for c in listed}
    for example in examples:
        validate_custom(example)


def _pod_specs() -> list[tuple[str, dict[str, Any]]]:
    from tests.chart.render import pod_specs

    return pod_specs(render("default"))


def test_the_render_matrix_is_the_ci_directory() -> None:
    """chart-testing's convention: ci/<name>-values.yaml, each a valid values file."""
    files = sorted(VALUES_DIR.glob("*.yaml"))
    assert VALUES_DIR == CHART / "ci" and files
    assert all(f.name.endswith("-values.yaml") for f in files)
    assert len(values_files()) == len(files)
    with helm.Chart.load(CHART) as chart:
        for name in values_files():
            chart.validate_schema(
                chart.merge_values(yaml.safe_load((VALUES_DIR / f"{name}-values.yaml").read_text()))
            )


# Top-level directories of this repository: none may appear in NOTES, which users of the
# packaged chart read without a checkout.
_TOP_DIRS = "|".join(re.escape(p.name) for p in ROOT.iterdir() if p.is_dir() and not p.name.startswith("."))
REPO_PATH = re.compile(rf"(?<![\w/.-])(?:\./)?(?:{_TOP_DIRS})/")


@pytest.mark.parametrize("name", ["default", *values_files()])
def test_notes_name_no_path_of_this_repository(name: str) -> None:
    notes = render(name).notes
    assert notes.strip()
    assert not REPO_PATH.findall(notes), REPO_PATH.findall(notes)


def test_the_repo_path_check_can_fail() -> None:
    assert REPO_PATH.search("kubectl apply -f k8s/examples/echo.yaml")
    assert REPO_PATH.search("see charts/conveyor/README.md")
    assert not REPO_PATH.search("http://127.0.0.1:8000/v1/tasks")


def test_readme_gotmpl_stays_out_of_the_package(tmp_path: Path) -> None:
    with helm.Chart.load(CHART) as chart:
        names = {f["name"] for f in chart.files}
    assert "README.md" in names and "README.md.gotmpl" not in names
