"""The Conveyor worker: consumes SQS, claims tasks in DynamoDB, runs their handlers."""
