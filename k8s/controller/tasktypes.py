"""The TaskType operator: TaskType and TaskSchedule resources in, one registry ConfigMap out.

Run it (the chart does) as::

    kopf run --standalone --namespace NS --liveness=http://0.0.0.0:8080/healthz k8s/controller/tasktypes.py

Two halves:

- Per object (create, update, and resume after a restart): validate the spec -- the handler
  must be registered in this image (``worker.handlers``), ``payloadSchema`` must be a valid
  JSON Schema -- then set the ``Ready`` condition and ``observedGeneration`` in its status and
  post an Event when it is not ready or becomes ready.
- Aggregation, level-triggered: every watch event only *kicks* a single writer; the writer
  lists the namespace's TaskTypes, evaluates each the same way and writes the whole registry
  into ConfigMap ``CONVEYOR_CONFIGMAP`` (key ``tasktypes.json``) when it differs. Listing
  instead of patching per event makes deletes, missed events and restarts (a full resync at
  startup, even with zero TaskTypes left) come out right by construction.
- TaskSchedules ride the same pass: the writer lists them too, checks each against the
  registry it just built (cron, time zone, TaskType exists, is ready and enabled, payload
  matches its payloadSchema), writes them all, ready or not, under key ``schedules.json``,
  and sets each one's ``Ready`` condition when it changed. A TaskType edit therefore
  re-evaluates every schedule that names it. The API fires the ready ones and writes the
  rest of their status (last and next slot, last task).
- The operator owns that ConfigMap: it creates it when missing, and between passes reads it
  back by name every few seconds, so one deleted or edited by hand is restored at once.

Kopf has no client for ConfigMaps, so the writer talks to the API server with httpx, using
the credentials kopf logged in with (captured by the login handler below).

Settings (environment): ``CONVEYOR_NAMESPACE`` (default: the service account's namespace),
``CONVEYOR_CONFIGMAP`` (default ``conveyor-tasktypes``), ``CONVEYOR_OPERATOR_RESYNC_SECONDS``
(default 300: a periodic re-list, a safety net only), ``CONVEYOR_OPERATOR_CHECK_SECONDS``
(default 5: how often the ConfigMap is read back), ``CONVEYOR_HANDLER_MODULES`` (the extra
handler modules, as on the workers), ``CONVEYOR_MAX_PAYLOAD_BYTES`` (the API's payload limit,
which a schedule's payload must fit).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import httpx
import kopf
from jsonschema import Draft202012Validator

from conveyor.registry import API_VERSION, REGISTRY_FILE, Registry, TaskType, flow_problems, schema_errors
from conveyor.schedule import spec_problems
from conveyor.settings import Settings
from worker import handlers

GROUP, VERSION, PLURAL = "conveyor.dev", "v1alpha1", "tasktypes"
SCHEDULES = "taskschedules"
SCHEDULES_FILE = "schedules.json"  # the ConfigMap key the API reads schedules from
CONFIGMAP_LIMIT = 1_000_000  # a ConfigMap holds at most 1 MiB, all keys together
DEBOUNCE_SECONDS = 0.2  # gathers a burst of watch events (kubectl apply -f dir/) into one write
log = logging.getLogger("conveyor.operator")


# -- validation: pure, shared by the status handlers and the writer --------------------------


def evaluate(name: str, spec: dict[str, Any], known: list[str]) -> TaskType:
    """The registry entry for one TaskType, with its readiness and why."""
    try:
        base = TaskType.from_spec(name, spec)
    except (TypeError, ValueError, AttributeError) as exc:
        # The CRD schema prevents this on a real API server; the registry must survive it anyway.
        return TaskType(
            name=name,
            handler=str(spec.get("handler", "")),
            ready=False,
            reason="InvalidSpec",
            message=str(exc),
        )
    if not spec.get("handler"):
        return _not_ready(base, "InvalidSpec", "spec.handler is required")
    if base.handler not in known:
        return _not_ready(
            base,
            "HandlerNotFound",
            f"handler {base.handler!r} is not registered in the worker image; it has: {', '.join(known)}",
        )
    if base.payload_schema is not None or "payloadSchema" in spec:
        problems = payload_schema_problems(spec.get("payloadSchema"))
        if problems:
            return _not_ready(base, "InvalidSchema", "spec.payloadSchema: " + "; ".join(problems))
    if base.backoff_initial_seconds > base.backoff_max_seconds:
        return _not_ready(base, "InvalidSpec", "spec.backoff.initialSeconds exceeds spec.backoff.maxSeconds")
    problems = flow_problems(spec)
    if problems:
        return _not_ready(base, "InvalidSpec", "; ".join(problems))
    return base


def limits_summary(entry: TaskType) -> str:
    """The type's flow-control limits in one line, for `kubectl get tt` (empty: none)."""
    parts = []
    if entry.fleet_concurrency is not None:
        per = f" per {entry.fleet_concurrency.key}" if entry.fleet_concurrency.key else ""
        parts.append(f"max {entry.fleet_concurrency.max}{per}")
    if entry.concurrency is not None:
        parts.append(f"{entry.concurrency}/worker")
    if entry.rate_limit is not None:
        rate = entry.rate_limit
        text = f"{rate.limit}/{rate.period:g}s"
        if rate.burst is not None:
            text += f" burst {rate.burst}"
        parts.append(text + (f" per {rate.key}" if rate.key else ""))
    if entry.uniqueness is not None:
        unique = entry.uniqueness
        key = f" {unique.key}" if unique.key else ""
        parts.append(f"unique{key} {unique.while_.value}: {unique.on_duplicate.value}")
    return "; ".join(parts)


def payload_schema_problems(schema: Any) -> list[str]:
    """Every reason ``schema`` cannot be a payloadSchema, each with its JSON path, so one
    `kubectl describe` shows them all: metaschema violations and references that are not
    local (the API resolves only ``#...`` inside the schema; it never fetches a URL or file)."""
    if not isinstance(schema, dict):
        return schema_errors(schema)
    problems = [
        f"{error.message} (at /{'/'.join(str(p) for p in error.absolute_path)})"
        for error in sorted(
            Draft202012Validator(Draft202012Validator.META_SCHEMA).iter_errors(schema),
            key=lambda e: [str(p) for p in e.absolute_path],
        )
    ]
    return problems + [
        f"$ref {ref!r} is not local; only '#...' references are allowed (at /{where})"
        for where, ref in _refs(schema, "")
        if not ref.startswith("#")
    ]


# Keywords whose values are data, not schemas: a "$ref" key inside them is not a reference.
_DATA_KEYWORDS = frozenset({"const", "enum", "default", "examples", "example"})


def _refs(node: Any, where: str) -> list[tuple[str, str]]:
    """(path, target) of every $ref / $dynamicRef in the schema tree."""
    found: list[tuple[str, str]] = []
    if isinstance(node, dict):
        for key, value in node.items():
            path = f"{where}/{key}".lstrip("/")
            if key in ("$ref", "$dynamicRef") and isinstance(value, str):
                found.append((path, value))
            elif key not in _DATA_KEYWORDS:
                found += _refs(value, path)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += _refs(value, f"{where}/{i}".lstrip("/"))
    return found


def _not_ready(base: TaskType, reason: str, message: str) -> TaskType:
    return replace(base, ready=False, reason=reason, message=message)


def known_handlers() -> list[str]:
    return handlers.names()


def ready_condition(
    entry: TaskType, generation: int | None, previous: dict[str, Any] | None
) -> dict[str, Any]:
    message = entry.message or ("validated" if entry.ready else "")
    return _condition(entry.ready, entry.reason, message, generation, previous)


def _condition(
    ready: bool, reason: str, message: str, generation: int | None, previous: dict[str, Any] | None
) -> dict[str, Any]:
    status = "True" if ready else "False"
    unchanged = previous is not None and previous.get("status") == status
    condition: dict[str, Any] = {
        "type": "Ready",
        "status": status,
        "reason": reason,
        "message": message,
        # Kubernetes convention: the time changes only when the status flips.
        "lastTransitionTime": ((previous or {}).get("lastTransitionTime") if unchanged else None) or _now(),
    }
    if generation is not None:
        condition["observedGeneration"] = generation
    return condition


# -- TaskSchedules: pure, checked against the registry the same pass builds -------------------

POLICIES = ("Allow", "Forbid", "Replace")
MESSAGE_LIMIT = 4096  # of a schedule's Ready message (and its schedules.json reason)
# The CRD's bounds, restated: kmock and a CRD edited by hand enforce nothing, and the API must
# never read a value it cannot use (tests/k8s/test_schedule_crd.py holds them equal).
BOUNDS = {
    "jitterSeconds": (0, 3599),
    "startingDeadlineSeconds": (1, 2678400),
    "maxCatchUp": (0, 100),
    "maxAttempts": (1, 100),
}
# Each schedules.json field: its default (the CRD's) and whether a value is usable.
SCHEDULE_FIELDS: dict[str, tuple[Any, Any]] = {
    "taskType": ("", lambda v: isinstance(v, str) and v != ""),
    "schedule": ("", lambda v: isinstance(v, str) and v != ""),
    "timeZone": ("UTC", lambda v: isinstance(v, str) and v != ""),
    "jitterSeconds": (0, lambda v: _bounded(v, "jitterSeconds")),
    "concurrencyPolicy": ("Allow", lambda v: v in POLICIES),
    "startingDeadlineSeconds": (None, lambda v: v is None or _bounded(v, "startingDeadlineSeconds")),
    "maxCatchUp": (1, lambda v: _bounded(v, "maxCatchUp")),
    "suspend": (False, lambda v: isinstance(v, bool)),
    "maxAttempts": (None, lambda v: v is None or _bounded(v, "maxAttempts")),
}


def _bounded(value: Any, name: str) -> bool:
    low, high = BOUNDS[name]
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


@dataclass(frozen=True)
class ScheduleEntry:
    """One TaskSchedule as the API reads it (``item``, a schedules.json entry) and the Ready
    condition the operator sets on it."""

    item: dict[str, Any]
    reason: str  # Ready, Suspended (both ready), or why not
    message: str

    @property
    def ready(self) -> bool:
        return bool(self.item["ready"])


def evaluate_schedule(
    name: str,
    namespace: str,
    spec: dict[str, Any],
    registry: Registry,
    max_payload: int = Settings.max_payload_bytes,
) -> ScheduleEntry:
    """The schedules.json entry for one TaskSchedule, with whether it may fire and why not."""
    payload = spec.get("payload")
    item: dict[str, Any] = {
        "name": name,
        "namespace": namespace,
        "payload": {} if payload is None else payload,
    }
    invalid = []
    for key, (default, usable) in SCHEDULE_FIELDS.items():
        value = spec.get(key, default)
        if usable(value):
            item[key] = value
        else:
            # A value the API could not use never reaches it: the default stands in, unready.
            item[key] = default
            invalid.append(f"spec.{key}: {value!r} is not allowed")
    deadline = item["startingDeadlineSeconds"]
    if deadline is not None and item["jitterSeconds"] >= deadline:
        invalid.append("spec.jitterSeconds must be less than spec.startingDeadlineSeconds")
    reason, message = _schedule_verdict(item, invalid, registry, max_payload)
    if len(message) > MESSAGE_LIMIT:
        # Every payload error of a large payload would bloat the status and the ConfigMap.
        tail = " ... (truncated)"
        message = message[: MESSAGE_LIMIT - len(tail)] + tail
    ready = reason in ("Ready", "Suspended")
    item["ready"] = ready
    # The API shows and answers with this one string: the reason and what to fix.
    item["reason"] = "" if ready else f"{reason}: {message}"
    return ScheduleEntry(item=item, reason=reason, message=message)


def _schedule_verdict(
    item: dict[str, Any], invalid: list[str], registry: Registry, max_payload: int
) -> tuple[str, str]:
    if invalid:
        return "InvalidSpec", "; ".join(invalid)
    problems = spec_problems(item["schedule"], item["timeZone"])
    if problems:
        # Asked apart, so the reason is right whatever the messages say.
        bad_cron = spec_problems(item["schedule"], "UTC")
        return ("InvalidSchedule" if bad_cron else "UnknownTimeZone"), "; ".join(problems)
    name = item["taskType"]
    tasktype = registry.get(name)
    if tasktype is None:
        known = ", ".join(sorted(registry)) or "none"
        return (
            "UnknownTaskType",
            f"TaskType {name!r} does not exist in namespace {item['namespace']}; it has: {known}",
        )
    if not tasktype.ready:
        return "TaskTypeNotReady", f"TaskType {name!r} is not ready ({tasktype.reason}): {tasktype.message}"
    if not tasktype.enabled:
        return "TaskTypeDisabled", f"TaskType {name!r} is disabled (spec.enabled: false)"
    size = len(json.dumps(item["payload"], separators=(",", ":")).encode())
    if size > max_payload:
        return "InvalidPayload", f"spec.payload is {size} bytes; the API's limit is {max_payload}"
    errors = registry.validate_payload(name, item["payload"])
    if errors:
        found = "; ".join(
            f"{e['message']} (at {e['pointer'].removeprefix('/payload') or '/'})" for e in errors
        )
        return (
            "InvalidPayload",
            f"spec.payload does not match the payloadSchema of TaskType {name!r}: {found}",
        )
    if item["suspend"]:
        return "Suspended", "valid; suspended: no slot fires until spec.suspend is false"
    return "Ready", f"valid; fires {name!r} on {item['schedule']!r} in {item['timeZone']}"


def schedule_condition(
    entry: ScheduleEntry, generation: int | None, previous: dict[str, Any] | None
) -> dict[str, Any]:
    return _condition(entry.ready, entry.reason, entry.message, generation, previous)


def _condition_changed(previous: dict[str, Any] | None, wanted: dict[str, Any]) -> bool:
    if previous is None:
        return True
    keys = ("status", "reason", "message", "observedGeneration")
    return any(previous.get(k) != wanted.get(k) for k in keys)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# -- the writer's state, shared through kopf's memo -----------------------------------------


@dataclass
class Writer:
    namespace: str = ""
    configmap: str = "conveyor-tasktypes"
    resync_seconds: float = 300.0
    check_seconds: float = 5.0
    kick: asyncio.Event = field(default_factory=asyncio.Event)
    logged_in: asyncio.Event = field(default_factory=asyncio.Event)
    connection: kopf.ConnectionInfo | None = None
    settings: kopf.OperatorSettings | None = None
    task: asyncio.Task[None] | None = None
    synced_at: float | None = None
    written: int = 0
    types: int = 0
    schedules: int = 0
    last_error: str = ""
    max_payload: int = Settings.max_payload_bytes
    # The documents last written or found current, by ConfigMap key: what it must hold.
    expected: dict[str, Any] | None = None
    # The read-back's client, kept across checks (one connection, not a TLS handshake every
    # few seconds) while the credentials it was made from are current.
    checker: httpx.AsyncClient | None = None
    checker_for: kopf.ConnectionInfo | None = None


def _writer(memo: kopf.Memo) -> Writer:
    # The login and startup activities may run in either order; whichever is first creates it.
    if "writer" not in memo:
        memo["writer"] = Writer()
    writer: Writer = memo["writer"]
    return writer


# -- activities ------------------------------------------------------------------------------


def _credentials(settings: kopf.OperatorSettings) -> kopf.ConnectionInfo | None:
    """In-cluster service account first, else a kubeconfig (kopf's own rudimentary logins)."""
    return kopf.login_with_service_account(settings=settings) or kopf.login_with_kubeconfig(settings=settings)


@kopf.on.login()
async def login(memo: kopf.Memo, settings: kopf.OperatorSettings, **_: Any) -> kopf.ConnectionInfo | None:
    """Log kopf in, and keep the same credentials for the writer's own requests."""
    info = _credentials(settings)
    writer = _writer(memo)
    writer.connection, writer.settings = info, settings
    if info is not None:
        writer.logged_in.set()
    return info


@kopf.on.startup()
async def start(memo: kopf.Memo, settings: kopf.OperatorSettings, logger: kopf.Logger, **_: Any) -> None:
    # Kopf's bookkeeping goes into annotations under our own prefix, so the status schema stays
    # strict (no x-kubernetes-preserve-unknown-fields for kopf's progress records).
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    # Events are posted explicitly (kopf.event); log lines below WARNING stay in the log.
    settings.posting.level = logging.WARNING
    # One namespace, one known CRD: no cluster-wide scanning of namespaces and CRDs, so the
    # operator's RBAC stays namespaced (the CRD must exist before the operator starts).
    settings.scanning.disabled = True
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    writer = _writer(memo)
    writer.namespace = os.environ.get("CONVEYOR_NAMESPACE") or ""
    writer.configmap = os.environ.get("CONVEYOR_CONFIGMAP") or "conveyor-tasktypes"
    writer.resync_seconds = float(os.environ.get("CONVEYOR_OPERATOR_RESYNC_SECONDS") or 300)
    writer.check_seconds = float(os.environ.get("CONVEYOR_OPERATOR_CHECK_SECONDS") or 5)
    writer.max_payload = int(os.environ.get("CONVEYOR_MAX_PAYLOAD_BYTES") or Settings.max_payload_bytes)
    writer.kick.set()  # the first pass is the full resync after a (re)start
    writer.task = asyncio.create_task(_write_loop(writer), name="conveyor registry writer")
    logger.info("registry writer started: ConfigMap %s, handlers %s", writer.configmap, known_handlers())


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_: Any) -> None:
    writer = _writer(memo)
    if writer.task is not None:
        writer.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await writer.task
    await _close_checker(writer)


@kopf.on.probe(id="registry")
def registry_probe(memo: kopf.Memo, **_: Any) -> dict[str, Any]:
    writer = _writer(memo)
    age = None if writer.synced_at is None else round(time.monotonic() - writer.synced_at, 1)
    return {
        "syncedSecondsAgo": age,
        "taskTypes": writer.types,
        "taskSchedules": writer.schedules,
        "writes": writer.written,
        "error": writer.last_error,
    }


# -- per-object handlers ---------------------------------------------------------------------


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL)
def validate(
    name: str,
    spec: kopf.Spec,
    meta: kopf.Meta,
    status: kopf.Status,
    body: kopf.Body,
    patch: kopf.Patch,
    reason: str,
    logger: kopf.Logger,
    **_: Any,
) -> None:
    entry = evaluate(name, dict(spec), known_handlers())
    generation = meta.get("generation")
    conditions = list(status.get("conditions") or [])
    previous = next((c for c in conditions if c.get("type") == "Ready"), None)
    condition = ready_condition(entry, generation, previous)
    others = [c for c in conditions if c.get("type") != "Ready"]
    patch.status["conditions"] = [*others, condition]
    patch.status["priority"] = entry.priority.value
    patch.status["limits"] = limits_summary(entry)
    if generation is not None:
        patch.status["observedGeneration"] = generation
    if not entry.ready:
        # On every create/update/resume: each is a moment an admin may be looking.
        kopf.event(body, type="Warning", reason=entry.reason, message=entry.message)
        logger.info("TaskType %s is not ready (%s): %s", name, entry.reason, entry.message)
    elif previous is None or previous.get("status") != "True":
        kopf.event(
            body, type="Normal", reason="Ready", message=f"handler {entry.handler!r} found; schema valid"
        )
        logger.info("TaskType %s is ready (%s)", name, reason)


@kopf.on.event(GROUP, VERSION, PLURAL)
async def changed(memo: kopf.Memo, **_: Any) -> None:
    """Every add, change and delete: the registry needs writing (async: Event is not thread-safe)."""
    _writer(memo).kick.set()


@kopf.on.event(GROUP, VERSION, SCHEDULES)
async def schedule_changed(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    """A TaskSchedule added, deleted or with a new spec: the registry needs writing.
    Schedules have no per-object handler: the writer sets their Ready condition, since a
    TaskType change can change it too."""
    obj = event.get("object") or {}
    meta, status = obj.get("metadata") or {}, obj.get("status") or {}
    if (
        event.get("type") == "MODIFIED"
        and not meta.get("deletionTimestamp")
        and meta.get("generation") is not None
        and status.get("observedGeneration") == meta.get("generation")
    ):
        # A status write (the API's last and next slot, every ~30 s per schedule, or this
        # operator's own condition): nothing the registry holds has changed.
        return
    _writer(memo).kick.set()


# -- the ConfigMap writer --------------------------------------------------------------------


async def _write_loop(writer: Writer) -> None:
    failures = 0
    next_resync = time.monotonic() + writer.resync_seconds
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                writer.kick.wait(), timeout=min(writer.check_seconds, writer.resync_seconds)
            )
        await writer.logged_in.wait()
        if not writer.kick.is_set() and time.monotonic() < next_resync:
            # Nothing changed on our side: only make sure the ConfigMap still holds the
            # registry (deleted or edited by hand: restore it now, not at the next resync).
            try:
                if await drifted(writer):
                    log.warning("ConfigMap %s was deleted or edited; restoring it", writer.configmap)
                    writer.kick.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # A full pass instead: it re-reads rotated credentials and backs off.
                log.warning(
                    "checking ConfigMap %s failed (%s: %s)", writer.configmap, type(exc).__name__, exc
                )
                writer.kick.set()
            if not writer.kick.is_set():
                continue
        await asyncio.sleep(DEBOUNCE_SECONDS)
        writer.kick.clear()  # before the pass: a kick during it means another pass
        next_resync = time.monotonic() + writer.resync_seconds
        try:
            await sync(writer)
            failures = 0
            writer.last_error = ""
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            failures += 1
            writer.last_error = f"{type(exc).__name__}: {exc}"
            delay = min(30.0, 0.5 * 2**failures)
            log.warning(
                "writing the TaskType registry failed (%s); retrying in %.1fs", writer.last_error, delay
            )
            await asyncio.sleep(delay)
            writer.kick.set()


def _client(writer: Writer) -> httpx.AsyncClient:
    info = writer.connection
    if info is None:
        raise RuntimeError("not logged in to the Kubernetes API yet")
    verify: Any = info.as_ssl_context() if info.server.startswith("https") else True
    return httpx.AsyncClient(
        base_url=info.server,
        headers={**info.as_http_headers(), "Accept": "application/json"},
        verify=verify,
        timeout=30.0,
        trust_env=info.trust_env,
    )


async def sync(writer: Writer) -> bool:
    """List the TaskTypes, build the registry, write the ConfigMap if it changed. Returns
    whether it wrote."""
    namespace = _namespace(writer)
    async with _client(writer) as client:
        try:
            return await _sync(client, writer, namespace)
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code == 401 and writer.settings is not None:
                # A rotated service-account token: read the credentials again, once.
                writer.connection = _credentials(writer.settings) or writer.connection
            raise


async def drifted(writer: Writer) -> bool:
    """Whether the ConfigMap is gone or no longer holds the registry last written (one GET
    by name: the only read the Role allows on ConfigMaps)."""
    if writer.expected is None:
        return False  # nothing written yet: the next sync decides
    if writer.checker is None or writer.checker_for is not writer.connection:
        await _close_checker(writer)
        writer.checker, writer.checker_for = _client(writer), writer.connection
    namespace = _namespace(writer)
    current = await writer.checker.get(f"/api/v1/namespaces/{namespace}/configmaps/{writer.configmap}")
    if current.status_code == 404:
        return True
    current.raise_for_status()
    return not _same(current.json(), writer.expected)


async def _close_checker(writer: Writer) -> None:
    if writer.checker is not None:
        await writer.checker.aclose()
        writer.checker = writer.checker_for = None


def _namespace(writer: Writer) -> str:
    """CONVEYOR_NAMESPACE, else the service account's (or kubeconfig context's) namespace."""
    info = writer.connection
    return writer.namespace or (info.default_namespace if info else None) or "default"


async def _sync(client: httpx.AsyncClient, writer: Writer, namespace: str) -> bool:
    listed = await client.get(f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}")
    listed.raise_for_status()
    known = known_handlers()
    entries = {}
    for item in listed.json().get("items") or []:
        meta = item.get("metadata") or {}
        if meta.get("deletionTimestamp"):
            continue  # going away: no new tasks for it
        entries[meta["name"]] = evaluate(meta["name"], dict(item.get("spec") or {}), known)
    registry = Registry(entries)
    document = registry.document()
    writer.types = len(entries)
    schedules = await _list_schedules(client, namespace)
    evaluated = [
        (
            item,
            evaluate_schedule(
                item["metadata"]["name"],
                namespace,
                dict(item.get("spec") or {}),
                registry,
                writer.max_payload,
            ),
        )
        for item in schedules
    ]
    writer.schedules = len(evaluated)
    documents = {
        REGISTRY_FILE: document,
        SCHEDULES_FILE: {
            "apiVersion": API_VERSION,
            "schedules": [entry.item for _, entry in sorted(evaluated, key=lambda e: e[1].item["name"])],
        },
    }
    wrote = await _write_configmap(client, writer, namespace, documents, entries)
    # After the ConfigMap: a schedule is reported Ready only once the API can read it.
    await _set_schedule_conditions(client, namespace, evaluated)
    return wrote


async def _list_schedules(client: httpx.AsyncClient, namespace: str) -> list[dict[str, Any]]:
    """The namespace's TaskSchedules, but those being deleted. No TaskSchedule CRD (an upgrade
    whose `helm upgrade` did not install it; Helm installs crds/ only on install) is no
    schedules: TaskTypes keep working."""
    listed = await client.get(f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{SCHEDULES}")
    if listed.status_code == 404:
        log.debug("no TaskSchedule resource in the cluster; apply charts/conveyor/crds/ to add it")
        return []
    listed.raise_for_status()
    return [
        item
        for item in listed.json().get("items") or []
        if not (item.get("metadata") or {}).get("deletionTimestamp")
    ]


async def _set_schedule_conditions(
    client: httpx.AsyncClient, namespace: str, evaluated: list[tuple[dict[str, Any], ScheduleEntry]]
) -> None:
    """Patch the Ready condition of each schedule whose verdict changed, and post an Event
    when it becomes not ready or ready again. Only conditions and observedGeneration: the
    API owns the other status fields, and a merge patch leaves them alone."""
    for item, entry in evaluated:
        meta = item["metadata"]
        status = item.get("status") or {}
        generation = meta.get("generation")
        conditions = list(status.get("conditions") or [])
        previous = next((c for c in conditions if c.get("type") == "Ready"), None)
        wanted = schedule_condition(entry, generation, previous)
        if not _condition_changed(previous, wanted) and status.get("observedGeneration") == generation:
            continue
        patch: dict[str, Any] = {
            "status": {"conditions": [*(c for c in conditions if c.get("type") != "Ready"), wanted]}
        }
        if generation is not None:
            patch["status"]["observedGeneration"] = generation
        resp = await client.patch(
            f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{SCHEDULES}/{meta['name']}/status",
            content=json.dumps(patch),
            headers={"Content-Type": "application/merge-patch+json"},
        )
        if resp.status_code == 404:
            continue  # deleted since the list
        resp.raise_for_status()
        flipped = previous is None or previous.get("status") != wanted["status"]
        # A new reason or message is news to whoever is looking; a generation bump alone is not.
        if not entry.ready and (flipped or (previous or {}).get("message") != entry.message):
            await _post_event(client, namespace, item, "Warning", entry.reason, entry.message)
        elif entry.ready and flipped:
            await _post_event(client, namespace, item, "Normal", "Ready", entry.message)
        log.info(
            "TaskSchedule %s: Ready=%s (%s) %s", meta["name"], wanted["status"], entry.reason, entry.message
        )


async def _post_event(
    client: httpx.AsyncClient, namespace: str, obj: dict[str, Any], kind: str, reason: str, message: str
) -> None:
    """A core/v1 Event about ``obj``, as `kubectl describe` shows them; failing to post one
    is logged, never fatal."""
    meta = obj["metadata"]
    now = _now()
    body = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{meta['name']}.", "namespace": namespace},
        "involvedObject": {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "TaskSchedule",
            "name": meta["name"],
            "namespace": namespace,
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
        },
        "type": kind,
        "reason": reason,
        "message": message[:1024],
        "source": {"component": "conveyor-operator"},
        "reportingComponent": "conveyor-operator",
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }
    try:
        resp = await client.post(f"/api/v1/namespaces/{namespace}/events", json=body)
        resp.raise_for_status()
    except httpx.HTTPError as exc:
        log.warning("posting an Event about TaskSchedule %s failed: %s", meta["name"], exc)


async def _write_configmap(
    client: httpx.AsyncClient,
    writer: Writer,
    namespace: str,
    documents: dict[str, Any],
    entries: dict[str, TaskType],
) -> bool:
    texts = {key: json.dumps(doc, indent=2, sort_keys=True) for key, doc in documents.items()}
    size = sum(len(t.encode()) for t in texts.values())
    if size > CONFIGMAP_LIMIT:
        raise ValueError(f"the registry is {size} bytes, over the 1 MiB ConfigMap limit")

    path = f"/api/v1/namespaces/{namespace}/configmaps/{writer.configmap}"
    current = await client.get(path)
    if current.status_code == 404:
        body = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": writer.configmap,
                "namespace": namespace,
                "labels": {"app.kubernetes.io/managed-by": "conveyor-operator"},
            },
            "data": texts,
        }
        created = await client.post(f"/api/v1/namespaces/{namespace}/configmaps", json=body)
        created.raise_for_status()
        return _wrote(writer, entries, documents, created=True)
    current.raise_for_status()
    if _same(current.json(), documents):
        writer.synced_at = time.monotonic()
        writer.expected = documents
        return False
    patched = await client.patch(
        path,
        content=json.dumps({"data": texts}),
        headers={"Content-Type": "application/merge-patch+json"},
    )
    patched.raise_for_status()
    return _wrote(writer, entries, documents, created=False)


# What each key's document is compared on: all of it but tasktypes.json's generatedAt.
_COMPARED = {REGISTRY_FILE: "taskTypes", SCHEDULES_FILE: "schedules"}


def _same(configmap: dict[str, Any], documents: dict[str, Any]) -> bool:
    """Every key equal but for generatedAt: rewriting an unchanged registry would make every
    pod reload."""
    data = configmap.get("data") or {}
    for key, document in documents.items():
        try:
            old = json.loads(data.get(key) or "null")
        except ValueError:
            return False
        if not (
            isinstance(old, dict)
            and old.get("apiVersion") == API_VERSION
            and old.get(_COMPARED[key]) == document[_COMPARED[key]]
        ):
            return False
    return True


def _wrote(writer: Writer, entries: dict[str, TaskType], documents: dict[str, Any], created: bool) -> bool:
    writer.synced_at = time.monotonic()
    writer.expected = documents
    writer.written += 1
    ready = sorted(n for n, t in entries.items() if t.runnable)
    log.info(
        "%s ConfigMap %s: %d TaskType(s), enabled and ready: %s; %d TaskSchedule(s), ready: %s",
        "created" if created else "updated",
        writer.configmap,
        len(entries),
        ", ".join(ready) or "none",
        writer.schedules,
        ", ".join(s["name"] for s in documents[SCHEDULES_FILE]["schedules"] if s["ready"]) or "none",
    )
    return True
