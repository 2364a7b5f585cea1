"""``conveyor run``: the whole system on one machine, on an embedded moto server.

moto runs as its own process (it is several times faster than in a thread), speaking
real HTTP on 127.0.0.1; the API and one worker run as child processes configured only
through the environment, exactly as they are in a cluster.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

STATE_DIR = Path(".conveyor")  # gitignored; the CLI and Client read .conveyor/token

LOCAL_AWS = {
    "AWS_ACCESS_KEY_ID": "conveyor-local",
    "AWS_SECRET_ACCESS_KEY": "conveyor-local",
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 30.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process for {url} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return  # it answered
        except (urllib.error.URLError, OSError):
            time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout}s")


def stop_process(proc: subprocess.Popen[bytes] | None, grace: float = 5.0) -> None:
    """SIGTERM, then SIGKILL if it is still there after ``grace`` seconds."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@dataclass
class MotoServer:
    """A moto server process on loopback."""

    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    log: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> MotoServer:
        self.port = self.port or free_port()
        out = open(self.log, "ab") if self.log else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "conveyor.moto_server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **LOCAL_AWS},
            # Its own session: Ctrl-C reaches the services first, which then finish
            # talking to it before it is stopped last.
            start_new_session=True,
        )
        wait_http(self.url + "/moto-api/", proc=self.proc)
        return self

    def stop(self) -> None:
        stop_process(self.proc)

    def env(self) -> dict[str, str]:
        return {**LOCAL_AWS, "AWS_ENDPOINT_URL": self.url}


def local_token(state_dir: Path = STATE_DIR) -> tuple[str, Path]:
    """The local stack's all-scopes token: reuse ``state_dir/token`` when the tokens file
    still accepts it, else make a new one. Both files are written with mode 0600; the
    tokens file holds only the hash. Returns (token, tokens file)."""
    from conveyor import tokens

    token_path, tokens_path = state_dir / "token", state_dir / "tokens.json"
    token = token_path.read_text().strip() if token_path.exists() else ""
    if token and tokens_path.exists():
        try:
            if tokens.load(tokens_path).find(token) is not None:
                return token, tokens_path.resolve()
        except (OSError, ValueError):
            pass  # unreadable: replaced below
    token = tokens.generate_token()
    entry = tokens.TokenEntry("local", tokens.hash_token(token), frozenset(tokens.SCOPES))
    tokens.write_tokens_file(tokens_path, tokens.TokenSet([entry]))
    tokens.write_private(token_path, token + "\n")
    return token, tokens_path.resolve()


def find_examples() -> Path:
    """k8s/examples of the checkout (or CONVEYOR_TASKTYPES when set)."""
    for base in (Path.cwd(), Path(__file__).resolve().parents[1]):
        candidate = base / "k8s" / "examples"
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        "k8s/examples not found: run from the Conveyor checkout or set CONVEYOR_TASKTYPES"
    )


@dataclass
class LocalStack:
    api_port: int = 8000
    moto_port: int = 0
    worker_metrics_port: int = 9100
    workers: int = 1
    extra_env: dict[str, str] = field(default_factory=dict)
    children: list[subprocess.Popen[bytes]] = field(default_factory=list)
    moto: MotoServer | None = None
    state_dir: Path = STATE_DIR
    token: str | None = None  # the API token, unless auth is off or tokens come from elsewhere

    def env(self) -> dict[str, str]:
        assert self.moto is not None
        env = {**os.environ, **self.moto.env()}
        env.setdefault("CONVEYOR_TASKTYPES", str(find_examples()))
        auth_off = env.get("CONVEYOR_AUTH_ENABLED", "").strip().lower() in ("0", "false", "no", "off")
        if not auth_off and not env.get("CONVEYOR_AUTH_TOKENS_FILE"):
            # Zero-config but never open: a token of our own, printed by `conveyor run`.
            self.token, tokens_file = local_token(self.state_dir)
            env["CONVEYOR_AUTH_TOKENS_FILE"] = str(tokens_file)
        # Loopback only: the local stack serves this machine, not its network.
        env |= {
            "CONVEYOR_API_PORT": str(self.api_port),
            "CONVEYOR_API_HOST": "127.0.0.1",
            "CONVEYOR_WORKER_METRICS_HOST": "127.0.0.1",
        }
        env |= self.extra_env
        return env

    def start(self) -> None:
        self.moto = MotoServer(self.moto_port).start()
        env = self.env()
        from conveyor.aws import AwsBackend
        from conveyor.aws.provision import provision
        from conveyor.settings import Settings

        saved = dict(os.environ)
        os.environ.update(env)
        try:
            provision(AwsBackend(Settings.from_env()))
        finally:
            os.environ.clear()
            os.environ.update(saved)
        api = subprocess.Popen([sys.executable, "-m", "api.main"], env=env)
        self.children.append(api)
        for n in range(self.workers):
            port = self.worker_metrics_port + n if self.worker_metrics_port else 0
            self.children.append(
                subprocess.Popen(
                    [sys.executable, "-m", "worker.main"],
                    env=env | {"CONVEYOR_WORKER_METRICS_PORT": str(port)},
                )
            )
        wait_http(f"http://127.0.0.1:{self.api_port}/healthz", proc=api)

    def stop(self) -> None:
        for child in reversed(self.children):
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in self.children:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(30)
            if child.poll() is None:
                child.kill()
        if self.moto:
            self.moto.stop()

    @contextlib.contextmanager
    def running(self) -> Iterator[LocalStack]:
        try:
            self.start()
            yield self
        finally:
            self.stop()

    def wait(self) -> int:
        """Block until a child exits or we are told to stop; returns an exit code."""
        stop = False

        def on_signal(signum: int, frame: object) -> None:
            nonlocal stop
            stop = True

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        while not stop:
            for child in self.children:
                if child.poll() is not None:
                    print(f"conveyor: a child process exited ({child.returncode}); stopping", file=sys.stderr)
                    return 1
            time.sleep(0.3)
        return 0
