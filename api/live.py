"""A task followed live: ``GET /v1/tasks/{id}?wait=N`` and the event stream
``GET /v1/tasks/{id}/events``, both fed by the process's one TaskWatcher.

The stream is a function of the task record alone, so any API replica can resume it. An
event's id is a cursor ``<updated>-<seq>-<progress>``: the record's ``updated_at`` (ms)
the client has seen, the last handler event number, and the stamp (ms) of the progress.
Given a cursor (the ``Last-Event-ID`` a reconnecting EventSource sends), the stream sends
only what is newer, so nothing is repeated or lost across reconnects and replicas; the
last 20 handler events are kept on the record, older ones are not replayed.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sse_starlette import ServerSentEvent

from api import query
from api.problems import Problem
from conveyor.model import Task
from conveyor.watch import Subscription, TaskWatcher

MAX_WAIT_SECONDS = 60
# A comment line this often keeps proxies from closing a quiet stream.
PING_SECONDS = 15
_CURSOR = re.compile(r"^(\d{1,15})-(\d{1,12})-(\d{1,15})$")


def _ms(value: datetime | None) -> int:
    return int(value.timestamp() * 1000) if value is not None else 0


@dataclass(frozen=True)
class Cursor:
    updated: int = -1  # -1: nothing seen yet
    seq: int = 0
    progress: int = 0

    def __str__(self) -> str:
        return f"{max(self.updated, 0)}-{self.seq}-{self.progress}"

    @classmethod
    def parse(cls, raw: str | None) -> Cursor | None:
        """The cursor of a Last-Event-ID header; None without one."""
        if raw is None or raw.strip() == "":
            return None
        match = _CURSOR.match(raw.strip())
        if match is None:
            raise Problem(
                422,
                "Last-Event-ID is not an id this stream sent",
                "validation",
                errors=[{"pointer": "/headers/Last-Event-ID", "message": "an id from this stream"}],
            )
        return cls(*(int(g) for g in match.groups()))


def wait_seconds(raw: str | None) -> float:
    """The ``wait`` query parameter: 0 (the default: answer at once) to MAX_WAIT_SECONDS."""
    return query.seconds(raw, "wait", MAX_WAIT_SECONDS) or 0.0


def admit(watcher: TaskWatcher) -> None:
    """Refuse a new follower when this process follows as many as it may."""
    if watcher.full:
        raise Problem(
            503,
            "this API process follows as many tasks as it may; try again (another replica may answer)",
            "unavailable",
            headers={"Retry-After": "5"},
        )


async def until_terminal(sub: Subscription, task: Task, seconds: float) -> Task:
    """The newest snapshot once the task is terminal, or when ``seconds`` have passed."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    latest = sub.latest or task
    while not latest.status.terminal:
        left = deadline - loop.time()
        if left <= 0:
            break
        latest = await sub.changed(left) or latest
    return latest


def pending(
    task: Task, cursor: Cursor, state: Callable[[Task], dict[str, Any]], sees_data: bool
) -> tuple[list[ServerSentEvent], Cursor]:
    """What a client at ``cursor`` has not seen of ``task``, in order, and its new cursor.
    A state change comes first, or last when it is the end, so a stream always ends on it."""
    status = task.status.value
    out: list[ServerSentEvent] = []

    def add(event: str, data: dict[str, Any]) -> None:
        text = json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        out.append(ServerSentEvent(data=text, event=event, id=str(cursor)))

    state_changed = _ms(task.updated_at) > cursor.updated
    if state_changed and not task.status.terminal:
        cursor = replace(cursor, updated=_ms(task.updated_at))
        add("state", state(task))
    for event in task.events:
        if event.seq > cursor.seq:
            cursor = replace(cursor, seq=event.seq)
            data = event.to_json()
            if not sees_data:
                data.pop("data", None)
            add("event", {"status": status, **data})
    if task.progress is not None and _ms(task.progress.at) > cursor.progress:
        cursor = replace(cursor, progress=_ms(task.progress.at))
        add("progress", {"status": status, **task.progress.to_json()})
    if state_changed and task.status.terminal:
        cursor = replace(cursor, updated=_ms(task.updated_at))
        add("state", state(task))
    return out, cursor


async def stream(
    sub: Subscription,
    task: Task,
    cursor: Cursor,
    state: Callable[[Task], dict[str, Any]],
    sees_data: bool,
) -> AsyncIterator[ServerSentEvent]:
    """Everything the client has not seen, then each change, until the task is terminal."""
    latest = sub.latest or task
    while True:
        events, cursor = pending(latest, cursor, state, sees_data)
        for event in events:
            yield event
        if latest.status.terminal:
            return
        latest = await sub.changed() or latest
