"""Priority lanes in the chart: every process knows the three queues, KEDA watches all three
and scales on their sum, by the rules KEDA's admission webhook applies
(apis/keda/v1alpha1/scaledobject_webhook.go: ValidateAndCompileScalingModifiers;
scaletriggers_types.go: ValidateTriggers; pkg/fallback: HasValidFallback)."""

from __future__ import annotations

import ast
from typing import Any

import helm_python as helm
import pytest

from conveyor.lanes import derived_queue, parse_weights
from conveyor.model import Priority
from tests.chart.render import CHART, RELEASE, env_of, pod_specs, render, render_values, validate_object

LEVELS = ("high", "normal", "low")


def keda_admits(scaled_object: dict[str, Any]) -> float:
    """What KEDA's webhook checks of a ScaledObject's scalingModifiers, ported: the formula
    compiles and runs over the named triggers (each given KEDA's dummy value -1), target is a
    number above 0, metricType is not Utilization; trigger names are unique. Returns the
    formula's value with every queue at 1 message."""
    spec = scaled_object["spec"]
    names = [t["name"] for t in spec["triggers"] if t.get("name")]
    assert len(names) == len(set(names)), f"triggerName defined multiple times: {names}"
    modifiers = spec["advanced"]["scalingModifiers"]
    formula, target = modifiers["formula"], modifiers.get("target", "")
    assert formula, "error ScalingModifiers.Formula is mandatory"
    assert target, "formula is given but target is empty"
    # KEDA's formulas are expr-lang; a sum of identifiers reads the same in Python.
    tree = ast.parse(formula, mode="eval")
    used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    assert used <= set(names), f"formula names undefined triggers: {used - set(names)}"
    eval(compile(tree, "formula", "eval"), {"__builtins__": {}}, dict.fromkeys(names, -1.0))
    assert float(target) > 0
    assert modifiers.get("metricType", "AverageValue") in ("AverageValue", "Value")
    # The fallback with modifiers needs a whole-number target (strconv.ParseInt).
    if spec.get("fallback"):
        assert int(target) > 0
    if "activationTarget" in modifiers:
        float(modifiers["activationTarget"])  # parsed at every scaling loop
    return float(eval(compile(tree, "formula", "eval"), {"__builtins__": {}}, dict.fromkeys(names, 1.0)))


def test_the_scaled_object_watches_each_levels_queue_and_scales_on_their_sum() -> None:
    obj = render("default").one("ScaledObject")
    validate_object(obj)
    triggers = obj["spec"]["triggers"]
    assert [t["name"] for t in triggers] == [f"sqs_{level}" for level in LEVELS]
    assert [t["metadata"]["queueURL"] for t in triggers] == [
        derived_queue("conveyor-tasks", Priority(level)) for level in LEVELS
    ]
    assert all(t["type"] == "aws-sqs-queue" for t in triggers)
    # Throttled tasks wait as delayed messages: they never add pods that cannot help.
    assert all(t["metadata"]["scaleOnDelayed"] == "false" for t in triggers)
    assert keda_admits(obj) == 3.0  # a message in each queue counts three
    modifiers = obj["spec"]["advanced"]["scalingModifiers"]
    assert modifiers["target"] == "8" and modifiers["activationTarget"] == "0"  # worker.concurrency


def test_queue_length_and_activation_apply_to_the_sum() -> None:
    values = {"worker": {"keda": {"queueLength": 20, "activationQueueLength": 3, "behavior": {}}}}
    obj = render_values(values).one("ScaledObject")
    keda_admits(obj)
    assert obj["spec"]["advanced"]["scalingModifiers"]["target"] == "20"
    assert obj["spec"]["advanced"]["scalingModifiers"]["activationTarget"] == "3"
    behavior = {"scaleDown": {"stabilizationWindowSeconds": 60}}
    both = render_values({"worker": {"keda": {"behavior": behavior}}}).one("ScaledObject")
    validate_object(both)
    assert both["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"] == behavior
    assert keda_admits(both) == 3.0


def test_the_scaled_job_sums_the_levels_too() -> None:
    job = render("scaledjob").one("ScaledJob")
    validate_object(job)
    assert [t["name"] for t in job["spec"]["triggers"]] == [f"sqs_{level}" for level in LEVELS]
    assert job["spec"]["scalingStrategy"]["multipleScalersCalculation"] == "sum"


def test_every_process_gets_the_queue_of_each_level() -> None:
    values: dict[str, Any] = {
        "aws": {"queue": "https://sqs.eu-west-1.amazonaws.com/1/jobs", "queueLow": "bulk"},
        "init": {"enabled": True},
    }
    rendered = render_values(values)
    seen = 0
    for _, pod in pod_specs(rendered):
        for container in pod["containers"]:
            env = env_of(container)
            if "CONVEYOR_QUEUE" not in env:
                continue
            seen += 1
            assert env["CONVEYOR_QUEUE_URL_HIGH"] == "https://sqs.eu-west-1.amazonaws.com/1/jobs-high"
            assert env["CONVEYOR_QUEUE_URL_LOW"] == "bulk"
    assert seen >= 3  # api, worker, and the init job that creates them
    urls = [t["metadata"]["queueURL"] for t in rendered.one("ScaledObject")["spec"]["triggers"]]
    assert urls == ["https://sqs.eu-west-1.amazonaws.com/1/jobs-high", values["aws"]["queue"], "bulk"]
    assert "https://sqs.eu-west-1.amazonaws.com/1/jobs-high (high)" in rendered.notes
    assert "bulk (low)" in rendered.notes


def test_the_workers_weights_come_from_values_in_the_settings_format() -> None:
    rendered = render_values({"worker": {"priorityWeights": {"high": 10, "normal": 2, "low": 1}}})
    worker = rendered.one("Deployment", f"{RELEASE}-worker")["spec"]["template"]["spec"]
    raw = env_of(worker["containers"][0])["CONVEYOR_PRIORITY_WEIGHTS"]
    assert parse_weights(raw) == {Priority.HIGH: 10, Priority.NORMAL: 2, Priority.LOW: 1}
    default = render("default").one("Deployment", f"{RELEASE}-worker")["spec"]["template"]["spec"]
    assert env_of(default["containers"][0])["CONVEYOR_PRIORITY_WEIGHTS"] == "high=6,normal=3,low=1"


@pytest.mark.parametrize(
    "bad",
    [
        {"worker": {"priorityWeights": {"high": 0, "normal": 3, "low": 1}}},
        {"worker": {"priorityWeights": {"high": 6, "normal": 3, "low": 1, "urgent": 9}}},
        {"worker": {"priorityWeights": {"high": 1.5, "normal": 3, "low": 1}}},
        {"aws": {"queueHigh": 5}},
    ],
)
def test_lane_values_are_typed(bad: dict[str, Any]) -> None:
    with helm.Chart.load(CHART) as chart, pytest.raises(helm.HelmError):
        chart.validate_schema(chart.merge_values(bad))


@pytest.mark.parametrize(
    "aws",
    [
        {"queueHigh": "conveyor-tasks"},
        {"queueLow": "conveyor-tasks"},
        {"queueHigh": "shared", "queueLow": "shared"},
    ],
)
def test_two_levels_on_one_queue_fail_the_render(aws: dict[str, str]) -> None:
    """KEDA would count a shared queue once per trigger, and workers poll it as two levels."""
    with pytest.raises(helm.HelmError, match="three different queues"):
        render_values({"aws": {"queue": "conveyor-tasks", **aws}})
