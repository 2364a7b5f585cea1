"""The ``conveyor`` command."""

from __future__ import annotations

import functools
import json
import os
import re
import sys
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import click
import httpx

from conveyor.client import Client, ConveyorHTTPError, default_url

_EXTRA_MARKER = re.compile(r"""extra\s*==\s*["']([^"']+)["']""")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def _extra_requirements(extra: str) -> list[str]:
    """The distributions ``pip install 'conveyor[extra]'`` adds, read from the installed
    metadata (so a dependency added to an extra is checked too); [] when Conveyor runs
    from a source tree without metadata."""
    try:
        requires = metadata.requires("conveyor") or []
    except metadata.PackageNotFoundError:
        return []
    names: list[str] = []
    for req in requires:
        spec, _, marker = req.partition(";")
        found = _EXTRA_MARKER.search(marker)
        if not found or found.group(1) != extra:
            continue
        name = _NAME.match(spec.strip())
        if name is None:
            continue
        if name.group(0).lower() == "conveyor":
            # A self-reference, conveyor[a,b]: those extras' requirements.
            inner = spec[spec.find("[") + 1 : spec.find("]")] if "[" in spec else ""
            names += [n for e in inner.split(",") if e.strip() for n in _extra_requirements(e.strip())]
        else:
            names.append(name.group(0))
    return names


# The extras each service command needs; the base install is the client alone.
SERVICE_EXTRAS: dict[str, tuple[str, ...]] = {
    "run": ("local",),
    "api": ("server",),
    "worker": ("server", "handlers"),
    "init": ("server",),
}


def _require(command: str) -> None:
    """Stop with the pip command to run when an extra that ``command`` needs is missing."""
    missing = []
    for extra in SERVICE_EXTRAS[command]:
        for name in _extra_requirements(extra):
            try:
                metadata.distribution(name)
            except metadata.PackageNotFoundError:
                missing.append(extra)
                break
    if missing:
        wanted = ",".join(missing)
        raise click.ClickException(
            f"`conveyor {command}` needs the {wanted} extra{'s' if len(missing) > 1 else ''}: "
            f"pip install 'conveyor[{wanted}]'"
        )


def _exec_module(module: str) -> None:
    """Replace this process with a service module. The services are separate packages
    that this core package never imports (see the import-linter contracts)."""
    os.execv(sys.executable, [sys.executable, "-m", module])


def _print(data: Any) -> None:
    click.echo(json.dumps(data, indent=2))


@click.group()
@click.version_option(package_name="conveyor")
def main() -> None:
    """Conveyor: a task queue for Kubernetes on AWS."""


@main.command()
@click.option("--port", default=8000, show_default=True, help="API port.")
@click.option("--moto-port", default=5055, show_default=True, help="Embedded moto server port (0: any free).")
@click.option("--worker-metrics-port", default=9100, show_default=True, help="Worker /metrics port (0: off).")
@click.option("--workers", default=1, show_default=True, help="Worker processes.")
def run(port: int, moto_port: int, worker_metrics_port: int, workers: int) -> None:
    """Run the whole system locally: moto server, API and worker(s)."""
    _require("run")
    from conveyor.local import LocalStack

    stack = LocalStack(
        api_port=port, moto_port=moto_port, worker_metrics_port=worker_metrics_port, workers=workers
    )
    try:
        stack.start()
    except Exception as exc:
        stack.stop()
        raise click.ClickException(f"could not start the local stack: {exc}") from exc
    url = f"http://127.0.0.1:{port}"
    token = stack.token or "$CONVEYOR_TOKEN"
    click.echo(
        f"""
Conveyor is running (AWS on moto at {stack.moto.url if stack.moto else "?"}).

  API and console  {url}/
  OpenAPI          {url}/openapi.json
  API metrics      {url}/metrics
  Worker metrics   http://127.0.0.1:{worker_metrics_port}/metrics
  API token        {stack.token or "(auth off or tokens from CONVEYOR_AUTH_TOKENS_FILE)"}
                   (all scopes; saved in .conveyor/token, where the CLI finds it)

Try:
  curl -s -X POST {url}/v1/tasks -H 'Content-Type: application/json' \\
       -H 'Authorization: Bearer {token}' \\
       -d '{{"type": "text-transform", "payload": {{"text": "hello conveyor"}}}}'
  conveyor submit text-transform '{{"text": "hello conveyor"}}' --wait

Ctrl-C stops everything.
""",
        err=True,
    )
    code = stack.wait()
    click.echo("stopping...", err=True)
    stack.stop()
    sys.exit(code)


@main.command()
def api() -> None:
    """Serve the HTTP API (configured by CONVEYOR_* and AWS_* variables)."""
    _require("api")
    _exec_module("api.main")


@main.command()
def worker() -> None:
    """Run a worker until SIGTERM."""
    _require("worker")
    _exec_module("worker.main")


@main.command()
def init() -> None:
    """Create the queues (one per priority, with the DLQ redrive), DLQ, table and bucket; safe to repeat."""
    _require("init")
    from conveyor.aws import AwsBackend
    from conveyor.aws.provision import provision
    from conveyor.settings import Settings

    _print(provision(AwsBackend(Settings.from_env())))


@main.group()
def token() -> None:
    """Make API tokens (docs/SECURITY.md, "Tokens")."""


def _scopes(ctx: click.Context, param: click.Parameter, value: str) -> list[str]:
    from conveyor.tokens import SCOPES

    wanted = [s.strip() for s in value.split(",") if s.strip()]
    if not wanted:
        raise click.BadParameter(f"name at least one of: {', '.join(SCOPES)}")
    unknown = [s for s in wanted if s not in SCOPES]
    if unknown:
        raise click.BadParameter(
            f"unknown scope {', '.join(map(repr, unknown))}; the scopes are: {', '.join(SCOPES)}"
        )
    return sorted(set(wanted))


@token.command(name="create")
@click.option("--name", required=True, help="Who uses it: the principal in logs (letters, digits, _.@:-).")
@click.option(
    "--scopes",
    required=True,
    callback=_scopes,
    help="Comma-separated: tasks:submit, tasks:read, tasks:admin (none implies another).",
)
def token_create(name: str, scopes: list[str]) -> None:
    """Make a token: prints the token (line 1; shown only this once) and its tokens-file
    entry (line 2, JSON with the token's SHA-256) for the tokens.json in the API's Secret."""
    from conveyor import tokens

    secret = tokens.generate_token()
    entry = {"name": name, "sha256": tokens.hash_token(secret), "scopes": scopes}
    try:
        # The API's own check of a tokens file, so every entry printed here loads there.
        tokens.TokenSet.from_document({"tokens": [entry]})
    except ValueError as exc:
        raise click.BadParameter(str(exc).split(": ", 1)[-1], param_hint="'--name'") from exc
    click.echo(
        "The token (store it now: it is not shown again, the API keeps only its hash), "
        "then the entry to add to the tokens.json list in the API's Secret:",
        err=True,
    )
    click.echo(secret)
    click.echo(json.dumps(entry))


def _api_command(fn: Any) -> Any:
    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        # A subcommand takes its group's --url/--token unless given its own, so
        # `conveyor schedules --url X trigger NAME` and `... trigger NAME --url X` agree.
        ctx = click.get_current_context()
        parent = ctx.parent.params if ctx.parent else {}
        if parent.get("url") and ctx.get_parameter_source("url") is click.core.ParameterSource.DEFAULT:
            kwargs["url"] = parent["url"]
        if kwargs.get("token") is None and parent.get("token"):
            kwargs["token"] = parent["token"]
        try:
            return fn(*args, **kwargs)
        except httpx.TransportError as exc:
            # A refused or timed-out connection is the user's to fix: say where, not a traceback.
            raise click.ClickException(f"cannot reach the API at {kwargs.get('url')}: {exc}") from exc

    wrapped = click.option(
        "--url", default=default_url, show_default="$CONVEYOR_URL or http://127.0.0.1:8000"
    )(call)
    return click.option(
        "--token", default=None, help="Bearer token (default $CONVEYOR_TOKEN or .conveyor/token)."
    )(wrapped)


def _fail(exc: ConveyorHTTPError) -> None:
    problem = exc.problem
    click.echo(f"error {exc.status}: {problem.get('detail', problem)}", err=True)
    for item in problem.get("errors", []) or []:
        click.echo(f"  {item.get('pointer')}: {item.get('message')}", err=True)
    if problem.get("existing_task"):
        click.echo(f"  existing task: {problem['existing_task']}", err=True)
    sys.exit(1)


@main.command()
@click.argument("task_type")
@click.argument("payload", default="{}")
@click.option("--delay", type=float, default=None, help="Seconds to wait before running.")
@click.option("--max-attempts", type=int, default=None)
@click.option("--idempotency-key", default=None)
@click.option(
    "--priority",
    # The API's levels, spelled out: the client stays free of the server's modules.
    type=click.Choice(["high", "normal", "low"]),
    default=None,
    help="Queue level (default: the task type's).",
)
@click.option("--unique-key", default=None, help="At most one active task of the type with this key.")
@click.option("--wait", "wait_", is_flag=True, help="Wait until it finishes, showing its progress.")
@click.option(
    "--timeout", type=float, default=300, show_default=True, help="With --wait: give up after this long."
)
@_api_command
def submit(
    task_type: str,
    payload: str,
    delay: float | None,
    max_attempts: int | None,
    idempotency_key: str | None,
    priority: str | None,
    unique_key: str | None,
    wait_: bool,
    timeout: float,
    url: str,
    token: str | None,
) -> None:
    """Submit a task: PAYLOAD is JSON (or @file.json)."""
    text = Path(payload[1:]).read_text() if payload.startswith("@") else payload
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON: {exc}", param_hint="PAYLOAD") from exc
    with Client(url, token) as client:
        try:
            task = client.submit(
                task_type,
                data,
                delay_seconds=delay,
                max_attempts=max_attempts,
                idempotency_key=idempotency_key,
                priority=priority,
                unique_key=unique_key,
            )
            _print_or_wait(client, task, wait_, timeout)
        except ConveyorHTTPError as exc:
            _fail(exc)


def _print_or_wait(client: Client, task: dict[str, Any], wait_: bool, timeout: float) -> None:
    if wait_:
        _wait_and_print(client, task, timeout)
    else:
        _print(task)


def _wait_and_print(client: Client, task: dict[str, Any], timeout: float) -> None:
    """Follow a task to its end on stderr, print it, exit 0 if it succeeded, else 2."""
    try:
        task = _follow(client, task["id"], timeout)
    except TimeoutError as exc:
        raise click.ClickException(str(exc)) from exc
    _print(task)
    sys.exit(0 if task["status"] == "succeeded" else 2)


def _follow(client: Client, task_id: str, timeout: float) -> dict[str, Any]:
    """Follow the task's event stream with a progress bar on stderr (handler events are
    printed above it); the task as its terminal state event shows it. Raises
    TimeoutError after ``timeout`` s."""
    import queue as queues
    import threading

    from rich.console import Console
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

    # The stream is read in a thread, so the deadline holds however quiet the task is.
    events: queues.Queue[Any] = queues.Queue()

    def read() -> None:
        try:
            for event in client.events(task_id):
                events.put(event)
        except Exception as exc:  # handed to the main thread, raised there
            events.put(exc)
        events.put(None)

    threading.Thread(target=read, daemon=True, name="conveyor-watch").start()
    deadline = time.monotonic() + timeout
    last: dict[str, Any] | None = None
    columns = (
        TextColumn("{task.description}", markup=False),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[message]}", markup=False),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=Console(stderr=True)) as bar:
        row = bar.add_task(task_id, total=1.0, message="")
        while True:
            try:
                event = events.get(timeout=max(0.0, deadline - time.monotonic()))
            except queues.Empty:
                status = last["status"] if last else "unknown"
                raise TimeoutError(f"task {task_id} still {status} after {timeout}s") from None
            if isinstance(event, Exception):
                raise event
            if event is None:
                break
            if event.kind == "state":
                last = event.data
                bar.update(row, description=f"{task_id} {event.status} (attempt {last.get('attempts', 0)})")
                if event.status == "succeeded":
                    bar.update(row, completed=1.0)
            elif event.kind == "progress":
                bar.update(row, completed=event.data["fraction"], message=event.data.get("message") or "")
            elif event.kind == "event":
                data = event.data
                shown = json.dumps(data["data"], separators=(",", ":")) if "data" in data else ""
                # Handler text is never read as rich markup ("[...]" would be).
                bar.console.print(f"event {data['seq']} {data['name']} {shown}".rstrip(), markup=False)
    if last is None:
        # Nothing new was left to send (resumed past the end): the task as it stands.
        return client.get(task_id)
    return last


def _show(url: str, token: str | None, call: Callable[[Client], Any]) -> None:
    """Print what one API call answers, or the problem it was refused with (exit 1)."""
    with Client(url, token) as client:
        try:
            _print(call(client))
        except ConveyorHTTPError as exc:
            _fail(exc)


@main.command()
@click.argument("task_id")
@_api_command
def get(task_id: str, url: str, token: str | None) -> None:
    """Show one task."""
    _show(url, token, lambda client: client.get(task_id))


@main.command()
@click.argument("task_id")
@click.option("--timeout", type=float, default=3600, show_default=True, help="Give up after this long.")
@_api_command
def watch(task_id: str, timeout: float, url: str, token: str | None) -> None:
    """Follow a task live until it ends: state, progress bar, handler events; then print
    it (exit 0 if it succeeded, else 2)."""
    with Client(url, token) as client:
        try:
            _wait_and_print(client, {"id": task_id}, timeout)
        except ConveyorHTTPError as exc:
            _fail(exc)


@main.command(name="list")
@click.option("--status", default=None)
@click.option("--type", "task_type", default=None)
@click.option("--limit", default=20, show_default=True)
@_api_command
def list_(status: str | None, task_type: str | None, limit: int, url: str, token: str | None) -> None:
    """List tasks, newest first."""
    with Client(url, token) as client:
        try:
            page = client.list_tasks(status, task_type, limit)
        except ConveyorHTTPError as exc:
            _fail(exc)
            return
    for t in page["items"]:
        error = f"  {t['error']['type']}: {t['error']['message']}" if t.get("error") else ""
        click.echo(f"{t['id']}  {t['status']:<10} {t['type']:<16} attempts={t['attempts']}{error}")
    if page.get("next_cursor"):
        click.echo(f"(more: cursor {page['next_cursor']})", err=True)


@main.command()
@click.argument("task_id")
@_api_command
def cancel(task_id: str, url: str, token: str | None) -> None:
    """Cancel a queued task, or ask a running one to stop."""
    _show(url, token, lambda client: client.cancel(task_id))


@main.command()
@click.argument("task_id")
@_api_command
def retry(task_id: str, url: str, token: str | None) -> None:
    """Queue a failed or cancelled task again."""
    _show(url, token, lambda client: client.retry(task_id))


@main.command()
@_api_command
def stats(url: str, token: str | None) -> None:
    """Totals per state, queue depths, workers."""
    _show(url, token, Client.stats)


def _when(iso: str | None) -> str:
    # RFC 3339 UTC from the API, shown to the second with its Z: sortable and unambiguous.
    return iso.replace("+00:00", "Z") if iso else "-"


def _schedule_table(items: list[dict[str, Any]]) -> Any:
    from rich.table import Table
    from rich.text import Text

    table = Table(box=None, header_style="bold", pad_edge=False)
    columns = ["NAME", "SCHEDULE", "TIMEZONE", "TYPE", "SUSPEND", "LAST", "NEXT", "LAST TASK", "READY"]
    with_reason = any(not s.get("ready", True) and s.get("reason") for s in items)
    for name in [*columns, *(["REASON"] if with_reason else [])]:
        table.add_column(name, no_wrap=name != "REASON", overflow="fold")
    for s in items:
        row = [
            s["name"],
            s["schedule"],
            s["time_zone"],
            s["task_type"],
            "True" if s["suspended"] else "False",
            _when(s.get("last_run_at")),
            _when(s.get("next_run_at")),
            s.get("last_task_id") or "-",
            "True" if s["ready"] else "False",
        ]
        if with_reason:
            row.append("" if s["ready"] else s.get("reason") or "")
        # Text, not str: a "[" in a cron or a reason is shown as written, never read as markup.
        table.add_row(*(Text(cell) for cell in row))
    return table


@main.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON instead of a table.")
@_api_command
@click.pass_context
def schedules(ctx: click.Context, as_json: bool, url: str, token: str | None) -> None:
    """List the TaskSchedules: cron, zone, type, last and next run, last task, readiness."""
    if ctx.invoked_subcommand is not None:
        return
    with Client(url, token) as client:
        try:
            items = client.schedules()
        except ConveyorHTTPError as exc:
            _fail(exc)
            return
    if as_json:
        _print({"items": items})
        return
    if not items:
        click.echo("No schedules.", err=True)
        return
    from rich.console import Console

    console = Console()
    if not console.is_terminal:
        # Piped or captured: one line per schedule, never wrapped at an assumed 80 columns.
        console.width = 1000
    console.print(_schedule_table(items))


@schedules.command(name="get")
@click.argument("name")
@_api_command
def schedules_get(name: str, url: str, token: str | None) -> None:
    """Show one schedule as JSON, with its next five run times."""
    _show(url, token, lambda client: client.schedule(name))


@schedules.command(name="trigger")
@click.argument("name")
@click.option("--wait", "wait_", is_flag=True, help="Wait until the task finishes, showing its progress.")
@click.option(
    "--timeout", type=float, default=300, show_default=True, help="With --wait: give up after this long."
)
@_api_command
def schedules_trigger(name: str, wait_: bool, timeout: float, url: str, token: str | None) -> None:
    """Run the schedule's task now (outside its slots) and print the task."""
    with Client(url, token) as client:
        try:
            task = client.trigger_schedule(name)
            _print_or_wait(client, task, wait_, timeout)
        except ConveyorHTTPError as exc:
            _fail(exc)


if __name__ == "__main__":
    main()
