"""Docs stay true: every setting is in the README's configuration table."""

from __future__ import annotations

from dataclasses import fields

from conveyor.settings import Settings
from tests.conftest import ROOT


def test_every_setting_is_documented():
    readme = (ROOT / "README.md").read_text()
    missing = [f.name for f in fields(Settings) if f"CONVEYOR_{f.name.upper()}" not in readme]
    assert not missing, f"add these to the README configuration table: {missing}"


def test_settings_read_from_the_environment(monkeypatch):
    monkeypatch.setenv("CONVEYOR_WORKER_CONCURRENCY", "3")
    monkeypatch.setenv("CONVEYOR_SHUTDOWN_GRACE_SECONDS", "1.5")
    monkeypatch.setenv("CONVEYOR_QUEUE", "https://sqs.eu-west-1.amazonaws.com/1/q")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")
    s = Settings.from_env()
    assert (s.worker_concurrency, s.shutdown_grace_seconds, s.region) == (3, 1.5, "eu-west-1")
    assert s.queue.endswith("/q")
