"""The token prompt against the API's real bearer-token auth (api/auth.py): 401 without a
valid token, 403 when the token lacks the route's scope."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from playwright.sync_api import expect
from prometheus_client import CollectorRegistry

from conveyor import tokens
from conveyor.bootstrap import Runtime
from tests.console.conftest import Console
from tests.support.servers import ServerThread


def test_token_prompt_session_storage_and_scopes(
    runtime: Runtime,
    tmp_path: Path,
    make_server: Callable[..., ServerThread],
    console_factory: Callable[..., Console],
) -> None:
    from api.app import create_app
    from api.auth import Authenticator

    reader = tokens.generate_token()  # may read tasks; may not submit, nor read stats
    tokens_file = tmp_path / "tokens.json"
    tokens.write_tokens_file(
        tokens_file,
        tokens.TokenSet([tokens.TokenEntry("reader", tokens.hash_token(reader), frozenset({tokens.READ}))]),
    )
    auth = Authenticator.from_settings(replace(runtime.settings, auth_tokens_file=str(tokens_file)))
    app = create_app(runtime.engine, CollectorRegistry(), auth=auth)
    console = console_factory(make_server(app), token=None)
    page = console.page
    console.open("#/tasks")

    # No token: the prompt opens, and the page behind it says why (never blank).
    dialog = page.get_by_role("dialog", name="Access token required")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("requires a bearer token")
    expect(page.get_by_role("alert").first).to_contain_text("This API requires an access token")
    console.shot("prompt")

    # A wrong token: told so, asked again.
    dialog.get_by_label("Access token").fill("not-a-token")
    dialog.get_by_label("Access token").press("Enter")
    expect(dialog).to_contain_text("The API rejected the token: the bearer token is not valid")
    console.shot("rejected")

    dialog.get_by_label("Access token").fill(reader)
    dialog.get_by_role("button", name="Use token").click()
    expect(dialog).to_be_hidden()
    expect(page.get_by_text("No tasks yet.")).to_be_visible()
    expect(page.get_by_text("Token set")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('conveyor.token')") == reader
    assert page.evaluate("localStorage.length") == 0
    sent: list[str | None] = []
    page.on("request", lambda r: sent.append(r.headers.get("authorization")) if "/v1/" in r.url else None)
    with page.expect_response(lambda r: "/v1/tasks" in r.url):
        page.get_by_role("button", name="Refresh").click()
    assert sent and set(sent) == {f"Bearer {reader}"}

    # Scopes it lacks: the overview's stats need tasks:admin, submitting tasks:submit.
    # Each is said in words where it happens; the page stays usable.
    console.open("#/overview")
    alert = page.get_by_role("alert").first
    expect(alert).to_contain_text("HTTP 403")
    expect(alert).to_contain_text(
        "The access token is not allowed to do this: this token lacks the tasks:admin scope"
    )
    expect(page.get_by_role("dialog")).to_be_hidden()  # a 403 does not nag; its button asks
    expect(page.get_by_role("region", name="Task types")).to_contain_text("text-transform")  # tasks:read
    console.shot("overview-403")
    console.open("#/submit")
    page.get_by_label("Task type").select_option("echo")
    page.get_by_role("button", name="Submit task").click()
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("Could not submit the task")
    expect(alert).to_contain_text("this token lacks the tasks:submit scope")
    alert.get_by_role("button", name="Use another token").click()
    expect(dialog).to_contain_text("not allowed to do this")
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()
    console.shot("submit-403")

    # Session only: another tab starts without it.
    other = page.context.new_page()
    other.goto(f"{console.url}/#/tasks")
    expect(other.get_by_role("dialog", name="Access token required")).to_be_visible()
    other.close()

    page.get_by_role("button", name="Forget token").click()
    assert page.evaluate("sessionStorage.getItem('conveyor.token')") is None
    expect(page.get_by_text("Token set")).to_be_hidden()
    expect(dialog).to_be_visible()


def test_a_metadata_token_sees_that_the_payload_is_hidden(
    runtime: Runtime,
    tmp_path: Path,
    make_server: Callable[..., ServerThread],
    console_factory: Callable[..., Console],
) -> None:
    """A tasks:read-metadata token is served tasks without payload and result; the task view
    says so instead of printing a missing value."""
    from api.app import create_app
    from api.auth import Authenticator
    from conveyor.engine import Submission

    viewer = tokens.generate_token()
    tokens_file = tmp_path / "tokens.json"
    scopes = frozenset({tokens.READ_METADATA})
    tokens.write_tokens_file(
        tokens_file, tokens.TokenSet([tokens.TokenEntry("viewer", tokens.hash_token(viewer), scopes)])
    )
    auth = Authenticator.from_settings(replace(runtime.settings, auth_tokens_file=str(tokens_file)))
    app = create_app(runtime.engine, CollectorRegistry(), auth=auth)
    task, _ = runtime.engine.submit(Submission(type="echo", payload={"secret": "s3cr3t-value"}))
    console = console_factory(make_server(app), token=viewer)
    page = console.page
    console.open(f"#/tasks/{task.id}")
    hidden = page.locator("[data-field=payload-redacted]")
    expect(hidden).to_contain_text("Payload hidden")
    expect(page.get_by_text("s3cr3t-value")).to_have_count(0)
    expect(page.get_by_text("undefined")).to_have_count(0)
    console.shot("payload-hidden")
