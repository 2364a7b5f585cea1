"""The one end-to-end run on the AWS adapters (SQS and DynamoDB on a moto server): the
notify message goes through SQS, the pending state and the delivery log through DynamoDB."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conveyor.bootstrap import build
from conveyor.engine import Submission
from conveyor.lifecycle import webhooks
from conveyor.model import NotifyState
from tests.conftest import WorkerThread, wait_for
from tests.notify.conftest import SECRET, TYPE
from tests.notify.test_webhooks import documented_verify


def test_a_500_then_a_200_through_sqs_and_dynamodb(
    settings_factory: Callable[..., Any], tmp_path: Path, receiver, monkeypatch
):
    receiver.codes = [500, 200]
    (tmp_path / "hooked.yaml").write_text(
        TYPE.format(name="hooked", notify=json.dumps({"url": receiver.url, "allowPrivateNetworks": True}))
    )
    (tmp_path / "type.hooked").write_text(SECRET)
    runtime = build(
        settings_factory(tasktypes=str(tmp_path), webhook_secrets_dir=str(tmp_path), poll_wait_seconds=1)
    )
    # The first retry waits 30 s +-20 %; SQS keeps real time, so the test shortens it.
    monkeypatch.setattr(webhooks, "NOTIFY_BACKOFF_SECONDS", (1, *webhooks.NOTIFY_BACKOFF_SECONDS[1:]))
    worker = WorkerThread(runtime).start()
    try:
        task, _ = runtime.engine.submit(Submission("hooked", {"k": "v"}))
        done = wait_for(
            lambda: (t := runtime.engine.get(task.id)).notify_state is NotifyState.DELIVERED and t, timeout=30
        )
    finally:
        worker.stop()
    assert [d.status_code for d in done.deliveries] == [500, 200]
    assert len(receiver.requests) == 2
    body = documented_verify()(receiver.requests[-1]["body"], receiver.requests[-1]["headers"], SECRET)
    assert body["id"] == task.id and body["result"] == {"k": "v"}
