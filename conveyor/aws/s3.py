"""Object storage on S3, for handlers that read and write files."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from conveyor.aws.clients import error_code, translated
from conveyor.errors import NotFound


class S3BlobStore:
    def __init__(self, client: Any, bucket: str) -> None:
        self.client = client
        self.bucket = bucket

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        try:
            with translated("s3 PutObject"):
                self.client.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=content_type)
        except ClientError as exc:
            if error_code(exc) == "NoSuchBucket":
                raise NotFound(f"s3://{self.bucket}") from exc
            raise

    def get(self, key: str) -> bytes:
        try:
            with translated("s3 GetObject"):
                return bytes(self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read())
        except ClientError as exc:
            if error_code(exc) in ("NoSuchKey", "404", "NoSuchBucket"):
                raise NotFound(f"s3://{self.bucket}/{key}") from exc
            raise

    def exists(self, key: str) -> bool:
        try:
            with translated("s3 HeadObject"):
                self.client.head_object(Bucket=self.bucket, Key=key)
            return True
        except ClientError as exc:
            if error_code(exc) in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
