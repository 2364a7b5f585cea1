"""The template's other identity path, created on moto: EKS Pod Identity, with the api and
the workers on service accounts of their own (a role each, no shared runtime role).

moto's CloudFormation has no AWS::EKS::PodIdentityAssociation (it skips the resource), and
ignores a role's ManagedPolicyArns: the associations and attachments are checked in the
template (tests/infra/test_iam.py); here, which roles the conditions make and their trust.
"""

from __future__ import annotations

import os
from typing import Any

import boto3
import pytest

from tests.infra import template


@pytest.fixture(scope="module")
def outputs(moto_server: Any) -> dict[str, str]:
    prefix = f"pod{os.getpid()}"
    parameters = {
        "NamePrefix": prefix,
        "IdentityMode": "pod-identity",
        "ClusterName": "prod",
        "Namespace": "tasks",
        "ApiServiceAccount": "conveyor-api",
        "WorkerServiceAccount": "conveyor-worker",
    }
    return template.create_stack(prefix, parameters)


def test_a_role_per_component_trusting_pod_identity_for_its_service_account(outputs):
    assert "RuntimeRoleArn" not in outputs and "KedaRoleArn" not in outputs
    iam = boto3.client("iam", region_name="us-east-1")
    for key, account in (
        ("ApiRoleArn", "conveyor-api"),
        ("WorkerRoleArn", "conveyor-worker"),
        ("InitRoleArn", "conveyor-init"),
    ):
        role = iam.get_role(RoleName=outputs[key].rsplit("/", 1)[1])["Role"]
        (statement,) = role["AssumeRolePolicyDocument"]["Statement"]
        assert statement["Principal"] == {"Service": "pods.eks.amazonaws.com"}
        assert sorted(statement["Action"]) == ["sts:AssumeRole", "sts:TagSession"]
        assert statement["Condition"]["StringEquals"] == {
            "aws:RequestTag/kubernetes-namespace": "tasks",
            "aws:RequestTag/kubernetes-service-account": account,
        }


def test_each_association_names_its_role_and_service_account():
    resources = template.load()["Resources"]
    for association, role, account in (
        ("ApiPodIdentity", "ApiRole", "ApiServiceAccount"),
        ("WorkerPodIdentity", "WorkerRole", "WorkerServiceAccount"),
        ("RuntimePodIdentity", "RuntimeRole", "ApiServiceAccount"),
        ("InitPodIdentity", "InitRole", "InitServiceAccount"),
    ):
        properties = resources[association]["Properties"]
        assert properties["RoleArn"] == {"Fn::GetAtt": [role, "Arn"]}
        assert properties["ServiceAccount"] == {"Ref": account}
        assert properties["Namespace"] == {"Ref": "Namespace"}
        assert properties["ClusterName"] == {"Ref": "ClusterName"}
