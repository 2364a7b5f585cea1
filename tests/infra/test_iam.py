"""Each component's managed policy grants exactly the calls its code makes, on exactly the
resources it makes them on: an action no code makes fails, and so does a call the policy
lacks. The code's calls are derived from the code (tests/infra/code_calls.py)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from tests.infra import code_calls, template

# `conveyor init` gets the queue, DLQ, table and bucket names from its settings, through no
# port: its calls act on all of the service's resources it creates.
INIT_RESOURCES = {"sqs": ("queue", "dlq"), "dynamodb": ("table",), "s3": ("bucket",)}
# KEDA's aws-sqs-queue scaler reads the queue's message counts with one call,
# GetQueueAttributes (kedacore/keda pkg/scalers/aws_sqs_queue_scaler.go).
KEDA_CALLS = {("sqs:GetQueueAttributes", "queue")}
# Entry points outside the components that may reach AWS: `conveyor run` and its local
# stack (moto, no IAM) only.
NOT_DEPLOYED = ("conveyor.local.", "conveyor.cli.run")


@pytest.fixture(scope="module")
def graph() -> code_calls.Graph:
    return code_calls.graph()


# Entry points of each component besides its own package: the init hook Job runs
# `conveyor init`. A command a component runs (a CronJob, say) belongs here.
EXTRA_ROOTS = {"api": [], "worker": [], "init": ["conveyor.cli.init"]}


def roots(graph: code_calls.Graph, component: str) -> list[str]:
    own = [] if component == "init" else code_calls.functions_of(graph, component)
    return own + EXTRA_ROOTS[component]


def needed(graph: code_calls.Graph, component: str) -> set[tuple[str, str]]:
    if component == "keda":
        return set(KEDA_CALLS)
    default = INIT_RESOURCES if component == "init" else None
    return code_calls.required(graph, roots(graph, component), default)


def differences(granted: set[tuple[str, str]], need: set[tuple[str, str]]) -> dict[str, list[str]]:
    return {
        "granted but no code makes it": sorted(f"{a} on {k}" for a, k in granted - need),
        "made by the code but not granted": sorted(f"{a} on {k}" for a, k in need - granted),
    }


@pytest.mark.parametrize("component", sorted(template.POLICIES))
def test_policy_is_exactly_what_the_code_calls(graph, component):
    granted = template.grants(template.load(), template.POLICIES[component])
    assert differences(granted, needed(graph, component)) == {
        "granted but no code makes it": [],
        "made by the code but not granted": [],
    }


def test_a_granted_action_no_code_makes_fails(graph):
    body = template.load()
    statements = template.statements(body, "ApiPolicy")
    statements[0]["Action"] = [*statements[0]["Action"], "sqs:DeleteMessage"]  # the api never deletes
    diff = differences(template.grants(body, "ApiPolicy"), needed(graph, "api"))
    assert diff["granted but no code makes it"] == ["sqs:DeleteMessage on queue"]


def test_a_grant_on_a_resource_the_code_does_not_touch_fails(graph):
    body = template.load()
    dlq = next(s for s in template.statements(body, "WorkerPolicy") if s["Sid"] == "DeadLetterQueue")
    dlq["Action"] = [*dlq["Action"], "sqs:DeleteMessage"]  # the reaper leaves DLQ messages in place
    diff = differences(template.grants(body, "WorkerPolicy"), needed(graph, "worker"))
    assert diff["granted but no code makes it"] == ["sqs:DeleteMessage on dlq"]


def test_a_call_the_policy_lacks_fails(graph):
    body = template.load()
    table = next(s for s in template.statements(body, "WorkerPolicy") if s["Sid"] == "Table")
    table["Action"] = [a for a in table["Action"] if a != "dynamodb:UpdateItem"]  # claim/finish use it
    diff = differences(template.grants(body, "WorkerPolicy"), needed(graph, "worker"))
    assert diff["made by the code but not granted"] == ["dynamodb:UpdateItem on table"]


def test_a_new_call_in_the_code_fails(tmp_path):
    """A boto3 call added to the adapters shows up as a need of the component that reaches it."""
    root = tmp_path / "src"
    for package in ("api", "worker", "conveyor"):
        _copy(template.ROOT / package, root / package)
    sqs = root / "conveyor" / "aws" / "sqs.py"
    source = sqs.read_text()
    # The api's readiness check now also purges the queue (a call no policy grants).
    patched = source.replace(
        'self.client.get_queue_attributes(QueueUrl=self.url, AttributeNames=["QueueArn"])',
        'self.client.get_queue_attributes(QueueUrl=self.url, AttributeNames=["QueueArn"])\n'
        "            self.client.purge_queue(QueueUrl=self.url)",
    )
    assert patched != source
    sqs.write_text(patched)
    mutated = code_calls.graph(root)
    granted = template.grants(template.load(), "ApiPolicy")
    diff = differences(granted, code_calls.required(mutated, code_calls.functions_of(mutated, "api")))
    assert diff["made by the code but not granted"] == ["sqs:PurgeQueue on queue"]


def _copy(src: Any, dst: Any) -> None:
    import shutil

    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "static"))


def test_every_aws_entry_point_belongs_to_a_component(graph):
    """A new command or process that reaches AWS needs a policy of its own: find any."""
    reached: set[str] = set()
    for component in ("api", "worker", "init"):
        reached |= code_calls.reachable(graph, roots(graph, component))
    outside = [
        f
        for f in code_calls.functions_of(graph, "conveyor")
        if not f.startswith(("conveyor.aws.", *NOT_DEPLOYED))
        and f not in reached
        and code_calls.calling_functions(graph) & code_calls.reachable(graph, [f])
    ]
    # Reachable from a component, or only by other such functions (a library's helpers).
    entry_points = [
        f for f in outside if not any(f in code_calls.reachable(graph, [o]) for o in outside if o != f)
    ]
    assert entry_points == []


def test_iam_actions_are_real_ones():
    """The action names the mapping produces exist in IAM (cfn-lint's copy of the AWS Service
    Authorization Reference), e.g. no sqs:SendMessageBatch or dynamodb:TransactWriteItems."""
    from cfnlint.data import AdditionalSpecs
    from cfnlint.helpers import load_resource

    policies = load_resource(AdditionalSpecs, "Policies.json")
    for component in ("api", "worker", "init"):
        for action, _ in needed(code_calls.graph(), component):
            service, name = action.split(":")
            assert name.lower() in policies[service]["Actions"], action


# -- roles -------------------------------------------------------------------------------

ROLES = {
    "RuntimeRole": (["ApiPolicy", "WorkerPolicy"], "ApiServiceAccount"),
    "ApiRole": (["ApiPolicy"], "ApiServiceAccount"),
    "WorkerRole": (["WorkerPolicy"], "WorkerServiceAccount"),
    "InitRole": (["InitPolicy"], "InitServiceAccount"),
}


@pytest.mark.parametrize("role", sorted(ROLES))
def test_role_trust_policies(role):
    """IRSA: the cluster's OIDC provider, sub = system:serviceaccount:<ns>:<sa>, aud =
    sts.amazonaws.com. Pod Identity: pods.eks.amazonaws.com with AssumeRole + TagSession,
    limited to the namespace and service account by the session tags EKS sets."""
    properties = template.load()["Resources"][role]["Properties"]
    policies, account = ROLES[role]
    assert [p["Ref"] for p in properties["ManagedPolicyArns"]] == policies
    condition, irsa, pod_identity = properties["AssumeRolePolicyDocument"]["Fn::If"]
    assert condition == "UseIrsa"
    values = {
        "AWS::Partition": "aws",
        "AWS::AccountId": "123456789012",
        "OidcProvider": "oidc.eks.eu-west-1.amazonaws.com/id/ABC",
        "Namespace": "tasks",
        account: "my-sa",
    }
    document = json.loads(re.sub(r"\$\{([^}]+)\}", lambda m: values[m.group(1)], irsa["Fn::Sub"]))
    (statement,) = document["Statement"]
    assert statement["Principal"] == {
        "Federated": "arn:aws:iam::123456789012:oidc-provider/oidc.eks.eu-west-1.amazonaws.com/id/ABC"
    }
    assert statement["Action"] == "sts:AssumeRoleWithWebIdentity"
    assert statement["Condition"] == {
        "StringEquals": {
            "oidc.eks.eu-west-1.amazonaws.com/id/ABC:sub": "system:serviceaccount:tasks:my-sa",
            "oidc.eks.eu-west-1.amazonaws.com/id/ABC:aud": "sts.amazonaws.com",
        }
    }
    (statement,) = pod_identity["Statement"]
    assert statement["Principal"] == {"Service": "pods.eks.amazonaws.com"}
    assert sorted(statement["Action"]) == ["sts:AssumeRole", "sts:TagSession"]
    assert statement["Condition"]["StringEquals"] == {
        "aws:RequestTag/kubernetes-namespace": {"Ref": "Namespace"},
        "aws:RequestTag/kubernetes-service-account": {"Ref": account},
    }


def test_keda_role_is_assumed_by_kedas_own_role_only():
    properties = template.load()["Resources"]["KedaRole"]["Properties"]
    assert [p["Ref"] for p in properties["ManagedPolicyArns"]] == ["KedaPolicy"]
    (statement,) = properties["AssumeRolePolicyDocument"]["Statement"]
    assert statement["Principal"] == {"AWS": {"Ref": "KedaOperatorRoleArn"}}
    assert statement["Action"] == "sts:AssumeRole"


def test_an_entry_point_no_component_claims_fails(graph, monkeypatch):
    """`conveyor init` unclaimed stands for any new command that reaches AWS."""
    monkeypatch.setitem(EXTRA_ROOTS, "init", [])
    with pytest.raises(AssertionError):
        test_every_aws_entry_point_belongs_to_a_component(graph)


def test_every_priority_levels_queue_gets_what_the_normal_queue_gets():
    """The code reaches all three task queues through the same port, so one resource kind
    stands for them above: here each statement naming one names all three."""
    body = template.load()
    levels = {"Queue.Arn", "HighQueue.Arn", "LowQueue.Arn"}
    for policy in template.POLICIES.values():
        for statement in template.statements(body, policy):
            named = {
                ".".join(r["Fn::GetAtt"]) if isinstance(r["Fn::GetAtt"], list) else r["Fn::GetAtt"]
                for r in (
                    statement["Resource"]
                    if isinstance(statement["Resource"], list)
                    else [statement["Resource"]]
                )
                if isinstance(r, dict) and "Fn::GetAtt" in r
            }
            assert not (named & levels) or levels <= named, (policy, statement["Sid"], sorted(named))
