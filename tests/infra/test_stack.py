"""The template, created as a stack on the embedded moto server (its CloudFormation service),
makes what `conveyor init` makes, and Conveyor runs on exactly those resources, configured
from the stack's Outputs alone. Every AWS call the api, a worker and `conveyor init` make
meanwhile is recorded and must be one their policy in the stack grants."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import boto3
import pytest
from prometheus_client import CollectorRegistry
from starlette.testclient import TestClient

from conveyor.aws import AwsBackend
from conveyor.aws.provision import provision
from conveyor.bootstrap import Runtime, build
from conveyor.settings import Settings
from tests.conftest import AUTH_HEADERS, WorkerThread, make_settings, wait_for
from tests.infra import code_calls, template

KEDA_ROLE = "arn:aws:iam::123456789012:role/keda-operator"
OIDC = "oidc.eks.us-east-1.amazonaws.com/id/EXAMPLE"


@pytest.fixture(scope="module")
def outputs(moto_server: Any) -> dict[str, str]:
    prefix = f"cfn{os.getpid()}"
    parameters = {
        "NamePrefix": prefix,
        "IdentityMode": "irsa",
        "OidcProvider": OIDC,
        "Namespace": "tasks",
        "KedaOperatorRoleArn": KEDA_ROLE,
    }
    return template.create_stack(prefix, parameters)


def from_outputs(outputs: dict[str, str]) -> Settings:
    """Settings naming the stack's resources; the rest are the test suite's fast timings."""
    return replace(
        make_settings(),
        queue=outputs["QueueUrl"],
        queue_url_high=outputs["HighQueueUrl"],
        queue_url_low=outputs["LowQueueUrl"],
        dlq=outputs["DeadLetterQueueUrl"],
        table=outputs["TableName"],
        bucket=outputs["BucketName"],
        region=outputs["Region"],
        visibility_timeout=int(outputs["VisibilityTimeout"]),
        max_receive_count=int(outputs["MaxReceiveCount"]),
    )


# -- what the stack made is what `conveyor init` makes -----------------------------------

SQS_VOLATILE = {
    "QueueArn",
    "CreatedTimestamp",
    "LastModifiedTimestamp",
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
    "RedrivePolicy",  # compared below: it names each setup's own DLQ
    "SqsManagedSseEnabled",  # SSE-SQS, the default for new queues on AWS, set explicitly
}


def _queue(client: Any, url: str) -> dict[str, Any]:
    attributes = client.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    redrive = json.loads(attributes.get("RedrivePolicy", "null") or "null")
    if redrive:
        redrive["maxReceiveCount"] = int(redrive["maxReceiveCount"])
        redrive["deadLetterTargetArn"] = "<its dlq>" if redrive["deadLetterTargetArn"] else None
    return {k: v for k, v in attributes.items() if k not in SQS_VOLATILE} | {"RedrivePolicy": redrive}


def _table(client: Any, name: str) -> dict[str, Any]:
    table = client.describe_table(TableName=name)["Table"]
    return {
        "KeySchema": table["KeySchema"],
        "AttributeDefinitions": sorted(table["AttributeDefinitions"], key=lambda a: a["AttributeName"]),
        "BillingMode": table["BillingModeSummary"]["BillingMode"],
        "GlobalSecondaryIndexes": sorted(
            (
                {k: i[k] for k in ("IndexName", "KeySchema", "Projection")}
                for i in table["GlobalSecondaryIndexes"]
            ),
            key=lambda i: i["IndexName"],
        ),
    }


def test_the_stack_makes_what_conveyor_init_makes(outputs):
    stack = from_outputs(outputs)
    fresh = make_settings(
        visibility_timeout=stack.visibility_timeout, max_receive_count=stack.max_receive_count
    )
    backend = AwsBackend(fresh)
    made = provision(backend)
    sqs, dynamodb = backend.sqs, backend.dynamodb
    assert _queue(sqs, outputs["QueueUrl"]) == _queue(sqs, made["queue"])
    assert _queue(sqs, outputs["HighQueueUrl"]) == _queue(sqs, made["queue_high"])
    assert _queue(sqs, outputs["LowQueueUrl"]) == _queue(sqs, made["queue_low"])
    assert _queue(sqs, outputs["DeadLetterQueueUrl"]) == _queue(sqs, made["dlq"])
    redrive = json.loads(
        sqs.get_queue_attributes(QueueUrl=outputs["QueueUrl"], AttributeNames=["All"])["Attributes"][
            "RedrivePolicy"
        ]
    )
    assert redrive["deadLetterTargetArn"] == outputs["DeadLetterQueueArn"]
    assert _table(dynamodb, outputs["TableName"]) == _table(dynamodb, made["table"])
    # moto's CloudFormation leaves TTL unset: compare the template's with what init enables.
    ttl = dynamodb.describe_time_to_live(TableName=made["table"])["TimeToLiveDescription"]
    spec = template.load()["Resources"]["Table"]["Properties"]["TimeToLiveSpecification"]
    assert spec == {"AttributeName": ttl["AttributeName"], "Enabled": ttl["TimeToLiveStatus"] == "ENABLED"}


def test_the_bucket_is_private_and_encrypted(outputs):
    s3 = boto3.client("s3", region_name="us-east-1")
    rules = s3.get_bucket_encryption(Bucket=outputs["BucketName"])["ServerSideEncryptionConfiguration"][
        "Rules"
    ]
    assert rules[0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    # moto's CloudFormation applies neither of these: read them from the template.
    resources = template.load()["Resources"]
    block = resources["Bucket"]["Properties"]["PublicAccessBlockConfiguration"]
    assert block == dict.fromkeys(
        ("BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls", "RestrictPublicBuckets"), True
    )
    assert resources["Bucket"]["Properties"]["OwnershipControls"]["Rules"] == [
        {"ObjectOwnership": "BucketOwnerEnforced"}
    ]
    (deny,) = resources["BucketPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert deny["Effect"] == "Deny" and deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_the_stack_makes_the_roles_the_parameters_ask_for(outputs):
    iam = boto3.client("iam", region_name="us-east-1")
    runtime = iam.get_role(RoleName=outputs["RuntimeRoleArn"].rsplit("/", 1)[1])["Role"]
    (statement,) = runtime["AssumeRolePolicyDocument"]["Statement"]
    assert statement["Condition"]["StringEquals"] == {
        f"{OIDC}:sub": "system:serviceaccount:tasks:conveyor",
        f"{OIDC}:aud": "sts.amazonaws.com",
    }
    init = iam.get_role(RoleName=outputs["InitRoleArn"].rsplit("/", 1)[1])["Role"]
    (statement,) = init["AssumeRolePolicyDocument"]["Statement"]
    assert (
        statement["Condition"]["StringEquals"][f"{OIDC}:sub"] == "system:serviceaccount:tasks:conveyor-init"
    )
    keda = iam.get_role(RoleName=outputs["KedaRoleArn"].rsplit("/", 1)[1])["Role"]
    assert keda["AssumeRolePolicyDocument"]["Statement"][0]["Principal"] == {"AWS": KEDA_ROLE}
    assert "ApiRoleArn" not in outputs and "WorkerRoleArn" not in outputs  # one service account
    for key in ("ApiPolicyArn", "WorkerPolicyArn", "InitPolicyArn", "KedaPolicyArn"):
        iam.get_policy(PolicyArn=outputs[key])


# -- a task end to end on the stack, every call checked against its component's policy ---


class Recorder:
    """(IAM action, resource kind) of every call a component's boto3 clients make."""

    def __init__(self, outputs: dict[str, str]) -> None:
        self.calls: set[tuple[str, str]] = set()
        # A queue by its name: a URL's host differs between the stack's answer and moto's.
        # By service too: the queue and the table share a name.
        self.resources = {
            ("sqs", outputs["QueueName"]): "queue",
            # The priority levels' queues, named after the normal one (the template's names).
            ("sqs", outputs["QueueName"] + "-high"): "queue",
            ("sqs", outputs["QueueName"] + "-low"): "queue",
            ("sqs", outputs["DeadLetterQueueName"]): "dlq",
            ("dynamodb", outputs["TableName"]): "table",
            ("s3", outputs["BucketName"]): "bucket",
        }

    def attach(self, backend: AwsBackend) -> None:
        for client in (backend.sqs, backend.dynamodb, backend.s3):
            client.meta.events.register("provide-client-params", self._record)

    def _record(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        service = model.service_model.endpoint_prefix
        name = (
            params.get("QueueUrl")
            or params.get("QueueName")
            or params.get("TableName")
            or params.get("Bucket")
            or next(iter(params.get("RequestItems", {})), None)
            or next((v["TableName"] for item in params.get("TransactItems", []) for v in item.values()), None)
        )
        resource = self.resources[service, str(name).rstrip("/").rsplit("/", 1)[-1]]
        kinds = [k for item in params.get("TransactItems", []) for k in item]
        for action in code_calls.iam_actions(service, model.name, kinds):
            self.calls.add((action, code_calls.resource_kind(action, resource, "IndexName" in params)))

    def check(self, component: str) -> set[tuple[str, str]]:
        """The calls made, each one the component's policy in the stack grants."""
        assert self.calls, f"the {component} made no AWS call"
        granted = template.grants(template.load(), template.POLICIES[component])
        assert sorted(self.calls - granted) == [], f"{component} made calls its policy does not grant"
        return self.calls


@pytest.fixture
def recorders(outputs: dict[str, str]) -> dict[str, Recorder]:
    return {component: Recorder(outputs) for component in ("api", "worker", "init")}


@pytest.fixture
def runtime_for(outputs, recorders) -> Callable[[str], Runtime]:
    def make(component: str) -> Runtime:
        runtime = build(from_outputs(outputs))
        recorders[component].attach(runtime.backend)
        return runtime

    return make


def test_init_converges_the_stack(outputs, recorders):
    """The init hook Job on resources the stack made: idempotent, within its policy."""
    backend = AwsBackend(from_outputs(outputs))
    before = _queue(backend.sqs, outputs["QueueUrl"])
    recorders["init"].attach(backend)
    made = provision(backend)
    # The same queue (moto answers with its own host) and table, attributes unchanged.
    assert made["queue"].rsplit("/", 1)[1] == outputs["QueueName"]
    assert made["table"] == outputs["TableName"]
    assert _queue(backend.sqs, outputs["QueueUrl"]) == before
    recorders["init"].check("init")


def test_a_task_runs_end_to_end_on_the_stack(outputs, runtime_for, recorders):
    from api.app import create_app

    api_runtime = runtime_for("api")
    worker = WorkerThread(runtime_for("worker")).start()
    try:
        with TestClient(
            create_app(api_runtime.engine, CollectorRegistry()),
            raise_server_exceptions=False,
            headers=AUTH_HEADERS,
        ) as api:
            assert api.get("/readyz").status_code == 200
            submitted = [
                api.post("/v1/tasks", json={"type": "text-transform", "payload": {"text": "hello stack"}}),
                api.post(
                    "/v1/tasks",
                    json={"type": "text-transform", "payload": {"text": "once"}},
                    headers={"Idempotency-Key": "stack-1"},
                ),
                api.post(
                    "/v1/tasks",
                    json={"type": "data-export", "payload": {"rows": [{"a": 1}], "key": "stack/out.csv"}},
                ),
            ]
            assert [r.status_code for r in submitted] == [202, 202, 202], [r.text for r in submitted]
            batch = api.post("/v1/tasks/batch", json={"tasks": [{"type": "echo", "payload": {"n": 1}}]})
            assert batch.status_code in (200, 201, 202), batch.text
            ids = [r.json()["id"] for r in submitted] + [t["id"] for t in batch.json()["items"]]

            def done() -> bool:
                return all(api.get(f"/v1/tasks/{i}").json()["status"] == "succeeded" for i in ids)

            wait_for(done, timeout=60)
            first = api.get(f"/v1/tasks/{ids[0]}").json()
            assert first["result"]["uppercase"] == "HELLO STACK"
            assert api.get("/v1/tasks", params={"status": "succeeded"}).json()["items"]
            assert api.get("/v1/stats").status_code == 200
            assert api.get("/v1/workers").status_code == 200
    finally:
        worker.stop()
    # The export landed in the stack's bucket.
    s3 = boto3.client("s3", region_name="us-east-1")
    assert s3.get_object(Bucket=outputs["BucketName"], Key="stack/out.csv")["Body"].read().startswith(b"a")
    recorders["api"].check("api")
    recorders["worker"].check("worker")


def test_the_policies_in_the_stack_name_its_own_resources(outputs):
    """As IAM holds them: every resource ARN is one of this stack's, by kind as in the template."""
    iam = boto3.client("iam", region_name="us-east-1")
    arns = {
        outputs["QueueArn"]: "queue",
        outputs["QueueArn"] + "-high": "queue",
        outputs["QueueArn"] + "-low": "queue",
        outputs["DeadLetterQueueArn"]: "dlq",
        outputs["TableArn"]: "table",
        outputs["TableArn"] + "/index/*": "index",
        outputs["BucketArn"]: "bucket",
        outputs["BucketArn"] + "/*": "object",
    }
    body = template.load()
    for component, policy in template.POLICIES.items():
        arn = outputs[f"{policy}Arn"]
        version = iam.get_policy(PolicyArn=arn)["Policy"]["DefaultVersionId"]
        document = iam.get_policy_version(PolicyArn=arn, VersionId=version)["PolicyVersion"]["Document"]
        if isinstance(document, str):
            document = json.loads(document)
        pairs = {
            (action, arns[resource])
            for statement in document["Statement"]
            for action in _as_list(statement["Action"])
            for resource in _as_list(statement["Resource"])
        }
        assert pairs == template.grants(body, policy), component


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]
