"""`conveyor token create`: a token, printed once, and the tokens-file entry the API accepts."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from prometheus_client import CollectorRegistry
from starlette.testclient import TestClient

from api.app import create_app
from conveyor import tokens
from conveyor.cli import main
from tests.conftest import make_settings
from tests.support.engines import memory_engine


def create(*args: str) -> Result:
    return CliRunner().invoke(main, ["token", "create", *args])


def test_prints_the_token_once_and_its_entry():
    out = create("--name", "ci", "--scopes", "tasks:submit,tasks:read")
    assert out.exit_code == 0, out.output
    token, line = out.stdout.splitlines()
    entry = json.loads(line)
    assert entry == {
        "name": "ci",
        "sha256": hashlib.sha256(token.encode()).hexdigest(),
        "scopes": ["tasks:read", "tasks:submit"],
    }
    assert len(token) >= 43  # 32 random bytes, urlsafe base64
    assert out.output.count(token) == 1  # stdout and stderr together: shown once
    assert "not shown again" in out.stderr
    # Two runs, two tokens.
    again = create("--name", "ci", "--scopes", "tasks:read")
    assert again.stdout.splitlines()[0] != token


def test_the_entry_works_in_the_api(tmp_path: Path):
    """Put the entry in a tokens file as the chart's Secret would: the token gets exactly
    its scopes from the real auth layer."""
    out = create("--name", "reader", "--scopes", " tasks:read ,tasks:read")
    token, line = out.stdout.splitlines()
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps({"tokens": [json.loads(line)]}))
    assert tokens.load(path).find(token) is not None
    settings = make_settings(auth_tokens_file=str(path), maintenance_enabled=False)
    engine = memory_engine(settings, visibility_timeout=30)
    with TestClient(create_app(engine, CollectorRegistry())) as client:
        bearer = {"Authorization": f"Bearer {token}"}
        assert client.get("/v1/tasks", headers=bearer).status_code == 200
        denied = client.post("/v1/tasks", json={"type": "echo", "payload": {}}, headers=bearer)
        assert denied.status_code == 403 and denied.json()["required_scope"] == "tasks:submit"
        assert client.get("/v1/tasks", headers={"Authorization": "Bearer nope"}).status_code == 401


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--name", "ci", "--scopes", "tasks:submit,tasks:write"],
            "unknown scope 'tasks:write'; the scopes are: tasks:submit, tasks:read, tasks:admin",
        ),
        (["--name", "ci", "--scopes", "admin"], "unknown scope 'admin'"),
        (["--name", "ci", "--scopes", " , "], "name at least one of: tasks:submit, tasks:read, tasks:admin"),
        (["--name", "ci"], "Missing option '--scopes'"),
        (["--scopes", "tasks:read"], "Missing option '--name'"),
        (["--name", "two words", "--scopes", "tasks:read"], "'--name': 1-64 characters"),
        (["--name", "x" * 65, "--scopes", "tasks:read"], "'--name': 1-64 characters"),
    ],
)
def test_bad_input_is_a_clear_error_and_no_token(args, message):
    out = create(*args)
    assert out.exit_code == 2
    assert message in out.stderr
    assert out.stdout == ""  # no token made for a request that was refused
    assert "Traceback" not in out.output
