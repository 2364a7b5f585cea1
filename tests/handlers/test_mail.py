"""email: delivered to a real SMTP server (aiosmtpd) on 127.0.0.1."""

from __future__ import annotations

import email
import email.policy
import socket

import pytest

from conveyor.errors import PermanentError, RetryableError
from worker.handlers.mail import SmtpConfig, send_email

MESSAGE = {
    "to": ["ada@example.com"],
    "cc": ["grace@example.com"],
    "bcc": ["audit@example.com"],
    "reply_to": ["help@example.com"],
    "subject": "Your export is ready — ünïcode",
    "text": "Hello Ada,\nyour export is ready.\n",
    "html": "<p>Hello Ada</p>",
}


def parsed(envelope):
    return email.message_from_bytes(envelope.original_content, policy=email.policy.default)


def test_sends_text_and_html_to_every_recipient(bare_ctx, smtp_server, smtp_env):
    smtp_env(smtp_server.port)
    ctx = bare_ctx()
    result = send_email(MESSAGE, ctx)

    assert result["accepted"] == ["ada@example.com", "grace@example.com", "audit@example.com"]
    assert result["refused"] == {} and result["message_id"] == f"<{ctx.task_id}@conveyor.test>"
    [envelope] = smtp_server.envelopes
    assert envelope.mail_from == "noreply@conveyor.test"
    assert sorted(envelope.rcpt_tos) == ["ada@example.com", "audit@example.com", "grace@example.com"]
    msg = parsed(envelope)
    assert msg["Subject"] == MESSAGE["subject"] and msg["To"] == "ada@example.com"
    assert msg["Reply-To"] == "help@example.com" and msg["Message-ID"] == result["message_id"]
    assert "Bcc" not in msg  # blind copies stay blind
    assert msg.get_body(("plain",)).get_content().replace("\r\n", "\n") == MESSAGE["text"]
    assert msg.get_body(("html",)).get_content().strip() == MESSAGE["html"]


def test_sender_from_the_tasktype_options(bare_ctx, smtp_server, smtp_env):
    smtp_env(smtp_server.port)
    send_email(
        {"to": ["a@example.com"], "subject": "s", "html": "<b>hi</b>"}, bare_ctx({"from": "b@corp.test"})
    )
    assert smtp_server.envelopes[0].mail_from == "b@corp.test"
    assert parsed(smtp_server.envelopes[0]).get_content_type() == "text/html"


def test_logs_in_with_credentials_from_a_mounted_secret(bare_ctx, smtp_server, smtp_env, tmp_path):
    secret = tmp_path / "password"
    secret.write_text("s3cret\n")
    smtp_env(smtp_server.port, username="mailer", password_file=str(secret))
    send_email({"to": ["a@example.com"], "subject": "s", "text": "t"}, bare_ctx())
    assert smtp_server.logins == ["mailer"] and len(smtp_server.envelopes) == 1


def test_wrong_password_fails_permanently(bare_ctx, smtp_server, smtp_env):
    smtp_env(smtp_server.port, username="mailer", password="nope")
    with pytest.raises(PermanentError, match="535"):
        send_email({"to": ["a@example.com"], "subject": "s", "text": "t"}, bare_ctx())
    assert smtp_server.envelopes == []


def test_starttls_then_auth(bare_ctx, starttls_server, smtp_env, tls_files, monkeypatch):
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_files[0]))  # trust the test CA
    smtp_env(starttls_server.port, starttls="true", username="mailer", password="s3cret")
    send_email({"to": ["a@example.com"], "subject": "s", "text": "t"}, bare_ctx())
    assert starttls_server.tls and starttls_server.logins == ["mailer"]


def test_starttls_with_an_untrusted_certificate_fails_permanently(bare_ctx, starttls_server, smtp_env):
    smtp_env(starttls_server.port, starttls="true")
    with pytest.raises(PermanentError, match="certificate"):
        send_email({"to": ["a@example.com"], "subject": "s", "text": "t"}, bare_ctx())
    assert starttls_server.envelopes == []


def test_server_requiring_tls_refuses_cleartext(bare_ctx, starttls_server, smtp_env):
    smtp_env(starttls_server.port)
    with pytest.raises(PermanentError, match="530"):
        send_email({"to": ["a@example.com"], "subject": "s", "text": "t"}, bare_ctx())


def test_one_refused_recipient_does_not_fail_the_rest(bare_ctx, smtp_server, smtp_env):
    smtp_env(smtp_server.port)
    smtp_server.rcpt_replies["gone@example.com"] = "550 5.1.1 no such user"
    result = send_email(
        {"to": ["a@example.com", "gone@example.com"], "subject": "s", "text": "t"}, bare_ctx()
    )
    assert result["accepted"] == ["a@example.com"]
    assert result["refused"] == {"gone@example.com": "550 5.1.1 no such user"}
    assert smtp_server.envelopes[0].rcpt_tos == ["a@example.com"]


@pytest.mark.parametrize(
    ("rcpt", "data", "error"),
    [
        ("550 5.1.1 no such user", None, PermanentError),
        ("450 4.2.1 mailbox busy", None, RetryableError),
        (None, "554 5.6.0 message rejected", PermanentError),
        (None, "451 4.3.0 try again later", RetryableError),
    ],
)
def test_smtp_reply_codes_decide_retries(bare_ctx, smtp_server, smtp_env, rcpt, data, error):
    smtp_env(smtp_server.port)
    if rcpt:
        smtp_server.rcpt_replies["a@example.com"] = rcpt
    if data:
        smtp_server.data_reply = data
    with pytest.raises(error) as caught:
        send_email({"to": ["a@example.com"], "subject": "s", "text": "t"}, bare_ctx())
    assert (rcpt or data).split()[0] in str(caught.value)
    assert smtp_server.envelopes == []


def test_unreachable_server_is_retryable(bare_ctx, smtp_env):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    smtp_env(port)
    with pytest.raises(RetryableError, match="ConnectionRefused"):
        send_email({"to": ["a@example.com"], "subject": "s", "text": "t"}, bare_ctx())


@pytest.mark.parametrize(
    ("payload", "env", "message"),
    [
        ({"to": ["a@example.com"], "subject": "s"}, {}, "at least one body"),
        ({"to": ["not-an-address"], "subject": "s", "text": "t"}, {}, "not a list of email addresses"),
        ({"to": ["a@example.com"], "subject": "a\r\nBcc: x@evil.test", "text": "t"}, {}, "bad header"),
        ({"to": ["a@example.com"], "subject": "s", "text": "t"}, {"from": ""}, "no sender"),
        ({"to": ["a@example.com"], "subject": "s", "text": "t"}, {"from": "noreply"}, "CONVEYOR_SMTP_FROM"),
        ({"to": ["a@example.com"], "subject": "s", "text": "t"}, {"ssl": "true", "starttls": "1"}, "exclude"),
        ({"to": ["a@example.com"], "subject": "s", "text": "t"}, {"starttls": "maybe"}, "not a boolean"),
    ],
)
def test_bad_input_or_configuration_fails_permanently(bare_ctx, smtp_server, smtp_env, payload, env, message):
    smtp_env(smtp_server.port, **env)
    with pytest.raises(PermanentError, match=message):
        send_email(payload, bare_ctx())
    assert smtp_server.envelopes == []


def test_config_defaults_follow_the_tls_mode():
    assert SmtpConfig.from_env({}).port == 25
    assert SmtpConfig.from_env({"CONVEYOR_SMTP_STARTTLS": "true"}).port == 587
    assert SmtpConfig.from_env({"CONVEYOR_SMTP_SSL": "yes"}).port == 465
    assert "s3cret" not in repr(SmtpConfig.from_env({"CONVEYOR_SMTP_PASSWORD": "s3cret"}))
