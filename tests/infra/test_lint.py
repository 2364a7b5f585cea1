"""cfn-lint (the AWS CloudFormation linter) passes the template with no error and no warning."""

from __future__ import annotations

from cfnlint.api import ManualArgs, lint

from tests.infra import template


def _lint(body: str, regions: tuple[str, ...] = ("us-east-1", "eu-west-1", "ap-southeast-2")) -> list[str]:
    # Several regions: a resource type or property missing in one fails there.
    matches = lint(body, config=ManualArgs(regions=list(regions)))
    return [f"{m.rule.id} line {m.linenumber}: {m.message}" for m in matches]


def test_template_lints_clean():
    assert _lint(template.text()) == []


def test_lint_catches_an_action_iam_does_not_have():
    # SQS authorises SendMessageBatch by sqs:SendMessage: the batch name is no IAM action.
    body = template.text().replace(
        "Action: [sqs:GetQueueAttributes, sqs:GetQueueUrl, sqs:SendMessage]",
        "Action: [sqs:GetQueueAttributes, sqs:GetQueueUrl, sqs:SendMessageBatch]",
        1,
    )
    assert body != template.text()
    assert any(m.startswith("W3037") and "sendmessagebatch" in m for m in _lint(body, ("us-east-1",)))
