"""The Schedules pages in real headless Chromium against the real API, engine and worker:
what they show is what /v1/schedules answers, Run now makes a real task, and refusals
(not ready, unknown, a token without tasks:submit) are said in words.

Every test also passes the audit in conftest.py at teardown: no page error, and every
request the page made is a console file or an operation documented in /openapi.json."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from playwright.sync_api import expect
from prometheus_client import CollectorRegistry

from conveyor import tokens
from tests.console.conftest import Console, System
from tests.console.test_layout import OVERFLOW, UNLABELLED
from tests.support.servers import ServerThread

READY = "nightly-report"
LONG = "a-rather-long-schedule-name-for-the-narrow-layout-of-the-console-0123456789"


def schedules(console: Console) -> list[dict[str, Any]]:
    r = console.http.get("/v1/schedules")
    assert r.status_code == 200, r.text
    return list(r.json()["items"])


def schedule(console: Console, name: str) -> dict[str, Any]:
    r = console.http.get(f"/v1/schedules/{name}")
    assert r.status_code == 200, r.text
    return dict(r.json())


def run_now(console: Console, name: str) -> dict[str, Any]:
    """Press Run now on the page like a user; return the task the API answered."""
    page = console.page
    with page.expect_response(lambda r: r.url.endswith(f"/v1/schedules/{name}/trigger")) as posted:
        page.get_by_role("button", name=f"Run now: {name}").click()
    assert posted.value.status == 202, posted.value.text()
    return dict(posted.value.json())


def test_list_shows_what_the_api_holds_and_run_now_makes_a_task(
    schedules_system: System, console_factory: Callable[..., Console]
) -> None:
    console = console_factory(schedules_system.server)
    page = console.page
    console.open("#/schedules")
    api = schedules(console)
    rows = page.locator("tbody tr")
    expect(rows).to_have_count(len(api))
    assert rows.evaluate_all("rs => rs.map(r => r.dataset.schedule)") == [s["name"] for s in api]
    expect(
        page.get_by_role("navigation", name="Main").get_by_role("link", name="Schedules")
    ).to_have_attribute("aria-current", "page")

    by_name = {s["name"]: s for s in api}
    for name, s in by_name.items():
        row = page.locator("tbody tr").filter(has=page.get_by_role("link", name=name, exact=True))
        expect(row.locator("td[data-label=Runs] code")).to_have_text(s["schedule"])
        expect(row.locator("td[data-label=Runs] .cell-sub")).to_have_text(s["time_zone"])
        expect(row.locator("td[data-label=Type]")).to_have_text(s["task_type"])
        state = "Not ready" if not s["ready"] else "Suspended" if s["suspended"] else "Ready"
        expect(row.locator(".pill")).to_have_text(state)
        button = row.get_by_role("button", name=f"Run now: {name}")
        if s["ready"]:
            expect(button).to_be_enabled()
        else:
            # The operator's (here the loader's) reason beside it; nothing to press.
            assert s["reason"], s
            expect(row.locator(".reason")).to_have_text(s["reason"])
            expect(button).to_be_disabled()
        if s["ready"] and not s["suspended"]:
            expect(row.locator("[data-field=next-run] time")).to_have_attribute("datetime", s["next_run_at"])
    assert not by_name["broken-cron"]["ready"] and by_name["paused-cleanup"]["suspended"]
    console.shot("list")

    # Run now: the API's task is named and linked, the worker runs it with the payload.
    task = run_now(console, READY)
    notice = page.locator(".alert-success")
    expect(notice).to_contain_text(f"Ran “{READY}”")
    expect(notice.get_by_role("link", name=task["id"])).to_be_visible()
    assert task["type"] == "echo" and task["payload"] == {"report": "nightly"}
    done = console.wait_status(task["id"], "succeeded")
    assert done["result"] == {"report": "nightly"}
    # The list follows: the schedule's last task is the one just made, linked.
    row = page.locator(f"tbody tr[data-schedule={READY}]")
    expect(row.locator("[data-field=last-task]")).to_have_text(task["id"])
    assert schedule(console, READY)["last_task_id"] == task["id"]
    console.shot("ran")

    notice.get_by_role("link", name=task["id"]).click()
    expect(page.get_by_role("heading", level=1)).to_contain_text(task["id"])
    expect(page.locator(".head-status .badge")).to_have_text("Succeeded")
    page.go_back()
    expect(rows).to_have_count(len(api))


def test_schedule_page_next_runs_last_task_and_refusals(
    schedules_system: System, console_factory: Callable[..., Console]
) -> None:
    console = console_factory(schedules_system.server)
    page = console.page
    console.open("#/schedules")
    page.get_by_role("link", name=READY, exact=True).click()
    expect(page).to_have_url(f"{console.url}/#/schedules/{READY}")
    expect(page.get_by_role("heading", level=1)).to_contain_text(READY)
    expect(
        page.get_by_role("navigation", name="Main").get_by_role("link", name="Schedules")
    ).to_have_attribute("aria-current", "page")

    # The next five runs are the API's, each also in the schedule's zone (02:00 in Paris).
    s = schedule(console, READY)
    assert len(s["next_runs"]) == 5
    runs = page.locator(".next-runs li")
    expect(runs).to_have_count(5)
    assert runs.evaluate_all("ls => ls.map(l => l.dataset.at)") == s["next_runs"]
    for i in range(5):
        expect(runs.nth(i).locator("time")).to_have_attribute("datetime", s["next_runs"][i])
        expect(runs.nth(i).locator(".cell-sub")).to_contain_text("02:00")
        expect(runs.nth(i).locator(".cell-sub")).to_contain_text("in Europe/Paris")
    expect(page.locator("[data-field=cron]")).to_have_text("0 2 * * *")

    # Run now from here: the last task appears linked, with its state.
    task = run_now(console, READY)
    console.wait_status(task["id"], "succeeded")
    last = page.locator(".last-task")
    expect(last.get_by_role("link", name=task["id"])).to_be_visible()
    expect(last.locator(".badge")).to_have_text("Succeeded", timeout=15_000)
    console.shot("schedule")

    # Not ready: why, in words, and no button to press.
    console.open("#/schedules/broken-cron")
    broken = schedule(console, "broken-cron")
    expect(page.locator("[data-field=reason]")).to_contain_text(broken["reason"])
    expect(page.get_by_role("button", name="Run now: broken-cron")).to_be_disabled()
    console.shot("not-ready")

    # Unknown: the API's 404 in words, never a blank page.
    console.open("#/schedules/no-such-schedule")
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("Could not load the schedule")
    expect(alert).to_contain_text("HTTP 404")
    expect(page.get_by_role("button", name="Run now: no-such-schedule")).to_have_count(0)


def test_a_token_without_submit_is_told_why_run_now_fails(
    schedules_system: System,
    make_server: Callable[..., ServerThread],
    console_factory: Callable[..., Console],
    tmp_path: Path,
) -> None:
    from api.app import create_app
    from api.auth import Authenticator

    # The schedules server's engine, behind an API whose only token may read, not submit.
    engine = schedules_system.runtime.engine
    reader = tokens.generate_token()
    tokens_file = tmp_path / "tokens.json"
    tokens.write_tokens_file(
        tokens_file,
        tokens.TokenSet([tokens.TokenEntry("reader", tokens.hash_token(reader), frozenset({tokens.READ}))]),
    )
    auth = Authenticator.from_settings(replace(engine.settings, auth_tokens_file=str(tokens_file)))
    console = console_factory(make_server(create_app(engine, CollectorRegistry(), auth=auth)), token=reader)
    page = console.page
    console.open(f"#/schedules/{READY}")
    expect(page.locator(".next-runs li")).to_have_count(5)
    with page.expect_response(lambda r: r.url.endswith("/trigger")) as posted:
        page.get_by_role("button", name=f"Run now: {READY}").click()
    assert posted.value.status == 403
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text(f"Could not run “{READY}” now")
    expect(alert).to_contain_text("tasks:submit")
    expect(alert.get_by_role("button", name="Use another token")).to_be_visible()
    expect(page.get_by_role("button", name=f"Run now: {READY}")).to_be_enabled()
    console.shot("forbidden")


def test_schedules_pages_fit_390_and_1280_pixels(
    schedules_system: System, console_factory: Callable[..., Console]
) -> None:
    console = console_factory(schedules_system.server, width=390, height=844)
    page = console.page
    views = [
        ("#/schedules", "tbody tr", "schedules"),
        (f"#/schedules/{LONG}", ".next-runs li", "schedule-long"),
        ("#/schedules/broken-cron", "[data-field=reason]", "schedule-not-ready"),
    ]
    for width, height in ((390, 844), (1280, 900)):
        page.set_viewport_size({"width": width, "height": height})
        for route, ready, name in views:
            console.open(route)
            expect(page.locator(ready).first).to_be_visible()
            assert page.evaluate(OVERFLOW) == [], (width, route)
            assert page.evaluate(UNLABELLED) == [], (width, route)
            console.shot(f"{width}-{name}")
