"""The boto3 clients, built once per process, and the adapters over them."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import boto3
from botocore.config import Config

from conveyor.aws import clients
from conveyor.aws.clients import translated
from conveyor.aws.dynamodb import DynamoTaskStore, DynamoWorkerRegistry
from conveyor.aws.limits import DynamoFlowLimits
from conveyor.aws.s3 import S3BlobStore
from conveyor.aws.sqs import SqsBroker
from conveyor.model import PRIORITIES, Priority
from conveyor.ports import BlobStore, Broker, FlowLimits, TaskStore, WorkerRegistry
from conveyor.settings import Settings

if TYPE_CHECKING:
    from types_boto3_dynamodb import DynamoDBClient
    from types_boto3_s3 import S3Client
    from types_boto3_sqs import SQSClient


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
            # Our own code builds every request; checking each against the service model
            # again costs about a tenth of botocore's CPU per call (docs/BENCHMARKS.md).
            # AWS still validates every request, and its refusals arrive as ClientErrors.
            parameter_validation=False,
        )
        self.session = boto3.session.Session(region_name=settings.region)
        self.sqs: SQSClient = self.session.client("sqs", config=config)
        self.dynamodb: DynamoDBClient = self.session.client("dynamodb", config=config)
        self._s3: S3Client | None = None
        self._config = config
        self._queue_urls: dict[str, str] = {}
        self._observers: list[Callable[[str, str, str], None]] = []

    def count_throttles(self, count: Callable[[str, str, str], None]) -> None:
        """Call ``count(service, operation, reason)`` for every throttled answer, each
        attempt, of every client of this backend (conveyor/aws/clients.py)."""
        self._observers.append(count)
        for client in (self.sqs, self.dynamodb, self._s3):
            if client is not None:
                clients.count_throttles(client, count)

    @property
    def s3(self) -> S3Client:
        if self._s3 is None:
            self._s3 = self.session.client(
                "s3", config=self._config.merge(Config(s3={"addressing_style": "path"}))
            )
            for count in self._observers:
                clients.count_throttles(self._s3, count)
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
        return DynamoTaskStore(
            self.dynamodb,
            self.settings.table,
            self.settings.retention_seconds,
            status_shards=self.settings.status_shards,
        )

    def workers(self) -> WorkerRegistry:
        return DynamoWorkerRegistry(self.dynamodb, self.settings.table)

    def limits(self) -> FlowLimits:
        return DynamoFlowLimits(self.dynamodb, self.settings.table)

    def broker(self, priority: Priority = Priority.NORMAL) -> Broker:
        queue = self.settings.queue_of(priority)
        return SqsBroker(self.sqs, lambda: self.queue_url(queue), priority)

    def lanes(self) -> dict[Priority, Broker]:
        """One broker per priority level, each on its own queue."""
        return {p: self.broker(p) for p in PRIORITIES}

    def dead_letters(self) -> Broker:
        return SqsBroker(self.sqs, lambda: self.queue_url(self.settings.dlq))

    def blobs(self, bucket: str | None = None) -> BlobStore:
        return S3BlobStore(self.s3, bucket or self.settings.bucket)
