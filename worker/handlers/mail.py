"""``email``: send one message through an SMTP relay.

(The module is ``mail``, not ``email``: that name would shadow the standard library.)

The relay comes from the environment (``CONVEYOR_SMTP_*``, read at each send so a
rotated Secret mounted as a file is picked up); credentials never come from a payload
or a TaskType. The Message-ID is derived from the task id, so a retry after a lost
answer carries the same id and receivers can drop the duplicate.

SMTP replies decide retries: 5xx (and a refused certificate, or a relay that lacks a
required extension) fail the task; 4xx, dropped connections and timeouts are retried.

Header injection is refused twice over, whatever the interpreter: a header value that
holds a control character once its RFC 2047 encoded words are decoded is refused, and the
message as it will be sent is parsed back and must carry exactly the headers set here
(Python before 3.11.10 / 3.12.5 turned an encoded ``=0D=0A`` into a real header line,
CVE-2024-6923). ``options.allowedDomains`` / ``options.allowedRecipients`` restrict whom a
TaskType may mail.
"""

from __future__ import annotations

import email.errors
import email.policy
import os
import re
import smtplib
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.header import decode_header, make_header
from email.message import EmailMessage
from email.parser import BytesHeaderParser
from email.utils import formatdate
from pathlib import Path
from typing import Any

from conveyor.errors import PermanentError, RetryableError
from worker.handlers import handler
from worker.handlers.context import Context
from worker.handlers.options import domain_listed, string_list

# Any C0 control but TAB, and DEL: CR and LF start a new header line, NUL truncates.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}


def _flag(env: Mapping[str, str], name: str) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise PermanentError(f"{name}={raw!r} is not a boolean (true/false)")


@dataclass(frozen=True)
class SmtpConfig:
    """The SMTP relay, from ``CONVEYOR_SMTP_*``."""

    host: str = "localhost"
    port: int = 25
    username: str = ""
    password: str = field(default="", repr=False)
    starttls: bool = False
    ssl: bool = False
    sender: str = ""
    timeout: float = 30.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> SmtpConfig:
        use_ssl = _flag(env, "CONVEYOR_SMTP_SSL")
        starttls = _flag(env, "CONVEYOR_SMTP_STARTTLS")
        if use_ssl and starttls:
            raise PermanentError("CONVEYOR_SMTP_SSL and CONVEYOR_SMTP_STARTTLS exclude each other")
        password = env.get("CONVEYOR_SMTP_PASSWORD", "")
        password_file = env.get("CONVEYOR_SMTP_PASSWORD_FILE", "")
        if password_file:  # a Secret mounted as a file
            try:
                password = Path(password_file).read_text().strip()
            except OSError as exc:
                raise RetryableError(f"CONVEYOR_SMTP_PASSWORD_FILE unreadable: {exc}") from exc
        try:
            port = int(env.get("CONVEYOR_SMTP_PORT") or (465 if use_ssl else 587 if starttls else 25))
            timeout = float(env.get("CONVEYOR_SMTP_TIMEOUT") or 30.0)
        except ValueError as exc:
            raise PermanentError(f"CONVEYOR_SMTP_PORT / CONVEYOR_SMTP_TIMEOUT: {exc}") from exc
        return cls(
            host=env.get("CONVEYOR_SMTP_HOST") or "localhost",
            port=port,
            username=env.get("CONVEYOR_SMTP_USERNAME", ""),
            password=password,
            starttls=starttls,
            ssl=use_ssl,
            sender=env.get("CONVEYOR_SMTP_FROM", ""),
            timeout=timeout,
        )


def _addresses(payload: dict[str, Any], key: str) -> list[str]:
    value = payload.get(key) or []
    return [value] if isinstance(value, str) else [str(v) for v in value]


def _check_value(key: str, value: str) -> None:
    """Refuse a header value with a line break or control character, also one hidden in an
    RFC 2047 encoded word (``=?utf-8?q?a=0D=0AReply-To:...?=``)."""
    try:
        decoded = str(make_header(decode_header(value)))
    except (email.errors.HeaderParseError, LookupError, UnicodeError, ValueError) as exc:
        raise PermanentError(f"{key}: cannot decode its encoded words: {exc}") from exc
    for text in (value, decoded):
        bad = _CONTROL.search(text)
        if bad:
            raise PermanentError(f"bad header: {key} holds a control character ({bad.group()!r})")


def _set_addresses(message: EmailMessage, header: str, key: str, values: list[str]) -> None:
    for value in values:
        _check_value(key, value)
    # A joined string is parsed into Address objects (a list would be stored unparsed).
    message[header] = ", ".join(values)
    parsed = message[header].addresses
    if len(parsed) != len(values) or not all(a.username and a.domain for a in parsed):
        raise PermanentError(f"{key}: not a list of email addresses: {values}")
    for address in parsed:
        _check_value(key, str(address))


def check_serialized(message: EmailMessage) -> None:
    """The message as it goes on the wire must carry exactly the headers that were set,
    each on one logical line: anything else is an injection the email package let by."""
    wire_policy = message.policy.clone(linesep="\r\n")
    try:
        wire = message.as_bytes(policy=wire_policy)
    except (email.errors.MessageError, ValueError) as exc:  # 3.11.10+: HeaderWriteError
        raise PermanentError(f"bad header: refused to write it: {exc}") from exc
    sent = BytesHeaderParser(policy=email.policy.default).parsebytes(wire)
    expected = [name.lower() for name in message]
    found = [name.lower() for name in sent]
    if found != expected:
        extra = sorted(set(found) - set(expected)) or found
        raise PermanentError(f"bad header: the message would carry headers that were not set: {extra}")
    for name, value in sent.items():
        if _CONTROL.search(str(value)):
            raise PermanentError(f"bad header: {name} holds a line break once decoded")


def build_message(payload: dict[str, Any], sender: str, task_id: str) -> EmailMessage:
    if not sender:
        raise PermanentError("no sender: set CONVEYOR_SMTP_FROM or the TaskType's options.from")
    if not payload.get("text") and not payload.get("html"):
        raise PermanentError("text, html: give at least one body")
    message = EmailMessage()
    try:
        _set_addresses(message, "From", "sender (CONVEYOR_SMTP_FROM or options.from)", [sender])
        for key, header in (("to", "To"), ("cc", "Cc"), ("bcc", "Bcc"), ("reply_to", "Reply-To")):
            if payload.get(key) or key == "to":
                _set_addresses(message, header, key, _addresses(payload, key))
        subject = str(payload.get("subject", ""))
        _check_value("subject", subject)
        message["Subject"] = subject
        _check_value("subject", str(message["Subject"]))  # what the header object decoded
    except (ValueError, IndexError) as exc:  # a malformed address or a header with a newline
        raise PermanentError(f"bad header: {exc}") from exc
    message["Date"] = formatdate(localtime=False)
    domain = message["From"].addresses[0].domain or "conveyor"
    message["Message-ID"] = f"<{task_id}@{domain}>"
    if payload.get("text"):
        message.set_content(str(payload["text"]))
    if payload.get("html"):
        if payload.get("text"):
            message.add_alternative(str(payload["html"]), subtype="html")
        else:
            message.set_content(str(payload["html"]), subtype="html")
    check_serialized(message)
    return message


@dataclass(frozen=True)
class Recipients:
    """``options.allowedDomains`` / ``options.allowedRecipients``: whom a TaskType may mail
    (both unset: anyone)."""

    domains: tuple[str, ...] = ()
    addresses: tuple[str, ...] = ()

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> Recipients:
        domains, addresses = (
            tuple(v.strip().lower().rstrip(".") for v in string_list(options, name) or ())
            for name in ("allowedDomains", "allowedRecipients")
        )
        return cls(domains, addresses)

    @property
    def restricted(self) -> bool:
        return bool(self.domains or self.addresses)

    def allows(self, address: str) -> bool:
        address = address.lower()
        domain = address.rpartition("@")[2].rstrip(".")
        return address in self.addresses or domain_listed(domain, self.domains)


def _by_code(code: int, text: str) -> Exception:
    return PermanentError(text) if 500 <= code < 600 else RetryableError(text)


def _decode(raw: bytes | str) -> str:
    return raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)


def send(config: SmtpConfig, message: EmailMessage) -> dict[str, tuple[int, bytes]]:
    """Deliver to the relay; returns the recipients it refused (when it took the rest)."""
    tls = ssl.create_default_context()  # verifies the relay's certificate; SSL_CERT_FILE adds CAs
    where = f"{config.host}:{config.port}"
    try:
        smtp: smtplib.SMTP
        if config.ssl:
            smtp = smtplib.SMTP_SSL(config.host, config.port, timeout=config.timeout, context=tls)
        else:
            smtp = smtplib.SMTP(config.host, config.port, timeout=config.timeout)
        with smtp:
            if config.starttls:
                smtp.starttls(context=tls)
            if config.username:
                smtp.login(config.username, config.password)
            return smtp.send_message(message)
    except smtplib.SMTPRecipientsRefused as exc:
        codes = [code for code, _ in exc.recipients.values()]
        detail = "; ".join(f"{rcpt}: {code} {_decode(text)}" for rcpt, (code, text) in exc.recipients.items())
        error = f"{where} refused every recipient: {detail}"
        raise (PermanentError(error) if all(c >= 500 for c in codes) else RetryableError(error)) from exc
    except smtplib.SMTPResponseException as exc:
        raise _by_code(exc.smtp_code, f"{where}: {exc.smtp_code} {_decode(exc.smtp_error)}") from exc
    except smtplib.SMTPNotSupportedError as exc:
        raise PermanentError(f"{where}: {exc}") from exc
    except ssl.SSLCertVerificationError as exc:
        raise PermanentError(f"{where}: certificate refused: {exc.verify_message}") from exc
    except (smtplib.SMTPException, OSError) as exc:
        raise RetryableError(f"{where}: {type(exc).__name__}: {exc}") from exc


@handler("email")
def send_email(payload: dict[str, Any], ctx: Context) -> dict[str, Any]:
    config = SmtpConfig.from_env()
    message = build_message(payload, str(ctx.options.get("from") or config.sender), ctx.task_id)
    recipients = [a.addr_spec for h in ("To", "Cc", "Bcc") for a in getattr(message[h], "addresses", ())]
    allowed = Recipients.from_options(ctx.options)
    outside = [r for r in recipients if allowed.restricted and not allowed.allows(r)]
    if outside:
        raise PermanentError(
            f"to, cc, bcc: {', '.join(outside)} not allowed by this TaskType's "
            "options.allowedDomains / options.allowedRecipients"
        )
    ctx.raise_if_cancelled()
    refused = send(config, message)
    return {
        "message_id": message["Message-ID"],
        "accepted": [r for r in recipients if r not in refused],
        "refused": {r: f"{code} {_decode(text)}" for r, (code, text) in refused.items()},
    }
