"""The stack's Outputs feed the chart and the settings: every resource setting has one, the
chart values and variables they name exist, and the docs' table lists them all."""

from __future__ import annotations

import re
from dataclasses import fields

import yaml

from conveyor.settings import Settings
from tests.infra import template

VALUES = template.ROOT / "charts" / "conveyor" / "values.yaml"
DOCS = template.ROOT / "docs" / "KUBERNETES.md"
# The settings that name an AWS resource or its region: each needs an output.
RESOURCE_SETTINGS = {"queue", "dlq", "table", "bucket", "region"}


def _outputs() -> dict[str, str]:
    return {k: str(v.get("Description", "")) for k, v in template.load()["Outputs"].items()}


def test_every_resource_setting_has_an_output():
    variables = {v for d in _outputs().values() for v in re.findall(r"\b(?:CONVEYOR|AWS)_[A-Z_]+", d)}
    settings = {f.name for f in fields(Settings)}
    for variable in variables:
        if variable.startswith("CONVEYOR_"):
            assert variable.removeprefix("CONVEYOR_").lower() in settings, variable
    fed = {v.removeprefix("CONVEYOR_").lower() for v in variables} | {
        "region" for v in variables if v == "AWS_REGION"
    }
    assert fed >= RESOURCE_SETTINGS


def test_the_chart_values_the_outputs_name_exist():
    values = yaml.safe_load(VALUES.read_text())
    named = {v for d in _outputs().values() for v in re.findall(r"\b(?:aws|config|init|worker)\.[\w.]+", d)}
    assert named, "no output names a chart value"
    for path in named:
        node = values
        for key in path.split("."):
            assert isinstance(node, dict) and key in node, f"{path} is not a value of the chart"
            node = node[key]


def test_the_docs_table_lists_every_output():
    section = DOCS.read_text().split("## AWS resources as code", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"^\| `(\w+)`", section, flags=re.M)) | set(
        re.findall(r"`(\w+RoleArn)`", section)
    )
    chart_facing = {k for k, d in _outputs().items() if re.search(r"\b(aws|config|init|worker)\.", d)}
    assert chart_facing - listed == set()


def test_defaults_name_what_the_settings_default_to():
    """With its defaults the stack makes the names and timings Conveyor assumes by default."""
    parameters = template.load()["Parameters"]
    defaults = Settings()
    prefix = parameters["NamePrefix"]["Default"]
    assert (f"{prefix}-tasks", f"{prefix}-tasks-dlq", f"{prefix}-tasks") == (
        defaults.queue,
        defaults.dlq,
        defaults.table,
    )
    assert int(parameters["VisibilityTimeout"]["Default"]) == defaults.visibility_timeout
    assert int(parameters["MaxReceiveCount"]["Default"]) == defaults.max_receive_count
    chart = yaml.safe_load(VALUES.read_text())["config"]
    assert int(parameters["VisibilityTimeout"]["Default"]) == chart["visibilityTimeout"]
    assert int(parameters["MaxReceiveCount"]["Default"]) == chart["maxReceiveCount"]
