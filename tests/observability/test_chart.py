"""The chart's log format and OpenTelemetry values, through the real Helm engine."""

from __future__ import annotations

from typing import Any

import helm_python as helm
import pytest

from tests.chart.render import Rendered, pod_specs, render_values, validate_object


def containers(rendered: Rendered) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for _, spec in pod_specs(rendered) for c in spec["containers"]}


def env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def test_by_default_pods_log_json_and_export_no_traces():
    rendered = render_values({"init": {"enabled": True}})
    found = containers(rendered)
    for name in ("api", "worker", "init"):
        assert env(found[name])["CONVEYOR_LOG_FORMAT"] == "json", name
    assert "--log-format=json" in found["operator"]["command"]
    for name in ("api", "worker"):
        variables = env(found[name])
        assert "OTEL_EXPORTER_OTLP_ENDPOINT" not in variables
        assert variables["OTEL_SERVICE_NAME"] == f"conveyor-{name}"


def test_text_logs_on_request():
    found = containers(render_values({"config": {"logFormat": "text"}}))
    assert env(found["api"])["CONVEYOR_LOG_FORMAT"] == "text"
    assert "--log-format=full" in found["operator"]["command"]  # kopf's own default


@pytest.mark.parametrize("mode", ["deployment", "scaledJob"])
def test_an_endpoint_turns_traces_on_in_the_api_and_every_worker(mode):
    secret = {"secretKeyRef": {"name": "otel", "key": "headers"}}
    extra = {"name": "OTEL_EXPORTER_OTLP_HEADERS", "valueFrom": secret}
    values = {
        "init": {"enabled": True},
        "worker": {"mode": mode},
        "otel": {
            "endpoint": "http://otel-collector.observability:4318",
            "serviceName": "tasks",
            "sampleRatio": 0.25,
            "extraEnv": [extra],
        },
    }
    rendered = render_values(values)
    for obj in rendered.objects:
        validate_object(obj)
    found = containers(rendered)
    for name in ("api", "worker"):
        listed = [e["name"] for e in found[name]["env"]]
        variables = env(found[name])
        assert variables["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector.observability:4318"
        assert variables["OTEL_SERVICE_NAME"] == f"tasks-{name}"
        assert variables["OTEL_TRACES_SAMPLER"] == "parentbased_traceidratio"
        assert variables["OTEL_TRACES_SAMPLER_ARG"] == "0.25"
        assert variables["OTEL_EXPORTER_OTLP_HEADERS"] == extra["valueFrom"]
        # $(OTEL_POD_NAME) is expanded only from a variable listed before it.
        assert "k8s.pod.name=$(OTEL_POD_NAME)" in variables["OTEL_RESOURCE_ATTRIBUTES"]
        assert "k8s.namespace.name=tasks" in variables["OTEL_RESOURCE_ATTRIBUTES"]
        assert listed.index("OTEL_POD_NAME") < listed.index("OTEL_RESOURCE_ATTRIBUTES")
        assert variables["OTEL_POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    # Not the operator nor the init Job: they make no spans.
    assert not any(k.startswith("OTEL_") for k in env(found["operator"]))
    assert not any(k.startswith("OTEL_") for k in env(found["init"]))


@pytest.mark.parametrize(
    "values",
    [
        {"config": {"logFormat": "yaml"}},
        {"otel": {"sampleRatio": 2}},
        {"otel": {"endpoint": "otel-collector:4318"}},  # a URL, with its scheme
        {"otel": {"serviceName": ""}},
        {"otel": {"endpont": "http://x:4318"}},
    ],
)
def test_the_schema_refuses_bad_values(values):
    with pytest.raises(helm.HelmError):
        render_values(values)
