"""How KEDA resolves the AWS credentials of an aws-sqs-queue trigger, for a rendered chart.

A port of the decisions KEDA v2.20 makes, in order, before its SQS scaler can call
GetQueueAttributes:
- pkg/scaling/resolver/scale_resolvers.go, ResolveAuthRefAndPodIdentity: the
  TriggerAuthentication named by authenticationRef; with podIdentity aws, a roleArn next to
  identityOwner workload is an error, and identityOwner workload takes the
  `eks.amazonaws.com/role-arn` annotation of the scaled pod's service account (required:
  "annotation ... not found"); resolveEnv: the container's env and envFrom Secrets;
- pkg/scalers/aws/aws_common.go, GetAwsAuthorization: without podIdentity, static keys from
  the auth params (awsAccessKeyID, awsSecretAccessKey, awsSessionToken) or, with no
  TriggerAuthentication, from the container env named by awsAccessKeyIDFromEnv /
  awsSecretAccessKeyFromEnv; else "awsAccessKeyID not found".
Objects the chart does not render (an existing Secret, an existing service account) are
taken on trust, as the install docs ask the user to provide them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tests.chart.render import Rendered

ROLE_ANNOTATION = "eks.amazonaws.com/role-arn"


class KedaAuthError(Exception):
    """What KEDA would report on the ScaledObject / ScaledJob instead of a queue depth."""


@dataclass(frozen=True)
class Credentials:
    # "workload": the role of the workers' account; "keda": KEDA's own identity;
    # "assume": a role KEDA assumes with its own identity; "static": keys.
    source: str
    role_arn: str = ""
    keys: tuple[str, ...] = ()


def _pod_template(rendered: Rendered, scaled: dict[str, Any]) -> dict[str, Any]:
    if scaled["kind"] == "ScaledJob":
        template: dict[str, Any] = scaled["spec"]["jobTargetRef"]["template"]
        return template
    target = scaled["spec"]["scaleTargetRef"]
    return rendered.one(target.get("kind", "Deployment"), target["name"])["spec"]["template"]


def _env_names(rendered: Rendered, container: dict[str, Any]) -> set[str]:
    """Variables KEDA's resolveEnv finds: env entries, and the keys of envFrom Secrets (an
    existing Secret is assumed to hold the AWS_* keys the docs ask for)."""
    names = {e["name"] for e in container.get("env", []) if e.get("value") or e.get("valueFrom")}
    for source in container.get("envFrom", []):
        if "secretRef" in source:
            names |= {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    return names


def _service_account(rendered: Rendered, pod: dict[str, Any]) -> dict[str, Any] | None:
    name = pod["spec"].get("serviceAccountName") or "default"
    found = rendered.find("ServiceAccount", name)
    if found:
        return found[0]
    if rendered.values.get("serviceAccount", {}).get("create", True):
        raise KedaAuthError(f"error getting service account: '{name}': not found")
    return None  # an existing account the user manages


def resolve(rendered: Rendered, scaled: dict[str, Any], trigger: dict[str, Any]) -> Credentials:
    pod = _pod_template(rendered, scaled)
    metadata = trigger.get("metadata", {})
    ref = trigger.get("authenticationRef")
    if ref:
        if ref.get("kind", "TriggerAuthentication") != "TriggerAuthentication":
            raise KedaAuthError(f"unexpected authentication kind {ref['kind']}")
        found = rendered.find("TriggerAuthentication", ref["name"])
        if not found:
            raise KedaAuthError(f"error getting triggerAuth {ref['name']}: not found")
        spec = found[0]["spec"]
        identity = spec.get("podIdentity")
        if identity and identity["provider"] == "aws":
            owner = identity.get("identityOwner")
            if identity.get("roleArn") and owner == "workload":
                raise KedaAuthError(
                    "roleArn can't be set if KEDA isn't identity owner, current value: 'workload'"
                )
            if owner == "workload":
                account = _service_account(rendered, pod)
                if account is None:
                    return Credentials("workload", "<existing service account>")
                role = account["metadata"].get("annotations", {}).get(ROLE_ANNOTATION)
                if role is None:
                    raise KedaAuthError(f"annotation '{ROLE_ANNOTATION}' not found")
                return Credentials("workload", role)
            if identity.get("roleArn"):
                return Credentials("assume", identity["roleArn"])
            return Credentials("keda")
        if identity and identity["provider"] != "none":
            raise KedaAuthError(f"podIdentity provider {identity['provider']} is not AWS")
        params = {r["parameter"]: r for r in spec.get("secretTargetRef", [])}
        if "awsAccessKeyID" not in params and "awsAccessKeyId" not in params:
            raise KedaAuthError("awsAccessKeyID not found")
        if "awsSecretAccessKey" not in params:
            raise KedaAuthError("awsSecretAccessKey not found")
        return Credentials("static", keys=tuple(sorted(params)))
    if metadata.get("identityOwner") == "operator":
        return Credentials("keda")
    env = _env_names(rendered, pod["spec"]["containers"][0])
    key_var, secret_var = metadata.get("awsAccessKeyIDFromEnv"), metadata.get("awsSecretAccessKeyFromEnv")
    if not metadata.get("awsAccessKeyID") and key_var not in env:
        raise KedaAuthError("awsAccessKeyID not found")
    if secret_var not in env:
        raise KedaAuthError("awsSecretAccessKey not found")
    return Credentials("static", keys=(key_var or "awsAccessKeyID", secret_var))


def resolve_all(rendered: Rendered) -> list[Credentials]:
    """The credentials of every aws-sqs-queue trigger the chart renders."""
    out = []
    for scaled in rendered.find("ScaledObject") + rendered.find("ScaledJob"):
        for trigger in scaled["spec"]["triggers"]:
            if trigger["type"] == "aws-sqs-queue":
                out.append(resolve(rendered, scaled, trigger))
    return out
