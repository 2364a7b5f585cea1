"""The API's one write to the Kubernetes API: a TaskSchedule's firing status.

The operator owns a TaskSchedule's ``Ready`` condition; the firing loop (in the API) owns
what only it knows: ``lastScheduleTime``, ``nextScheduleTime``, ``lastTaskId`` and
``lastTaskStatus``, so that ``kubectl get ts`` shows them. This module is its status sink:
one JSON merge patch of the ``status`` subresource per call, with the pod's own
service-account token, which the chart's Role allows to ``patch`` ``taskschedules/status``
and nothing else.

A status write is a convenience, never part of firing: every failure is logged, at most
once a minute per kind of failure, and swallowed. Each call blocks for at most ``timeout``
seconds; call it from a thread (``asyncio.to_thread``), not on the event loop.
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

import httpx

log = logging.getLogger("conveyor.kube")

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
GROUP_VERSION = "conveyor.dev/v1alpha1"
# The status fields the firing loop owns; anything else (conditions) is the operator's.
STATUS_FIELDS = frozenset({"lastScheduleTime", "nextScheduleTime", "lastTaskId", "lastTaskStatus"})
LOG_EVERY_SECONDS = 60.0


class Named(Protocol):
    """What a status write needs of a schedule (conveyor.schedule.ScheduleSpec has it)."""

    @property
    def name(self) -> str: ...

    @property
    def namespace(self) -> str: ...


class KubeStatusWriter:
    """Patches ``/apis/conveyor.dev/v1alpha1/namespaces/{ns}/taskschedules/{name}/status``."""

    def __init__(
        self,
        server: str,
        token_file: Path,
        ca_file: Path | None = None,
        timeout: float = 3.0,
    ) -> None:
        self.server = server.rstrip("/")
        self.token_file = token_file
        self.ca_file = ca_file
        self.timeout = timeout
        self.patched = 0
        self.failed = 0
        self._client: httpx.Client | None = None
        self._lock = threading.Lock()
        self._logged: dict[str, float] = {}

    @classmethod
    def from_environment(
        cls, environ: Mapping[str, str] | None = None, account: Path = SERVICE_ACCOUNT
    ) -> KubeStatusWriter | None:
        """The in-cluster writer, or None: outside a cluster (no ``KUBERNETES_SERVICE_HOST``),
        or in a pod without a mounted token (the chart's ``schedules.statusUpdates: false``)."""
        env = os.environ if environ is None else environ
        host = env.get("KUBERNETES_SERVICE_HOST")
        if not host:
            return None
        token = account / "token"
        if not token.is_file():
            log.info("no service-account token at %s: TaskSchedule status is not written", token)
            return None
        port = env.get("KUBERNETES_SERVICE_PORT") or "443"
        authority = f"[{host}]" if ":" in host else host  # an IPv6 service address
        ca = account / "ca.crt"
        return cls(f"https://{authority}:{port}", token, ca if ca.is_file() else None)

    def patch_schedule_status(self, spec: Named, fields: Mapping[str, Any]) -> None:
        """Merge ``fields`` (camelCase, of STATUS_FIELDS) into the schedule's status; a None
        value removes its field (JSON merge patch). Never raises."""
        status = {k: v for k, v in fields.items() if k in STATUS_FIELDS}
        ignored = sorted(set(fields) - STATUS_FIELDS)
        if ignored:
            self._log("fields", "not writing status fields the firing loop does not own: %s", ignored)
        if not status:
            return
        path = (
            f"/apis/{GROUP_VERSION}/namespaces/{quote(spec.namespace, safe='')}"
            f"/taskschedules/{quote(spec.name, safe='')}/status"
        )
        try:
            # Re-read per call: kubelet rotates the projected token in place.
            token = self.token_file.read_text().strip()
            response = self._http().patch(
                path,
                json={"status": status},
                headers={
                    "Authorization": f"Bearer {token}",
                    "Content-Type": "application/merge-patch+json",
                    "Accept": "application/json",
                },
            )
        except (OSError, httpx.HTTPError, ssl.SSLError) as exc:
            self.failed += 1
            self._log(
                "transport",
                "writing TaskSchedule %s/%s status failed: %s: %s",
                spec.namespace,
                spec.name,
                type(exc).__name__,
                exc,
            )
            return
        if response.status_code >= 300:
            self.failed += 1
            self._log(
                str(response.status_code),
                "writing TaskSchedule %s/%s status failed: HTTP %s %s",
                spec.namespace,
                spec.name,
                response.status_code,
                response.text[:200],
            )
            return
        self.patched += 1

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    def _http(self) -> httpx.Client:
        with self._lock:
            if self._client is None:
                verify: ssl.SSLContext | bool = (
                    ssl.create_default_context(cafile=str(self.ca_file)) if self.ca_file else True
                )
                self._client = httpx.Client(
                    base_url=self.server,
                    verify=verify,
                    timeout=self.timeout,
                    trust_env=False,  # the API server is reached directly, never through a proxy
                )
            return self._client

    def _log(self, kind: str, message: str, *args: Any) -> None:
        """A warning at most once a minute per kind: one per schedule per tick would flood."""
        now = time.monotonic()
        if now - self._logged.get(kind, -LOG_EVERY_SECONDS) >= LOG_EVERY_SECONDS:
            self._logged[kind] = now
            log.warning(message, *args)
        else:
            log.debug(message, *args)
