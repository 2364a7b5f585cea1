"""Conveyor: a task queue for Kubernetes on AWS (SQS + DynamoDB)."""

__version__ = "0.1.0"
