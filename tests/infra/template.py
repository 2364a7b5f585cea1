"""The CloudFormation template as data: its policies as (IAM action, resource kind) pairs."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import boto3
from cfnlint.decode import decode_str

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "infra" / "cloudformation" / "conveyor.yaml"

# Resource expressions of the template, by the kind of ARN they name.
KINDS = {
    "Queue.Arn": "queue",
    "HighQueue.Arn": "queue",  # the priority levels' queues: one kind, as the code sees them
    "LowQueue.Arn": "queue",
    "DeadLetterQueue.Arn": "dlq",
    "Table.Arn": "table",
    "${Table.Arn}/index/*": "index",
    "Bucket.Arn": "bucket",
    "${Bucket.Arn}/*": "object",
}
# The managed policy of each component.
POLICIES = {"api": "ApiPolicy", "worker": "WorkerPolicy", "init": "InitPolicy", "keda": "KedaPolicy"}


def text() -> str:
    return TEMPLATE.read_text()


def load(body: str | None = None) -> dict[str, Any]:
    template, matches = decode_str(body if body is not None else text())
    assert not matches, matches
    return copy.deepcopy(dict(template))


def _kind(resource: Any) -> str:
    if isinstance(resource, dict) and "Fn::GetAtt" in resource:
        ref = resource["Fn::GetAtt"]
        key = ".".join(ref) if isinstance(ref, list) else ref
    elif isinstance(resource, dict) and "Fn::Sub" in resource:
        key = resource["Fn::Sub"]
    else:
        key = str(resource)
    assert key in KINDS, f"a policy names a resource this check does not know: {resource!r}"
    return KINDS[key]


def _list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else [value]


def statements(template: dict[str, Any], policy: str) -> list[dict[str, Any]]:
    return list(template["Resources"][policy]["Properties"]["PolicyDocument"]["Statement"])


def grants(template: dict[str, Any], policy: str) -> set[tuple[str, str]]:
    """(action, resource kind) pairs a managed policy allows; only plain Allow statements."""
    pairs: set[tuple[str, str]] = set()
    for statement in statements(template, policy):
        assert statement["Effect"] == "Allow", statement
        assert "NotAction" not in statement and "NotResource" not in statement, statement
        for action in _list(statement["Action"]):
            assert "*" not in action, f"{policy}: wildcard action {action}"
            for resource in _list(statement["Resource"]):
                pairs.add((str(action), _kind(resource)))
    return pairs


def create_stack(name: str, parameters: dict[str, str]) -> dict[str, str]:
    """The template created as stack ``name`` (on whatever endpoint boto3 is pointed at, the
    test suite's moto server), waited for; its Outputs by key."""
    cloudformation = boto3.client("cloudformation", region_name="us-east-1")
    cloudformation.create_stack(
        StackName=name,
        TemplateBody=text(),
        Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
        Capabilities=["CAPABILITY_NAMED_IAM"],
    )
    cloudformation.get_waiter("stack_create_complete").wait(
        StackName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 60}
    )
    stack = cloudformation.describe_stacks(StackName=name)["Stacks"][0]
    return {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]}
