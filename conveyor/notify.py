"""Completion webhooks, the pure parts: what is sent, its id, and its signature.

A finished task that names a notify URL (its own, else its TaskType's) is POSTed there as
JSON, signed the Standard Webhooks way (https://www.standardwebhooks.com):
``webhook-id``, ``webhook-timestamp`` and ``webhook-signature`` (``v1,`` + base64
HMAC-SHA256 of ``{id}.{timestamp}.{body}``). The secret is a file in one mounted
directory: ``token.<token name>`` (the submitting token's) wins over ``type.<task type>``.
The delivery itself (SSRF guard, HTTP) is the worker's: worker/notify.py.
"""

from __future__ import annotations

import binascii
import json
import re
from datetime import datetime
from pathlib import Path

from standardwebhooks.webhooks import EmptyWebhookSecretError, Webhook

from conveyor.model import Task

# A file name part: what a token or type name may be and nothing that walks the path.
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$")


def webhook_id(task: Task) -> str:
    """Stable per task and terminal state: every retry of one notification carries the
    same id, so a receiver dedupes on it; a task retried and finished again gets a new one."""
    finished = int(task.finished_at.timestamp() * 1000) if task.finished_at else 0
    return f"{task.id}.{task.status.value}.{finished}"


def payload(task: Task) -> bytes:
    """The body: the task as GET /v1/tasks/{id} shows it to a reader of payloads."""
    return json.dumps(task.to_json(), separators=(",", ":"), sort_keys=True).encode()


def secret_for(directory: str | Path | None, task: Task) -> str | None:
    """The secret that signs ``task``'s webhook: the submitting token's, else its type's;
    None when the directory holds neither (the webhook is then not sent)."""
    if not directory:
        return None
    base = Path(directory)
    for kind, name in (("token", task.submitter), ("type", task.type)):
        if not name or not _SAFE_NAME.match(name):
            continue
        try:
            text = (base / f"{kind}.{name}").read_text().strip()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError):
            continue
        if text:
            return text
    return None


class BadSecret(ValueError):
    """A secret file that does not hold ``whsec_`` + base64."""


def signed_headers(secret: str, msg_id: str, at: datetime, body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers. The secret is ``whsec_`` + base64 of its
    bytes, the form every Standard Webhooks library takes."""
    if not secret.startswith("whsec_"):
        raise BadSecret("the secret file must hold whsec_ followed by base64")
    try:
        hook = Webhook(secret)
    except (ValueError, binascii.Error, EmptyWebhookSecretError) as exc:
        raise BadSecret(f"the secret is not whsec_ + base64: {exc}") from exc
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": hook.sign(msg_id, at, body.decode()),
    }
