"""AWS adapters: the only package that imports boto3 (enforced by import-linter)."""

from conveyor.aws.backend import AwsBackend

__all__ = ["AwsBackend"]
