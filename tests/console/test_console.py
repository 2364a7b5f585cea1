"""The console in real headless Chromium against the real API, engine and worker.

Every test also passes the audit in conftest.py at teardown: no page error, and every
request the page made is a console file or an operation documented in /openapi.json."""

from __future__ import annotations

import json
import re

from playwright.sync_api import expect

from tests.console.conftest import Console

# Records each status the submit view's live badge shows, in order.
WATCH_OUTCOME = """
window.__seen = [];
new MutationObserver(() => {
  const badge = document.querySelector('.outcome .badge');
  if (badge && window.__seen.at(-1) !== badge.dataset.status) window.__seen.push(badge.dataset.status);
}).observe(document.body, {subtree: true, childList: true});
"""


def submit_form(console: Console, task_type: str, payload: str | None = None) -> str:
    """Fill the submit form like a user, press Submit, return the id the API answered."""
    page = console.page
    page.get_by_label("Task type").select_option(task_type)
    if payload is not None:
        page.get_by_label("Payload (JSON)").fill(payload)
    with page.expect_response(lambda r: r.url.endswith("/v1/tasks") and r.request.method == "POST") as posted:
        page.get_by_role("button", name="Submit task").click()
    assert posted.value.status in (200, 202), posted.value.text()
    return str(posted.value.json()["id"])


def test_submit_text_transform_and_watch_it_succeed(own_tasks_console: Console) -> None:
    console = own_tasks_console
    page = console.page
    console.open("#/submit")
    kind = page.get_by_label("Task type")
    # Every type of the registry is offered, with its description.
    registry = [t["name"] for t in console.http.get("/v1/task-types").json()["items"]]
    expect(kind.locator("option")).to_have_count(len(registry))
    assert kind.locator("option").evaluate_all("os => os.map(o => o.value)") == registry
    kind.select_option("text-transform")
    expect(page.locator("#f-type-hint")).to_contain_text("Length, uppercase form and word count of a text.")
    # Prefilled from the type's payloadSchema example.
    assert json.loads(page.get_by_label("Payload (JSON)").input_value()) == {"text": "hello conveyor"}
    page.get_by_label("Payload (JSON)").fill('{"text": "hello from the console"}')
    console.shot("filled")

    page.evaluate(WATCH_OUTCOME)
    task_id = submit_form(console, "text-transform")
    expect(page.get_by_role("link", name=task_id)).to_be_visible()
    expect(page.locator(".outcome .badge")).to_have_text("Succeeded", timeout=15_000)
    shown = json.loads(page.get_by_label("Result (JSON)").inner_text())
    assert shown == {"length": 22, "uppercase": "HELLO FROM THE CONSOLE", "word_count": 4}
    assert shown == console.task(task_id)["result"]
    # The id came first (from the 202, status queued), then the live status to the end.
    seen = page.evaluate("window.__seen")
    assert seen[0] == "queued" and seen[-1] == "succeeded", seen
    console.shot("succeeded")

    # The id opens the task's page: timeline, attempts, worker, payload, result.
    page.get_by_role("link", name=task_id).click()
    expect(page.get_by_role("heading", level=1)).to_contain_text(task_id)
    task = console.task(task_id)
    for step, when in [("created", "created_at"), ("started", "started_at"), ("succeeded", "finished_at")]:
        item = page.locator(f".timeline [data-step={step}]")
        expect(item).to_have_class(re.compile(r"\bdone\b"))
        expect(item.locator("time")).to_have_attribute("datetime", task[when])
    expect(page.locator("[data-field=attempts]")).to_have_text("1 of 3")
    expect(page.locator("[data-field=worker]")).to_have_text(task["worker"])
    assert json.loads(page.get_by_label("Payload (JSON)").inner_text()) == {"text": "hello from the console"}
    expect(page.get_by_role("button", name="Retry task")).to_have_count(0)
    expect(page.get_by_role("button", name="Cancel task")).to_have_count(0)
    console.shot("detail")


def test_bad_input_is_explained_in_words(own_tasks_console: Console) -> None:
    console = own_tasks_console
    page = console.page
    console.open("#/submit")
    page.get_by_label("Task type").select_option("text-transform")
    payload = page.get_by_label("Payload (JSON)")

    # Not JSON: caught before anything is sent.
    payload.fill('{"text": ')
    page.get_by_role("button", name="Submit task").click()
    expect(page.get_by_role("alert")).to_contain_text("Payload is not valid JSON")
    expect(payload).to_have_attribute("aria-invalid", "true")
    assert not [r for r in console.requests if r[0] == "POST"]

    # The API's 422 problem+json, every field named in words.
    payload.fill('{"txt": "hello"}')
    page.get_by_role("button", name="Submit task").click()
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("Could not submit the task")
    expect(alert).to_contain_text("HTTP 422")
    expect(alert.locator("li")).to_have_count(2)
    assert sorted(alert.locator("li").all_inner_texts()) == [
        "Payload: 'text' is a required property",
        "Payload: Additional properties are not allowed ('txt' was unexpected)",
    ]
    expect(payload).to_have_attribute("aria-invalid", "true")
    console.shot("payload-422")

    payload.fill('{"text": "ok"}')
    page.get_by_label("Delay (seconds)").fill("2000000")
    page.get_by_role("button", name="Submit task").click()
    expect(page.get_by_role("alert").locator("li")).to_have_text(
        ["Delay: 2000000 is greater than the maximum of 1209600"]
    )
    expect(page.get_by_label("Delay (seconds)")).to_have_attribute("aria-invalid", "true")
    expect(payload).not_to_have_attribute("aria-invalid", "true")
    console.shot("delay-422")


def test_failed_task_shows_its_error_and_can_be_retried(own_tasks_console: Console) -> None:
    console = own_tasks_console
    page = console.page
    console.open("#/submit")
    task_id = submit_form(console, "fail", '{"message": "disk on fire", "permanent": true}')
    expect(page.locator(".outcome .badge")).to_have_text("Failed", timeout=15_000)
    expect(page.locator(".outcome .error-text")).to_contain_text("PermanentError: disk on fire")
    console.shot("failed")

    page.get_by_role("link", name=task_id).click()
    error = page.get_by_role("region", name="Error")
    expect(error).to_contain_text("PermanentError")
    expect(error).to_contain_text("disk on fire")
    expect(page.get_by_role("button", name="Cancel task")).to_have_count(0)
    first = console.task(task_id)
    console.shot("detail-failed")

    page.get_by_role("button", name="Retry task").click()
    expect(page.locator(".alert-success")).to_contain_text("queued again with its attempts reset.")
    # The worker runs it again; the page follows it to its new end without a reload.
    again = console.wait_status(task_id, "failed")  # the retry was answered: a new run
    assert again["finished_at"] > first["finished_at"]
    finished = page.locator(".timeline [data-step=failed] time")
    expect(finished).to_have_attribute("datetime", again["finished_at"], timeout=10_000)
    expect(page.locator(".head-status .badge")).to_have_text("Failed")
    expect(page.locator("[data-field=attempts]")).to_have_text("1 of 3")
    console.shot("retried")


def test_delayed_task_can_be_cancelled(own_tasks_console: Console) -> None:
    console = own_tasks_console
    page = console.page
    console.open("#/submit")
    page.get_by_label("Task type").select_option("sleep")
    assert json.loads(page.get_by_label("Payload (JSON)").input_value()) == {"seconds": 5}
    page.get_by_label("Delay (seconds)").fill("600")
    page.get_by_label("Idempotency-Key").fill("console-delayed-1")
    task_id = submit_form(console, "sleep")
    expect(page.locator(".outcome .badge")).to_have_text("Queued")
    expect(page.locator(".outcome-details")).to_contain_text("Runs no earlier than")
    # The same key again: the API returns the same task, and the page says so.
    assert submit_form(console, "sleep") == task_id
    expect(page.locator(".outcome .alert-info")).to_contain_text("Idempotency-Key was used before")
    console.shot("delayed")

    page.get_by_role("link", name=task_id).click()
    task = console.task(task_id)
    runs_at = page.locator(".timeline [data-step=runs-at]")
    expect(runs_at).to_have_class("pending")
    expect(page.locator(".timeline [data-step=started]")).to_contain_text("not yet")
    expect(runs_at.locator("time")).to_have_attribute("datetime", task["run_at"])
    expect(page.get_by_role("button", name="Retry task")).to_have_count(0)
    console.shot("detail-queued")

    page.get_by_role("button", name="Cancel task").click()
    expect(page.locator(".alert-success")).to_contain_text("cancelled before it ran.")
    expect(page.locator(".head-status .badge")).to_have_text("Cancelled")
    expect(page.get_by_role("button", name="Cancel task")).to_have_count(0)
    expect(page.get_by_role("button", name="Retry task")).to_be_visible()
    cancelled = console.task(task_id)
    assert cancelled["status"] == "cancelled"
    expect(page.locator(".timeline [data-step=started]")).to_contain_text("did not run")
    finished = page.locator(".timeline [data-step=cancelled] time")
    expect(finished).to_have_attribute("datetime", cancelled["finished_at"])
    console.shot("cancelled")


def test_list_filters_pages_and_opens_by_keyboard(console: Console) -> None:
    http = console.http
    r = http.post(
        "/v1/tasks/batch", json={"tasks": [{"type": "echo", "payload": {"n": i}} for i in range(12)]}
    )
    assert r.status_code == 202, r.text
    echo_ids = {t["id"] for t in r.json()["items"]}
    failed_ids = {console.submit("fail", {"permanent": True})["id"] for _ in range(2)}
    done = console.submit("text-transform", {"text": "x"})["id"]
    for task_id in [*echo_ids, *failed_ids, done]:
        console.wait_status(task_id, "succeeded", "failed")

    page = console.page
    console.open("#/tasks")
    rows = page.locator("tbody tr")
    expect(rows).to_have_count(15)
    newest_first = [t["id"] for t in http.get("/v1/tasks").json()["items"]]
    assert rows.evaluate_all("rs => rs.map(r => r.dataset.taskId)") == newest_first
    assert newest_first == sorted(newest_first, reverse=True)
    console.shot("all")

    page.get_by_label("State").select_option("failed")
    expect(page).to_have_url(f"{console.url}/#/tasks?status=failed")
    expect(rows).to_have_count(2)
    assert set(rows.evaluate_all("rs => rs.map(r => r.dataset.taskId)")) == failed_ids
    expect(rows.locator(".badge")).to_have_text(["Failed", "Failed"])
    console.shot("failed")

    page.get_by_label("Type").select_option("echo")
    expect(page.get_by_text("No tasks match these filters.")).to_be_visible()
    page.get_by_label("State").select_option("")
    page.get_by_label("Per page").select_option("10")
    api_first = http.get("/v1/tasks", params={"type": "echo", "limit": 10}).json()
    api_second = http.get(
        "/v1/tasks", params={"type": "echo", "limit": 10, "cursor": api_first["next_cursor"]}
    ).json()
    ids = "rs => rs.map(r => r.dataset.taskId)"
    expect(rows).to_have_count(10)
    assert rows.evaluate_all(ids) == [t["id"] for t in api_first["items"]]
    expect(page.get_by_role("button", name="← Newer")).to_be_disabled()
    console.shot("echo-page-1")

    page.get_by_role("button", name="Older →").click()
    expect(rows).to_have_count(2)
    assert rows.evaluate_all(ids) == [t["id"] for t in api_second["items"]]
    assert set(rows.evaluate_all(ids)) | {t["id"] for t in api_first["items"]} == echo_ids
    expect(page.get_by_role("navigation", name="Pages")).to_contain_text("Page 2")
    expect(page.get_by_role("button", name="Older →")).to_be_disabled()
    console.shot("echo-page-2")

    page.get_by_role("button", name="← Newer").click()
    expect(rows).to_have_count(10)
    assert rows.evaluate_all(ids) == [t["id"] for t in api_first["items"]]

    # Keyboard: the row's id is a link; Enter opens the task, Back returns to this page.
    first_id = api_first["items"][0]["id"]
    page.get_by_role("link", name=first_id).focus()
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", level=1)).to_contain_text(first_id)
    expect(page.get_by_role("region", name="Result")).to_contain_text('"n"')
    page.go_back()
    expect(rows).to_have_count(10)
    expect(page.get_by_label("Type")).to_have_value("echo")


def test_overview_shows_totals_and_refreshes_itself(console: Console) -> None:
    for payload in ({"a": 1}, {"b": 2}):
        console.wait_status(console.submit("echo", payload)["id"], "succeeded")
    console.wait_status(console.submit("fail", {"permanent": True})["id"], "failed")

    page = console.page
    console.open("#/overview")
    stat = lambda key: page.locator(f"[data-stat={key}]")  # noqa: E731
    expect(stat("succeeded")).to_have_text("2")
    expect(stat("failed")).to_have_text("1")
    expect(stat("queued")).to_have_text("0")
    expect(stat("workers")).to_have_text("1")
    worker = console.http.get("/v1/workers").json()["items"][0]
    expect(page.get_by_role("region", name="Workers")).to_contain_text(worker["id"])
    expect(page.get_by_role("region", name="Task types")).to_contain_text(
        "Length, uppercase form and word count"
    )
    console.shot("overview")

    # A delayed task appears in the totals and the queue without reloading the page.
    page.evaluate("window.__same_page = true")
    console.submit("echo", {"later": True}, delay_seconds=600)
    expect(stat("queued")).to_have_text("1", timeout=12_000)
    expect(stat("delayed")).to_have_text("1")
    assert page.evaluate("window.__same_page") is True
    # The state totals link to the filtered list.
    stat("queued").click()
    expect(page).to_have_url(f"{console.url}/#/tasks?status=queued")
    expect(page.locator("tbody tr")).to_have_count(1)
    console.shot("queued-list")
