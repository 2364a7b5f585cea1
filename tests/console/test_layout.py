"""Readable at 390 px and 1280 px, labelled controls, reachable by keyboard."""

from __future__ import annotations

from collections.abc import Callable

from playwright.sync_api import expect

from tests.console.conftest import Console
from tests.support.servers import ServerThread

# Elements wider than the viewport, outside any box that scrolls or clips them (a code
# block may scroll inside itself; the page must never scroll sideways).
OVERFLOW = """
() => {
  const width = document.documentElement.clientWidth;
  const bad = [];
  if (document.documentElement.scrollWidth > width) {
    bad.push(`page is ${document.documentElement.scrollWidth}px wide`);
  }
  const scrolls = (el) => {
    for (let p = el.parentElement; p && p !== document.body; p = p.parentElement) {
      if (['auto', 'scroll', 'hidden', 'clip'].includes(getComputedStyle(p).overflowX)) return true;
    }
    return false;
  };
  for (const el of document.body.querySelectorAll('*')) {
    const r = el.getBoundingClientRect();
    if (r.width === 0 || r.height === 0 || scrolls(el)) continue;
    if (r.right > width + 0.5 || r.left < -0.5) {
      const name = `${el.tagName.toLowerCase()}.${el.className}`;
      bad.push(`${name} spans ${Math.round(r.left)}..${Math.round(r.right)}`);
    }
  }
  return bad;
}
"""

# Visible form controls without an accessible name.
UNLABELLED = """
() => [...document.querySelectorAll('input, select, textarea, button')]
  .filter((el) => el.getClientRects().length > 0)
  .filter((el) => !(el.labels?.length || el.getAttribute('aria-label')
                    || el.getAttribute('aria-labelledby') || el.textContent.trim()))
  .map((el) => el.outerHTML.slice(0, 80))
"""


def check_view(console: Console, route: str, ready: str, name: str) -> None:
    console.open(route)
    expect(console.page.locator(ready).first).to_be_visible()
    assert console.page.evaluate(OVERFLOW) == [], route
    assert console.page.evaluate(UNLABELLED) == [], route
    console.shot(name)


def test_every_view_fits_390_and_1280_pixels(
    shared_server: ServerThread, console_factory: Callable[..., Console]
) -> None:
    console = console_factory(shared_server, width=390, height=844)
    long_text = "conveyor" * 40  # one 320-character word: nothing to break it at
    ok = console.submit("text-transform", {"text": long_text})["id"]
    bad = console.submit("fail", {"permanent": True, "message": "x" * 300})["id"]
    console.wait_status(ok, "succeeded")
    console.wait_status(bad, "failed")
    console.submit("echo", {"later": True}, delay_seconds=600)

    views = [
        ("#/overview", "[data-stat=workers]", "overview"),
        ("#/submit", "#f-payload", "submit"),
        ("#/tasks", "tbody tr", "tasks"),
        (f"#/tasks/{ok}", ".timeline", "task-succeeded"),
        (f"#/tasks/{bad}", "#err-h", "task-failed"),
    ]
    for width, height in ((390, 844), (1280, 900)):
        console.page.set_viewport_size({"width": width, "height": height})
        for route, ready, name in views:
            check_view(console, route, ready, f"{width}-{name}")

    # The submit view with a live outcome and an error box, narrow.
    page = console.page
    page.set_viewport_size({"width": 390, "height": 844})
    console.open("#/submit")
    page.get_by_label("Task type").select_option("text-transform")
    page.get_by_label("Payload (JSON)").fill('{"text": 5}')
    page.get_by_role("button", name="Submit task").click()
    expect(page.get_by_role("alert")).to_contain_text("5 is not of type 'string'")
    page.get_by_label("Payload (JSON)").fill(f'{{"text": "{long_text}"}}')
    page.get_by_role("button", name="Submit task").click()
    expect(page.locator(".outcome .badge")).to_have_text("Succeeded", timeout=15_000)
    assert page.evaluate(OVERFLOW) == []
    console.shot("390-submitted")


def test_keyboard_reaches_everything_in_order(own_tasks_console: Console) -> None:
    console = own_tasks_console
    page = console.page
    console.open("#/submit?type=echo")
    expect(page.get_by_label("Task type")).to_have_value("echo")
    # The first Tab offers a way past the navigation.
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    order = []
    for _ in range(13):
        page.keyboard.press("Tab")
        order.append(page.evaluate("document.activeElement.id || document.activeElement.textContent.trim()"))
    assert order[:6] == ["Conveyor", "Overview", "Submit", "Tasks", "Schedules", "forget-token"], order
    form = ["f-type", "Reset to the example", "f-payload", "f-delay", "f-attempts", "f-idem", "Submit task"]
    assert order[6:13] == form, order
    # A whole submission by keyboard alone: Enter in a field submits the form.
    page.get_by_label("Idempotency-Key").focus()
    page.keyboard.type("kbd-1")
    page.keyboard.press("Enter")
    expect(page.locator(".outcome .badge")).to_have_text("Succeeded", timeout=15_000)
