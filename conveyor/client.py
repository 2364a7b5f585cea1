"""A Python client for the Conveyor HTTP API."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from httpx_sse import SSEError, connect_sse

TERMINAL = {"succeeded", "failed", "cancelled"}


def default_url() -> str:
    return os.environ.get("CONVEYOR_URL", "http://127.0.0.1:8000")


def default_token() -> str | None:
    """CONVEYOR_TOKEN, else the token `conveyor run` wrote to .conveyor/token."""
    token = os.environ.get("CONVEYOR_TOKEN")
    if token:
        return token
    path = Path(os.environ.get("CONVEYOR_TOKEN_FILE", ".conveyor/token"))
    return path.read_text().strip() if path.exists() else None


def _segment(value: str) -> str:
    # A name or task id is one path segment: a "/" or "?" in it must not reach another route.
    return quote(value, safe="")


class ConveyorHTTPError(Exception):
    """The API answered with a problem document."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        self.status = status
        self.problem = problem
        detail = problem.get("detail") or problem.get("title") or "error"
        super().__init__(f"{status}: {detail}")


@dataclass(frozen=True)
class TaskEvent:
    """One event of a task's stream: ``kind`` is ``state`` (``data`` is the task),
    ``progress`` or ``event`` (``data`` is the report); ``data["status"]`` is the task's
    status either way."""

    kind: str
    id: str
    data: dict[str, Any]

    @property
    def status(self) -> str:
        return str(self.data.get("status", ""))

    @property
    def terminal(self) -> bool:
        return self.kind == "state" and self.status in TERMINAL


class Client:
    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        timeout: float = 30.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        token = token if token is not None else default_token()
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(
            base_url=url or default_url(), headers=headers, timeout=timeout, transport=transport
        )

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.http.request(method, path, **kwargs)
        if response.status_code >= 400:
            self._raise(response)
        return response.json()

    @staticmethod
    def _raise(response: httpx.Response) -> None:
        try:
            problem = response.json()
        except ValueError:
            problem = {"detail": response.text}
        raise ConveyorHTTPError(response.status_code, problem)

    def submit(
        self,
        task_type: str,
        payload: Any = None,
        *,
        delay_seconds: float | None = None,
        run_at: str | None = None,
        max_attempts: int | None = None,
        idempotency_key: str | None = None,
        priority: str | None = None,
        unique_key: str | None = None,
    ) -> dict[str, Any]:
        """Submit one task; returns it. With ``unique_key`` (or a type unique by a payload
        field) an active task may already hold the key: by the type's ``onDuplicate`` this
        returns that task, or raises ConveyorHTTPError 409 whose problem's ``existing_task``
        names it."""
        body: dict[str, Any] = {"type": task_type, "payload": {} if payload is None else payload}
        if priority is not None:
            body["priority"] = priority
        if unique_key is not None:
            body["unique_key"] = unique_key
        if delay_seconds is not None:
            body["delay_seconds"] = delay_seconds
        if run_at is not None:
            body["run_at"] = run_at
        if max_attempts is not None:
            body["max_attempts"] = max_attempts
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        result: dict[str, Any] = self._call("POST", "/v1/tasks", json=body, headers=headers)
        return result

    def submit_batch(self, tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self._call("POST", "/v1/tasks/batch", json={"tasks": tasks})["items"]
        return items

    def get(self, task_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", f"/v1/tasks/{_segment(task_id)}")
        return result

    def list_tasks(
        self,
        status: str | None = None,
        task_type: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> dict[str, Any]:
        params = {
            k: v
            for k, v in {"status": status, "type": task_type, "limit": limit, "cursor": cursor}.items()
            if v
        }
        result: dict[str, Any] = self._call("GET", "/v1/tasks", params=params)
        return result

    def iter(self, status: str | None = None, task_type: str | None = None) -> Iterator[dict[str, Any]]:
        cursor = None
        while True:
            page = self.list_tasks(status, task_type, 200, cursor)
            yield from page["items"]
            cursor = page.get("next_cursor")
            if not cursor:
                return

    def cancel(self, task_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", f"/v1/tasks/{_segment(task_id)}/cancel")
        return result

    def retry(self, task_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", f"/v1/tasks/{_segment(task_id)}/retry")
        return result

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/v1/stats")
        return result

    def workers(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self._call("GET", "/v1/workers")["items"]
        return items

    def task_types(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self._call("GET", "/v1/task-types")["items"]
        return items

    def schedules(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self._call("GET", "/v1/schedules")["items"]
        return items

    def schedule(self, name: str) -> dict[str, Any]:
        """One schedule, with its next five run times (``next_runs``)."""
        result: dict[str, Any] = self._call("GET", f"/v1/schedules/{_segment(name)}")
        return result

    def trigger_schedule(self, name: str) -> dict[str, Any]:
        """Run the schedule's task now, outside its slots; returns the new task."""
        result: dict[str, Any] = self._call("POST", f"/v1/schedules/{_segment(name)}/trigger")
        return result

    def get_waiting(self, task_id: str, wait: float) -> dict[str, Any]:
        """The task once it is terminal, or as it stands after ``wait`` s (at most 60)."""
        result: dict[str, Any] = self._call(
            "GET", f"/v1/tasks/{_segment(task_id)}", params={"wait": wait}, timeout=wait + 30
        )
        return result

    def events(
        self, task_id: str, last_event_id: str | None = None, reconnects: int = 5
    ) -> Iterator[TaskEvent]:
        """Follow the task's event stream until its terminal state (the last event). A
        dropped connection is resumed from the last event seen (``Last-Event-ID``), up to
        ``reconnects`` times in a row."""
        failures = 0
        path = f"/v1/tasks/{_segment(task_id)}/events"
        # Reads wait at most for the server's keep-alive comments (every 15 s), not longer.
        timeout = httpx.Timeout(self.http.timeout.connect, read=45.0)
        while True:
            headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
            try:
                with connect_sse(self.http, "GET", path, headers=headers, timeout=timeout) as source:
                    response = source.response
                    if response.status_code == 204:
                        return  # seen to the end already
                    if response.status_code >= 400:
                        response.read()
                        self._raise(response)
                    for sse in source.iter_sse():
                        failures = 0
                        event = TaskEvent(sse.event, sse.id, sse.json())
                        last_event_id = sse.id or last_event_id
                        yield event
                        if event.terminal:
                            return
            except (httpx.TransportError, SSEError):
                failures += 1
                if failures > reconnects:
                    raise
                time.sleep(min(0.2 * 2**failures, 5.0))
                continue
            # The server closed the stream before the end (a restart): resume.
            failures += 1
            if failures > reconnects:
                raise ConveyorHTTPError(502, {"detail": "the event stream kept closing before the end"})

    def wait(
        self,
        task_id: str,
        timeout: float = 60.0,
        interval: float = 0.2,
        on_change: Callable[[dict[str, Any]], None] | None = None,
    ) -> dict[str, Any]:
        """Poll until the task is terminal; raises TimeoutError with the last state."""
        deadline = time.monotonic() + timeout
        last_status = None
        while True:
            task = self.get(task_id)
            if on_change and task["status"] != last_status:
                on_change(task)
                last_status = task["status"]
            if task["status"] in TERMINAL:
                return task
            if time.monotonic() > deadline:
                raise TimeoutError(f"task {task_id} still {task['status']} after {timeout}s")
            time.sleep(interval)
