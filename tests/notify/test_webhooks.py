"""Completion webhooks end to end on the memory adapters: a real worker loop, a real HTTP
receiver on loopback, and a fake clock for the retries' waits."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from standardwebhooks.webhooks import WebhookVerificationError

from conveyor.model import NOTIFY_TYPE, NotifyState, Status
from conveyor.notify import webhook_id
from tests.notify.conftest import SECRET

DOC = Path(__file__).resolve().parents[2] / "docs" / "WEBHOOKS.md"


def documented_verify() -> Any:
    """The receiver snippet of docs/WEBHOOKS.md, run as written."""
    section = DOC.read_text().split("## Verifying it", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code, "docs/WEBHOOKS.md: no python snippet under 'Verifying it'"
    scope: dict[str, Any] = {}
    exec(code.group(1), scope)
    return scope["verify"]


def test_the_webhook_is_signed_as_documented_and_carries_the_finished_task(make_world, receiver):
    world = make_world()
    world.start()
    task = world.submit("private-ok", {"hello": "world"})
    done = world.until(lambda: (t := world.get(task.id)).notify_state is NotifyState.DELIVERED and t)
    [request] = receiver.requests
    verify = documented_verify()
    body = verify(request["body"], request["headers"], SECRET)
    assert body["id"] == task.id and body["status"] == "succeeded" and body["result"] == {"hello": "world"}
    assert request["headers"]["webhook-id"] == webhook_id(done)
    assert request["headers"]["Content-Type"] == "application/json"
    # A wrong secret, or a body changed on the way, does not verify.
    with pytest.raises(WebhookVerificationError):
        verify(request["body"], request["headers"], "whsec_" + "QUJDREVGR0hJSktMTU5PUA==")
    with pytest.raises(WebhookVerificationError):
        verify(request["body"].replace(b"world", b"WORLD"), request["headers"], SECRET)
    [attempt] = done.deliveries
    assert attempt.status_code == 200 and attempt.error is None and attempt.webhook_id == webhook_id(done)


def test_a_500_then_a_200_is_two_recorded_attempts_and_one_delivery(make_world, receiver):
    receiver.codes = [500, 200]
    world = make_world()
    world.start()
    task = world.submit("private-ok")
    # One message left: the notify message, hidden until its retry.
    first = world.settle(lambda: (t := world.get(task.id)).deliveries and t, messages=1)
    assert first.status is Status.SUCCEEDED and first.notify_state is NotifyState.PENDING
    assert [d.status_code for d in first.deliveries] == [500]
    assert first.deliveries[0].error == "HTTP 500"
    world.clock.advance(29)  # the first retry waits 30 s +-20 %: not before 24 s, by 36 s
    world.clock.advance(8)
    done = world.until(lambda: (t := world.get(task.id)).notify_state is NotifyState.DELIVERED and t)
    assert [d.status_code for d in done.deliveries] == [500, 200]
    assert len({r["headers"]["webhook-id"] for r in receiver.requests}) == 1  # the receiver dedupes on it
    assert len(receiver.requests) == 2


def test_a_receiver_that_keeps_failing_is_given_up_after_eight_attempts_in_about_an_hour(
    make_world, receiver
):
    receiver.codes = [503]
    world = make_world()
    world.start()
    task = world.submit("private-ok")
    waited = 0.0
    for n in range(1, 8):
        world.settle(lambda n=n: len(world.get(task.id).deliveries) == n, messages=1)
        step = 30 * 2 ** (n - 1) * 1.2 + 1
        world.clock.advance(step)
        waited += step
    done = world.settle(lambda: world.get(task.id).notify_state is NotifyState.FAILED)
    final = world.get(task.id)
    assert len(final.deliveries) == 8 and len(receiver.requests) == 8
    assert done and final.status is Status.SUCCEEDED  # the task's own outcome is untouched
    assert 3600 <= waited <= 5000


def test_a_private_address_is_refused_and_recorded_when_the_type_does_not_allow_it(make_world, receiver):
    world = make_world({"type.public-only": SECRET, "type.no-hook": SECRET})
    world.start()
    task = world.submit("public-only")
    done = world.settle(lambda: (t := world.get(task.id)).notify_state is NotifyState.UNDELIVERABLE and t)
    [attempt] = done.deliveries
    assert attempt.status_code is None and "loopback" in (attempt.error or "")
    assert receiver.requests == []
    # The task's own URL meets the same guard.
    own = world.submit("no-hook", notify_url=receiver.url.replace("http://", "https://"))
    refused = world.settle(lambda: (t := world.get(own.id)).notify_state is NotifyState.UNDELIVERABLE and t)
    assert "loopback" in (refused.deliveries[0].error or "") and receiver.requests == []


def test_no_secret_means_not_sent_and_recorded_so(make_world, receiver):
    world = make_world(secrets={})
    world.start()
    task = world.submit("private-ok")
    done = world.settle(lambda: (t := world.get(task.id)).notify_state is NotifyState.UNDELIVERABLE and t)
    assert "no signing secret" in (done.deliveries[0].error or "")
    assert receiver.requests == []


def test_the_token_secret_wins_over_the_type_secret(make_world, receiver):
    token_secret = "whsec_" + "dG9rZW4tc2VjcmV0LXRva2VuLXNlY3JldC0xMjM0NQ=="
    world = make_world({"type.private-ok": SECRET, "token.ci": token_secret})
    world.start()
    task = world.submit("private-ok", submitter="ci")
    world.until(lambda: world.get(task.id).notify_state is NotifyState.DELIVERED)
    [request] = receiver.requests
    verify = documented_verify()
    assert verify(request["body"], request["headers"], token_secret)["id"] == task.id
    with pytest.raises(WebhookVerificationError):
        verify(request["body"], request["headers"], SECRET)


def test_a_worker_killed_between_the_finish_and_the_notify_send_still_notifies(make_world, receiver):
    world = make_world()
    real_send = world.broker.send
    dropped: list[str] = []

    def dying_send(task_id: str, task_type: str, *args: Any, **kw: Any) -> None:
        if task_type == NOTIFY_TYPE and not dropped:
            dropped.append(task_id)
            # The process ends here: no notify message, and the task's message is not deleted.
            raise SystemError("worker killed")
        real_send(task_id, task_type, *args, **kw)

    world.broker.send = dying_send  # type: ignore[method-assign]
    world.start()
    task = world.submit("private-ok")
    finished = world.settle(lambda: dropped and (t := world.get(task.id)).status.terminal and t, messages=1)
    assert finished.notify_state is NotifyState.PENDING and receiver.requests == []
    # The task's message comes back when its visibility runs out; it finds the webhook owed.
    world.clock.advance(world.settings.visibility_timeout + 1)
    done = world.until(lambda: (t := world.get(task.id)).notify_state is NotifyState.DELIVERED and t)
    assert len(receiver.requests) == 1 and done.status is Status.SUCCEEDED and done.attempts == 1


def test_a_task_without_a_webhook_sends_nothing(make_world, receiver):
    world = make_world()
    world.start()
    task = world.submit("no-hook")
    done = world.settle(lambda: (t := world.get(task.id)).status.terminal and t)
    assert done.notify_state is None and done.deliveries == () and receiver.requests == []
    assert json.loads(json.dumps(done.to_json())).get("notify") is None


def test_a_queued_task_cancelled_through_the_api_is_notified(make_world, receiver):
    world = make_world()
    world.start()
    task = world.submit("private-ok", delay_seconds=3600)  # its message hidden for an hour
    cancelled = world.engine.cancel(task.id)
    assert cancelled.status is Status.CANCELLED and cancelled.notify_state is NotifyState.PENDING
    done = world.until(lambda: (t := world.get(task.id)).notify_state is NotifyState.DELIVERED and t)
    assert json.loads(receiver.requests[0]["body"])["status"] == "cancelled"
    assert done.deliveries[0].status_code == 200


def test_a_task_failed_because_its_type_is_gone_is_notified_by_its_own_url(make_world, receiver):
    world = make_world({"type.no-hook": SECRET, "type.gone": SECRET})
    world.submit("no-hook")  # the registry is loaded and not empty
    # A message of a type the registry no longer has, for a record naming its own URL.
    from conveyor.model import Task

    ghost = Task(id="01J00000000000000000000000", type="gone", payload={}, notify_url=receiver.url)
    world.store.create(ghost)
    world.broker.send(ghost.id, "gone")
    world.start()
    failed = world.until(lambda: (t := world.get(ghost.id)).notify_state is not None and t)
    assert failed.status is Status.FAILED and failed.error.type == "UnknownTaskType"
    # Its own URL is loopback and no type allows private networks here: refused, recorded.
    done = world.until(lambda: (t := world.get(ghost.id)).notify_state is NotifyState.UNDELIVERABLE and t)
    assert "loopback" in (done.deliveries[0].error or "")


def test_a_dead_lettered_task_is_notified(make_world, receiver):
    world = make_world()
    task = world.submit("private-ok")
    world.engine.dead_letters.send(task.id, task.type)
    assert world.engine.reap() == 1
    failed = world.get(task.id)
    assert failed.error.type == "DeadLettered" and failed.notify_state is NotifyState.PENDING
    world.start()
    world.until(lambda: world.get(task.id).notify_state is NotifyState.DELIVERED)
    assert json.loads(receiver.requests[0]["body"])["error"]["type"] == "DeadLettered"
