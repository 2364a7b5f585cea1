"""`conveyor run` is zero-config and never open: it makes a token, prints it, and keeps
it in .conveyor/token (0600) where the CLI and Client find it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import httpx

from conveyor import tokens
from conveyor.client import Client, default_token
from conveyor.local import local_token
from tests.conftest import ROOT, wait_for
from tests.support.servers import free_port


def test_local_token_is_private_hashed_and_reused(tmp_path):
    token, tokens_file = local_token(tmp_path)
    assert (tmp_path / "token").read_text().strip() == token
    for path in (tmp_path / "token", tokens_file):
        assert path.stat().st_mode & 0o777 == 0o600
    stored = json.loads(tokens_file.read_text())
    assert token not in tokens_file.read_text()
    assert stored["tokens"][0]["sha256"] == tokens.hash_token(token)
    assert set(stored["tokens"][0]["scopes"]) == set(tokens.SCOPES)
    assert local_token(tmp_path)[0] == token  # kept across runs
    (tmp_path / "tokens.json").write_text('{"tokens": []}')  # no longer accepted: replaced
    assert local_token(tmp_path)[0] != token


def test_conveyor_run_prints_a_token_that_works_and_the_client_finds_it(tmp_path, monkeypatch):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONVEYOR_", "AWS_"))}
    proc = subprocess.Popen(
        [sys.executable, "-m", "conveyor.cli", "run", "--port", str(port), "--moto-port", "0",
         "--worker-metrics-port", "0"],
        cwd=tmp_path, env={**env, "PYTHONPATH": str(ROOT), "CONVEYOR_POLL_WAIT_SECONDS": "1"},
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    lines: list[str] = []
    assert proc.stderr is not None
    # A thread drains the pipe (the children write to it too, so it must never fill up).
    threading.Thread(target=lambda: lines.extend(iter(proc.stderr.readline, "")), daemon=True).start()
    try:
        wait_for(lambda: any("Ctrl-C stops everything" in line for line in lines), timeout=60)
        banner = "".join(lines)
        token = (tmp_path / ".conveyor" / "token").read_text().strip()
        assert f"API token        {token}" in banner and f"Bearer {token}" in banner
        url = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{url}/v1/tasks").status_code == 401
        monkeypatch.chdir(tmp_path)
        monkeypatch.delenv("CONVEYOR_TOKEN", raising=False)
        monkeypatch.delenv("CONVEYOR_TOKEN_FILE", raising=False)
        assert default_token() == token
        with Client(url) as client:
            task = client.submit("echo", {"hello": "local"})
            assert client.wait(task["id"], timeout=30)["result"] == {"hello": "local"}
    finally:
        proc.terminate()
        proc.wait(30)
