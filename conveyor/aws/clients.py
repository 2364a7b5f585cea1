"""boto3 clients built once per process, and the translation of AWS failures."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, ParamSpec, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, ConnectionError

from conveyor.errors import Unavailable
from conveyor.ports import BlobStore, Broker, TaskStore
from conveyor.settings import Settings

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


class AwsBackend:
    """The boto3 clients and the adapters over them, for one set of settings."""

    def __init__(self, settings: Settings, max_pool: int = 50) -> None:
        self.settings = settings
        config = Config(
            region_name=settings.region,
            retries={"mode": "standard", "max_attempts": 3},
            max_pool_connections=max_pool,
            connect_timeout=3,
            # Long polls wait 20 s server-side; the read timeout must outlast them.
            read_timeout=max(settings.poll_wait_seconds + 10, 30),
            tcp_keepalive=True,
        )
        self.session = boto3.session.Session(region_name=settings.region)
        self.sqs = self.session.client("sqs", config=config)
        self.dynamodb = self.session.client("dynamodb", config=config)
        self._s3: Any = None
        self._config = config
        self._queue_urls: dict[str, str] = {}

    @property
    def s3(self) -> Any:
        if self._s3 is None:
            self._s3 = self.session.client(
                "s3", config=self._config.merge(Config(s3={"addressing_style": "path"}))
            )
        return self._s3

    def queue_url(self, name_or_url: str) -> str:
        if name_or_url.startswith(("https://", "http://")):
            return name_or_url
        if name_or_url not in self._queue_urls:
            with translated("sqs GetQueueUrl"):
                url = self.sqs.get_queue_url(QueueName=name_or_url)["QueueUrl"]
            self._queue_urls[name_or_url] = url
        return self._queue_urls[name_or_url]

    def store(self) -> TaskStore:
        from conveyor.aws.dynamodb import DynamoTaskStore

        return DynamoTaskStore(self.dynamodb, self.settings.table, self.settings.retention_seconds)

    def broker(self) -> Broker:
        from conveyor.aws.sqs import SqsBroker

        return SqsBroker(self.sqs, lambda: self.queue_url(self.settings.queue))

    def dead_letters(self) -> Broker:
        from conveyor.aws.sqs import SqsBroker

        return SqsBroker(self.sqs, lambda: self.queue_url(self.settings.dlq))

    def blobs(self, bucket: str | None = None) -> BlobStore:
        from conveyor.aws.s3 import S3BlobStore

        return S3BlobStore(self.s3, bucket or self.settings.bucket)
