"""`pip install conveyor` with no extras is the client: `conveyor.client` and the CLI's
client commands work, and none of the server, operator or handler libraries is there.

The project is built into a wheel and installed into a new venv with ``pip --no-index``
from a wheelhouse packed from this interpreter's installed distributions
(tests/support/wheelhouse.py), so pip resolves the base requirements for real, offline.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from conveyor.cli import SERVICE_EXTRAS
from tests.conftest import ROOT, TEST_TOKEN, make_settings
from tests.support import wheelhouse
from tests.support.engines import memory_engine
from tests.support.servers import ServerThread, free_port

# Each is the import name of a library only an extra installs.
NOT_IN_THE_BASE = ("boto3", "botocore", "kopf", "PIL", "starlette", "uvicorn", "moto", "yaml", "jsonschema")


class BareVenv:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.bin = root / "venv" / "bin"
        # A directory of its own: `python -c` puts the working directory on sys.path, and
        # the checkout's sources must not stand in for the installed wheel.
        self.cwd = root / "cwd"
        self.cwd.mkdir()

    def run(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        skip = ("CONVEYOR_", "PYTHON", "VIRTUAL_ENV")
        clean = {k: v for k, v in os.environ.items() if not k.startswith(skip)}
        clean["PATH"] = f"{self.bin}{os.pathsep}{clean.get('PATH', '')}"
        return subprocess.run(
            [str(self.bin / args[0]), *args[1:]],
            cwd=self.cwd,
            env={**clean, **env},
            capture_output=True,
            text=True,
            timeout=60,
        )


@pytest.fixture(scope="module")
def bare(tmp_path_factory: pytest.TempPathFactory) -> BareVenv:
    root = tmp_path_factory.mktemp("bare-install")
    started = time.monotonic()
    wheel = wheelhouse.make(root / "wheels", root / "scratch")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root / "venv")], check=True)
    # This interpreter's pip installs into the new venv (--python), which needs no pip of its own.
    pip = [sys.executable, "-m", "pip", "--python", str(root / "venv" / "bin" / "python")]
    installed = subprocess.run(
        [*pip, "install", "-q", "--no-index", "--find-links", str(root / "wheels"), str(wheel)],
        env=wheelhouse.isolated_pip_env(),
        capture_output=True,
        text=True,
    )
    assert installed.returncode == 0, installed.stderr
    print(f"bare install: {time.monotonic() - started:.1f} s")
    return BareVenv(root)


@pytest.fixture
def api_url() -> Iterator[str]:
    settings = make_settings(rate_limit="off")
    engine = memory_engine(settings)
    from api.app import create_app

    with ServerThread(create_app(engine, CollectorRegistry())) as server:
        yield server.url


def test_the_client_imports_without_any_server_library(bare: BareVenv) -> None:
    probe = (
        "import importlib.util, json, conveyor.client, conveyor.cli, conveyor.tokens;"
        f"print(json.dumps([m for m in {NOT_IN_THE_BASE!r} if importlib.util.find_spec(m)]))"
    )
    out = bare.run("python", "-c", probe)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == []


def test_help_lists_the_client_commands(bare: BareVenv) -> None:
    out = bare.run("conveyor", "--help")
    assert out.returncode == 0, out.stderr
    for command in ("submit", "get", "list", "cancel", "retry", "stats", "schedules", "token"):
        assert f"  {command} " in out.stdout, command


def test_client_commands_against_a_real_api(bare: BareVenv, api_url: str) -> None:
    auth = {"CONVEYOR_URL": api_url, "CONVEYOR_TOKEN": TEST_TOKEN}
    submitted = bare.run("conveyor", "submit", "text-transform", '{"text": "bare"}', **auth)
    assert submitted.returncode == 0, submitted.stderr
    task = json.loads(submitted.stdout)
    assert task["type"] == "text-transform" and task["status"] == "queued"
    got = bare.run("conveyor", "get", task["id"], **auth)
    assert got.returncode == 0 and json.loads(got.stdout)["id"] == task["id"]
    listed = bare.run("conveyor", "list", **auth)
    assert listed.returncode == 0 and task["id"] in listed.stdout
    refused = bare.run("conveyor", "get", task["id"], CONVEYOR_URL=api_url, CONVEYOR_TOKEN="wrong")
    assert refused.returncode == 1 and "error 401" in refused.stderr


def test_an_unreachable_api_is_a_clear_error(bare: BareVenv) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    out = bare.run("conveyor", "stats", "--url", url)
    assert out.returncode == 1
    assert f"cannot reach the API at {url}" in out.stderr and "Traceback" not in out.stderr


def test_token_create_needs_no_extra(bare: BareVenv) -> None:
    out = bare.run("conveyor", "token", "create", "--name", "ci", "--scopes", "tasks:submit")
    assert out.returncode == 0, out.stderr
    secret, entry = out.stdout.splitlines()
    assert json.loads(entry)["scopes"] == ["tasks:submit"] and len(secret) >= 43


@pytest.mark.parametrize(
    ("command", "extras"),
    [
        (["run"], "local"),
        (["init"], "server"),
        (["api"], "server"),
        (["worker"], "server,handlers"),
    ],
)
def test_a_server_command_names_the_extra_to_install(bare: BareVenv, command: list[str], extras: str) -> None:
    out = bare.run("conveyor", *command)
    assert out.returncode == 1
    assert f"pip install 'conveyor[{extras}]'" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr


def test_the_image_installs_the_extras_of_what_it_runs() -> None:
    """The image runs the api, the worker, `conveyor init` and the operator, never `run`."""
    (extras,) = re.findall(r"pip install [^\n]*\.\[([a-z,]+)\]", (ROOT / "Dockerfile").read_text())
    needed = {"operator", *SERVICE_EXTRAS["api"], *SERVICE_EXTRAS["worker"], *SERVICE_EXTRAS["init"]}
    assert set(extras.split(",")) == needed


def test_every_extra_a_command_names_is_declared() -> None:
    """An undeclared extra has no requirements, so its check would always pass."""
    import tomllib

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    named = {extra for extras in SERVICE_EXTRAS.values() for extra in extras}
    assert named <= set(declared)
