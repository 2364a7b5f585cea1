"""email: delivered to a real SMTP server (aiosmtpd) on 127.0.0.1."""

from __future__ import annotations

import email
import email.policy
import re
from email.message import EmailMessage

import pytest

from conveyor.errors import PermanentError, RetryableError
from tests.conftest import ROOT
from tests.support.servers import free_port
from worker.handlers.mail import SmtpConfig, build_message, check_serialized, send_email

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
    smtp_env(free_port())
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


INJECTIONS = [
    "=?utf-8?q?Invoice=0D=0AReply-To:_attacker@evil.example?=",  # CVE-2024-6923 on 3.11.7
    "=?utf-8?q?Invoice=0ABcc:_x@evil.example?=",
    "=?utf-8?b?SW52b2ljZQ0KQmNjOiB4QGV2aWwuZXhhbXBsZQ==?=",  # the same in base64
    "Invoice =?iso-8859-1?q?=0D=0AX-Evil:_1?= due",
    "a\x00b",
    "a\rb",
]


@pytest.mark.parametrize("subject", INJECTIONS)
def test_header_injection_through_encoded_words_is_refused(bare_ctx, smtp_server, smtp_env, subject):
    smtp_env(smtp_server.port)
    with pytest.raises(PermanentError, match="bad header"):
        send_email({"to": ["a@example.com"], "subject": subject, "text": "t"}, bare_ctx())
    assert smtp_server.envelopes == []


@pytest.mark.parametrize("subject", INJECTIONS[:4])
def test_the_sent_form_must_carry_exactly_the_headers_set(subject):
    """The second line of defence, on its own: a Subject put straight into a message (no
    value check) is caught by parsing the message as it would be sent."""
    message = EmailMessage()
    message["From"] = "n@conveyor.test"
    message["To"] = "a@example.com"
    message["Subject"] = subject
    message.set_content("t")
    with pytest.raises(PermanentError, match="bad header"):
        check_serialized(message)


def test_encoded_words_that_decode_cleanly_still_work(bare_ctx, smtp_server, smtp_env):
    smtp_env(smtp_server.port)
    send_email({"to": ["a@example.com"], "subject": "=?utf-8?q?caf=C3=A9?= ok", "text": "t"}, bare_ctx())
    msg = parsed(smtp_server.envelopes[0])
    assert msg["Subject"] == "café ok" and "Reply-To" not in msg
    assert [k.lower() for k in msg].count("subject") == 1


def test_a_sender_with_an_encoded_line_break_is_refused():
    with pytest.raises(PermanentError, match="bad header"):
        build_message(
            {"to": ["a@example.com"], "subject": "s", "text": "t"},
            "=?utf-8?q?Ops=0D=0ABcc:_x@evil.example?= <ops@conveyor.test>",
            "T1",
        )


@pytest.mark.parametrize(
    ("options", "to", "allowed"),
    [
        ({"allowedDomains": ["example.com"]}, ["ada@example.com", "Bob@EXAMPLE.com"], True),
        ({"allowedDomains": ["example.com"]}, ["ada@example.com", "eve@evil.example"], False),
        ({"allowedDomains": ["example.com"]}, ["eve@mail.example.com"], False),
        ({"allowedDomains": ["*.example.com"]}, ["eve@mail.example.com"], True),
        ({"allowedDomains": ["*.example.com"]}, ["eve@badexample.com"], False),
        ({"allowedRecipients": ["ops@partner.example"]}, ["ops@partner.example"], True),
        ({"allowedRecipients": ["ops@partner.example"]}, ["ceo@partner.example"], False),
        ({"allowedDomains": ["example.com"], "allowedRecipients": ["ops@partner.example"]},
         ["ada@example.com", "ops@partner.example"], True),
        ({}, ["anyone@anywhere.example"], True),
    ],
)  # fmt: skip
def test_recipient_allow_list(bare_ctx, smtp_server, smtp_env, options, to, allowed):
    smtp_env(smtp_server.port)
    payload = {"to": to, "subject": "s", "text": "t"}
    if allowed:
        assert send_email(payload, bare_ctx(options))["accepted"] == to
    else:
        with pytest.raises(PermanentError, match="not allowed by this TaskType"):
            send_email(payload, bare_ctx(options))
        assert smtp_server.envelopes == []


@pytest.mark.parametrize("field", ["cc", "bcc"])
def test_the_allow_list_covers_copies(bare_ctx, smtp_server, smtp_env, field):
    smtp_env(smtp_server.port)
    payload = {"to": ["a@example.com"], field: ["eve@evil.example"], "subject": "s", "text": "t"}
    with pytest.raises(PermanentError, match=r"eve@evil\.example"):
        send_email(payload, bare_ctx({"allowedDomains": ["example.com"]}))
    assert smtp_server.envelopes == []


@pytest.mark.parametrize("options", [{"allowedDomains": "example.com"}, {"allowedRecipients": [""]}])
def test_bad_allow_list_options_fail_naming_the_option(bare_ctx, smtp_server, smtp_env, options):
    smtp_env(smtp_server.port)
    with pytest.raises(PermanentError, match=f"options.{next(iter(options))}"):
        send_email({"to": ["a@example.com"], "subject": "s", "text": "t"}, bare_ctx(options))


def test_the_image_runs_a_python_with_the_header_fix():
    """CVE-2024-6923 is fixed in 3.11.10 and 3.12.5 (and every 3.13); the image must not
    ship an older interpreter even though the checks above hold on any."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    version = re.search(r"^ARG PYTHON_IMAGE=python:(\d+)\.(\d+)\.(\d+)-", dockerfile, re.M)
    assert version, "PYTHON_IMAGE must pin a full python:X.Y.Z tag"
    major, minor, patch = map(int, version.groups())
    fixed = {11: 10, 12: 5}
    assert (major, minor) >= (3, 11) and patch >= fixed.get(minor, 0), version.group(0)
