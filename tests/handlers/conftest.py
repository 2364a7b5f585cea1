"""Fixtures for the built-in handlers: a real Context over moto, a local SMTP server
(aiosmtpd), a local HTTP server, and a spy that refuses any non-loopback connection."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session

from conveyor.aws import AwsBackend
from conveyor.aws.provision import provision
from conveyor.bootstrap import Runtime, build
from conveyor.local import MotoServer
from conveyor.model import new_id
from conveyor.ports import BlobStore
from conveyor.settings import Settings
from tests.conftest import EXAMPLES, make_settings
from tests.support.servers import free_port
from worker.handlers.context import Context

# A webhook type that may reach loopback: the local test server lives there.
INTERNAL_WEBHOOK = """
apiVersion: conveyor.dev/v1alpha1
kind: TaskType
metadata: {name: webhook-internal}
spec:
  handler: webhook
  maxAttempts: 2
  backoff: {initialSeconds: 0.2, maxSeconds: 0.5}
  timeoutSeconds: 30
  options: {allowedCidrs: [127.0.0.0/8, "::1/128"]}
"""


@pytest.fixture
def settings(settings_factory: Callable[..., Settings], tmp_path: Path) -> Settings:
    """The example TaskTypes (the registry under test) plus ``webhook-internal``."""
    target = tmp_path / "tasktypes"
    shutil.copytree(EXAMPLES, target)
    (target / "webhook-internal.yaml").write_text(INTERNAL_WEBHOOK)
    return settings_factory(tasktypes=str(target))


@pytest.fixture(scope="package")
def shared_runtime(moto_server: MotoServer) -> Runtime:
    """One provisioned queue/table/bucket for the unit tests of this package: provisioning
    and boto3 clients cost ~1 s a test, a bucket ~10 ms."""
    settings = make_settings()
    provision(AwsBackend(settings))
    return build(settings)


@dataclass
class Storage:
    """A fresh S3 bucket of this test (``bucket``) on the shared runtime."""

    runtime: Runtime
    bucket: str

    def blobs(self, bucket: str | None = None) -> BlobStore:
        return self.runtime.blobs(bucket or self.bucket)  # type: ignore[no-any-return]

    def new_bucket(self) -> str:
        name = f"b{new_id().lower()}"
        self.runtime.backend.s3.create_bucket(Bucket=name)
        return name


@pytest.fixture
def storage(shared_runtime: Runtime) -> Storage:
    s = Storage(shared_runtime, "")
    s.bucket = s.new_bucket()
    return s


def _context(settings: Settings, storage: Storage | None, options: dict[str, Any] | None) -> Context:
    task_id = new_id()
    return Context(
        task_id=task_id,
        task_type="test",
        attempt=1,
        max_attempts=3,
        settings=settings,
        logger=logging.LoggerAdapter(logging.getLogger("tests.handlers"), {"task_id": task_id}),
        options=dict(options or {}),
        blob_factory=storage.blobs if storage else None,
        store=storage.runtime.engine.store if storage else None,
    )


@pytest.fixture
def make_ctx(storage: Storage) -> Callable[..., Context]:
    """A Context over real moto S3 (this test's bucket) and the shared DynamoDB table."""
    settings = replace(storage.runtime.settings, bucket=storage.bucket)
    return lambda options=None: _context(settings, storage, options)


@pytest.fixture
def bare_ctx() -> Callable[..., Context]:
    """A Context with no AWS behind it (for handlers that need none)."""
    return lambda options=None: _context(Settings(), None, options)


# -- outbound connection spy ----------------------------------------------------------


@pytest.fixture
def connections(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every address a socket connects to; a non-loopback one fails the connect, so a
    test can never send traffic off this machine."""
    seen: list[Any] = []
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex

    def check(address: Any) -> None:
        seen.append(address)
        host = address[0] if isinstance(address, tuple) else None
        if host is not None and not ipaddress.ip_address(host.split("%")[0]).is_loopback:
            raise AssertionError(f"connection to a non-loopback address: {address}")

    def connect(self: socket.socket, address: Any) -> None:
        check(address)
        real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        check(address)
        return real_connect_ex(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    return seen


# -- local HTTP server ----------------------------------------------------------------


@dataclass
class Hit:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class HttpServer:
    port: int
    hits: list[Hit] = field(default_factory=list)

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def paths(self) -> list[str]:
        return [h.path for h in self.hits]


def _http_handler(server: HttpServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _answer(
            self, code: int, body: bytes, content_type: str = "application/json", **extra: str
        ) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for name, value in extra.items():
                self.send_header(name.replace("_", "-"), value)
            self.end_headers()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client gave up
                self.wfile.write(body)

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            server.hits.append(Hit(self.command, self.path, dict(self.headers.items()), body))
            path = self.path.split("?")[0]
            if path == "/ok":
                echo = {"method": self.command, "body": body.decode(), "headers": dict(self.headers.items())}
                self._answer(200, json.dumps(echo).encode())
            elif path == "/text":
                self._answer(200, b"plain words", "text/plain; charset=utf-8")
            elif path == "/garbage":  # bytes that are no UTF-8: each decodes to U+FFFD
                self._answer(200, b"\xff" * (64 * 1024), "text/plain; charset=utf-8")
            elif path == "/emoji-json":  # valid JSON whose escaped form is 3x its size
                body = json.dumps(["\U0001f600" * 15000], ensure_ascii=False).encode()
                self._answer(200, body)
            elif path == "/big":
                self._answer(200, b"x" * (200 * 1024), "text/plain")
            elif path.startswith("/status/"):
                self._answer(int(path.rsplit("/", 1)[1]), b'{"error": "as asked"}')
            elif path == "/redirect":
                self._answer(302, b"", Location=f"http://127.0.0.1:{server.port}/ok")
            elif path == "/drip":  # 30 bytes, one every 0.1 s: no single read is slow
                self.send_response(200)
                self.send_header("Content-Length", "30")
                self.end_headers()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    for _ in range(30):
                        self.wfile.write(b"x")
                        self.wfile.flush()
                        time.sleep(0.1)
            elif path == "/slow":
                time.sleep(1.5)
                self._answer(200, b"{}")
            else:
                self._answer(404, b'{"error": "no such path"}')

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

    return Handler


@pytest.fixture
def http_server() -> Iterator[HttpServer]:
    state = HttpServer(port=0)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _http_handler(state))
    httpd.daemon_threads = True
    state.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()


# -- local SMTP server ----------------------------------------------------------------


@dataclass
class SmtpServer:
    port: int = 0
    envelopes: list[Envelope] = field(default_factory=list)
    logins: list[str] = field(default_factory=list)
    rcpt_replies: dict[str, str] = field(default_factory=dict)  # address -> reply
    data_reply: str = "250 Message accepted for delivery"
    tls: bool = False

    async def handle_RCPT(
        self, server: Any, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        reply = self.rcpt_replies.get(address)
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        if self.data_reply.startswith("250"):
            self.tls = self.tls or session.ssl is not None
            self.envelopes.append(envelope)
        return self.data_reply


def _authenticator(server: SmtpServer) -> Callable[..., AuthResult]:
    def check(_server: Any, _session: Any, _envelope: Any, mechanism: str, data: Any) -> AuthResult:
        ok = isinstance(data, LoginPassword) and (data.login, data.password) == (b"mailer", b"s3cret")
        if ok:
            server.logins.append(data.login.decode())
        return AuthResult(success=ok, handled=False)

    return check


def _serve_smtp(**options: Any) -> Iterator[SmtpServer]:
    """An aiosmtpd server on 127.0.0.1 (AUTH as mailer/s3cret) for one test."""
    state = SmtpServer()
    controller = Controller(
        state, hostname="127.0.0.1", port=free_port(), authenticator=_authenticator(state), **options
    )
    controller.start()
    state.port = controller.port
    yield state
    controller.stop()


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    """A plain SMTP server that accepts AUTH over cleartext."""
    yield from _serve_smtp(auth_require_tls=False)


@pytest.fixture
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (cert, key)."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory = tmp_path_factory.mktemp("tls")
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


@pytest.fixture
def starttls_server(tls_files: tuple[Path, Path]) -> Iterator[SmtpServer]:
    """An SMTP server that requires STARTTLS before AUTH and mail."""
    import ssl

    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(*tls_files)
    yield from _serve_smtp(tls_context=tls, require_starttls=True)


@pytest.fixture
def smtp_env(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """Point the email handler at a server: CONVEYOR_SMTP_* in this process's env."""

    def point(port: int, **extra: str) -> None:
        for name in ("USERNAME", "PASSWORD", "PASSWORD_FILE", "STARTTLS", "SSL", "TIMEOUT"):
            monkeypatch.delenv(f"CONVEYOR_SMTP_{name}", raising=False)
        monkeypatch.setenv("CONVEYOR_SMTP_HOST", "127.0.0.1")
        monkeypatch.setenv("CONVEYOR_SMTP_PORT", str(port))
        monkeypatch.setenv("CONVEYOR_SMTP_FROM", "Conveyor <noreply@conveyor.test>")
        monkeypatch.setenv("CONVEYOR_SMTP_TIMEOUT", "5")
        for name, value in extra.items():
            monkeypatch.setenv(f"CONVEYOR_SMTP_{name.upper()}", value)

    return point
