"""KEDA: every supported AWS auth path renders something KEDA can resolve (checked by a port
of KEDA's own resolution rules, tests/chart/keda_auth.py), combinations that cannot work
stop the install with a message naming the values, and the ScaledObject / ScaledJob knobs."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml

from tests.chart.keda_auth import Credentials, KedaAuthError, resolve_all
from tests.chart.render import (
    CHART,
    RELEASE,
    VENDORED_CRDS,
    Rendered,
    crd_validators,
    render,
    render_values,
    validate_object,
    values_files,
)
from tests.chart.test_render import CUSTOM_KINDS  # the custom resources the chart renders

CI_DIR = CHART / "ci"
TRIGGERS = 3  # one aws-sqs-queue trigger per priority level, each resolving the same auth
IRSA_ROLE = "arn:aws:iam::123456789012:role/conveyor"
KEDA_ROLE = "arn:aws:iam::123456789012:role/conveyor-keda-reader"
# Parameters KEDA's aws-sqs-queue scaler and pkg/scalers/aws read from trigger metadata: the
# metadata is a free-form map in the CRD, so a misspelt key would otherwise pass.
SQS_TRIGGER_KEYS = {
    "queueURL",
    "queueURLFromEnv",
    "queueLength",
    "activationQueueLength",
    "awsRegion",
    "awsEndpoint",
    "identityOwner",
    "scaleOnInFlight",
    "scaleOnDelayed",
    "awsAccessKeyID",
    "awsAccessKeyIDFromEnv",
    "awsSecretAccessKeyFromEnv",
}


def ci_values() -> list[str]:
    return sorted(p.name.removesuffix("-values.yaml") for p in CI_DIR.glob("*-values.yaml"))


@functools.cache
def render_ci(name: str) -> Rendered:
    """charts/conveyor/ci/<name>-values.yaml, rendered once."""
    return render_values(yaml.safe_load((CI_DIR / f"{name}-values.yaml").read_text()) or {})


def _matrix() -> list[tuple[str, Rendered]]:
    return [
        *((f"values/{n}", render(n)) for n in ["default", *values_files()]),
        *((f"ci/{n}", render_ci(n)) for n in ci_values()),
    ]


def _auth(values: dict[str, Any]) -> list[Credentials]:
    return resolve_all(render_values(values))


def _fails(values: dict[str, Any], *needles: str) -> str:
    with pytest.raises(helm.HelmError) as caught:
        render_values(values)
    message = str(caught.value)
    for needle in needles:
        assert needle in message, (needle, message)
    return message


# -- every values file: valid objects, and auth KEDA resolves -------------------------------


@pytest.mark.parametrize("name", ci_values())
def test_ci_values_render_valid_objects(name: str) -> None:
    rendered = render_ci(name)
    for obj in rendered.objects:
        validate_object(obj)
    values = yaml.safe_load((CI_DIR / f"{name}-values.yaml").read_text())
    report = helm.lint(CHART, values, strict=True, namespace="tasks", kube_version="v1.25.0")
    assert not report["errors"] and not [m for m in report["messages"] if m["severity"] >= 2], report


def test_every_values_file_renders_auth_keda_can_resolve() -> None:
    scaled = 0
    for name, rendered in _matrix():
        for credentials in resolve_all(rendered):  # raises KedaAuthError as KEDA would fail
            scaled += 1
            assert credentials.source in {"workload", "keda", "assume", "static"}, name
        for obj in rendered.find("ScaledObject") + rendered.find("ScaledJob"):
            for trigger in obj["spec"]["triggers"]:
                assert set(trigger["metadata"]) <= SQS_TRIGGER_KEYS, (name, trigger["metadata"])
    assert scaled >= 8


def test_the_resolver_port_fails_where_keda_fails() -> None:
    """The oracle itself: the old default (identityOwner workload, no role anywhere) and a
    dangling authenticationRef are what KEDA rejects."""
    rendered = render("default")
    broken = Rendered(
        rendered.values, [o for o in rendered.objects if o["kind"] != "TriggerAuthentication"], ""
    )
    with pytest.raises(KedaAuthError, match="triggerAuth"):
        resolve_all(broken)
    auth = next(o for o in rendered.objects if o["kind"] == "TriggerAuthentication")
    old_default = {**auth, "spec": {"podIdentity": {"provider": "aws", "identityOwner": "workload"}}}
    objects = [old_default if o is auth else o for o in rendered.objects]
    with pytest.raises(KedaAuthError, match=r"eks\.amazonaws\.com/role-arn"):
        resolve_all(Rendered(rendered.values, objects, ""))


# -- the four paths --------------------------------------------------------------------------


def test_irsa_annotates_the_workers_account_and_keda_assumes_it() -> None:
    rendered = render_ci("keda-irsa")
    account = rendered.one("ServiceAccount", RELEASE)
    assert account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"] == IRSA_ROLE
    deployment = rendered.one("Deployment", f"{RELEASE}-worker")
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == RELEASE
    assert rendered.one("TriggerAuthentication")["spec"] == {
        "podIdentity": {"provider": "aws", "identityOwner": "workload"}
    }
    assert resolve_all(rendered) == [Credentials("workload", IRSA_ROLE)] * TRIGGERS
    assert f"KEDA reads the queue depth with the workers' role {IRSA_ROLE}" in rendered.notes
    # The role may also come from serviceAccount.annotations, and the default (empty
    # identityOwner) picks workload as soon as the account carries a role.
    annotated = {"serviceAccount": {"annotations": {"eks.amazonaws.com/role-arn": IRSA_ROLE}}}
    assert _auth(annotated) == [Credentials("workload", IRSA_ROLE)] * TRIGGERS
    assert _auth({"aws": {"roleArn": IRSA_ROLE}}) == [Credentials("workload", IRSA_ROLE)] * TRIGGERS


def test_pod_identity_uses_kedas_own_identity_or_a_role_it_assumes() -> None:
    rendered = render_ci("keda-pod-identity")
    assert not rendered.one("ServiceAccount", RELEASE)["metadata"].get("annotations")
    assert rendered.one("TriggerAuthentication")["spec"] == {
        "podIdentity": {"provider": "aws", "identityOwner": "keda"}
    }
    assert rendered.one("ScaledJob")["spec"]["triggers"][0]["authenticationRef"] == {
        "name": f"{RELEASE}-worker"
    }
    assert resolve_all(rendered) == [Credentials("keda")] * TRIGGERS
    assert "KEDA reads the queue depth with its own identity" in rendered.notes
    assumed = {"worker": {"keda": {"auth": {"identityOwner": "keda", "roleArn": KEDA_ROLE}}}}
    spec = render_values(assumed).one("TriggerAuthentication")["spec"]
    assert spec == {"podIdentity": {"provider": "aws", "roleArn": KEDA_ROLE}}
    assert _auth(assumed) == [Credentials("assume", KEDA_ROLE)] * TRIGGERS
    # hardened: IRSA for the pods, and a dedicated reader role for KEDA.
    assert resolve_all(render("hardened")) == [Credentials("assume", KEDA_ROLE)] * TRIGGERS


def test_the_default_values_resolve_to_kedas_own_identity() -> None:
    rendered = render("default")
    assert rendered.one("TriggerAuthentication")["spec"] == {
        "podIdentity": {"provider": "aws", "identityOwner": "keda"}
    }
    assert resolve_all(rendered) == [Credentials("keda")] * TRIGGERS


def test_static_keys_from_the_secret_with_and_without_a_session_token() -> None:
    rendered = render_ci("keda-static-keys")
    refs = rendered.one("TriggerAuthentication")["spec"]["secretTargetRef"]
    assert refs == [
        {"parameter": "awsAccessKeyID", "name": "conveyor-aws", "key": "AWS_ACCESS_KEY_ID"},
        {"parameter": "awsSecretAccessKey", "name": "conveyor-aws", "key": "AWS_SECRET_ACCESS_KEY"},
        {"parameter": "awsSessionToken", "name": "conveyor-aws", "key": "AWS_SESSION_TOKEN"},
    ]
    assert (
        resolve_all(rendered)
        == [Credentials("static", keys=("awsAccessKeyID", "awsSecretAccessKey", "awsSessionToken"))]
        * TRIGGERS
    )
    # The pods read the same Secret.
    worker = rendered.one("Deployment", f"{RELEASE}-worker")["spec"]["template"]["spec"]["containers"][0]
    assert worker["envFrom"] == [{"secretRef": {"name": "conveyor-aws"}}]
    without = render("secret-auth").one("TriggerAuthentication")["spec"]["secretTargetRef"]
    assert [r["parameter"] for r in without] == ["awsAccessKeyID", "awsSecretAccessKey"]


def test_no_auth_renders_no_trigger_authentication_and_keys_from_the_env() -> None:
    rendered = render_ci("keda-no-auth")
    assert not rendered.find("TriggerAuthentication")
    trigger = rendered.one("ScaledObject")["spec"]["triggers"][0]
    assert "authenticationRef" not in trigger
    assert trigger["metadata"]["awsEndpoint"] == "http://localstack.localstack.svc:4566"
    assert trigger["metadata"]["awsAccessKeyIDFromEnv"] == "AWS_ACCESS_KEY_ID"
    assert trigger["metadata"]["awsSecretAccessKeyFromEnv"] == "AWS_SECRET_ACCESS_KEY"
    assert (
        resolve_all(rendered)
        == [Credentials("static", keys=("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"))] * TRIGGERS
    )
    # The keys may come from a Secret instead, through envFrom.
    from_secret = {
        "aws": {"endpointUrl": "http://moto:5000", "credentials": {"existingSecret": "dummy"}},
        "worker": {"keda": {"auth": {"type": "none"}}},
    }
    assert _auth(from_secret)[0].source == "static"


# -- combinations that cannot work -----------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "needles"),
    [
        (  # the old default: KEDA looks for an annotation nobody sets
            {"worker": {"keda": {"auth": {"identityOwner": "workload"}}}},
            ["identityOwner=workload", "aws.roleArn", "worker.keda.auth.identityOwner=keda"],
        ),
        (  # KEDA: "roleArn can't be set if KEDA isn't identity owner"
            {
                "aws": {"roleArn": IRSA_ROLE},
                "worker": {"keda": {"auth": {"identityOwner": "workload", "roleArn": KEDA_ROLE}}},
            },
            ["worker.keda.auth.roleArn", "identityOwner=keda"],
        ),
        (
            {"worker": {"keda": {"auth": {"type": "secret"}}}},
            ["worker.keda.auth.type=secret", "aws.credentials.existingSecret"],
        ),
        (
            {"aws": {"credentials": {"hasSessionToken": True}}},
            ["aws.credentials.hasSessionToken", "aws.credentials.existingSecret"],
        ),
        (
            {
                "aws": {"credentials": {"existingSecret": "s"}},
                "worker": {"keda": {"auth": {"type": "secret", "identityOwner": "keda"}}},
            },
            ["worker.keda.auth.identityOwner", "type=secret"],
        ),
        (
            {"aws": {"endpointUrl": "http://moto:5000"}, "worker": {"keda": {"auth": {"type": "none"}}}},
            ["worker.keda.auth.type=none", "aws.credentials.existingSecret", "worker.extraEnv"],
        ),
        (  # one of the two keys is not enough
            {
                "worker": {
                    "extraEnv": [{"name": "AWS_ACCESS_KEY_ID", "value": "x"}],
                    "keda": {"auth": {"type": "none"}},
                }
            },
            ["AWS_SECRET_ACCESS_KEY", "worker.extraEnv"],
        ),
        (
            {"worker": {"keda": {"minReplicaCount": 5, "maxReplicaCount": 2}}},
            ["worker.keda.minReplicaCount", "worker.keda.maxReplicaCount"],
        ),
    ],
)
def test_combinations_keda_cannot_resolve_stop_the_install(
    values: dict[str, Any], needles: list[str]
) -> None:
    _fails(values, *needles)


def test_identity_owner_workload_with_an_existing_account_is_left_to_the_user() -> None:
    # The chart cannot see an account it does not create; the docs say it needs the annotation.
    values = {
        "serviceAccount": {"create": False, "name": "mine"},
        "worker": {"keda": {"auth": {"identityOwner": "workload"}}},
    }
    assert _auth(values) == [Credentials("workload", "<existing service account>")] * TRIGGERS


def test_the_auth_values_are_typed() -> None:
    wrong: list[dict[str, Any]] = [
        {"worker": {"keda": {"auth": {"type": "irsa"}}}},
        {"worker": {"keda": {"auth": {"identityOwner": "operator"}}}},
        {"aws": {"credentials": {"hasSessionToken": "yes"}}},
    ]
    with helm.Chart.load(CHART) as chart:
        for bad in wrong:
            with pytest.raises(helm.HelmError):
                chart.validate_schema(chart.merge_values(bad))


# -- ScaledObject fallback and HPA behavior --------------------------------------------------


def test_scaled_object_fallback_and_behavior_come_from_values() -> None:
    default = render("default").one("ScaledObject")["spec"]
    assert default["fallback"] == {
        "failureThreshold": 3,
        "replicas": 1,
        "behavior": "currentReplicasIfHigher",
    }
    assert set(default["advanced"]) == {"scalingModifiers"}  # the levels' sum (tests/chart/test_lanes.py)
    spec = render_ci("keda-static-keys").one("ScaledObject")["spec"]
    assert spec["fallback"] == {"failureThreshold": 5, "replicas": 2, "behavior": "static"}
    behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    assert behavior["scaleDown"] == {
        "stabilizationWindowSeconds": 600,
        "selectPolicy": "Min",
        "policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}],
    }
    assert behavior["scaleUp"]["policies"] == [{"type": "Percent", "value": 100, "periodSeconds": 15}]
    off = render_values({"worker": {"keda": {"fallback": {"enabled": False}}}}).one("ScaledObject")["spec"]
    assert "fallback" not in off


def test_behavior_and_fallback_values_are_typed() -> None:
    wrong: list[dict[str, Any]] = [
        {"worker": {"keda": {"behavior": {"scaleDown": {"stabilizationWindowSeconds": 7200}}}}},
        {"worker": {"keda": {"behavior": {"scaledown": {}}}}},
        {
            "worker": {
                "keda": {
                    "behavior": {"scaleUp": {"policies": [{"type": "Pods", "value": 0, "periodSeconds": 15}]}}
                }
            }
        },
        {"worker": {"keda": {"fallback": {"behavior": "scalingModifiers"}}}},
        {"worker": {"keda": {"fallback": {"replicas": 0}}}},
    ]
    with helm.Chart.load(CHART) as chart:
        for bad in wrong:
            with pytest.raises(helm.HelmError):
                chart.validate_schema(chart.merge_values(bad))


# -- ScaledJob: no Jobs for messages a new Job cannot receive ---------------------------------


def test_scaled_job_counts_only_visible_messages_by_default() -> None:
    for rendered in (render("scaledjob"), render_ci("keda-pod-identity")):
        spec = rendered.one("ScaledJob")["spec"]
        metadata = spec["triggers"][0]["metadata"]
        # Backoff retries and far run_at tasks are hidden (in flight), near ones delayed:
        # counting either would start Jobs whose one poll comes back empty.
        assert metadata["scaleOnInFlight"] == "false"
        assert metadata["scaleOnDelayed"] == "false"
        # Without in-flight messages the running Jobs' tasks are not in the count, so the
        # strategy must not subtract running Jobs again (KEDA's `accurate`).
        assert spec["scalingStrategy"] == {"strategy": "accurate", "multipleScalersCalculation": "sum"}
    # Deployment mode keeps counting in-flight messages: running tasks hold their pods.
    assert (
        render("default").one("ScaledObject")["spec"]["triggers"][0]["metadata"]["scaleOnInFlight"] == "true"
    )
    # Both remain values; the deployment-mode ones do not leak into the ScaledJob.
    values = {
        "worker": {
            "mode": "scaledJob",
            "keda": {"scaleOnDelayed": True},
            "scaledJob": {"scaleOnInFlight": True},
        }
    }
    metadata = render_values(values).one("ScaledJob")["spec"]["triggers"][0]["metadata"]
    assert (metadata["scaleOnInFlight"], metadata["scaleOnDelayed"]) == ("true", "false")


# -- the CRDs the tests validate against are in the repository --------------------------------


def test_the_keda_and_prometheus_crds_are_vendored_with_their_versions() -> None:
    tests_dir = Path(__file__).resolve().parent
    assert VENDORED_CRDS.resolve().is_relative_to(tests_dir)
    readme = (VENDORED_CRDS / "README.md").read_text()
    files = sorted(p.name for p in VENDORED_CRDS.glob("*.yaml"))
    assert files and all(f"`{name}`" in readme for name in files)
    kinds = {kind for _, kind in crd_validators()}
    assert kinds >= CUSTOM_KINDS
