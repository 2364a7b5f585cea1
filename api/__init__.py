"""The Conveyor HTTP API (Starlette)."""
