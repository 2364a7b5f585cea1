"""Apps with tokens of every scope combination, from a real hashed tokens file."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from starlette.testclient import TestClient

from conveyor import tokens
from conveyor.aws import AwsBackend
from conveyor.aws.provision import provision
from conveyor.bootstrap import build
from conveyor.local import MotoServer
from conveyor.settings import Settings
from tests.conftest import make_settings

# name -> scopes; each gets a fresh random token per test
TOKEN_SCOPES = {
    "submitter": [tokens.SUBMIT],
    "reader": [tokens.READ],
    "admin": [tokens.ADMIN],
    "metadata": [tokens.READ_METADATA],
    "all": list(tokens.SCOPES),
    "other": list(tokens.SCOPES),
}


class Tokens(dict[str, str]):
    """name -> plaintext token, and the file that holds their hashes."""

    def __init__(self, path: Path, scopes: dict[str, list[str]]) -> None:
        super().__init__({name: tokens.generate_token() for name in scopes})
        self.path = path
        self.write(scopes)

    def write(self, scopes: dict[str, list[str]]) -> None:
        entries = [
            tokens.TokenEntry(name, tokens.hash_token(self[name]), frozenset(s)) for name, s in scopes.items()
        ]
        tokens.write_tokens_file(self.path, tokens.TokenSet(entries))

    def headers(self, name: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self[name]}"}


@pytest.fixture
def auth_tokens(tmp_path: Path) -> Tokens:
    return Tokens(tmp_path / "tokens.json", TOKEN_SCOPES)


@pytest.fixture(scope="module")
def shared_aws(moto_server: MotoServer) -> Settings:
    """One queue/table/bucket for a module: what these tests vary (tokens, limits, auth
    switches) lives in the API, so fresh AWS resources per test would only cost time."""
    settings = make_settings()
    provision(AwsBackend(settings))
    return settings


@pytest.fixture
def secured(shared_aws: Settings, auth_tokens: Tokens) -> Iterator[Callable[..., TestClient]]:
    """``secured(**settings)``: a TestClient (no token by default) over a real app whose
    tokens file is ``auth_tokens.path``."""
    clients: list[TestClient] = []

    def make(**overrides: Any) -> TestClient:
        overrides.setdefault("auth_tokens_file", str(auth_tokens.path))
        from api.app import create_app

        runtime = build(replace(shared_aws, **overrides))
        client = TestClient(create_app(runtime.engine, CollectorRegistry()), raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)
