"""Object storage on S3, for handlers that read and write files."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from conveyor.aws.clients import error_code, translated
from conveyor.errors import Conflict, NotFound
from conveyor.ports import BlobInfo

if TYPE_CHECKING:
    from types_boto3_s3 import S3Client
    from types_boto3_s3.type_defs import CompletedPartTypeDef

MISSING = ("NoSuchKey", "404", "NotFound", "NoSuchBucket")
# S3's answer to If-None-Match: * on an existing key (412), or to a concurrent write of the
# same key that is still in flight (409).
EXISTS = ("PreconditionFailed", "412", "ConditionalRequestConflict")
PART_SIZE = 8 * 1024 * 1024  # S3's parts are 5 MiB at least (but the last)


class S3BlobStore:
    def __init__(self, client: S3Client, bucket: str) -> None:
        self.client = client
        self.bucket = bucket

    def _where(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def _put_args(self, key: str, content_type: str, overwrite: bool, metadata: dict[str, str] | None) -> Any:
        args: dict[str, Any] = {"Bucket": self.bucket, "Key": key, "ContentType": content_type}
        if metadata:
            args["Metadata"] = metadata
        if not overwrite:
            args["IfNoneMatch"] = "*"  # S3 itself refuses an existing key: no check-then-write race
        return args

    def _refusal(self, exc: ClientError, key: str) -> Exception | None:
        code = error_code(exc)
        if code == "NoSuchBucket":
            return NotFound(f"s3://{self.bucket}")
        if code in EXISTS:
            return Conflict(f"{self._where(key)} exists")
        return None

    def put(
        self,
        key: str,
        data: bytes,
        content_type: str = "application/octet-stream",
        *,
        overwrite: bool = True,
        metadata: dict[str, str] | None = None,
    ) -> None:
        try:
            with translated("s3 PutObject"):
                self.client.put_object(Body=data, **self._put_args(key, content_type, overwrite, metadata))
        except ClientError as exc:
            raise (self._refusal(exc, key) or exc) from exc

    def upload(
        self,
        key: str,
        chunks: Iterable[bytes],
        content_type: str = "application/octet-stream",
        *,
        overwrite: bool = True,
        metadata: dict[str, str] | None = None,
        part_size: int = PART_SIZE,
    ) -> int:
        """Write an object from a stream of chunks holding at most one part in memory: one
        PutObject when it fits in a part, else a multipart upload (aborted on any failure).
        Returns the bytes written."""
        part_size = max(part_size, 5 * 1024 * 1024)
        buffer = bytearray()
        stream = iter(chunks)
        for chunk in stream:
            buffer += chunk
            if len(buffer) > part_size:
                break
        else:
            self.put(key, bytes(buffer), content_type, overwrite=overwrite, metadata=metadata)
            return len(buffer)
        args = self._put_args(key, content_type, overwrite, metadata)
        condition = args.pop("IfNoneMatch", None)
        try:
            with translated("s3 CreateMultipartUpload"):
                upload_id = self.client.create_multipart_upload(**args)["UploadId"]
        except ClientError as exc:
            raise (self._refusal(exc, key) or exc) from exc
        parts: list[CompletedPartTypeDef] = []
        total = 0

        def send(body: bytes) -> None:
            nonlocal total
            with translated("s3 UploadPart"):
                answer = self.client.upload_part(
                    Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=len(parts) + 1, Body=body
                )
            parts.append({"ETag": answer["ETag"], "PartNumber": len(parts) + 1})
            total += len(body)

        try:
            # The buffer already holds more than a part; what the stream adds joins it.
            for chunk in itertools.chain((b"",), stream):
                buffer += chunk
                while len(buffer) > part_size:
                    send(bytes(memoryview(buffer)[:part_size]))  # one copy, not two
                    del buffer[:part_size]
            send(bytes(buffer))  # the last part: 1 to part_size bytes, never empty
            buffer.clear()
            complete: dict[str, Any] = {"IfNoneMatch": condition} if condition else {}
            with translated("s3 CompleteMultipartUpload"):
                self.client.complete_multipart_upload(
                    Bucket=self.bucket,
                    Key=key,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": parts},
                    **complete,
                )
        except BaseException as exc:
            # An unfinished upload keeps its parts (billed) until aborted.
            with contextlib.suppress(Exception):  # the original failure is the one to report
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
            if isinstance(exc, ClientError):
                raise (self._refusal(exc, key) or exc) from exc
            raise
        return total

    def get(self, key: str, max_bytes: int | None = None) -> bytes:
        """The object; with ``max_bytes``, at most ``max_bytes + 1`` bytes of it are read (a
        ranged GET), so a caller can tell an object over its limit without loading it."""
        ranged: dict[str, Any] = {"Range": f"bytes=0-{max_bytes}"} if max_bytes is not None else {}
        try:
            with translated("s3 GetObject"):
                answer = self.client.get_object(Bucket=self.bucket, Key=key, **ranged)
                # Closed even when the read fails, so the pooled connection is not left half-read.
                with contextlib.closing(answer["Body"]) as body:
                    return bytes(body.read(max_bytes + 1) if max_bytes is not None else body.read())
        except ClientError as exc:
            if error_code(exc) in MISSING:
                raise NotFound(self._where(key)) from exc
            if error_code(exc) == "InvalidRange":  # a ranged GET of an empty object
                return b""
            raise

    def stat(self, key: str) -> BlobInfo | None:
        """Size and user metadata of an object (HeadObject); None when it does not exist."""
        try:
            with translated("s3 HeadObject"):
                head = self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            # Without s3:ListBucket, S3 answers a HEAD of a missing key with 403, not 404.
            if error_code(exc) in (*MISSING, "403", "AccessDenied", "Forbidden"):
                return None
            raise
        # User metadata travels as x-amz-meta-* headers: its names are case-insensitive.
        metadata = {str(k).lower(): str(v) for k, v in (head.get("Metadata") or {}).items()}
        return BlobInfo(size=int(head.get("ContentLength", 0)), metadata=metadata)

    def exists(self, key: str) -> bool:
        return self.stat(key) is not None
