"""The TaskType registry that API and workers read.

In a cluster the operator aggregates every ``TaskType`` resource into one ConfigMap key,
``tasktypes.json``, mounted into the pods; kubelet swaps mounted ConfigMaps by repointing
a ``..data`` symlink, so the watcher compares what the path *resolves to*, not only
mtimes. Locally the same registry is built straight from the TaskType YAML files in
``k8s/examples/`` -- the YAML a user would ``kubectl apply``.
"""

from __future__ import annotations

import enum
import json
import logging
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from jsonschema.protocols import Validator

from conveyor import payloadschema
from conveyor.model import Priority
from conveyor.watched import Watched, stat_signature

log = logging.getLogger("conveyor.registry")

REGISTRY_FILE = "tasktypes.json"
API_VERSION = "conveyor.dev/v1alpha1"


@dataclass(frozen=True)
class Notify:
    """``spec.notify``: where this type's finished tasks are POSTed (docs/WEBHOOKS.md)."""

    url: str | None = None
    # Lets the webhook reach private and loopback addresses (never link-local or metadata).
    allow_private_networks: bool = False

    @classmethod
    def from_spec(cls, spec: Any) -> Notify | None:
        if not isinstance(spec, Mapping):
            return None
        url = spec.get("url")
        return cls(str(url) if url else None, bool(spec.get("allowPrivateNetworks", False)))

    def to_json(self) -> dict[str, Any]:
        return {"url": self.url, "allowPrivateNetworks": self.allow_private_networks}


@dataclass(frozen=True)
class ConcurrencyLimit:
    """``spec.concurrency.max``: most tasks of the type running at once across the fleet,
    or per value of ``key`` (a JSON pointer into the payload, e.g. ``/tenant``)."""

    max: int
    key: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"max": self.max or None, "key": self.key}


@dataclass(frozen=True)
class RateLimit:
    """``spec.rateLimit``: at most ``limit`` starts per ``period`` seconds across the fleet
    (a token bucket holding ``burst``), or per value of ``key``."""

    limit: int
    period: float = 1.0
    burst: int | None = None  # None: ``limit``
    key: str | None = None

    @property
    def capacity(self) -> int:
        return self.burst if self.burst is not None else self.limit

    @property
    def interval(self) -> float:
        """Seconds between two starts at the limit's rate."""
        return self.period / max(1, self.limit)

    @classmethod
    def from_spec(cls, spec: Any) -> RateLimit | None:
        if not isinstance(spec, Mapping) or not spec.get("limit"):
            return None
        burst = spec.get("burst")
        return cls(
            int(spec["limit"]),
            float(spec.get("period", 1.0)),
            int(burst) if burst else None,
            str(spec["key"]) if spec.get("key") else None,
        )

    def to_json(self) -> dict[str, Any]:
        return {"limit": self.limit, "period": self.period, "burst": self.burst, "key": self.key}


class UniqueWhile(enum.StrEnum):
    QUEUED = "queued"
    QUEUED_OR_RUNNING = "queued-or-running"


class OnDuplicate(enum.StrEnum):
    RETURN_EXISTING = "return-existing"  # 200 with the task already there
    REJECT = "reject"  # 409
    REPLACE = "replace"  # cancel the queued one, keep the new payload and run_at (debounce)


@dataclass(frozen=True)
class Uniqueness:
    """``spec.uniqueness``: at most one task per key while the earlier one is active.
    ``key`` is a JSON pointer into the payload; a submit's ``unique_key`` takes precedence."""

    key: str | None = None
    while_: UniqueWhile = UniqueWhile.QUEUED
    on_duplicate: OnDuplicate = OnDuplicate.RETURN_EXISTING

    @classmethod
    def from_spec(cls, spec: Any) -> Uniqueness | None:
        if not isinstance(spec, Mapping):
            return None
        return cls(
            str(spec["key"]) if spec.get("key") else None,
            UniqueWhile(spec.get("while") or UniqueWhile.QUEUED),
            OnDuplicate(spec.get("onDuplicate") or OnDuplicate.RETURN_EXISTING),
        )

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "while": self.while_.value, "onDuplicate": self.on_duplicate.value}


def _concurrency(spec: Any) -> tuple[int | None, ConcurrencyLimit | None]:
    """(per-worker limit, fleet-wide limit) from ``spec.concurrency``: an object
    ``{max, key, perWorker}``, or, as before it was one, a bare per-worker integer."""
    if isinstance(spec, Mapping):
        per_worker = int(spec["perWorker"]) if spec.get("perWorker") else None
        if not spec.get("max"):
            return per_worker, None
        return per_worker, ConcurrencyLimit(int(spec["max"]), str(spec["key"]) if spec.get("key") else None)
    return (int(spec) if spec else None), None


@dataclass(frozen=True)
class TaskType:
    name: str
    handler: str
    enabled: bool = True
    paused: bool = False
    max_attempts: int = 3
    backoff_initial_seconds: float = 1.0
    backoff_max_seconds: float = 300.0
    timeout_seconds: int = 300
    concurrency: int | None = None  # per worker
    retention_seconds: int | None = None
    payload_schema: dict[str, Any] | None = None
    description: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    notify: Notify | None = None
    priority: Priority = Priority.NORMAL  # the default of its tasks
    fleet_concurrency: ConcurrencyLimit | None = None
    rate_limit: RateLimit | None = None
    uniqueness: Uniqueness | None = None
    ready: bool = True
    reason: str = "Ready"
    message: str = ""

    @property
    def runnable(self) -> bool:
        return self.enabled and self.ready

    @classmethod
    def from_spec(cls, name: str, spec: Mapping[str, Any], **status: Any) -> TaskType:
        """Build from a TaskType resource's ``spec`` (the CRD's camelCase fields)."""
        backoff = spec.get("backoff") or {}
        per_worker, fleet = _concurrency(spec.get("concurrency"))
        return cls(
            name=name,
            handler=str(spec.get("handler") or name),
            enabled=bool(spec.get("enabled", True)),
            paused=bool(spec.get("paused", False)),
            max_attempts=int(spec.get("maxAttempts", 3)),
            backoff_initial_seconds=float(backoff.get("initialSeconds", 1.0)),
            backoff_max_seconds=float(backoff.get("maxSeconds", 300.0)),
            timeout_seconds=int(spec.get("timeoutSeconds", 300)),
            concurrency=per_worker,
            retention_seconds=(int(spec["retentionSeconds"]) if spec.get("retentionSeconds") else None),
            payload_schema=spec.get("payloadSchema") or None,
            description=str(spec.get("description", "")),
            options=dict(spec.get("options") or {}),
            notify=Notify.from_spec(spec.get("notify")),
            priority=Priority(spec.get("priority") or Priority.NORMAL),
            fleet_concurrency=fleet,
            rate_limit=RateLimit.from_spec(spec.get("rateLimit")),
            uniqueness=Uniqueness.from_spec(spec.get("uniqueness")),
            **status,
        )

    @classmethod
    def from_manifest(cls, doc: Mapping[str, Any]) -> TaskType:
        if doc.get("kind") != "TaskType":
            raise ValueError(f"not a TaskType: kind={doc.get('kind')!r}")
        return cls.from_spec(doc["metadata"]["name"], doc.get("spec") or {})

    def to_json(self) -> dict[str, Any]:
        """The registry entry: the spec fields as in the CRD, plus readiness."""
        return {
            "name": self.name,
            "handler": self.handler,
            "enabled": self.enabled,
            "paused": self.paused,
            "maxAttempts": self.max_attempts,
            "backoff": {
                "initialSeconds": self.backoff_initial_seconds,
                "maxSeconds": self.backoff_max_seconds,
            },
            "timeoutSeconds": self.timeout_seconds,
            "concurrency": {
                "perWorker": self.concurrency,
                **(self.fleet_concurrency or ConcurrencyLimit(0)).to_json(),
            },
            "retentionSeconds": self.retention_seconds,
            "payloadSchema": self.payload_schema,
            "description": self.description,
            "options": self.options,
            "notify": self.notify.to_json() if self.notify else None,
            "priority": self.priority.value,
            "rateLimit": self.rate_limit.to_json() if self.rate_limit else None,
            "uniqueness": self.uniqueness.to_json() if self.uniqueness else None,
            "ready": self.ready,
            "reason": self.reason,
            "message": self.message,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TaskType:
        return cls.from_spec(
            data["name"],
            data,
            ready=bool(data.get("ready", True)),
            reason=str(data.get("reason", "Ready")),
            message=str(data.get("message", "")),
        )


def schema_errors(schema: Any) -> list[str]:
    """Why ``schema`` cannot serve as a payloadSchema (empty when it can)."""
    return payloadschema.schema_errors(schema)


class Registry(Mapping[str, TaskType]):
    """An immutable snapshot of every TaskType; look-ups by task type name."""

    def __init__(self, types: Mapping[str, TaskType] | None = None) -> None:
        self._types = dict(types or {})
        self._validators: dict[str, Validator] = {}
        self._lock = threading.Lock()

    def __getitem__(self, name: str) -> TaskType:
        return self._types[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._types)

    def __len__(self) -> int:
        return len(self._types)

    def enabled(self) -> list[str]:
        """Names a client may submit: enabled and ready."""
        return sorted(n for n, t in self._types.items() if t.runnable)

    def validate_payload(self, name: str, payload: Any) -> list[dict[str, str]]:
        """Payload errors against the type's payloadSchema, each with its JSON pointer."""
        tasktype = self._types[name]
        if not tasktype.payload_schema:
            return []
        with self._lock:
            validator = self._validators.get(name)
            if validator is None:
                validator = payloadschema.validator(tasktype.payload_schema)
                self._validators[name] = validator
        try:
            found = payloadschema.iter_errors(validator, payload)
        except payloadschema.BudgetExceeded:
            limit = payloadschema.BUDGET_SECONDS
            return [{"pointer": "/payload", "message": f"validation took longer than its {limit:g} s budget"}]
        errors = sorted(found, key=lambda e: list(e.absolute_path))
        return [
            {
                "pointer": "/payload" + "".join(f"/{p}" for p in e.absolute_path),
                "message": e.message,
            }
            for e in errors
        ]

    def document(self) -> dict[str, Any]:
        return {
            "apiVersion": API_VERSION,
            "generatedAt": datetime.now(UTC).isoformat(timespec="seconds"),
            "taskTypes": [self._types[n].to_json() for n in sorted(self._types)],
        }

    @classmethod
    def from_document(cls, doc: Any) -> Registry:
        if not isinstance(doc, Mapping) or not isinstance(doc.get("taskTypes", []), list):
            raise ValueError("not a TaskType registry: expected an object with a taskTypes list")
        types = [_checked(TaskType.from_json(t)) for t in doc.get("taskTypes", [])]
        return cls({t.name: t for t in types})


def _checked(tasktype: TaskType) -> TaskType:
    """Mark a type whose payloadSchema is not a valid JSON Schema as not ready: validating
    payloads against it would fail every submit (the operator does the same check)."""
    if not tasktype.ready or tasktype.payload_schema is None:
        return tasktype
    problems = schema_errors(tasktype.payload_schema)
    if problems:
        return replace(tasktype, ready=False, reason="InvalidSchema", message="; ".join(problems))
    return tasktype


# The most starts a second one rate-limit bucket can keep: it is one DynamoDB item, written
# once per start, and an item takes at most 1000 writes a second.
MAX_RATE_PER_SECOND = 1000


def flow_problems(spec: Mapping[str, Any]) -> list[str]:
    """Flow-control settings that would not mean what they say. The rateLimit rule is the
    CRD's CEL rule restated (kmock and a CRD edited by hand enforce nothing); the concurrency
    ones only the operator (and ``load_manifests``, for ``make run``) check, since a CEL rule
    there would make TaskTypes stored while concurrency was an integer unwritable. A limit the
    registry would silently drop (a key without max) must not look applied.
    tests/k8s/test_operator_flow.py compares them with the CRD's rules."""
    problems = []
    concurrency = spec.get("concurrency")
    if isinstance(concurrency, dict):
        if concurrency.get("max") is None and concurrency.get("perWorker") is None:
            problems.append("spec.concurrency needs max (fleet-wide), perWorker, or both")
        if concurrency.get("key") is not None and concurrency.get("max") is None:
            problems.append(
                "spec.concurrency.key needs spec.concurrency.max (the limit applied per key value)"
            )
    rate = spec.get("rateLimit")
    if isinstance(rate, dict) and isinstance(rate.get("limit"), int | float):
        period = rate.get("period", 1)
        if isinstance(period, int | float) and rate["limit"] > MAX_RATE_PER_SECOND * period:
            problems.append(
                f"spec.rateLimit allows at most {MAX_RATE_PER_SECOND} starts a second"
                " (limit / period) per bucket"
            )
    return problems


def load_manifests(directory: Path) -> Registry:
    types: dict[str, TaskType] = {}
    for path in sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")]):
        for doc in yaml.safe_load_all(path.read_text()):
            if not isinstance(doc, dict) or doc.get("kind") != "TaskType":
                continue
            tasktype = _checked(TaskType.from_manifest(doc))
            problems = flow_problems(doc.get("spec") or {})
            if tasktype.ready and problems:
                # As the operator would: a limit that would not mean what it says is not applied.
                tasktype = replace(tasktype, ready=False, reason="InvalidSpec", message="; ".join(problems))
            types[tasktype.name] = tasktype
    return Registry(types)


def load(path: str | Path) -> Registry:
    """Read a registry from a ``tasktypes.json`` file, a directory holding one (a mounted
    ConfigMap), or a directory of TaskType YAML manifests."""
    p = Path(path)
    if p.is_dir():
        if (p / REGISTRY_FILE).exists():
            p = p / REGISTRY_FILE
        else:
            return load_manifests(p)
    if not p.exists():
        raise FileNotFoundError(f"no TaskType registry at {path}")
    if p.suffix in (".yaml", ".yml"):
        return _load_yaml_file(p)
    return Registry.from_document(json.loads(p.read_text()))


def _load_yaml_file(p: Path) -> Registry:
    types = [
        _checked(TaskType.from_manifest(d))
        for d in yaml.safe_load_all(p.read_text())
        if isinstance(d, dict) and d.get("kind") == "TaskType"
    ]
    return Registry({t.name: t for t in types})


def _signature(path: Path) -> tuple[Any, ...]:
    """What the registry path resolves to now; changes when kubelet swaps ``..data``."""
    targets = [path / REGISTRY_FILE] if (path / REGISTRY_FILE).exists() else [path]
    if path.is_dir() and not (path / REGISTRY_FILE).exists():
        targets = sorted([*path.glob("*.yaml"), *path.glob("*.yml")])
    return stat_signature(targets)


class RegistryWatcher(Watched[Registry]):
    """Serves the current registry, re-reading the source when it changes (see
    ``conveyor.watched``): a registry that fails to parse keeps the last good one in
    service and logs why."""

    def __init__(self, path: str | Path, interval: float = 1.0) -> None:
        self.path = Path(path)
        super().__init__(
            f"TaskType registry at {self.path}",
            load=lambda: load(self.path),
            signature=lambda: _signature(self.path),
            initial=Registry(),
            log=log,
            errors=(OSError, ValueError, KeyError, TypeError, yaml.YAMLError),
            describe=lambda registry: ", ".join(registry),
            interval=interval,
        )
