"""Logs never carry a token or a payload: a real API process at DEBUG and at INFO."""

from __future__ import annotations

import logging
from dataclasses import replace

import httpx
import pytest

from conveyor.redact import REDACTED, SecretFilter, redact
from tests.faults.harness import Api

SECRET = "hunter2-do-not-log"
VISIBLE = "plain-value-7"


@pytest.mark.parametrize("level", ["DEBUG", "INFO"])
def test_an_api_process_logs_no_token_and_no_payload(settings, auth_tokens, tmp_path, level):
    settings = replace(settings, auth_tokens_file=str(auth_tokens.path))
    log = tmp_path / "api.log"
    api = Api(settings, log=log, CONVEYOR_LOG_LEVEL=level)
    try:
        with httpx.Client(base_url=api.url, timeout=30) as http:
            payload = {"note": VISIBLE, "password": SECRET, "nested": {"api_key": SECRET}}
            ok = http.post(
                "/v1/tasks", json={"type": "echo", "payload": payload}, headers=auth_tokens.headers("all")
            )
            assert ok.status_code == 202, ok.text
            bad = "Bearer not-a-real-token-but-secret-looking"
            assert http.get("/v1/tasks", headers={"Authorization": bad}).status_code == 401
            assert http.get("/v1/stats", headers=auth_tokens.headers("reader")).status_code == 403
    finally:
        api.stop()
    text = log.read_text()
    assert "uvicorn" in text.lower()  # the log was captured at all
    for name, token in auth_tokens.items():
        assert token not in text, f"token {name} leaked"
    assert "not-a-real-token" not in text and SECRET not in text
    if level == "DEBUG":
        # The payload is there for debugging, redacted by key.
        line = next(row for row in text.splitlines() if "payload=" in row)
        assert VISIBLE in line and REDACTED in line and "by all" in line
    else:
        assert VISIBLE not in text  # no payload above DEBUG
    assert "token 'reader' refused" in text  # refusals name the token, never show it


def test_the_filter_scrubs_credentials_whoever_logs_them(caplog):
    logger = logging.getLogger("tests.security.leaky")
    handler = logging.Handler()
    records: list[str] = []
    handler.emit = lambda record: records.append(  # type: ignore[method-assign]
        logging.Formatter("%(message)s").format(record)
    )
    handler.addFilter(SecretFilter())
    logger.addHandler(handler)
    try:
        logger.warning("calling with %s", {"Authorization": "Bearer abc.def-SECRET1"})
        try:
            raise RuntimeError("token=SECRET2 rejected")
        except RuntimeError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    joined = "\n".join(records)
    assert "SECRET1" not in joined and "SECRET2" not in joined
    assert joined.count(REDACTED) >= 2 and "RuntimeError" in joined


def test_redaction_is_by_key_at_any_depth_and_keeps_the_rest():
    payload = {"user": "ann", "Password": "x", "items": [{"client_secret": "y", "n": 1}], "AccessToken": "z"}
    keys = ("password", "secret", "token")
    assert redact(payload, keys) == {
        "user": "ann",
        "Password": REDACTED,
        "items": [{"client_secret": REDACTED, "n": 1}],
        "AccessToken": REDACTED,
    }
    assert payload["Password"] == "x"  # a copy: the task itself is untouched
