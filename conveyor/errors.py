"""Errors shared by the engine, the API and the workers."""

from __future__ import annotations


class ConveyorError(Exception):
    """Base of every error Conveyor raises on purpose."""


class NotFound(ConveyorError):
    pass


class Conflict(ConveyorError):
    """A state change that the task's current state does not allow (409)."""


class IdempotencyConflict(Conflict):
    pass


class Duplicate(Conflict):
    """A unique key held by an active task: ``existing`` is that task's id."""

    def __init__(self, message: str, existing: str) -> None:
        super().__init__(message)
        self.existing = existing


class Unavailable(ConveyorError):
    """The backend (SQS, DynamoDB, S3) is unreachable or throttling: try again later."""

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ValidationError(ConveyorError):
    """Input that breaks a rule; ``errors`` holds {pointer, message} items for problem+json."""

    def __init__(self, message: str, errors: list[dict[str, str]] | None = None) -> None:
        super().__init__(message)
        self.errors = errors or []


class InvalidCursor(ValidationError):
    """A list cursor this API did not hand out (400): refused before it reaches the store."""

    def __init__(self) -> None:
        super().__init__(
            "cursor is not one this API returned for this list",
            [
                {
                    "pointer": "/query/cursor",
                    "message": "pass back next_cursor unchanged, with the same filters",
                }
            ],
        )


class RecordTooLarge(ConveyorError):
    """The store refused a write for its size (DynamoDB's 400 KB item limit)."""


class RetryableError(ConveyorError):
    """Raised by a handler: this attempt failed, a later one may succeed."""


class PermanentError(ConveyorError):
    """Raised by a handler: no attempt can succeed, fail the task now."""


class TaskCancelled(ConveyorError):
    """Raised inside a handler (by ``ctx.raise_if_cancelled()``) when cancel was requested."""
