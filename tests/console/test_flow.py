"""Flow control in the console (real Chromium, real API): a waiting task says why and until
when, in the list and on its page; the overview's task types show priority and limits."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

from playwright.sync_api import Locator, expect

from conveyor.bootstrap import Runtime
from conveyor.model import Priority, Status, Task, Waiting, WaitReason, new_id, now
from tests.console.conftest import Console
from tests.console.test_layout import check_view
from tests.support.servers import ServerThread


def test_types_show_their_priority_and_limits(own_tasks_console: Console) -> None:
    """The example types (k8s/examples), one per flow-control feature, as the registry has them."""
    console = own_tasks_console
    page = console.page
    console.open("#/overview")
    expected = {
        "urgent-transform": ["Priority high"],
        "bulk-transform": ["Priority low"],
        "tenant-export": ["At most 2 running at once per /tenant, fleet-wide", "At most 4 per worker"],
        "partner-webhook": ["At most 10 starts per 1 s, bursts of 20 per /partner"],
        "reindex": ["One queued task per /document; a duplicate replaces it"],
    }
    for name, lines in expected.items():
        item = page.locator(".type-list > li").filter(has=page.get_by_role("link", name=name, exact=True))
        expect(item.get_by_role("list", name=f"Limits of {name}").get_by_role("listitem")).to_have_text(lines)
    # A normal type without limits shows no list at all.
    echo = page.locator(".type-list > li").filter(has=page.get_by_role("link", name="echo", exact=True))
    expect(echo).to_have_count(1)
    expect(echo.locator("[data-field=limits]")).to_have_count(0)
    console.shot("types")

    # The submit form says what the chosen type's limits do.
    console.open("#/submit?type=reindex")
    expect(page.locator("#f-type-hint [data-field=limits]")).to_have_text(
        " One queued task per /document; a duplicate replaces it."
    )
    page.get_by_label("Task type").select_option("echo")
    expect(page.locator("#f-type-hint")).to_contain_text("Returns the payload")
    expect(page.locator("#f-type-hint [data-field=limits]")).to_have_count(0)


def test_a_waiting_task_says_why_and_until_when(
    runtime: Runtime,
    make_server: Callable[..., ServerThread],
    console_factory: Callable[..., Console],
) -> None:
    """Records as a limited worker leaves them (no worker runs here: nothing moves them on)."""
    store = runtime.engine.store
    until = now() + timedelta(minutes=5)
    rate = Task(
        id=new_id(),
        type="partner-webhook",
        payload={"partner": "globex", "url": "https://api.globex.example/x"},
        waiting=Waiting(WaitReason.RATE, until),
    )
    slot = Task(
        id=new_id(),
        type="tenant-export",
        payload={"tenant": "acme", "rows": []},
        priority=Priority.HIGH,
        waiting=Waiting(WaitReason.CONCURRENCY, until),
    )
    plain = Task(id=new_id(), type="echo", payload={})
    # A stale record (started since): running is not waiting, whatever the field says.
    started = Task(
        id=new_id(),
        type="tenant-export",
        payload={"tenant": "acme", "rows": []},
        status=Status.RUNNING,
        started_at=now(),
        waiting=Waiting(WaitReason.CONCURRENCY, until),
    )
    for task in (rate, slot, plain, started):
        store.create(task)
    server = make_server()
    console = console_factory(server)
    page = console.page

    console.open("#/tasks")
    rows = page.locator("tbody tr")
    expect(rows).to_have_count(4)

    def pill(task: Task) -> Locator:
        return page.locator(f'tr[data-task-id="{task.id}"] [data-field=waiting]')

    expect(pill(rate)).to_have_text("Waiting: rate limit")
    expect(pill(slot)).to_have_text("Waiting: concurrency limit")
    expect(pill(plain)).to_have_count(0)
    expect(pill(started)).to_have_count(0)
    state = page.locator(f'tr[data-task-id="{rate.id}"] td[data-label=State]')
    expect(state).to_contain_text("until in 5 minutes")
    assert state.locator("time").get_attribute("datetime") == rate.to_json()["waiting"]["until"]
    console.shot("list")

    console.open(f"#/tasks/{rate.id}")
    expect(page.locator(".head-status [data-field=waiting]")).to_have_text("Waiting: rate limit")
    detail = page.locator("[data-field=waiting-detail]")
    expect(detail).to_contain_text("rate limit until")
    expect(detail).to_contain_text("this is its turn")
    assert detail.locator("time").get_attribute("datetime") == rate.to_json()["waiting"]["until"]
    expect(page.locator("[data-field=priority]")).to_have_text("normal")
    console.shot("rate")

    console.open(f"#/tasks/{slot.id}")
    expect(page.locator("[data-field=waiting-detail]")).to_contain_text("concurrency limit until")
    expect(page.locator("[data-field=priority]")).to_have_text("high")

    console.open(f"#/tasks/{started.id}")
    expect(page.locator(".head-status .badge")).to_have_text("Running")
    expect(page.locator("[data-field=waiting-detail]")).to_have_count(0)
    expect(page.locator(".head-status [data-field=waiting]")).to_have_count(0)

    # On a phone: the pills and the waiting details fit, nothing scrolls sideways.
    narrow = console_factory(server, width=390, height=844)
    check_view(narrow, "#/tasks", "[data-field=waiting]", "narrow-list")
    check_view(narrow, f"#/tasks/{slot.id}", "[data-field=waiting-detail]", "narrow-task")
    check_view(narrow, "#/overview", "[data-field=limits]", "narrow-types")
