"""The translation of AWS failures: outages and throttling become ``Unavailable``."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import ParamSpec, TypeVar

from botocore.exceptions import BotoCoreError, ClientError, ConnectionError

from conveyor.errors import Unavailable

THROTTLING = {
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottled",
    "ProvisionedThroughputExceededException",
    "RequestLimitExceeded",
    "TooManyRequestsException",
    "SlowDown",
    "ServiceUnavailable",
    "InternalError",
    "InternalFailure",
    "InternalServerError",
    "RequestThrottledException",
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
