"""Request and response schemas: one source for validation and for /openapi.json."""

from __future__ import annotations

from typing import Any

from api.live import MAX_WAIT_SECONDS
from conveyor import __version__
from conveyor.engine import MAX_DELAY_SECONDS
from conveyor.model import MAX_EVENTS, MAX_PROGRESS_MESSAGE, PRIORITIES, NotifyState, Status, WaitReason

SUBMIT = {
    "type": "object",
    "additionalProperties": False,
    "required": ["type"],
    "properties": {
        "type": {"type": "string", "minLength": 1, "maxLength": 128, "description": "A TaskType name."},
        "payload": {"description": "Any JSON value; checked against the TaskType's payloadSchema."},
        "delay_seconds": {
            "type": "number",
            "minimum": 0,
            "maximum": MAX_DELAY_SECONDS,
            "description": "Run no earlier than this many seconds from now (at most 14 days).",
        },
        "run_at": {
            "type": "string",
            "format": "date-time",
            "description": "Run no earlier than this RFC 3339 time (at most 14 days ahead).",
        },
        "max_attempts": {"type": "integer", "minimum": 1, "maximum": 100},
        "priority": {
            "type": "string",
            "enum": [p.value for p in PRIORITIES],
            "description": "The queue level (default: the TaskType's); high starts ahead of the backlog.",
        },
        "unique_key": {
            "type": "string",
            "minLength": 1,
            "maxLength": 255,
            "description": "At most one active task of the type per key (the TaskType's uniqueness "
            "says while when, and what a second submit gets).",
        },
        "notify": {
            "type": "object",
            "additionalProperties": False,
            "required": ["url"],
            "properties": {
                "url": {
                    "type": "string",
                    "format": "uri",
                    "pattern": "^[Hh][Tt][Tt][Pp][Ss]?://[^/?#]",
                    "maxLength": 2048,
                    "description": "POST the finished task here, signed (docs/WEBHOOKS.md); https "
                    "unless the TaskType allows private networks.",
                }
            },
        },
    },
    "not": {"required": ["delay_seconds", "run_at"]},
}


def batch_schema(max_items: int) -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["tasks"],
        "properties": {"tasks": {"type": "array", "minItems": 1, "maxItems": max_items, "items": SUBMIT}},
    }


NULLABLE_TIME = {"type": ["string", "null"], "format": "date-time"}

TASK = {
    "type": "object",
    "required": ["id", "type", "status", "attempts", "max_attempts", "created_at", "updated_at"],
    "properties": {
        "id": {"type": "string", "description": "ULID: sorts by creation time."},
        "type": {"type": "string"},
        "payload": {},
        "status": {"type": "string", "enum": [s.value for s in Status]},
        "attempts": {"type": "integer"},
        "max_attempts": {"type": "integer"},
        "created_at": {"type": "string", "format": "date-time"},
        "updated_at": {"type": "string", "format": "date-time"},
        "started_at": NULLABLE_TIME,
        "finished_at": NULLABLE_TIME,
        "run_at": NULLABLE_TIME,
        "result": {},
        "error": {
            "type": ["object", "null"],
            "properties": {"type": {"type": "string"}, "message": {"type": "string"}},
        },
        "worker": {"type": ["string", "null"]},
        "cancel_requested": {"type": "boolean"},
        "progress": {
            "type": ["object", "null"],
            "description": "The latest progress the handler reported (ctx.progress).",
            "properties": {
                "fraction": {"type": "number", "minimum": 0, "maximum": 1},
                "message": {"type": ["string", "null"], "maxLength": MAX_PROGRESS_MESSAGE},
                "attempt": {"type": "integer"},
                "at": {"type": "string", "format": "date-time"},
            },
        },
        "events": {
            "type": "array",
            "maxItems": MAX_EVENTS,
            "description": (
                f"The last {MAX_EVENTS} events the handler reported (ctx.event), oldest first; "
                "without `data` for a token lacking tasks:read."
            ),
            "items": {
                "type": "object",
                "required": ["seq", "name", "attempt", "at"],
                "properties": {
                    "seq": {"type": "integer", "description": "Numbers the task's events from 1."},
                    "name": {"type": "string"},
                    "data": {},
                    "attempt": {"type": "integer"},
                    "at": {"type": "string", "format": "date-time"},
                },
            },
        },
        "priority": {"type": "string", "enum": [p.value for p in PRIORITIES]},
        "waiting": {
            "type": ["object", "null"],
            "description": "Set while a due task is held back by its type's concurrency or rate limit.",
            "properties": {
                "reason": {"type": "string", "enum": [r.value for r in WaitReason]},
                "until": {"type": "string", "format": "date-time", "description": "When it looks again."},
            },
        },
        "unique_key": {
            "type": ["string", "null"],
            "description": "The unique_key given at submit (a key read from the payload is not copied here).",
        },
        "notify": {
            "type": "object",
            "description": "Present when the task has a completion webhook.",
            "properties": {"url": {"type": ["string", "null"]}, "state": {"type": ["string", "null"]}},
        },
        "redacted": {
            "type": "array",
            "items": {"enum": ["payload", "result"]},
            "description": "Present when the caller's token lacks tasks:read: these fields are left out.",
        },
    },
}

PROBLEM = {
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "existing_task": {
            "type": "string",
            "description": "Type duplicate: the id of the active task holding the unique key.",
        },
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"pointer": {"type": "string"}, "message": {"type": "string"}},
            },
        },
    },
}

DEPTH = {
    "type": "object",
    "properties": {k: {"type": "integer"} for k in ("visible", "in_flight", "delayed")},
}

STATS = {
    "type": "object",
    "properties": {
        "total_tasks": {"type": "integer"},
        "pending_tasks": {"type": "integer"},
        "completed_tasks": {"type": "integer"},
        "failed_tasks": {"type": "integer"},
        "active_workers": {"type": "integer"},
        "queue_depth": {"type": "integer"},
        "tasks": {"type": "object", "additionalProperties": {"type": "integer"}},
        "queue": {**DEPTH, "description": "All priority levels' queues together."},
        "queues": {
            "type": "object",
            "description": "Each priority level's queue.",
            "properties": {p: DEPTH for p in ("high", "normal", "low")},
            "required": ["high", "normal", "low"],
        },
        "dlq": DEPTH,
        "dlq_depth": {"type": "integer"},
        "workers": {"type": "integer"},
        "oldest_queued_age_seconds": {"type": "number"},
    },
}

WORKER = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "host": {"type": "string"},
        "pid": {"type": "integer"},
        "started_at": {"type": "string", "format": "date-time"},
        "last_heartbeat": {"type": "string", "format": "date-time"},
        "in_flight": {"type": "integer"},
        "concurrency": {"type": "integer"},
        "version": {"type": "string"},
    },
}

TASK_TYPE = {
    "type": "object",
    "required": ["name", "handler", "enabled", "paused", "ready"],
    "properties": {
        "name": {"type": "string"},
        "handler": {"type": "string"},
        "enabled": {"type": "boolean"},
        "paused": {"type": "boolean"},
        "ready": {"type": "boolean"},
        "reason": {"type": "string"},
        "message": {"type": "string"},
        "maxAttempts": {"type": "integer"},
        "backoff": {"type": "object"},
        "timeoutSeconds": {"type": "integer"},
        "concurrency": {
            "type": "object",
            "description": "perWorker: per worker; max: across the fleet (per value of key).",
            "properties": {
                "perWorker": {"type": ["integer", "null"]},
                "max": {"type": ["integer", "null"]},
                "key": {"type": ["string", "null"]},
            },
        },
        "priority": {"type": "string", "enum": [p.value for p in PRIORITIES]},
        "rateLimit": {"type": ["object", "null"]},
        "uniqueness": {"type": ["object", "null"]},
        "retentionSeconds": {"type": ["integer", "null"]},
        "payloadSchema": {"type": ["object", "null"]},
        "description": {"type": "string"},
        "options": {"type": "object"},
        "notify": {
            "type": ["object", "null"],
            "properties": {"url": {"type": ["string", "null"]}, "allowPrivateNetworks": {"type": "boolean"}},
        },
    },
}


SCHEDULE = {
    "type": "object",
    "required": [
        "name", "namespace", "task_type", "schedule", "time_zone", "suspended",
        "next_run_at", "last_run_at", "last_task_id", "ready", "reason",
    ],
    "properties": {
        "name": {"type": "string"},
        "namespace": {"type": "string"},
        "task_type": {"type": "string"},
        "schedule": {"type": "string", "description": "5-field cron, or a macro such as @daily."},
        "time_zone": {"type": "string", "description": "IANA zone the slots are wall-clock times in."},
        "suspended": {"type": "boolean"},
        "next_run_at": {**NULLABLE_TIME, "description": "The next slot (null when suspended or not ready)."},
        "last_run_at": {**NULLABLE_TIME, "description": "The slot (or trigger time) of the last task."},
        "last_task_id": {"type": ["string", "null"]},
        "ready": {"type": "boolean", "description": "False: the schedule never fires; see reason."},
        "reason": {"type": "string"},
        "next_runs": {
            "type": "array",
            "items": {"type": "string", "format": "date-time"},
            "description": "One schedule only: its next 5 slots.",
        },
    },
}  # fmt: skip


DELIVERIES = {
    "type": "object",
    "required": ["id", "url", "state", "deliveries"],
    "properties": {
        "id": {"type": "string"},
        "url": {"type": ["string", "null"], "description": "The task's own notify URL (null: its type's)."},
        "state": {
            "type": ["string", "null"],
            "enum": [*(s.value for s in NotifyState), None],
            "description": "null: the task has no webhook (docs/WEBHOOKS.md).",
        },
        "deliveries": {
            "type": "array",
            "description": "The newest attempts, oldest first.",
            "items": {
                "type": "object",
                "required": ["at", "webhook_id", "status_code", "duration_ms", "error"],
                "properties": {
                    "at": {"type": "string", "format": "date-time"},
                    "webhook_id": {"type": "string"},
                    "status_code": {"type": ["integer", "null"]},
                    "duration_ms": {"type": "integer"},
                    "error": {"type": ["string", "null"]},
                },
            },
        },
    },
}


def _problem(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }


def _json(description: str, ref: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}},
    }


def openapi(max_batch: int) -> dict[str, Any]:
    task_id = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
    last_event_id = {
        "name": "Last-Event-ID",
        "in": "header",
        "required": False,
        "description": "Resume after this event id (EventSource sends it on reconnect).",
        "schema": {"type": "string"},
    }
    schedule_name = {
        "name": "name",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "minLength": 1, "maxLength": 253},
    }
    unavailable = _problem("The backend is unavailable; see Retry-After.")
    unauthorized = _problem("Missing or bad token.")
    forbidden = _problem("The token lacks the scope.")
    limited = _problem("Too many requests; see Retry-After.")
    common = {"401": unauthorized, "403": forbidden, "429": limited, "503": unavailable}
    bad_name = _problem("The path holds a control character.")
    bad_id = _problem("The id is not a task id (a ULID), or the path holds a control character.")
    body_errors = {
        "400": _problem("Body is not JSON."),
        "413": _problem("Body or payload too large."),
        "415": _problem("Body is not application/json."),
        "422": _problem("A field is invalid; `errors` names each by JSON pointer."),
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "Conveyor", "version": __version__, "description": "Task queue API."},
        "components": {
            "schemas": {
                "Submit": SUBMIT,
                "Batch": batch_schema(max_batch),
                "Task": TASK,
                "Problem": PROBLEM,
                "Stats": STATS,
                "Worker": WORKER,
                "TaskType": TASK_TYPE,
                "Schedule": SCHEDULE,
                "Deliveries": DELIVERIES,
            },
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
        "paths": {
            "/v1/tasks": {
                "post": {
                    "operationId": "submitTask",
                    "summary": "Submit a task",
                    "parameters": [
                        {
                            "name": "Idempotency-Key",
                            "in": "header",
                            "required": False,
                            "schema": {"type": "string", "minLength": 1, "maxLength": 255},
                        }
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Submit"}}},
                    },
                    "responses": {
                        "202": _json(
                            "Accepted and queued (with onDuplicate replace: the queued task holding "
                            "the unique key was cancelled).",
                            "Task",
                        ),
                        "200": _json(
                            "A repeat of an Idempotency-Key: the same task. Or the active task holding "
                            "the unique key (onDuplicate return-existing), redacted as a read would be.",
                            "Task",
                        ),
                        "409": _problem(
                            "Idempotency-Key reused with another body (type idempotency-conflict), or "
                            "the unique key is held by an active task (type duplicate, its id in "
                            "existing_task)."
                        ),
                        **body_errors,
                        **common,
                    },
                },
                "get": {
                    "operationId": "listTasks",
                    "summary": "List tasks, newest first",
                    "parameters": [
                        {
                            "name": "status",
                            "in": "query",
                            "schema": {"type": "string", "enum": [s.value for s in Status]},
                        },
                        {
                            "name": "type",
                            "in": "query",
                            "schema": {"type": "string", "minLength": 1, "maxLength": 128},
                        },
                        {
                            "name": "limit",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 1, "maximum": 200},
                        },
                        {"name": "cursor", "in": "query", "schema": {"type": "string"}},
                    ],
                    "responses": {
                        "200": {
                            "description": "A page of tasks.",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "properties": {
                                            "items": {
                                                "type": "array",
                                                "items": {"$ref": "#/components/schemas/Task"},
                                            },
                                            "next_cursor": {"type": ["string", "null"]},
                                        },
                                    }
                                }
                            },
                        },
                        "422": _problem("A query parameter is invalid."),
                        **common,
                    },
                },
            },
            "/v1/tasks/batch": {
                "post": {
                    "operationId": "submitBatch",
                    "summary": f"Submit up to {max_batch} tasks at once",
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Batch"}}},
                    },
                    "responses": {
                        "202": {
                            "description": "All accepted, in request order.",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "properties": {
                                            "items": {
                                                "type": "array",
                                                "items": {"$ref": "#/components/schemas/Task"},
                                            }
                                        },
                                    }
                                }
                            },
                        },
                        **body_errors,
                        **common,
                    },
                }
            },
            "/v1/tasks/{id}": {
                "get": {
                    "operationId": "getTask",
                    "parameters": [
                        task_id,
                        {
                            "name": "wait",
                            "in": "query",
                            "description": "Answer once the task is terminal or this many seconds passed.",
                            "schema": {"type": "number", "minimum": 0, "maximum": MAX_WAIT_SECONDS},
                        },
                    ],
                    "responses": {
                        "200": _json("The task.", "Task"),
                        "400": bad_id,
                        "404": _problem("No such task."),
                        "422": _problem("wait is not a number from 0 to 60."),
                        **common,
                    },
                }
            },
            "/v1/tasks/{id}/events": {
                "get": {
                    "operationId": "taskEvents",
                    "summary": "Follow a task: server-sent events until it is terminal",
                    "parameters": [
                        task_id,
                        last_event_id,
                    ],
                    "responses": {
                        "200": {
                            "description": (
                                "text/event-stream: `state` (data: the task), `progress` and `event` "
                                "(data: the report and the task's status); every event has an id "
                                "to resume from. The stream ends after the terminal state."
                            ),
                            "content": {"text/event-stream": {"schema": {"type": "string"}}},
                        },
                        "204": {"description": "Resumed after the terminal state: nothing more."},
                        "400": bad_id,
                        "404": _problem("No such task."),
                        "422": _problem("Last-Event-ID is not an id of this stream."),
                        **common,
                    },
                }
            },
            "/v1/tasks/{id}/deliveries": {
                "get": {
                    "operationId": "getTaskDeliveries",
                    "summary": "The task's completion webhook and its delivery attempts",
                    "parameters": [task_id],
                    "responses": {
                        "200": _json("The webhook's URL, state and attempts.", "Deliveries"),
                        "400": bad_id,
                        "404": _problem("No such task."),
                        **common,
                    },
                }
            },
            "/v1/events": {
                "get": {
                    "operationId": "taskChanges",
                    "summary": "Task state changes as server-sent events (one poller per API process)",
                    "parameters": [
                        {
                            "name": "status",
                            "in": "query",
                            "schema": {"type": "string", "enum": [s.value for s in Status]},
                        },
                        {"name": "type", "in": "query", "schema": {"type": "string", "maxLength": 128}},
                        {
                            "name": "seconds",
                            "in": "query",
                            "description": "End the stream after this many seconds; resume from the last id.",
                            "schema": {"type": "number", "minimum": 0, "maximum": 3600},
                        },
                        {
                            "name": "last_event_id",
                            "in": "query",
                            "description": "Resume after this event id (as the Last-Event-ID header).",
                            "schema": {"type": "string"},
                        },
                        last_event_id,
                    ],
                    "responses": {
                        "200": {
                            "description": (
                                "text/event-stream: `state` and `progress` (data: the task, as GET "
                                "/v1/tasks/{id} shows it to this caller); `reset` when the stream cannot "
                                "resume from the given id (reload the list)."
                            ),
                            "content": {"text/event-stream": {"schema": {"type": "string"}}},
                        },
                        "422": _problem("A filter or Last-Event-ID is invalid."),
                        **common,
                    },
                }
            },
            "/v1/session": {
                "post": {
                    "operationId": "openSession",
                    "summary": "Set the session cookie the event streams accept (for EventSource)",
                    "responses": {
                        "204": {"description": "Cookie set (HttpOnly, SameSite=Strict)."},
                        **common,
                    },
                },
                "delete": {
                    "operationId": "closeSession",
                    "security": [],
                    "summary": "Clear the session cookie",
                    "responses": {"204": {"description": "Cookie cleared."}},
                },
            },
            "/v1/tasks/{id}/cancel": {
                "post": {
                    "operationId": "cancelTask",
                    "parameters": [task_id],
                    "responses": {
                        "200": _json("Cancelled, or cancel requested of a running task.", "Task"),
                        "400": bad_id,
                        "404": _problem("No such task."),
                        "409": _problem("The task is already finished."),
                        **common,
                    },
                }
            },
            "/v1/tasks/{id}/retry": {
                "post": {
                    "operationId": "retryTask",
                    "parameters": [task_id],
                    "responses": {
                        "202": _json("Queued again, attempts reset.", "Task"),
                        "400": bad_id,
                        "404": _problem("No such task."),
                        "409": _problem(
                            "Only failed or cancelled tasks can be retried; or (type duplicate) "
                            "another active task holds its unique key."
                        ),
                        **common,
                    },
                }
            },
            "/v1/schedules": {
                "get": {
                    "operationId": "listSchedules",
                    "summary": "List the TaskSchedules, with their next and last runs",
                    "responses": {
                        "200": {
                            "description": "Every schedule, ready or not.",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "properties": {
                                            "items": {
                                                "type": "array",
                                                "items": {"$ref": "#/components/schemas/Schedule"},
                                            }
                                        },
                                    }
                                }
                            },
                        },
                        **common,
                    },
                }
            },
            "/v1/schedules/{name}": {
                "get": {
                    "operationId": "getSchedule",
                    "parameters": [schedule_name],
                    "responses": {
                        "200": _json("The schedule, with its next 5 runs in next_runs.", "Schedule"),
                        "400": bad_name,
                        "404": _problem("No such schedule."),
                        **common,
                    },
                }
            },
            "/v1/schedules/{name}/trigger": {
                "post": {
                    "operationId": "triggerSchedule",
                    "summary": "Run the schedule's task once now",
                    "parameters": [
                        schedule_name,
                        {
                            "name": "Idempotency-Key",
                            "in": "header",
                            "required": False,
                            "schema": {"type": "string", "minLength": 1, "maxLength": 255},
                        },
                    ],
                    "responses": {
                        "202": _json("Queued: the schedule's task, outside its slots.", "Task"),
                        "200": _json("A repeat of an Idempotency-Key: the same task.", "Task"),
                        "400": bad_name,
                        "404": _problem("No such schedule."),
                        "409": _problem(
                            "The schedule is not ready (detail says why), Idempotency-Key reused, or "
                            "the task type's unique key is held by an active task (type duplicate)."
                        ),
                        "422": _problem(
                            "The schedule's payload no longer matches its task type, or a bad header."
                        ),
                        **common,
                    },
                }
            },
            "/v1/task-types": {
                "get": {
                    "operationId": "listTaskTypes",
                    "responses": {
                        "200": {
                            "description": "Every TaskType with its settings and readiness.",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "properties": {
                                            "items": {
                                                "type": "array",
                                                "items": {"$ref": "#/components/schemas/TaskType"},
                                            }
                                        },
                                    }
                                }
                            },
                        },
                        **common,
                    },
                }
            },
            "/v1/stats": {
                "get": {
                    "operationId": "getStats",
                    "responses": {"200": _json("Totals and depths.", "Stats"), **common},
                }
            },
            "/v1/workers": {
                "get": {
                    "operationId": "listWorkers",
                    "responses": {
                        "200": {
                            "description": "Workers with a recent heartbeat.",
                            "content": {
                                "application/json": {
                                    "schema": {
                                        "type": "object",
                                        "properties": {
                                            "items": {
                                                "type": "array",
                                                "items": {"$ref": "#/components/schemas/Worker"},
                                            }
                                        },
                                    }
                                }
                            },
                        },
                        **common,
                    },
                }
            },
            "/healthz": {
                "get": {
                    "operationId": "healthz",
                    "security": [],
                    "responses": {"200": {"description": "The process is up."}},
                }
            },
            "/readyz": {
                "get": {
                    "operationId": "readyz",
                    "security": [],
                    "responses": {
                        "200": {"description": "AWS reachable."},
                        "503": _problem("AWS unreachable."),
                    },
                }
            },
        },
    }
