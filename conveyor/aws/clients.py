"""The translation of AWS failures: outages and throttling become ``Unavailable``."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any, ParamSpec, TypeVar

from botocore.exceptions import BotoCoreError, ClientError, ConnectionError

from conveyor.errors import Unavailable

# Refusals for capacity: the service is up, the caller (or one key) is over its rate.
CAPACITY = {
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottled",
    "RequestThrottledException",
    "ProvisionedThroughputExceededException",
    "RequestLimitExceeded",
    "TooManyRequestsException",
    "SlowDown",
}
THROTTLING = CAPACITY | {
    "ServiceUnavailable",
    "InternalError",
    "InternalFailure",
    "InternalServerError",
}

P = ParamSpec("P")
R = TypeVar("R")


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return error_code(exc) in THROTTLING or int(status or 0) >= 500
    return isinstance(exc, BotoCoreError | ConnectionError | OSError)


@contextlib.contextmanager
def translated(what: str) -> Iterator[None]:
    """Turn an outage or throttling into ``Unavailable`` (the API's 503 + Retry-After)."""
    try:
        yield
    except ClientError as exc:
        if is_transient(exc):
            raise Unavailable(f"{what}: {error_code(exc) or 'server error'}", 2) from exc
        raise
    except (BotoCoreError, OSError) as exc:
        raise Unavailable(f"{what}: {type(exc).__name__}", 2) from exc


def throttle_reason(parsed: dict[str, Any]) -> str | None:
    """Why an AWS answer refused a call for capacity (None: it did not): DynamoDB's first
    throttling reason when it names one (``IndexWriteKeyRangeThroughputExceeded``: one
    index key past its write rate), else the error code."""
    code = parsed.get("Error", {}).get("Code")
    if code not in CAPACITY:
        return None
    reasons = parsed.get("throttlingReasons") or []  # the member of DynamoDB's error shapes
    first = reasons[0] if reasons and isinstance(reasons[0], dict) else {}
    return str(first.get("reason") or code)


def count_throttles(client: Any, count: Callable[[str, str, str], None]) -> None:
    """Call ``count(service, operation, reason)`` for each answer of ``client`` that refuses
    a call for capacity, every attempt included: botocore retries throttled calls quietly,
    and this is where a table or index running out of write rate shows before any fails."""
    service = str(client.meta.service_model.service_name)

    def on_answer(response: Any = None, operation: Any = None, **_: Any) -> None:
        if response is None or operation is None:
            return  # a connection error: no answer to read
        reason = throttle_reason(response[1])
        if reason is not None:
            count(service, str(operation.name), reason)

    # needs-retry is emitted once per attempt's answer; returning None leaves the decision
    # to botocore's retry handler.
    client.meta.events.register("needs-retry", on_answer)
